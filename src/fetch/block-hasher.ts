/**
 * Hashing of download blocks, inline or on a worker thread.
 *
 * On a 2-core compute host the main thread is busy with the socket and with handing writes to the
 * thread pool; hashing a large image there (md5 ~600 MiB/s, sha512 ~700 MiB/s) costs a large share
 * of the download time. A worker thread hashes blocks that live in shared memory, in parallel with
 * the network and the disk, and only tiny messages cross threads: no copies. The same path re-hashes
 * the kept prefix of a resumed download ({@link primeFromFile}), read from disk into the ring.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { throwIfAborted } from '../abort.js';

/** Hashes blocks of a {@link BlockRing} in order. */
export interface BlockHasher {
  /** Hashes `length` bytes of ring block `index`; resolves once the block may be reused. */
  update(index: number, length: number): Promise<void>;
  /**
   * The hex digest of everything handed to {@link BlockHasher.update} before this call (in call
   * order, whether or not those updates have resolved yet), the hash going on: what a resume
   * checkpoint records for the prefix written so far.
   */
  prefixDigest(): Promise<string>;
  /** The hex digest of everything hashed. */
  digest(): Promise<string>;
  /** Frees the hasher's resources. Safe to call more than once. */
  close(): Promise<void>;
}

/** Size of a WebAssembly memory page. */
const WASM_PAGE_BYTES = 64 * 1024;

/** The part of the WebAssembly global used here (the project's libs do not declare it). */
interface WasmMemoryConstructor {
  new (descriptor: { initial: number; maximum: number; shared: boolean }): { readonly buffer: SharedArrayBuffer };
}

/**
 * Shared memory starting on a page boundary, so that blocks can be written with `O_DIRECT` (which
 * wants aligned buffers). A plain `SharedArrayBuffer` this large comes from malloc, 16 bytes past
 * a page; a shared WebAssembly memory is page-aligned by construction. It reserves address space
 * (not RAM) beyond its size; where even that is refused (a tight `ulimit -v`), a plain
 * `SharedArrayBuffer` serves and the writes fall back to the page cache.
 */
function pageAlignedSharedMemory(bytes: number): SharedArrayBuffer {
  if (bytes % WASM_PAGE_BYTES === 0) {
    try {
      const pages = bytes / WASM_PAGE_BYTES;
      const { Memory } = (globalThis as unknown as { WebAssembly: { Memory: WasmMemoryConstructor } }).WebAssembly;
      return new Memory({ initial: pages, maximum: pages, shared: true }).buffer;
    } catch {
      // No room for a WebAssembly memory: unaligned memory still works, only slower to write.
    }
  }
  return new SharedArrayBuffer(bytes);
}

/** A ring of equally sized blocks in memory shareable with a worker thread. */
export class BlockRing {
  /** The blocks. */
  readonly blocks: readonly Buffer[];
  /** The memory behind them. */
  readonly memory: SharedArrayBuffer;
  /** Size of one block. */
  readonly blockSize: number;

  /**
   * @param count - number of blocks
   * @param blockSize - bytes per block
   */
  constructor(count: number, blockSize: number) {
    this.blockSize = blockSize;
    this.memory = pageAlignedSharedMemory(count * blockSize);
    this.blocks = Array.from({ length: count }, (_, i) => Buffer.from(this.memory, i * blockSize, blockSize));
  }
}

/** Hashes on the calling thread: right for small images, where a worker's start-up dominates. */
export class InlineBlockHasher implements BlockHasher {
  readonly #hash;
  readonly #ring: BlockRing;

  /**
   * @param algorithm - node:crypto algorithm
   * @param ring - the blocks
   */
  constructor(algorithm: string, ring: BlockRing) {
    this.#hash = createHash(algorithm);
    this.#ring = ring;
  }

  /** {@inheritDoc BlockHasher.update} */
  update(index: number, length: number): Promise<void> {
    this.#hash.update((this.#ring.blocks[index] as Buffer).subarray(0, length));
    return Promise.resolve();
  }

