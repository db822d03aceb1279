/**
 * The download loop: read an image from its source into a staging sink, hashing in the same
 * pass, and publish it only when the byte count and the digest are right.
 *
 * Throughput: bytes are read straight into 4 MiB blocks of a small ring (a source with
 * `openReader` reads the socket into them; any other source's stream chunks are copied in). Each
 * full block is hashed (on a worker thread for large images) while it is written by libuv's
 * thread pool and the next block fills from the socket, so the cost is max(network, hash, write),
 * not their sum; hashing large blocks is also markedly cheaper than small ones. Memory stays
 * bounded at the ring (16 MiB).
 *
 * @module
 */
import { throwIfAborted } from '../abort.js';
import { AbortedError, ImageTooLargeError, SizeMismatchError, isImageCacheError } from '../errors.js';
import { passVouch } from '../image-id.js';
import type { BytesFrom } from '../peer/types.js';
import { openImageReader } from '../source/image-reader.js';
import type { ImageReader } from '../source/image-reader.js';
import type { ImageInfo, ImageSource } from '../source/image-source.js';
import { BlockRing, InlineBlockHasher, WorkerBlockHasher } from './block-hasher.js';
import type { BlockHasher } from './block-hasher.js';
import { verifyAndPublish } from './publish.js';
import type { DownloadResult } from './publish.js';
import { Checkpointer, finalPoint, keepsStaging, resumeKept } from './resume.js';
import type { StagingSink } from './staging.js';
import { Throttle } from './throttle.js';
import { expectedDigestOf } from './verifier.js';
import type { ExpectedDigest } from './verifier.js';

/** Size of the blocks handed to the hash and to the disk. */
export const BLOCK_SIZE = 4 * 1024 * 1024;

/** Blocks in the ring: one filling, the others being hashed and written. Memory: 16 MiB. */
const RING_BLOCKS = 4;

/** Largest read while a speed cap is set, so the cap paces the flow smoothly rather than per block. */
const THROTTLED_READ_BYTES = 64 * 1024;

/** Images at least this large are hashed on a worker thread. */
export const WORKER_HASH_MIN_BYTES = 32 * 1024 * 1024;

/** Progress of one download. */
export interface DownloadProgress {
  /** The image being downloaded. */
  readonly imageId: string;
  /** Bytes received and written so far. */
  readonly bytesDone: number;
  /** Total bytes, when the image service announced the size. */
  readonly totalBytes: number | null;
}

/** Called as a download progresses (once per block, and once at the end). */
export type ProgressListener = (progress: DownloadProgress) => void;

/** What to download and under which limits. */
export interface DownloadRequest {
  /** The image. */
  readonly imageId: string;
  /** Its description (size and digests are checked against it). */
  readonly info: ImageInfo;
  /** Where the bytes come from. */
  readonly source: ImageSource;
  /**
   * Where the bytes go. Committed on success; on failure discarded, or kept for a later resume
   * when the sink offers it (see fetch/resume.ts).
   */
  readonly sink: StagingSink;
  /** Cancels the download. */
  readonly signal?: AbortSignal | undefined;
  /** Progress callback. */
  readonly onProgress?: ProgressListener | undefined;
  /** Speed cap, bytes per second (Infinity: none). */
  readonly bytesPerSecond?: number | undefined;
  /** Size limit, bytes (Infinity: none). */
  readonly maxImageSizeBytes?: number | undefined;
  /** Fail when no digest is published. */
  readonly requireChecksum?: boolean | undefined;
}

// Kept importable from here, where it lived before every fill shared one publish path.
export type { DownloadResult } from './publish.js';

/** Where a download's pipeline stands: what a failed download keeps for resume. */
interface PumpState {
  /** Bytes handed to the sink and the hash (the prefix a resume may record). */
  flushed: number;
  /** False once a write or a hash of those bytes failed: their count is then not to be trusted. */
  clean: boolean;
  /** True when the failure came from the source (opening it, or reading from it). */
  fromSource: boolean;
}

/** The hasher of `expected`'s algorithm: on a worker thread for large images. */
function hasherFor(expected: ExpectedDigest, size: number | null, ring: BlockRing): BlockHasher {
  // A worker's start-up (~tens of ms) only pays off on large images.
  return (size ?? Number.POSITIVE_INFINITY) >= WORKER_HASH_MIN_BYTES
    ? new WorkerBlockHasher(expected.algorithm, ring)
    : new InlineBlockHasher(expected.algorithm, ring);
}

/**
 * Downloads, verifies and publishes one image (the publish: `verifyAndPublish`). Nothing ever
 * appears under the final name unless verified, and a failure is a typed {@link ImageCacheError}
 * where the cause is known. When the sink offers resume and a digest is published, staging kept by
 * an earlier download of the image is adopted (only the rest is fetched), and an aborted or
 * transport-failed download keeps its staging for the next one; any other failure discards it.
 */
