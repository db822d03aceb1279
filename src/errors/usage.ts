/**
 * Errors about how the library is called: a bad option, a cancelled operation, an unsupported one.
 *
 * @module
 */
import { ImageCacheError } from './base.js';
import { showValue } from './show-value.js';

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
