/**
 * Errors of pre-caching across hosts: a bad request, a failed cache, a host that refuses, fails or
 * times out, a pre-cache window that closed, and an error a remote host reported.
 *
 * @module
 */
import { ImageCacheError, type ImageCacheErrorJSON } from './base.js';

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

/**
 * A pre-cache window closed before a host finished. It is the abort reason the host's signal
 * carries when the fan-out pauses it at the window's end (its download keeps its staging for the
 * next window), and the error of a host reported `deferred` when no later window came.
 */
export class PrecacheWindowClosedError extends ImageCacheError {
  /** When the window closed, ms since the epoch; null when no window was left at all. */
  readonly windowEnd: number | null;
  /**
   * @param windowEnd - when the window closed (ms since the epoch), or null when there was none left
   * @param host - the host paused or deferred, when the error is about one
   */
  constructor(windowEnd: number | null, host?: string) {
    const when = windowEnd === null ? 'no pre-cache window is left' : `the pre-cache window closed at ${new Date(windowEnd).toISOString()}`;
    super(
      'ERR_PRECACHE_WINDOW_CLOSED',
      `${host === undefined ? 'Pre-caching' : `Pre-caching on host ${host}`} was paused: ${when}. It resumes in the next window; ask again with a later window otherwise (images already cached count as existing).`,
    );
    this.windowEnd = windowEnd;
  }
}
