/**
 * Which digest to check a download against: the image's multihash (`os_hash_algo` /
 * `os_hash_value`) when it has one this runtime can compute, else the legacy md5 `checksum`.
 * Only one algorithm is hashed: computing two costs their sum.
 *
 * @module
 */
import { getHashes } from 'node:crypto';
import { InvalidImageMetadataError, UnsupportedError } from '../errors.js';
import type { ImageInfo } from '../source/image-source.js';

/** The digest a download must match. */
export interface ExpectedDigest {
  /** Node crypto algorithm name. */
  readonly algorithm: string;
  /** Lower-case hex digest. */
  readonly value: string;
}

const available = new Set(getHashes());
const HEX = /^[0-9a-f]+$/i;

/**
 * Throws {@link InvalidImageMetadataError} unless `size` is a whole number of bytes a download can
 * be checked against (a safe integer from 0 up). An impossible size from the image service is an
 * error, not an unknown size.
 */
export function assertImageSize(imageId: string, size: unknown): asserts size is number {
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new InvalidImageMetadataError(imageId, 'size', size, 'a whole number of bytes from 0 up');
  }
}

/**
 * Chooses the digest to verify `info` against.
 *
 * @returns the digest, or null when the service published none (only the size is checked then)
 * @throws {@link UnsupportedError} when `requireChecksum` is set and no usable digest exists, or
 *   when the only published digest uses an algorithm this runtime cannot compute
 */
export function expectedDigestOf(info: ImageInfo, requireChecksum: boolean): ExpectedDigest | null {
  const algo = info.hashAlgo?.toLowerCase() ?? null;
  if (algo !== null && info.hashValue !== null && available.has(algo) && HEX.test(info.hashValue)) {
    return { algorithm: algo, value: info.hashValue.toLowerCase() };
  }
  if (info.checksum !== null && /^[0-9a-f]{32}$/i.test(info.checksum)) {
    return { algorithm: 'md5', value: info.checksum.toLowerCase() };
  }
  if (algo !== null && info.hashValue !== null) {
    throw new UnsupportedError(
      `Verifying image ${info.id} with '${algo}'`,
      'this runtime cannot compute that hash and the image has no md5 checksum; re-upload it with a supported os_hash_algo (sha512, sha256).',
      info.id,
    );
  }
  if (requireChecksum) {
    throw new UnsupportedError(
      `Caching image ${info.id} without a checksum`,
      'the image service published no checksum and requireChecksum is set; add a checksum to the image or unset requireChecksum.',
      info.id,
    );
  }
  return null;
}
