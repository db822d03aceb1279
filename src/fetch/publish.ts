/**
 * The one publish path of every fill: a download, a link or reflink from an image store, and any
 * fill to come (a peer's copy). Whatever wrote the staged bytes, they get the final name only
 * once their size and digest match what the image service published, and then in the durable
 * order of `durable.ts` (fsync the file, rename or link it, fsync the directory), so a final name
 * always means a complete, verified image.
 *
 * @module
 */
import { throwIfAborted } from '../abort.js';
import { ChecksumMismatchError, SizeMismatchError } from '../errors.js';
import type { BytesFrom } from '../peer/types.js';
import type { ExpectedDigest } from './verifier.js';

/** What a successful fill verified. */
export interface DownloadResult {
  /** Bytes written. */
  readonly bytes: number;
  /** Algorithm verified, or null when the service published no digest. */
  readonly algorithm: string | null;
  /** Hex digest of the bytes, or null when nothing was hashed. */
  readonly digest: string | null;
  /**
   * Where the bytes this fill fetched came from, per origin (`glance`, `peer:<host>`); empty for a
   * local fill (a link or a read of a local copy).
   */
  readonly bytesFrom: readonly BytesFrom[];
  /**
   * Bytes an interrupted earlier download had kept (re-hashed, not fetched again) when this one
   * resumed it; absent when it started from zero.
   */
  readonly resumedFromBytes?: number | undefined;
}

/** What the staged bytes must be: the image service's size and digest. */
export interface ExpectedImage {
  /** The image (for the errors). */
  readonly imageId: string;
  /** Its size in bytes; null when the service did not say. */
  readonly size: number | null;
  /** The digest to match; null to check the size only. */
  readonly digest: ExpectedDigest | null;
}

/** Bytes a fill staged under a temporary name, measured and ready to publish. */
export interface StagedImage {
  /** How many bytes were staged. */
  readonly bytes: number;
  /** The staged bytes' hex digest in `algorithm`; called only when a digest is expected. */
  digest(algorithm: string): Promise<string>;
  /**
   * Gives the staged bytes their final name, durably (a staging sink's `commit`, or `publishFile`
   * for a staged file). On failure the staging is left for the fill to discard.
   */
  publish(): Promise<void>;
}

/** Options of {@link verifyAndPublish}. */
export interface VerifyAndPublishOptions {
  /** Cancels the fill: checked last, before the final name changes. */
  readonly signal?: AbortSignal | undefined;
  /** What the fill is, for an `AbortedError` (`Download`, `Linking`). */
  readonly operation: string;
}

/**
 * Publishes `staged` once it is the image `expected` describes: the size first (free), then the
 * digest (a hash the fill computed on the way, or a read of the staged file), then the signal.
 *
 * @throws `SizeMismatchError`, `ChecksumMismatchError`, `AbortedError`, and what the publish
 *   throws; the staging is then the caller's to discard
 * @returns what was verified (with no `bytesFrom`: the fill says where its bytes came from)
 */
export async function verifyAndPublish(
  staged: StagedImage,
  expected: ExpectedImage,
  options: VerifyAndPublishOptions,
): Promise<DownloadResult> {
  const { imageId, size } = expected;
  if (size !== null && staged.bytes !== size) throw new SizeMismatchError(imageId, size, staged.bytes);
  let digest: string | null = null;
  if (expected.digest !== null) {
    const { algorithm, value } = expected.digest;
    digest = await staged.digest(algorithm);
    if (digest !== value) throw new ChecksumMismatchError(imageId, algorithm, value, digest);
  }
  throwIfAborted(options.signal, options.operation, imageId);
  await staged.publish();
  return { bytes: staged.bytes, algorithm: expected.digest?.algorithm ?? null, digest, bytesFrom: [] };
}
