/**
 * Errors about an image and the service it comes from: missing, not active, refused, unavailable,
 * or bytes that do not match what the service published.
 *
 * @module
 */
import { ImageCacheError } from './base.js';
import { showValue } from './show-value.js';

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