export async function downloadToSink(request: DownloadRequest): Promise<DownloadResult> {
  const { imageId, info, sink, signal } = request;
  let reader: ImageReader | undefined;
  let hasher: BlockHasher | null = null;
  const resume = sink.resume;
  let checkpoints: Checkpointer | undefined;
  const state: PumpState = { flushed: 0, clean: true, fromSource: false };
  try {
    const limit = request.maxImageSizeBytes ?? Number.POSITIVE_INFINITY;
    if (info.size !== null && info.size > limit) throw new ImageTooLargeError(imageId, info.size, limit);
    const expected = expectedDigestOf(info, request.requireChecksum ?? false);
    const ring = new BlockRing(RING_BLOCKS, BLOCK_SIZE);
    if (expected !== null) hasher = hasherFor(expected, info.size, ring);
    let offset = 0;
    if (resume !== undefined && expected !== null && hasher !== null) {
      const key = { imageId, size: info.size, algorithm: expected.algorithm, digest: expected.value };
      ({ offset, hasher } = await resumeKept(resume, key, hasher, ring, () => hasherFor(expected, info.size, ring), signal));
      checkpoints = new Checkpointer(resume, hasher, offset);
      state.flushed = offset;
    }
    throwIfAborted(signal, 'Download', imageId);
    state.fromSource = true;
    reader = await openImageReader(request.source, imageId, passVouch(request, imageId, { signal, offset }));
    state.fromSource = false;
    const bytes = await pump(reader, hasher, ring, request, limit, state, checkpoints);
    await checkpoints?.settle();
    const hashed = hasher;
    const result = await verifyAndPublish(
      // The hash ran beside the writes: a digest is expected exactly when there is a hasher.
      { bytes, digest: () => (hashed as BlockHasher).digest(), publish: () => sink.commit() },
      { imageId, size: info.size, digest: expected },
      { signal, operation: 'Download' },
    );
    // The kept prefix was fetched by an earlier call: only what came over the wire now counts.
    const bytesFrom = bytesFromOf(reader, bytes - offset);
    return offset > 0 ? { ...result, bytesFrom, resumedFromBytes: offset } : { ...result, bytesFrom };
  } catch (err) {
    reader?.destroy();
    await checkpoints?.settle();
    const kept =
      resume !== undefined &&
      checkpoints !== undefined &&
      keepsStaging(err, signal, state.fromSource) &&
      (await resume.keep(await finalPoint(hasher, state.flushed, state.clean)).catch(() => false));
    if (!kept) await sink.discard();
    if (signal?.aborted === true && !isImageCacheError(err)) throw new AbortedError('Download', imageId, signal.reason);
    throw err;
  } finally {
    await hasher?.close();
  }
}

/** What `reader` says about its origins; a reader that does not say read from the image service. */
function bytesFromOf(reader: ImageReader, bytes: number): readonly BytesFrom[] {
  if (reader.bytesFrom !== undefined) return reader.bytesFrom();
  return bytes === 0 ? [] : [{ from: 'glance', bytes }];
}

async function pump(
  reader: ImageReader,
  hasher: BlockHasher | null,
  ring: BlockRing,
  request: DownloadRequest,
  limit: number,
  state: PumpState,
  checkpoints: Checkpointer | undefined,
): Promise<number> {
  const { imageId, info, sink, signal, onProgress } = request;
  const throttle = new Throttle(request.bytesPerSecond ?? Number.POSITIVE_INFINITY);
  const busy: Promise<unknown>[] = ring.blocks.map(() => Promise.resolve());
  let writes: Promise<void> = Promise.resolve();
  let current = 0;
  let fill = 0;
  // A resumed download starts after the kept prefix.
  let total = state.flushed;

  const flush = async (): Promise<void> => {
    if (fill === 0) return;
    const index = current;
    const block = (ring.blocks[index] as Buffer).subarray(0, fill);
    // Writes go in order (the file position advances with each); hashing runs beside them.
    writes = writes.then(() => sink.write(block));
    const done = Promise.all([hasher?.update(index, fill), writes]);
    done.catch(() => undefined);
    busy[index] = done;
    state.flushed += fill;
    fill = 0;
    checkpoints?.afterBlock(state.flushed, writes);
    current = (current + 1) % ring.blocks.length;
    await busy[current];
    onProgress?.({ imageId, bytesDone: state.flushed, totalBytes: info.size });
  };

  try {
    for (;;) {
      const room = ring.blockSize - fill;
      const block = ring.blocks[current] as Buffer;
      state.fromSource = true;
      const n = await reader.read(block.subarray(fill, fill + (throttle.enabled ? Math.min(room, THROTTLED_READ_BYTES) : room)));
      state.fromSource = false;
      if (n === 0) break;
      throwIfAborted(signal, 'Download', imageId);
      total += n;
      if (total > limit) throw new ImageTooLargeError(imageId, total, limit);
      if (info.size !== null && total > info.size) throw new SizeMismatchError(imageId, info.size, total);
      fill += n;
      if (fill === ring.blockSize) await flush();
      await throttle.consume(n, signal);
    }
    await flush();
    await Promise.all(busy);
  } catch (err) {
    // What a kept staging records must be on disk and in the hash: let the blocks in flight land.
    const settled = await Promise.allSettled([...busy, writes]);
    state.clean = settled.every((outcome) => outcome.status === 'fulfilled');
    throw err;
  }
  return total;
}