  /** {@inheritDoc BlockHasher.prefixDigest} */
  prefixDigest(): Promise<string> {
    return Promise.resolve(this.#hash.copy().digest('hex'));
  }

  /** {@inheritDoc BlockHasher.digest} */
  digest(): Promise<string> {
    return Promise.resolve(this.#hash.digest('hex'));
  }

  /** {@inheritDoc BlockHasher.close} */
  close(): Promise<void> {
    return Promise.resolve();
  }
}


// The worker: hashes slices of the shared ring in arrival order, answering each message in order.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hash = createHash(workerData.algorithm);
const memory = new Uint8Array(workerData.memory);
parentPort.on('message', (m) => {
  try {
    if (m.digest) { parentPort.postMessage({ value: hash.digest('hex') }); return; }
    if (m.prefix) { parentPort.postMessage({ value: hash.copy().digest('hex') }); return; }
    hash.update(memory.subarray(m.offset, m.offset + m.length));
    parentPort.postMessage({ value: '' });
  } catch (error) {
    parentPort.postMessage({ error: String(error && error.message || error) });
  }
});
`;

/** Hashes on a worker thread, reading blocks straight from the shared ring. */
export class WorkerBlockHasher implements BlockHasher {
  readonly #worker: Worker;
  readonly #ring: BlockRing;
  /** Callers waiting for the worker's answers, in the order of their messages. */
  readonly #replies: { resolve: (value: string) => void; reject: (err: Error) => void }[] = [];
  #failure: Error | undefined;
  #closed = false;

  /**
   * @param algorithm - node:crypto algorithm
   * @param ring - the blocks
   */
  constructor(algorithm: string, ring: BlockRing) {
    this.#ring = ring;
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { algorithm, memory: ring.memory } });
    this.#worker.on('message', (message: { value?: string; error?: string }) => {
      const reply = this.#replies.shift();
      if (message.error !== undefined) reply?.reject(new Error(message.error));
      else reply?.resolve(message.value ?? '');
    });
    this.#worker.on('error', (err) => {
      this.#fail(err);
    });
    this.#worker.on('exit', () => {
      if (!this.#closed) this.#fail(new Error('the hashing worker exited'));
    });
  }

  /** {@inheritDoc BlockHasher.update} */
  async update(index: number, length: number): Promise<void> {
    await this.#ask({ offset: index * this.#ring.blockSize, length });
  }

  /** {@inheritDoc BlockHasher.prefixDigest} */
  prefixDigest(): Promise<string> {
    return this.#ask({ prefix: true });
  }

  /** {@inheritDoc BlockHasher.digest} */
  digest(): Promise<string> {
    return this.#ask({ digest: true });
  }

  #ask(message: object): Promise<string> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#replies.push({ resolve, reject });
      this.#worker.postMessage(message);
    });
  }

  /** {@inheritDoc BlockHasher.close} */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#worker.terminate();
  }

  #fail(err: Error): void {
    this.#failure = err;
    for (const reply of this.#replies.splice(0)) reply.reject(err);
  }
}

/**
 * Hashes the first `bytes` bytes of `file` (a kept staging file) through `hasher` before any
 * download block, and resolves to their digest; the hash goes on from there. The file is read
 * into the ring's blocks on libuv's thread pool while the hasher (a worker thread, for large
 * images) hashes the previous block: the main thread only hands blocks over, and the re-hash runs
 * at the speed of the slower of the disk and the hash. The file is opened without following a
 * symbolic link.
 *
 * @throws when the file ends before `bytes`, when the hash fails, or `AbortedError`
 */
export async function primeFromFile(hasher: BlockHasher, ring: BlockRing, file: string, bytes: number, signal?: AbortSignal): Promise<string> {
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  const busy: Promise<void>[] = ring.blocks.map(() => Promise.resolve());
  try {
    let index = 0;
    for (let done = 0; done < bytes; ) {
      throwIfAborted(signal, 'Resuming a download');
      // The block is free once the hasher has acknowledged it.
      await busy[index];
      const block = ring.blocks[index] as Buffer;
      const want = Math.min(block.length, bytes - done);
      for (let got = 0; got < want; ) {
        const { bytesRead } = await handle.read(block, got, want - got, done + got);
        if (bytesRead === 0) throw new Error(`${file} ends at ${done + got} bytes, before the ${bytes} to resume from`);
        got += bytesRead;
      }
      const hashed = hasher.update(index, want);
      hashed.catch(() => undefined);
      busy[index] = hashed;
      done += want;
      index = (index + 1) % ring.blocks.length;
    }
    await Promise.all(busy);
  } finally {
    await handle.close();
  }
  return hasher.prefixDigest();
}
