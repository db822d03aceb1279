/**
 * Hashing of download blocks, inline or on a worker thread.
 *
 * On a 2-core compute host the main thread is busy with the socket and with handing writes to the
 * thread pool; hashing a large image there (md5 ~600 MiB/s, sha512 ~700 MiB/s) costs a large share
 * of the download time. A worker thread hashes blocks that live in shared memory, in parallel with
 * the network and the disk, and only tiny messages cross threads: no copies.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

/** Hashes blocks of a {@link BlockRing} in order. */
export interface BlockHasher {
  /** Hashes `length` bytes of ring block `index`; resolves once the block may be reused. */
  update(index: number, length: number): Promise<void>;
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

  /** {@inheritDoc BlockHasher.digest} */
  digest(): Promise<string> {
    return Promise.resolve(this.#hash.digest('hex'));
  }

  /** {@inheritDoc BlockHasher.close} */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

// The worker: hashes slices of the shared ring in arrival order, acknowledging each.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hash = createHash(workerData.algorithm);
const memory = new Uint8Array(workerData.memory);
parentPort.on('message', (m) => {
  if (m.digest) { parentPort.postMessage({ digest: hash.digest('hex') }); return; }
  hash.update(memory.subarray(m.offset, m.offset + m.length));
  parentPort.postMessage({ ack: true });
});
`;

/** Hashes on a worker thread, reading blocks straight from the shared ring. */
export class WorkerBlockHasher implements BlockHasher {
  readonly #worker: Worker;
  readonly #ring: BlockRing;
  readonly #acks: { resolve: () => void; reject: (err: Error) => void }[] = [];
  #onDigest: ((digest: string) => void) | undefined;
  #failure: Error | undefined;
  #closed = false;

  /**
   * @param algorithm - node:crypto algorithm
   * @param ring - the blocks
   */
  constructor(algorithm: string, ring: BlockRing) {
    this.#ring = ring;
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { algorithm, memory: ring.memory } });
    this.#worker.on('message', (message: { ack?: true; digest?: string }) => {
      if (message.digest !== undefined) this.#onDigest?.(message.digest);
      else this.#acks.shift()?.resolve();
    });
    this.#worker.on('error', (err) => {
      this.#fail(err);
    });
    this.#worker.on('exit', () => {
      if (!this.#closed) this.#fail(new Error('the hashing worker exited'));
    });
  }

  /** {@inheritDoc BlockHasher.update} */
  update(index: number, length: number): Promise<void> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#acks.push({ resolve, reject });
      this.#worker.postMessage({ offset: index * this.#ring.blockSize, length });
    });
  }

  /** {@inheritDoc BlockHasher.digest} */
  digest(): Promise<string> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise((resolve) => {
      this.#onDigest = resolve;
      this.#worker.postMessage({ digest: true });
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
    for (const ack of this.#acks.splice(0)) ack.reject(err);
  }
}
