/**
 * The typed error hierarchy. Every failure the library reports is an {@link ImageCacheError} with a
 * stable {@link ImageCacheError.code}; callers branch on `code` (or `instanceof`), never on message
 * text. Messages name the image and say what to do.
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
  | 'ERR_HOST_TIMEOUT';

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

/** The image service has no image with this id (HTTP 404). */
export class ImageNotFoundError extends ImageCacheError {
  /** @param imageId - the missing image */
  constructor(imageId: string, options: { cause?: unknown } = {}) {
    super(
      'ERR_IMAGE_NOT_FOUND',
      `Image ${imageId} was not found in the image service: check the id, and that the image was not deleted.`,
      { imageId, ...options },
    );
  }
}

/** The image exists but its status is not `active`, so it has no data to download yet. */
export class ImageNotActiveError extends ImageCacheError {
  /** The status the image service reported (`queued`, `saving`, `killed`, ...). */
  readonly status: string;
  /**
   * @param imageId - the image
   * @param status - its reported status
   */
  constructor(imageId: string, status: string) {
    super(
      'ERR_IMAGE_NOT_ACTIVE',
      `Image ${imageId} is '${status}', not 'active': wait until its upload finishes, or use another image.`,
      { imageId },
    );
    this.status = status;
  }
}

/** The image service refused the token (HTTP 401) or the image is not visible to it (HTTP 403). */
export class NotAuthorizedError extends ImageCacheError {
  /** The HTTP status: 401 or 403. */
  readonly statusCode: number;
  /**
   * @param imageId - the image
   * @param statusCode - 401 or 403
   */
  constructor(imageId: string, statusCode: number) {
    super(
      'ERR_NOT_AUTHORIZED',
      statusCode === 401
        ? `The image service rejected the token while reading image ${imageId} (HTTP 401): renew the token.`
        : `The image service denied access to image ${imageId} (HTTP 403): share the image with this project or use an admin token.`,
      { imageId },
    );
    this.statusCode = statusCode;
  }
}

/** The image service kept failing (5xx, resets, timeouts) after every allowed retry. */
export class ImageServiceUnavailableError extends ImageCacheError {
  /** How many attempts were made. */
  readonly attempts: number;
  /**
   * @param imageId - the image
   * @param attempts - attempts made
   * @param cause - the last failure
   */
  constructor(imageId: string, attempts: number, cause: unknown) {
    super(
      'ERR_IMAGE_SERVICE_UNAVAILABLE',
      `The image service failed ${attempts} times while reading image ${imageId}: check that it is up and reachable, then retry.`,
      { imageId, cause },
    );
    this.attempts = attempts;
  }
}

/** The downloaded bytes do not hash to the value the image service published. */
export class ChecksumMismatchError extends ImageCacheError {
  /** The hash algorithm used (`sha512`, `md5`, ...). */
  readonly algorithm: string;
  /** The digest the image service published. */
  readonly expected: string;
  /** The digest of what was received. */
  readonly actual: string;
  /**
   * @param imageId - the image
   * @param algorithm - hash algorithm
   * @param expected - published digest
   * @param actual - computed digest
   */
  constructor(imageId: string, algorithm: string, expected: string, actual: string) {
    super(
      'ERR_CHECKSUM_MISMATCH',
      `Image ${imageId} failed verification: ${algorithm} is ${actual}, the image service says ${expected}. Nothing was cached; retry, and if it persists the stored image is corrupt.`,
      { imageId },
    );
    this.algorithm = algorithm;
    this.expected = expected;
    this.actual = actual;
  }
}

/** The number of bytes received differs from the size the image service published. */
export class SizeMismatchError extends ImageCacheError {
  /** Bytes announced. */
  readonly expected: number;
  /** Bytes received. */
  readonly actual: number;
  /**
   * @param imageId - the image
   * @param expected - announced size
   * @param actual - received size
   */
  constructor(imageId: string, expected: number, actual: number) {
    super(
      'ERR_SIZE_MISMATCH',
      `Image ${imageId} should be ${expected} bytes but ${actual} arrived. Nothing was cached; retry the download.`,
      { imageId },
    );
    this.expected = expected;
    this.actual = actual;
  }
}

/** The image is larger than the configured `maxImageSizeBytes`. */
export class ImageTooLargeError extends ImageCacheError {
  /** The image's size in bytes (or the bytes seen so far when the size was not announced). */
  readonly size: number;
  /** The configured limit. */
  readonly limit: number;
  /**
   * @param imageId - the image
   * @param size - its size
   * @param limit - the limit
   */
  constructor(imageId: string, size: number, limit: number) {
    super(
      'ERR_IMAGE_TOO_LARGE',
      `Image ${imageId} is ${size} bytes, over the limit of ${limit} bytes (maxImageSizeBytes): raise the limit or use a smaller image.`,
      { imageId },
    );
    this.size = size;
    this.limit = limit;
  }
}

