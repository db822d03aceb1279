/**
 * Image id validation. Ids end up in file names, lock names and URLs, so they are checked before
 * anything touches the filesystem or the network.
 *
 * @module
 */
import { InvalidImageIdError } from './errors.js';

/** Longest accepted image id, in UTF-8 bytes. Glance ids are 36; 255 leaves room for other services. */
export const MAX_IMAGE_ID_BYTES = 255;

/**
 * Throws {@link InvalidImageIdError} unless `imageId` is a non-empty string of at most
 * {@link MAX_IMAGE_ID_BYTES} bytes, not `.`, without `/`, `\`, `..`, NUL, other control characters
 * or surrounding whitespace.
 */
export function assertValidImageId(imageId: unknown): asserts imageId is string {
  if (typeof imageId !== 'string') throw new InvalidImageIdError(imageId, 'it must be a string');
  if (imageId.length === 0) throw new InvalidImageIdError(imageId, 'it is empty');
  if (Buffer.byteLength(imageId) > MAX_IMAGE_ID_BYTES) {
    throw new InvalidImageIdError(imageId, `it is longer than ${MAX_IMAGE_ID_BYTES} bytes`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(imageId)) {
    throw new InvalidImageIdError(imageId, 'it contains NUL or another control character');
  }
  if (imageId.includes('/') || imageId.includes('\\')) {
    throw new InvalidImageIdError(imageId, 'it contains a path separator');
  }
  if (imageId.includes('..')) throw new InvalidImageIdError(imageId, "it contains '..'");
  // A URL path segment of '.' is a dot segment: `/v2/images/./file` is normalised to another
  // resource by URL parsers and proxies (found by the property test in test/reliability/).
  if (imageId === '.') throw new InvalidImageIdError(imageId, "it is '.'");
  if (imageId.trim() !== imageId) {
    throw new InvalidImageIdError(imageId, 'it starts or ends with white space');
  }
  if (!imageId.isWellFormed()) {
    throw new InvalidImageIdError(imageId, 'it is not well-formed Unicode');
  }
}
