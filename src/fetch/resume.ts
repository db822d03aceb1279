/**
 * Resumable downloads: a download interrupted by an abort, a transport failure, a crash or a
 * restart keeps its staging file with a sidecar (resume-sidecar.ts); the next download of the
 * same image, under the image's lock, adopts it and fetches only the rest.
 *
 * ```
 * download(image)
 *   ├ kept staging for it? (kept-staging.ts: same image, size and digest, a sane file)
 *   │   └ re-hash its counted prefix from disk (on the hash worker for large images)
 *   │      ├ matches the sidecar's prefix digest → cut the file there, read from that offset (Range)
 *   │      └ differs → remove it, start from zero
 *   ├ every CHECKPOINT_BYTES or CHECKPOINT_MS: fdatasync, then the sidecar (beside the writes)
 *   └ fails: aborted or the source failed (transport) → keep, recording what is written;
 *            checksum, size, too large, disk full, anything else → discard
 * ```
 *
 * Safety never rests on the sidecar: the full digest is checked at the end as for any download,
 * so a final name still always means a complete, verified image. The sidecar only decides how
 * much of the image is fetched again. Images without a published digest are not resumed.
 *
 * @module
 */
import { AbortedError, ImageServiceUnavailableError, isImageCacheError } from '../errors.js';
import { createLogger } from '../log.js';
import { primeFromFile } from './block-hasher.js';
import type { BlockHasher, BlockRing } from './block-hasher.js';
import type { ResumeKey, ResumePoint } from './resume-sidecar.js';
import type { StagingResume } from './staging.js';

const log = createLogger('fetch');

/**
 * Written bytes after which a checkpoint is recorded. A checkpoint (an `fdatasync` and a sidecar
 * written and fsynced) takes a few ms to tens of ms on the thread pool beside the writes, and one
 * due while another runs is skipped: at loopback speed they follow each other every 8-30 MiB, so
 * a SIGKILL loses about that plus the ring. No measurable cost in bench/download.
 */
export const CHECKPOINT_BYTES = 8 * 1024 * 1024;

/** Time after which a checkpoint is recorded, whatever was written since (a slow link), ms. */
export const CHECKPOINT_MS = 2000;

/** What {@link resumeKept} settled on. */
export interface ResumeStart {
  /** Bytes kept and verified: the download continues from here. */
  readonly offset: number;
  /** The hasher to go on with (primed with the kept prefix when `offset` > 0). */
  readonly hasher: BlockHasher;
}

/**
 * Adopts the staging kept for `key`'s image, if any: re-hashes its counted prefix with `hasher`
 * (read through `ring`'s blocks) and compares it with the sidecar's. On a match the sink continues it; otherwise it is removed
 * and a fresh hasher from `makeHasher` starts from zero.
 */
export async function resumeKept(
  resume: StagingResume,
  key: ResumeKey,
  hasher: BlockHasher,
  ring: BlockRing,
  makeHasher: () => BlockHasher,
  signal: AbortSignal | undefined,
): Promise<ResumeStart> {
  const kept = await resume.findKept(key);
  if (kept === null) return { offset: 0, hasher };
  const started = performance.now();
  let prefix: string | null;
  try {
    prefix = await primeFromFile(hasher, ring, kept.path, kept.bytes, signal);
  } catch (err) {
    if (signal?.aborted === true) throw err;
    log('re-hashing the kept prefix of %s failed: %O', kept.path, err);
    prefix = null;
  }
  if (prefix === kept.prefixDigest) {
    await resume.adopt(kept);
    log('resuming image %s at %d bytes (prefix re-hashed in %d ms)', key.imageId, kept.bytes, Math.round(performance.now() - started));
    return { offset: kept.bytes, hasher };
  }
  log('kept staging %s of image %s does not match its sidecar: starting from zero', kept.path, key.imageId);
  await resume.drop(kept);
  await hasher.close();
  return { offset: 0, hasher: makeHasher() };
}

/** Failures whose staging is never kept. */
const DISCARDING_CODES: ReadonlySet<string> = new Set(['ERR_CHECKSUM_MISMATCH', 'ERR_SIZE_MISMATCH', 'ERR_IMAGE_TOO_LARGE', 'ERR_DISK_FULL']);

/**
 * True when a download that failed with `err` should keep its staging for a later resume: it was
 * aborted, or its source failed to deliver the rest (`ImageServiceUnavailableError`, or an
 * untyped failure of a source's stream). Verification failures, a too large image, a full disk
 * and every other typed error discard it.
 */
export function keepsStaging(err: unknown, signal: AbortSignal | undefined, fromSource: boolean): boolean {
  // These discard even when an abort came at the same time: the bytes are wrong, or in the way.
  if (isImageCacheError(err) && DISCARDING_CODES.has(err.code)) return false;
  if (signal?.aborted === true || err instanceof AbortedError) return true;
  if (!fromSource) return false;
  return err instanceof ImageServiceUnavailableError || !isImageCacheError(err);
}

/**
 * Records checkpoints of a running download beside it: at most one at a time, every
 * {@link CHECKPOINT_BYTES} written or {@link CHECKPOINT_MS}, without ever holding up the pipeline
 * (one due while another runs is skipped; the next block tries again).
 */
export class Checkpointer {
  readonly #resume: StagingResume;
  readonly #hasher: BlockHasher;
  #lastBytes: number;
  #lastMs = performance.now();
  #running: Promise<void> | undefined;

  /**
   * @param resume - the sink's resume side
   * @param hasher - the download's hasher
   * @param offset - bytes already recorded (the adopted prefix)
   */
  constructor(resume: StagingResume, hasher: BlockHasher, offset: number) {
    this.#resume = resume;
    this.#hasher = hasher;
    this.#lastBytes = offset;
  }

  /**
   * Called right after the block ending at `bytes` was handed to the hasher and queued for
   * writing (`written` settles with that write), before the next block is.
   */
  afterBlock(bytes: number, written: Promise<unknown>): void {
    if (this.#running !== undefined) return;
    if (bytes - this.#lastBytes < CHECKPOINT_BYTES && performance.now() - this.#lastMs < CHECKPOINT_MS) return;
    // Asked now, so the digest covers exactly the blocks up to `bytes`.
    const prefix = this.#hasher.prefixDigest();
    this.#lastBytes = bytes;
    this.#lastMs = performance.now();
    const running = Promise.all([prefix, written])
      .then(([prefixDigest]) => this.#resume.checkpoint({ bytes, prefixDigest }))
      .catch((err: unknown) => {
        log('checkpoint at %d bytes skipped: %O', bytes, err);
      })
      .finally(() => {
        this.#running = undefined;
      });
    this.#running = running;
  }

  /** Waits for the checkpoint being recorded, if any. */
  async settle(): Promise<void> {
    await this.#running;
  }
}

/**
 * What to record when keeping a failed download: the written bytes and their digest when the
 * pipeline stopped cleanly, or null to let the last checkpoint stand.
 */
export async function finalPoint(hasher: BlockHasher | null, written: number, clean: boolean): Promise<ResumePoint | null> {
  if (!clean || hasher === null || written === 0) return null;
  try {
    return { bytes: written, prefixDigest: await hasher.prefixDigest() };
  } catch (err) {
    // The hash was finalised (a failure after the last byte) or its worker failed.
    log('no digest of the %d bytes written: %O', written, err);
    return null;
  }
}