/** There is not enough free space for the image, even after reclaiming what may be reclaimed. */
export class DiskFullError extends ImageCacheError {
  /** Bytes needed. */
  readonly required: number;
  /** Bytes available. */
  readonly available: number;
  /** The directory or volume group that is full. */
  readonly location: string;
  /**
   * @param imageId - the image being cached
   * @param required - bytes needed
   * @param available - bytes free
   * @param location - what is full
   * @param cause - the ENOSPC, if one was hit
   */
  constructor(
    imageId: string | undefined,
    required: number,
    available: number,
    location: string,
    cause?: unknown,
  ) {
    super(
      'ERR_DISK_FULL',
      `Not enough space in ${location} for image ${imageId ?? '(unknown)'}: ${required} bytes needed, ${available} free. Free space or lower the cache size; nothing partial was left behind.`,
      { imageId, cause },
    );
    this.required = required;
    this.available = available;
    this.location = location;
  }
}

/** The image id is not acceptable: empty, too long, or containing `/`, `..`, NUL or control characters. */
export class InvalidImageIdError extends ImageCacheError {
  /** The rejected value, cut to 80 characters for safe logging. */
  readonly value: string;
  /**
   * @param value - the rejected id
   * @param reason - what is wrong with it
   */
  constructor(value: unknown, reason: string) {
    const shown = typeof value === 'string' ? value.slice(0, 80) : typeof value;
    super(
      'ERR_INVALID_IMAGE_ID',
      `Invalid image id ${JSON.stringify(shown)}: ${reason}. Pass the image's id as the image service shows it.`,
    );
    this.value = shown;
  }
}

/** An option has a bad value; the message names the option and the accepted range. */
export class InvalidConfigError extends ImageCacheError {
  /** The option's name. */
  readonly option: string;
  /**
   * @param option - option name
   * @param accepted - description of accepted values
   * @param value - the rejected value
   */
  constructor(option: string, accepted: string, value: unknown) {
    super(
      'ERR_INVALID_CONFIG',
      `Invalid option \`${option}\`: expected ${accepted}, got ${showValue(value)}.`,
    );
    this.option = option;
  }
}

/** A rejected value as JSON, cut to 80 characters for safe logging. */
function showValue(value: unknown): string {
  let shown: string;
  try {
    // JSON.stringify returns undefined for undefined, functions and symbols.
    shown = value === undefined || typeof value === 'function' || typeof value === 'symbol' ? String(value) : JSON.stringify(value);
  } catch {
    shown = String(value);
  }
  return shown.slice(0, 80);
}

/** The operation was cancelled through its `AbortSignal`. Nothing partial was left behind. */
export class AbortedError extends ImageCacheError {
  /**
   * @param what - what was aborted
   * @param imageId - the image, if any
   * @param cause - the signal's reason
   */
  constructor(what: string, imageId?: string, cause?: unknown) {
    super(
      'ERR_ABORTED',
      `${what}${imageId === undefined ? '' : ` of image ${imageId}`} was aborted; nothing partial was kept. Call again to retry.`,
      { imageId, cause },
    );
  }
}

/** The backend or the image does not support the requested operation. */
export class UnsupportedError extends ImageCacheError {
  /** What is not supported. */
  readonly operation: string;
  /**
   * @param operation - the unsupported operation
   * @param detail - why, and what to do
   * @param imageId - the image, if any
   */
  constructor(operation: string, detail: string, imageId?: string) {
    super(
      'ERR_UNSUPPORTED',
      `${operation}${imageId === undefined ? '' : ` (image ${imageId})`} is not supported: ${detail}`,
      { imageId },
    );
    this.operation = operation;
  }
}

/** A cross-process lock could not be taken within the allowed time. */
export class LockTimeoutError extends ImageCacheError {
  /** The lock's name. */
  readonly lockName: string;
  /**
   * @param lockName - the lock
   * @param waitedMs - how long we waited
   * @param imageId - the image, if any
   */
  constructor(lockName: string, waitedMs: number, imageId?: string) {
    super(
      'ERR_LOCK_TIMEOUT',
      `Lock ${lockName}${imageId === undefined ? '' : ` for image ${imageId}`} was still held by another process after ${waitedMs} ms: check for a hung process, or raise lockTimeoutMs.`,
      { imageId },
    );
    this.lockName = lockName;
  }
}

