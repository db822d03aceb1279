/**
 * Image id validation. Ids end up in file names, lock names and URLs, so they are checked before
 * anything touches the filesystem or the network.
 *
 * Once per call: every public entry point checks the id it is given, but a call that another entry
 * point makes on the way (a spawn caching its image, the fetch describing it) passes the id on as
 * already checked. Inside a module the type says so (an `ImageId`); across a public method the
 * caller vouches for the options object it passes (`vouchFor`), bound to that very id. Only this
 * module can read a vouch, so a user's direct call is always checked.
 *
 * @module
 */
import { channel } from 'node:diagnostics_channel';
import { InvalidImageIdError } from './errors.js';

/** Published on (`{ imageId }`) at each check, for tools and tests that count them. */
const checks = channel('virt-imagecache:image-id-check');

/** Longest accepted image id, in UTF-8 bytes. Glance ids are 36; 255 leaves room for other services. */
export const MAX_IMAGE_ID_BYTES = 255;

/**
 * Throws {@link InvalidImageIdError} unless `imageId` is a non-empty string of at most
 * {@link MAX_IMAGE_ID_BYTES} bytes, not `.`, without `/`, `\`, `..`, NUL, other control characters
 * or surrounding whitespace.
 *
 * Each check is published on the diagnostics channel `virt-imagecache:image-id-check`.
 */
export function assertValidImageId(imageId: unknown): asserts imageId is string {
  if (checks.hasSubscribers) checks.publish({ imageId });
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

declare const checked: unique symbol;

/**
 * An image id that passed {@link assertValidImageId}: code that takes one checks it no more.
 *
 * @internal
 */
export type ImageId = string & { readonly [checked]: true };

/** Options objects of internal calls, each with the id its caller had checked. */
const vouched = new WeakMap<object, string>();

/**
 * The check at a public entry point: {@link assertValidImageId}, skipped when `options` are those
 * of an internal call vouched for this very id (`vouchFor`).
 *
 * @internal
 */
export function checkImageId(imageId: unknown, options?: object): asserts imageId is ImageId {
  if (options !== undefined && typeof imageId === 'string' && vouched.get(options) === imageId) return;
  assertValidImageId(imageId);
}

/**
 * Marks `options` as those of a call on `imageId` that its caller already checked: the callee's
 * `checkImageId` lets it through. Returns `options`.
 *
 * @internal
 */
export function vouchFor<T extends object>(imageId: ImageId, options: T): T {
  vouched.set(options, imageId);
  return options;
}

/**
 * `to`, vouched for `imageId` when `from` was: a callee passing its caller's check on with options
 * of its own. Returns `to`.
 *
 * @internal
 */
export function passVouch<T extends object>(from: object | undefined, imageId: string, to: T): T {
  if (from !== undefined && vouched.get(from) === imageId) vouched.set(to, imageId);
  return to;
}
