// The stable code of an ImageCacheError, or undefined for anything else: what most assertions on
// a rejection compare.
import { isImageCacheError } from '../../src/errors.js';

/** `err`'s code when it is an `ImageCacheError`; undefined otherwise. */
export function code(err: unknown): string | undefined {
  return isImageCacheError(err) ? err.code : undefined;
}
