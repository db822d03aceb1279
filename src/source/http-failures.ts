/**
 * How HTTP failures are classified for the image service client, whichever transport moved the
 * bytes: what is retried (5xx, 429, resets, refused connections, timeouts), what maps to which
 * typed error, and how a `Content-Range` reads.
 *
 * @module
 */
import { ImageNotFoundError, ImageServiceUnavailableError, NotAuthorizedError, isImageCacheError } from '../errors.js';

/** Socket-level failures that say nothing about the image, only about this connection. */
const RETRYABLE_CODES: ReadonlySet<string> = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ERR_CONNECT_TIMEOUT',
  'ERR_IDLE_TIMEOUT',
  'ERR_HEAD_TIMEOUT',
  'ERR_METADATA_TIMEOUT',
  'ERR_TRANSFER_TOO_SLOW',
]);

/** An HTTP answer that is not the one asked for; 5xx and 429 are worth retrying. */
export class HttpStatusError extends Error {
  readonly statusCode: number;
  constructor(statusCode: number, url: string) {
    super(`GET ${url} answered HTTP ${statusCode}`);
    this.name = 'HttpStatusError';
    this.statusCode = statusCode;
  }
}

/** Codes of the failures this client detects itself rather than the socket. */
export type TransportErrorCode =
  | 'ERR_CONNECT_TIMEOUT'
  | 'ERR_IDLE_TIMEOUT'
  /** No final response head within `headTimeoutMs`, however many bytes came. */
  | 'ERR_HEAD_TIMEOUT'
  /** A metadata request not answered in full within `metadataTimeoutMs`. */
  | 'ERR_METADATA_TIMEOUT'
  /** A body slower than `minBytesPerSecond` over a `minSpeedWindowMs` window. */
  | 'ERR_TRANSFER_TOO_SLOW'
  | 'ERR_STREAM_PREMATURE_CLOSE'
  /** The body of an error status framed in a way the raw client does not decode (never read). */
  | 'ERR_BODY_NOT_READ'
  /** A response head larger than the bound: not retried, as node:http's `HPE_HEADER_OVERFLOW`. */
  | 'ERR_HTTP_HEADER_OVERFLOW';

/** A connection or protocol problem detected by this client rather than by the socket itself. */
export class TransportError extends Error {
  readonly code: TransportErrorCode;
  constructor(code: TransportErrorCode, message: string) {
    super(message);
    this.name = 'TransportError';
    this.code = code;
  }
}

/** True when another attempt may succeed where `error` failed. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof HttpStatusError) return error.statusCode >= 500 || error.statusCode === 429;
  if (isImageCacheError(error)) return false;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && RETRYABLE_CODES.has(code);
}

/** A short description of a failure for the debug log. */
export function describeFailure(error: unknown): string {
  if (error instanceof HttpStatusError) return `HTTP ${error.statusCode}`;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return code;
  return error instanceof Error ? error.message : String(error);
}

/** The typed error of a final HTTP status, or the status error itself when it may be retried. */
export function statusFailure(imageId: string, statusCode: number, url: string, attempt: number): Error {
  if (statusCode === 404) return new ImageNotFoundError(imageId);
  if (statusCode === 401 || statusCode === 403) return new NotAuthorizedError(imageId, statusCode);
  const error = new HttpStatusError(statusCode, url);
  return isRetryable(error) ? error : new ImageServiceUnavailableError(imageId, attempt, error);
}

/** `bytes <first>-<last>/<total|*>` or `bytes * /<total>`; undefined when unparseable. */
export function parseContentRange(header: string | undefined): { first: number | null; total: number | null } | undefined {
  const match = /^bytes\s+(?:(\d+)-\d+|\*)\/(\d+|\*)\s*$/i.exec(header ?? '');
  if (match === null) return undefined;
  const [, first, total] = match;
  return {
    first: first === undefined ? null : Number(first),
    total: total === undefined || total === '*' ? null : Number(total),
  };
}