/** A disk image file is malformed or unsafe (bad qcow2 header, offsets past the end, ...). */
export class InvalidDiskImageError extends ImageCacheError {
  /** The file concerned. */
  readonly path: string;
  /**
   * @param path - the file
   * @param reason - what is wrong
   * @param imageId - the image, if any
   */
  constructor(path: string, reason: string, imageId?: string) {
    super(
      'ERR_INVALID_DISK_IMAGE',
      `Disk image ${path}${imageId === undefined ? '' : ` (image ${imageId})`} is invalid: ${reason}. Remove it and let it be rebuilt.`,
      { imageId },
    );
    this.path = path;
  }
}

/**
 * A path the cache needs cannot be used as it is: a symbolic link that does not resolve (its
 * target is missing, or the links loop), or something other than a directory where the cache
 * directory belongs. Raised, for instance, when the cache directory is a dangling link (a spawn
 * cannot create its base) and by a pass that meets an instance disk or instance directory whose
 * link does not resolve: the bases such a disk may use cannot be known, so the pass removes nothing.
 */
export class UnusablePathError extends ImageCacheError {
  /** The path concerned. */
  readonly path: string;
  /**
   * @param path - the path
   * @param reason - what is wrong with it
   * @param cause - the underlying error
   */
  constructor(path: string, reason: string, cause?: unknown) {
    super('ERR_UNUSABLE_PATH', `${path}: ${reason}; nothing was changed. Restore what should be there (the link's target, a directory) or remove it.`, { cause });
    this.path = path;
  }
}

/** The flavor's disk is smaller than the image's virtual size (Nova's `FlavorDiskSmallerThanImage`). */
export class FlavorDiskSmallerThanImageError extends ImageCacheError {
  /** Requested disk size in bytes. */
  readonly flavorSize: number;
  /** The image's virtual size in bytes. */
  readonly imageSize: number;
  /**
   * @param imageId - the image
   * @param flavorSize - requested size
   * @param imageSize - image virtual size
   */
  constructor(imageId: string, flavorSize: number, imageSize: number) {
    super(
      'ERR_FLAVOR_DISK_SMALLER_THAN_IMAGE',
      `The requested disk of ${flavorSize} bytes is smaller than image ${imageId}'s virtual size of ${imageSize} bytes: use a flavor with a larger disk.`,
      { imageId },
    );
    this.flavorSize = flavorSize;
    this.imageSize = imageSize;
  }
}

/** The cache entry is in use by an instance (or pinned) and cannot be removed. */
export class ImageInUseError extends ImageCacheError {
  /** Why the entry is considered in use. */
  readonly reason: string;
  /**
   * @param imageId - the image
   * @param reason - who uses it
   */
  constructor(imageId: string, reason: string) {
    super(
      'ERR_IMAGE_IN_USE',
      `Image ${imageId} is in use (${reason}) and was not removed: delete the instances using it first.`,
      { imageId },
    );
    this.reason = reason;
  }
}

/** Why a volume-group operation failed: the name is taken, the disk is missing, or anything else. */
export type VolumeGroupFailure = 'name-taken' | 'not-found' | 'failed';

/**
 * A volume-group operation (create, upload, clone, rename, touch, delete a disk) failed. Volume
 * group implementations throw it with `name-taken` when a create, clone or rename target exists and
 * with `not-found` when the disk is missing; the localdisk backend wraps any other failure in it
 * (`failed`) and retries those a bounded number of times.
 */
export class VolumeGroupError extends ImageCacheError {
  /** What failed. */
  readonly reason: VolumeGroupFailure;
  /** The operation: `create`, `upload`, `clone`, `rename`, `touch`, `delete` or `list`. */
  readonly operation: string;
  /** The disk concerned (empty for `list`). */
  readonly disk: string;
  /**
   * @param operation - the operation
   * @param disk - the disk's name
   * @param reason - the failure class
   * @param options - the image and the underlying error
   */
  constructor(operation: string, disk: string, reason: VolumeGroupFailure, options: ImageCacheErrorOptions = {}) {
    const remedy =
      reason === 'name-taken'
        ? 'a disk with that name already exists; remove it or choose another name'
        : reason === 'not-found'
          ? 'the disk does not exist (removed meanwhile?); retry the operation'
          : `check the volume group and its server (VIOS), then retry${options.cause instanceof Error ? ` (${options.cause.message})` : ''}`;
    super(
      'ERR_VOLUME_GROUP',
      `Volume group ${operation}${disk === '' ? '' : ` of disk ${disk}`}${options.imageId === undefined ? '' : ` for image ${options.imageId}`} failed: ${remedy}.`,
      options,
    );
    this.reason = reason;
    this.operation = operation;
    this.disk = disk;
  }
}

/**
 * A pre-cache request is malformed: no images, an image listed twice, an unknown field, a host
 * named twice. Nova answers these with HTTP 400 before any compute host is contacted.
 */
