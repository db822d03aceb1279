/**
 * Image bytes the fake serves and hashes: buffers, or {@link GeneratedContent} computed on the fly
 * from one seeded 1 MiB block, so large images need no memory.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import type { FakeImageContent, GeneratedContent } from './fake-glance-types.js';

/** Generated content is built from blocks of this many bytes. */
export const BLOCK_SIZE = 1024 * 1024;
/** Odd, so consecutive blocks get distinct rotations for 2^20 blocks (1 TiB). */
const ROTATION_STEP = 4099;
/** Hashing yields to the event loop this often, so a 1 GiB digest does not freeze the server. */
const HASH_YIELD_BYTES = 16 * 1024 * 1024;

/** An image's md5 and multihash digests, hex. */
export interface Digests {
  readonly md5: string;
  /** Null when the image publishes no multihash. */
  readonly hash: string | null;
}

/** Doubled blocks (the block followed by itself) so that any rotation is one contiguous slice. */
const doubledBlocks = new Map<number, Buffer>();
let zeroBlock: Buffer | undefined;

function doubledBlock(seed: number): Buffer {
  let block = doubledBlocks.get(seed);
  if (block !== undefined) return block;
  block = Buffer.allocUnsafeSlow(2 * BLOCK_SIZE);
  // mulberry32: tiny, fast and good enough to make every byte position distinguishable.
  let state = seed >>> 0;
  for (let i = 0; i < BLOCK_SIZE; i += 4) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    block.writeUInt32LE((t ^ (t >>> 14)) >>> 0, i);
  }
  block.copy(block, BLOCK_SIZE, 0, BLOCK_SIZE);
  // A handful of seeds is all tests use; do not let a seed-per-test loop grow without bound.
  if (doubledBlocks.size >= 16) doubledBlocks.clear();
  doubledBlocks.set(seed, block);
  return block;
}

export function isGenerated(content: FakeImageContent): content is GeneratedContent {
  return !(content instanceof Uint8Array);
}

export function contentSize(content: FakeImageContent): number {
  return isGenerated(content) ? content.size : content.length;
}

function checkRange(size: number, start: number, end: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > size) {
    throw new RangeError(`byte range [${start}, ${end}) is not within 0..${size}`);
  }
}

/**
 * The bytes `[start, end)` of generated content, as zero-copy slices of at most 1 MiB (views of a
 * shared block: do not modify them).
 */
export function* generatedImageChunks(spec: GeneratedContent, start = 0, end = spec.size): Generator<Uint8Array> {
  checkRange(spec.size, start, end);
  const source = spec.zero === true ? (zeroBlock ??= Buffer.alloc(BLOCK_SIZE)) : doubledBlock(spec.seed ?? 1);
  let position = start;
  while (position < end) {
    const block = Math.floor(position / BLOCK_SIZE);
    const within = position - block * BLOCK_SIZE;
    const length = Math.min(BLOCK_SIZE - within, end - position);
    const from = spec.zero === true ? within : ((block * ROTATION_STEP) % BLOCK_SIZE) + within;
    yield source.subarray(from, from + length);
    position += length;
  }
}

/** The bytes `[start, end)` of generated content, copied into one new buffer. */
export function generatedImageBytes(spec: GeneratedContent, start = 0, end = spec.size): Buffer {
  checkRange(spec.size, start, end);
  return Buffer.concat([...generatedImageChunks(spec, start, end)], end - start);
}

/** Slices of at most 1 MiB of any content, zero-copy. */
function* contentChunks(content: FakeImageContent, start: number, end: number): Generator<Uint8Array> {
  if (isGenerated(content)) {
    yield* generatedImageChunks(content, start, end);
    return;
  }
  for (let position = start; position < end; position += BLOCK_SIZE) {
    yield content.subarray(position, Math.min(position + BLOCK_SIZE, end));
  }
}

/** What a file response sends: the content, cut or zero-padded to `length` (`wrongLength`). */
export function* servedChunks(content: FakeImageContent, length: number, start: number, end: number): Generator<Uint8Array> {
  const size = contentSize(content);
  if (start < size) yield* contentChunks(content, start, Math.min(end, size));
  if (end > size) yield* generatedImageChunks({ size: length, zero: true }, Math.max(start, size), end);
}

export async function computeDigests(content: FakeImageContent, algorithm: string | null): Promise<Digests> {
  const md5 = createHash('md5');
  const hash = algorithm === null ? undefined : createHash(algorithm);
  let sinceYield = 0;
  for (const chunk of contentChunks(content, 0, contentSize(content))) {
    md5.update(chunk);
    hash?.update(chunk);
    sinceYield += chunk.length;
    if (sinceYield >= HASH_YIELD_BYTES) {
      sinceYield = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
  return { md5: md5.digest('hex'), hash: hash?.digest('hex') ?? null };
}
