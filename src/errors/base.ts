/**
 * The base of the typed error hierarchy: {@link ImageCacheError}, its stable codes, its JSON form,
 * and the cross-realm brand behind {@link isImageCacheError}.
 *
 * @module
 */

/** Every stable error code this library uses. */
export type ImageCacheErrorCode =
  | 'ERR_IMAGE_NOT_FOUND'
  | 'ERR_IMAGE_NOT_ACTIVE'
  | 'ERR_NOT_AUTHORIZED'
  | 'ERR_IMAGE_SERVICE_UNAVAILABLE'
  | 'ERR_CHECKSUM_MISMATCH'
  | 'ERR_SIZE_MISMATCH'
  | 'ERR_IMAGE_TOO_LARGE'
  | 'ERR_DISK_FULL'
  | 'ERR_INVALID_IMAGE_ID'
  | 'ERR_INVALID_CONFIG'
  | 'ERR_ABORTED'
  | 'ERR_UNSUPPORTED'
  | 'ERR_LOCK_TIMEOUT'
  | 'ERR_INVALID_DISK_IMAGE'
  | 'ERR_FLAVOR_DISK_SMALLER_THAN_IMAGE'
  | 'ERR_IMAGE_IN_USE'
  | 'ERR_VOLUME_GROUP'
  | 'ERR_INVALID_IMAGE_METADATA'
  | 'ERR_UNUSABLE_PATH'
  // Pre-caching (src/precache/)
  | 'ERR_INVALID_REQUEST'
  | 'ERR_CACHE_FAILED'
  | 'ERR_HOST_UNAUTHORIZED'
  | 'ERR_HOST_UNAVAILABLE'
  | 'ERR_HOST_TIMEOUT'
  // Site peers (src/peer/)
  | 'ERR_PEER_UNAVAILABLE'
  | 'ERR_PRECACHE_WINDOW_CLOSED';

const brand = Symbol.for('virt-imagecache.ImageCacheError');

/** The JSON form of an {@link ImageCacheError} (what `JSON.stringify` writes for one). */
export interface ImageCacheErrorJSON {
  /** The class name, e.g. `ImageNotFoundError`. */
  readonly name: string;
  /** The stable code. */
  readonly code: ImageCacheErrorCode;
  /** The message. */
  readonly message: string;
  /** The image concerned, if any. */
  readonly imageId?: string | undefined;
}

/** Options accepted by every error constructor. */
export interface ImageCacheErrorOptions {
  /** The image the error is about, when there is one. */
  readonly imageId?: string | undefined;
  /** The underlying error. */
  readonly cause?: unknown;
}

/**
 * Base class of every error the library throws on purpose.
 *
 * @example
 * ```ts
 * try {
 *   await manager.cacheImage(id);
 * } catch (err) {
 *   if (isImageCacheError(err) && err.code === 'ERR_IMAGE_NOT_FOUND') { ... }
 * }
 * ```
 */
export class ImageCacheError extends Error {
  /** Stable, branchable identifier of the failure. */
  readonly code: ImageCacheErrorCode;
  /** The image concerned, if any. */
  readonly imageId: string | undefined;

  /**
   * @param code - stable code
   * @param message - human-readable message naming the image and the remedy
   * @param options - image id and cause
   */
  constructor(code: ImageCacheErrorCode, message: string, options: ImageCacheErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.imageId = options.imageId;
    Object.defineProperty(this, brand, { value: true });
  }

  /** The class name, so `err.name` and stack traces say which failure this is. */
  override get name(): string {
    return this.constructor.name;
  }

  /**
   * Name, code, message and image: errors travel inside reports (pre-cache summaries, host agent
   * answers) that are written as JSON, where a bare `Error` would become `{}`.
   */
  toJSON(): ImageCacheErrorJSON {
    return this.imageId === undefined
      ? { name: this.name, code: this.code, message: this.message }
      : { name: this.name, code: this.code, message: this.message, imageId: this.imageId };
  }
}

/**
 * True for any {@link ImageCacheError}, even one created by another copy of this library
 * (a second install in node_modules, another realm).
 */
export function isImageCacheError(value: unknown): value is ImageCacheError {
  return typeof value === 'object' && value !== null && brand in value;
}