export class InvalidPrecacheRequestError extends ImageCacheError {
  /**
   * @param problem - what is wrong, and what to do
   * @param imageId - the image concerned, if one is
   */
  constructor(problem: string, imageId?: string) {
    super('ERR_INVALID_REQUEST', `Invalid pre-cache request: ${problem}`, { imageId });
  }
}

/**
 * The image service described the image with a value that cannot be true (a negative or
 * fractional size, a size that is not a number). Nothing was downloaded: trusting it would mean
 * verifying the download against nothing.
 */
export class InvalidImageMetadataError extends ImageCacheError {
  /** The metadata field at fault (`size`, ...). */
  readonly field: string;
  /**
   * @param imageId - the image
   * @param field - the field at fault
   * @param value - what the service said
   * @param expected - what the field must be
   */
  constructor(imageId: string, field: string, value: unknown, expected: string) {
    super(
      'ERR_INVALID_IMAGE_METADATA',
      `The image service describes image ${imageId} with ${field} ${showValue(value)}, which must be ${expected}: nothing was downloaded; correct the image's metadata in the image service.`,
      { imageId },
    );
    this.field = field;
  }
}

/**
 * Caching an image failed with an error that is not one of ours (a raw file-system error while
 * touching, for instance). The original is the `cause`.
 */
export class CacheImageFailedError extends ImageCacheError {
  /**
   * @param imageId - the image
   * @param cause - what failed
   */
  constructor(imageId: string, cause: unknown) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    super(
      'ERR_CACHE_FAILED',
      `Caching image ${imageId} failed: ${detail}. Check the cache directory (permissions, free space), then retry.`,
      { imageId, cause },
    );
  }
}

/** A pre-cache host agent refused the request's credentials (HTTP 401 or 403). */
export class HostUnauthorizedError extends ImageCacheError {
  /** The host. */
  readonly host: string;
  /** 401 or 403. */
  readonly statusCode: number;
  /**
   * @param host - the host whose agent refused
   * @param statusCode - 401 or 403
   */
  constructor(host: string, statusCode: number) {
    super(
      'ERR_HOST_UNAUTHORIZED',
      `The pre-cache agent of host ${host} refused the request (HTTP ${statusCode}): give the client the token the agent was started with.`,
    );
    this.host = host;
    this.statusCode = statusCode;
  }
}

/**
 * A host could not be asked, or did not answer properly: connection refused or reset, an HTTP 5xx,
 * a malformed answer, no agent at the configured address.
 */
export class HostUnavailableError extends ImageCacheError {
  /** The host. */
  readonly host: string;
  /** The HTTP status when one was received, else null. */
  readonly statusCode: number | null;
  /**
   * @param host - the host
   * @param detail - what went wrong
   * @param options - the HTTP status and the underlying error, when known
   */
  constructor(host: string, detail: string, options: { statusCode?: number | null | undefined; cause?: unknown } = {}) {
    super(
      'ERR_HOST_UNAVAILABLE',
      `Host ${host} could not pre-cache: ${detail}. Check that its agent runs and is reachable, then retry (pre-caching is idempotent).`,
      { cause: options.cause },
    );
    this.host = host;
    this.statusCode = options.statusCode ?? null;
  }
}

/** A host did not finish its pre-cache call within the per-host timeout. */
export class HostTimeoutError extends ImageCacheError {
  /** The host. */
  readonly host: string;
  /** The timeout, ms. */
  readonly timeoutMs: number;
  /**
   * @param host - the host
   * @param timeoutMs - the timeout that expired
   */
  constructor(host: string, timeoutMs: number) {
    super(
      'ERR_HOST_TIMEOUT',
      `Host ${host} did not finish pre-caching within ${timeoutMs} ms: raise the timeout, or cap fewer hosts' bandwidth, then retry (images already cached count as existing).`,
    );
    this.host = host;
    this.timeoutMs = timeoutMs;
  }
}

/**
 * An error a remote host reported (through its pre-cache agent), rebuilt from its JSON form: the
 * `code` and message are the remote ones, so callers branch on `code` as for a local error.
 */
export class RemoteImageCacheError extends ImageCacheError {
  /** The host that reported it. */
  readonly host: string;
  /** The class name on the remote side, e.g. `ChecksumMismatchError`. */
  readonly remoteName: string;
  /**
   * @param host - the reporting host
   * @param json - the error as the host wrote it
   */
  constructor(host: string, json: ImageCacheErrorJSON) {
    super(json.code, json.message, { imageId: json.imageId });
    this.host = host;
    this.remoteName = json.name;
  }

  /** The JSON form, with the remote class name (so a summary reads the same wherever it was made). */
  override toJSON(): ImageCacheErrorJSON {
    return { ...super.toJSON(), name: this.remoteName };
  }
}
