/**
 * {@link GlanceImageSource}: the {@link ImageSource} that speaks Glance v2 over plain node:http /
 * node:https. Transient failures (5xx, 429, resets, refused connections, connect and idle timeouts)
 * are retried with jittered backoff; a download interrupted mid-body resumes with a `Range`
 * request, or restarts and skips what was already delivered when the server ignores `Range`, so
 * the caller always sees one continuous byte stream.
 *
 * @module
 */
import { Agent, request as httpRequest } from 'node:http';
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders, RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Readable } from 'node:stream';
import {
  AbortedError,
  ImageNotActiveError,
  ImageNotFoundError,
  ImageServiceUnavailableError,
  InvalidConfigError,
  NotAuthorizedError,
  isImageCacheError,
} from '../errors.js';
import { assertImageSize } from '../fetch/verifier.js';
import { assertValidImageId } from '../image-id.js';
import { createLogger } from '../log.js';
import type { ImageInfo, ImageSource, OpenImageOptions, SourceCallOptions } from './image-source.js';
import { backoffDelay, withRetry } from './retry.js';
import type { BackoffOptions } from './retry.js';

const log = createLogger('source');

/** Options of {@link GlanceImageSource}. */
export interface GlanceImageSourceOptions {
  /** Base URL of the image service, `http://` or `https://`, e.g. `http://127.0.0.1:9292`. */
  readonly endpoint: string;
  /**
   * Keystone token sent as `X-Auth-Token`. A function is called before every request, so a
   * renewed token is picked up by retries and long downloads.
   */
  readonly token?: string | (() => string | Promise<string>) | undefined;
  /** Time allowed to establish the TCP connection, ms. Default 10000. */
  readonly connectTimeoutMs?: number | undefined;
  /** Longest socket inactivity while waiting for headers or body bytes, ms. Default 30000. */
  readonly idleTimeoutMs?: number | undefined;
  /** Retries after the first attempt (so `retries + 1` attempts). Default 5. */
  readonly retries?: number | undefined;
  /** Cap of the first backoff delay, ms (full jitter, doubling per retry). Default 200. */
  readonly backoffBaseMs?: number | undefined;
  /** Largest backoff delay, ms. Default 5000. */
  readonly backoffMaxMs?: number | undefined;
  /** Uniform random source in [0, 1) for the jitter; injectable for tests. Default `Math.random`. */
  readonly random?: (() => number) | undefined;
  /** Connection pool to use; an `https.Agent` for an `https` endpoint. Default: node's global agent. */
  readonly agent?: Agent | undefined;
  /** CA certificate(s), PEM, to trust for an `https` endpoint. */
  readonly ca?: string | Buffer | undefined;
}

const DEFAULTS = {
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  retries: 5,
  backoffBaseMs: 200,
  backoffMaxMs: 5_000,
} as const;

const KNOWN_OPTIONS: ReadonlySet<string> = new Set([
  'endpoint',
  'token',
  ...Object.keys(DEFAULTS),
  'random',
  'agent',
  'ca',
]);

/** node's timers silently turn anything above this into 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Metadata documents are small; anything bigger is not Glance talking. */
const MAX_METADATA_BYTES = 4 * 1024 * 1024;

/** Large enough that a 1 GiB download is a few thousand pushes, small enough to bound memory. */
const DOWNLOAD_HIGH_WATER_MARK = 1024 * 1024;

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
]);

interface ResolvedOptions {
  readonly base: string;
  readonly secure: boolean;
  readonly token: GlanceImageSourceOptions['token'];
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly retries: number;
  readonly backoff: BackoffOptions;
  readonly agent: Agent | undefined;
  readonly ca: string | Buffer | undefined;
}

/** An HTTP answer that is not the one asked for; 5xx and 429 are worth retrying. */
class HttpStatusError extends Error {
  readonly statusCode: number;
  constructor(statusCode: number, url: string) {
    super(`GET ${url} answered HTTP ${statusCode}`);
    this.name = 'HttpStatusError';
    this.statusCode = statusCode;
  }
}

/** A connection problem detected by this module rather than by the socket itself. */
class TransportError extends Error {
  readonly code: 'ERR_CONNECT_TIMEOUT' | 'ERR_IDLE_TIMEOUT' | 'ERR_STREAM_PREMATURE_CLOSE';
  constructor(code: TransportError['code'], message: string) {
    super(message);
    this.name = 'TransportError';
    this.code = code;
  }
}

function isRetryable(error: unknown): boolean {
  if (error instanceof HttpStatusError) return error.statusCode >= 500 || error.statusCode === 429;
  if (isImageCacheError(error)) return false;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && RETRYABLE_CODES.has(code);
}

function describeFailure(error: unknown): string {
  if (error instanceof HttpStatusError) return `HTTP ${error.statusCode}`;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return code;
  return error instanceof Error ? error.message : String(error);
}

/** The typed error of a final HTTP status, or the status error itself when it may be retried. */
function statusFailure(imageId: string, statusCode: number, url: string, attempt: number): Error {
  if (statusCode === 404) return new ImageNotFoundError(imageId);
  if (statusCode === 401 || statusCode === 403) return new NotAuthorizedError(imageId, statusCode);
  const error = new HttpStatusError(statusCode, url);
  return isRetryable(error) ? error : new ImageServiceUnavailableError(imageId, attempt, error);
}

function checkTimer(name: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > MAX_TIMER_MS) {
    throw new InvalidConfigError(name, `an integer from ${min} to ${MAX_TIMER_MS}`, value);
  }
  return value;
}

function resolveOptions(options: GlanceImageSourceOptions): ResolvedOptions {
  // Checked at run time too: JavaScript callers get a typed error rather than a TypeError.
  const raw: unknown = options;
  if (typeof raw !== 'object' || raw === null) {
    throw new InvalidConfigError('options', 'an object with at least `endpoint`', raw);
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) {
      throw new InvalidConfigError(key, `one of the known options (${[...KNOWN_OPTIONS].join(', ')})`, (options as unknown as Record<string, unknown>)[key]);
    }
  }
  const { endpoint, token, random, agent, ca } = options;
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new InvalidConfigError('endpoint', 'an http:// or https:// URL', endpoint);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '') {
    throw new InvalidConfigError('endpoint', 'an http:// or https:// URL without query or fragment', endpoint);
  }
  if (token !== undefined && typeof token !== 'function' && (typeof token !== 'string' || token === '')) {
    throw new InvalidConfigError('token', 'a non-empty string or a function returning one', token);
  }
  if (random !== undefined && typeof random !== 'function') {
    throw new InvalidConfigError('random', 'a function returning a number in [0, 1)', random);
  }
  if (agent !== undefined && !(agent instanceof Agent)) {
    throw new InvalidConfigError('agent', 'an http.Agent (an https.Agent for https)', String(agent));
  }
  if (ca !== undefined) {
    if (typeof ca !== 'string' && !Buffer.isBuffer(ca)) {
      throw new InvalidConfigError('ca', 'a PEM string or Buffer', typeof ca);
    }
    if (url.protocol !== 'https:') {
      throw new InvalidConfigError('ca', 'to be set only with an https:// endpoint', '(set)');
    }
  }
  const backoffBaseMs = checkTimer('backoffBaseMs', options.backoffBaseMs ?? DEFAULTS.backoffBaseMs, 0);
  const backoffMaxMs = checkTimer('backoffMaxMs', options.backoffMaxMs ?? DEFAULTS.backoffMaxMs, backoffBaseMs);
  const retries = options.retries ?? DEFAULTS.retries;
  if (typeof retries !== 'number' || !Number.isSafeInteger(retries) || retries < 0 || retries > 1000) {
    throw new InvalidConfigError('retries', 'an integer from 0 to 1000', retries);
  }
  return {
    base: url.href.replace(/\/+$/, ''),
    secure: url.protocol === 'https:',
    token,
    connectTimeoutMs: checkTimer('connectTimeoutMs', options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs, 1),
    idleTimeoutMs: checkTimer('idleTimeoutMs', options.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs, 1),
    retries,
    backoff: { baseMs: backoffBaseMs, maxMs: backoffMaxMs, random },
    agent,
    ca,
  };
}

function optionalNumber(value: unknown): number | null {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : null;
}

function optionalString(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

/**
 * Maps a Glance v2 image document to {@link ImageInfo}; undefined when it is not one.
 *
 * @throws `InvalidImageMetadataError` when the document gives a size that cannot be true: the
 *   download is checked against it, so it is never read as "unknown"
 */
function toImageInfo(imageId: string, document: unknown): ImageInfo | undefined {
  if (typeof document !== 'object' || document === null || Array.isArray(document)) return undefined;
  const doc = document as Record<string, unknown>;
  if (typeof doc.status !== 'string') return undefined;
  if (doc.size != null) assertImageSize(imageId, doc.size);
  return {
    id: typeof doc.id === 'string' ? doc.id : imageId,
    status: doc.status,
    size: optionalNumber(doc.size),
    checksum: optionalString(doc.checksum),
    hashAlgo: optionalString(doc.os_hash_algo),
    hashValue: optionalString(doc.os_hash_value),
    diskFormat: optionalString(doc.disk_format),
    containerFormat: optionalString(doc.container_format),
    name: optionalString(doc.name),
    virtualSize: optionalNumber(doc.virtual_size),
  };
}

/** `bytes <first>-<last>/<total|*>` or `bytes * /<total>`; undefined when unparseable. */
function parseContentRange(header: string | undefined): { first: number | null; total: number | null } | undefined {
  const match = /^bytes\s+(?:(\d+)-\d+|\*)\/(\d+|\*)\s*$/i.exec(header ?? '');
  if (match === null) return undefined;
  const [, first, total] = match;
  return {
    first: first === undefined ? null : Number(first),
    total: total === undefined || total === '*' ? null : Number(total),
  };
}

/**
 * One GET with the connect and idle timeouts armed. The first failure wins: it rejects
 * {@link HttpGet.response} if the headers have not arrived yet, or is reported once to the
 * {@link HttpGet.onFailure} listener afterwards; later echoes of the same teardown are ignored.
 */
class HttpGet {
  readonly url: string;
  readonly response: Promise<IncomingMessage>;
  readonly #req: ClientRequest;
  #failure: Error | undefined;
  #closed = false;
  /** Whether the failure was already handed to someone (the response promise or the listener). */
  #reported = false;
  #listener: ((error: Error) => void) | undefined;
  #rejectResponse: ((error: Error) => void) | undefined;

  constructor(url: URL, headers: OutgoingHttpHeaders, options: ResolvedOptions) {
    this.url = url.href;
    let resolveResponse!: (res: IncomingMessage) => void;
    this.response = new Promise<IncomingMessage>((resolve, reject) => {
      resolveResponse = resolve;
      this.#rejectResponse = reject;
    });
    const requestOptions: RequestOptions & { ca?: string | Buffer } = { method: 'GET', headers };
    if (options.agent !== undefined) requestOptions.agent = options.agent;
    if (options.ca !== undefined) requestOptions.ca = options.ca;
    const req = (options.secure ? httpsRequest : httpRequest)(url, requestOptions);
    this.#req = req;
    req.on('socket', (socket) => {
      // A pooled keep-alive socket is already connected; only a fresh one needs the guard.
      if (!socket.connecting) return;
      const timer = setTimeout(() => {
        this.fail(new TransportError('ERR_CONNECT_TIMEOUT', `no connection to ${this.url} within ${options.connectTimeoutMs} ms`));
      }, options.connectTimeoutMs);
      const clear = (): void => {
        clearTimeout(timer);
      };
      socket.once('connect', clear);
      req.once('close', clear);
    });
    // Node arms this after connect and keeps it on the socket while the body streams, so one
    // socket timer covers both the wait for headers and every gap between body chunks.
    req.setTimeout(options.idleTimeoutMs, () => {
      this.fail(new TransportError('ERR_IDLE_TIMEOUT', `no data from ${this.url} for ${options.idleTimeoutMs} ms`));
    });
    req.on('error', (error) => {
      this.fail(error);
    });
    req.on('response', (res) => {
      this.#rejectResponse = undefined;
      res.on('error', (error) => {
        this.fail(error);
      });
      res.on('close', () => {
        if (!res.complete) {
          this.fail(new TransportError('ERR_STREAM_PREMATURE_CLOSE', `${this.url} closed the connection mid-body`));
        }
      });
      resolveResponse(res);
    });
    req.end();
  }

  /** Tears the exchange down because of `error`, which is reported unless another came first. */
  fail(error: Error): void {
    if (this.#failure !== undefined || this.#closed) return;
    this.#failure = error;
    this.#req.destroy();
    const reject = this.#rejectResponse;
    this.#rejectResponse = undefined;
    if (reject !== undefined) {
      this.#reported = true;
      reject(error);
    } else if (this.#listener !== undefined) {
      this.#reported = true;
      this.#listener(error);
    }
  }

  /** Tears the exchange down without reporting anything (the caller has moved on). */
  close(): void {
    this.#closed = true;
    this.#req.destroy();
  }

  /** Registers the listener of failures after the headers arrived; reports one that already happened. */
  onFailure(listener: (error: Error) => void): void {
    this.#listener = listener;
    if (this.#failure !== undefined && !this.#reported) {
      this.#reported = true;
      listener(this.#failure);
    }
  }

  /** Reads the whole body, at most `limit` bytes. */
  async body(res: IncomingMessage, limit: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let length = 0;
      this.onFailure(reject);
      res.on('data', (chunk: Buffer) => {
        length += chunk.length;
        if (length > limit) {
          this.close();
          reject(new TransportError('ERR_STREAM_PREMATURE_CLOSE', `${this.url} sent more than ${limit} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => {
        if (res.complete) resolve(Buffer.concat(chunks, length));
      });
    });
  }
}

/** Where a {@link GlanceDownload} gets its requests from. */
interface DownloadContext {
  readonly imageId: string;
  readonly offset: number;
  readonly signal: AbortSignal | undefined;
  readonly options: ResolvedOptions;
  readonly start: (headers: OutgoingHttpHeaders) => Promise<HttpGet>;
}

/**
 * The stream {@link GlanceImageSource.open} returns. It pipes the current response through with
 * backpressure (pausing the response when the consumer is full) and, when a response dies, asks
 * for the rest with `Range`; bytes the server re-sends (a 200 to a ranged request, or a range
 * that starts early) are dropped before they are pushed.
 */
class GlanceDownload extends Readable {
  readonly #ctx: DownloadContext;
  #current: HttpGet | undefined;
  #currentResponse: IncomingMessage | undefined;
  #attempt = 0;
  /** Bytes pushed so far, after `offset`. */
  #delivered = 0;
  /** Bytes of the current response to drop because they were delivered already. */
  #skip = 0;
  /** Failed attempts since bytes last arrived: a long download may survive many resets. */
  #failures = 0;
  #deliveredAtLastFailure = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #ready: { resolve: () => void; reject: (error: unknown) => void } | undefined;
  readonly #onAbort: () => void;

  constructor(ctx: DownloadContext) {
    super({ highWaterMark: DOWNLOAD_HIGH_WATER_MARK, objectMode: false });
    this.#ctx = ctx;
    this.#onAbort = () => {
      this.#giveUp(new AbortedError('Download', ctx.imageId, ctx.signal?.reason));
    };
    ctx.signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  /** Resolves once the first response is usable; rejects with the typed error otherwise. */
  begin(): Promise<void> {
    const ready = new Promise<void>((resolve, reject) => {
      this.#ready = { resolve, reject };
    });
    void this.#request();
    return ready;
  }

  override _read(): void {
    this.#currentResponse?.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#ctx.signal?.removeEventListener('abort', this.#onAbort);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#current?.close();
    this.#current = undefined;
    this.#currentResponse = undefined;
    callback(error);
  }

  async #request(): Promise<void> {
    const attempt = ++this.#attempt;
    const position = this.#ctx.offset + this.#delivered;
    const headers: OutgoingHttpHeaders = position > 0 ? { range: `bytes=${position}-` } : {};
    let get: HttpGet;
    let res: IncomingMessage;
    try {
      get = await this.#ctx.start(headers);
    } catch (error) {
      // The token callback failed: not the image service's fault, so not retried.
      if (attempt === this.#attempt) this.#giveUp(error);
      return;
    }
    if (this.#stale(attempt)) {
      get.close();
      return;
    }
    this.#current = get;
    try {
      res = await get.response;
    } catch (error) {
      this.#failed(attempt, error);
      return;
    }
    if (this.#stale(attempt)) return;
    const status = res.statusCode ?? 0;
    if (status === 200 || status === 206) {
      this.#accept(attempt, get, res, position);
      return;
    }
    res.resume();
    if (status === 416 && position > 0) {
      // Asked for the bytes after the last one: the image ends exactly here.
      const range = parseContentRange(res.headers['content-range']);
      if (range?.total === position) {
        this.#current = undefined;
        this.#markReady();
        this.push(null);
        return;
      }
    }
    if (status === 204) {
      // Glance answers 204 for an image without data (still queued or saving).
      this.#giveUp(new ImageNotActiveError(this.#ctx.imageId, 'queued'));
      return;
    }
    this.#failed(attempt, statusFailure(this.#ctx.imageId, status, get.url, this.#failures + 1));
  }

  #accept(attempt: number, get: HttpGet, res: IncomingMessage, position: number): void {
    let total: number | null = null;
    if (res.statusCode === 206) {
      const range = parseContentRange(res.headers['content-range']);
      const first = range?.first ?? null;
      total = range?.total ?? null;
      if (first === null || first > position) {
        res.resume();
        this.#giveUp(
          new ImageServiceUnavailableError(
            this.#ctx.imageId,
            this.#failures + 1,
            new Error(`${get.url} answered a range starting at ${first ?? '?'} to a request for ${position}`),
          ),
        );
        return;
      }
      this.#skip = position - first;
    } else {
      if (position > 0) log('%s ignored Range: restarting image %s and skipping %d bytes', get.url, this.#ctx.imageId, position);
      this.#skip = position;
    }
    this.#currentResponse = res;
    res.on('data', (chunk: Buffer) => {
      if (this.#skip > 0) {
        if (chunk.length <= this.#skip) {
          this.#skip -= chunk.length;
          return;
        }
        chunk = chunk.subarray(this.#skip);
        this.#skip = 0;
      }
      this.#delivered += chunk.length;
      if (!this.push(chunk)) res.pause();
    });
    res.on('end', () => {
      if (attempt !== this.#attempt || !res.complete) return;
      const reached = this.#ctx.offset + this.#delivered;
      if (total !== null && reached < total) {
        // A server may answer an open-ended range with only part of it; ask for the rest.
        this.#failed(attempt, new TransportError('ERR_STREAM_PREMATURE_CLOSE', `${get.url} sent a range ending at ${reached} of ${total}`));
        return;
      }
      this.#current = undefined;
      this.#currentResponse = undefined;
      this.push(null);
    });
    get.onFailure((error) => {
      this.#failed(attempt, error);
    });
    this.#markReady();
  }

  /** True when a newer attempt started or the stream is gone: this attempt's events are echoes. */
  #stale(attempt: number): boolean {
    return attempt !== this.#attempt || this.destroyed;
  }

  #failed(attempt: number, error: unknown): void {
    if (this.#stale(attempt)) return;
    this.#current?.close();
    this.#current = undefined;
    this.#currentResponse = undefined;
    const { imageId, options } = this.#ctx;
    if (!isRetryable(error)) {
      this.#giveUp(isImageCacheError(error) ? error : new ImageServiceUnavailableError(imageId, this.#failures + 1, error));
      return;
    }
    if (this.#delivered > this.#deliveredAtLastFailure) {
      this.#failures = 0;
      this.#deliveredAtLastFailure = this.#delivered;
    }
    this.#failures++;
    if (this.#failures > options.retries) {
      this.#giveUp(new ImageServiceUnavailableError(imageId, this.#failures, error));
      return;
    }
    const delay = backoffDelay(this.#failures, options.backoff);
    log(
      'download of image %s failed at byte %d (%s); retry %d/%d in %d ms',
      imageId,
      this.#ctx.offset + this.#delivered,
      describeFailure(error),
      this.#failures,
      options.retries,
      delay,
    );
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      void this.#request();
    }, delay);
  }

  #markReady(): void {
    const ready = this.#ready;
    this.#ready = undefined;
    ready?.resolve();
  }

  #giveUp(error: unknown): void {
    if (this.destroyed) return;
    const ready = this.#ready;
    this.#ready = undefined;
    if (ready === undefined) {
      this.destroy(error instanceof Error ? error : new Error(String(error)));
    } else {
      // Nobody holds the stream yet: fail open() instead of emitting an unheard 'error'.
      this.destroy();
      ready.reject(error);
    }
  }
}

/**
 * Reads images from Glance v2 (`GET /v2/images/{id}` and `GET /v2/images/{id}/file`).
 *
 * @example
 * ```ts
 * const source = new GlanceImageSource({ endpoint: 'http://glance:9292', token: () => keystone.token() });
 * const info = await source.describe(imageId);
 * const body = await source.open(imageId);
 * await pipeline(body, createWriteStream(path));
 * ```
 */
export class GlanceImageSource implements ImageSource {
  readonly #options: ResolvedOptions;

  /**
   * @param options - endpoint, token, timeouts and retry policy
   * @throws `InvalidConfigError` naming the first bad option
   */
  constructor(options: GlanceImageSourceOptions) {
    this.#options = resolveOptions(options);
  }

  /** The endpoint requests go to, without a trailing slash. */
  get endpoint(): string {
    return this.#options.base;
  }

  /**
   * Fetches `GET /v2/images/{id}`. Transient failures are retried; the result is checked to be an
   * `active` image.
   *
   * @throws `InvalidImageIdError`, `ImageNotFoundError` (404), `NotAuthorizedError` (401/403),
   *   `ImageNotActiveError`, `InvalidImageMetadataError` (an impossible `size`), `AbortedError`,
   *   and `ImageServiceUnavailableError` once retries ran
   *   out or the answer is unusable (another 4xx, a body that is not an image document)
   */
  async describe(imageId: string, options: SourceCallOptions = {}): Promise<ImageInfo> {
    assertValidImageId(imageId);
    const { signal } = options;
    const opts = this.#options;
    return withRetry(
      async (attempt) => {
        const get = await this.#start(`/v2/images/${encodeURIComponent(imageId)}`, { accept: 'application/json' });
        const abort = (): void => {
          get.fail(new AbortedError('Describe', imageId, signal?.reason));
        };
        signal?.addEventListener('abort', abort, { once: true });
        try {
          if (signal?.aborted === true) abort();
          const res = await get.response;
          const status = res.statusCode ?? 0;
          if (status !== 200) {
            res.resume();
            throw statusFailure(imageId, status, get.url, attempt);
          }
          const body = await get.body(res, MAX_METADATA_BYTES);
          let document: unknown;
          try {
            document = JSON.parse(body.toString('utf8'));
          } catch (error) {
            throw new ImageServiceUnavailableError(imageId, attempt, error);
          }
          const info = toImageInfo(imageId, document);
          if (info === undefined) {
            throw new ImageServiceUnavailableError(imageId, attempt, new Error(`${get.url} did not return an image document`));
          }
          if (info.status !== 'active') throw new ImageNotActiveError(imageId, info.status);
          return info;
        } finally {
          signal?.removeEventListener('abort', abort);
        }
      },
      {
        retries: opts.retries,
        ...opts.backoff,
        signal,
        what: 'Describe',
        imageId,
        isRetryable,
        onExhausted: (error, attempts) => new ImageServiceUnavailableError(imageId, attempts, error),
        onRetry: (error, attempt, delay) => {
          log('describe of image %s failed (%s); retry %d/%d in %d ms', imageId, describeFailure(error), attempt, opts.retries, delay);
        },
      },
    );
  }

  /**
   * Opens `GET /v2/images/{id}/file` from `offset` (with `Range` when above 0). Resolves once the
   * first response is usable; interruptions after that are resumed inside the stream, and only a
   * failure that outlasts the retries is emitted as the stream's error.
   *
   * @throws `InvalidImageIdError`, `ImageNotFoundError`, `NotAuthorizedError`,
   *   `ImageNotActiveError` (Glance's 204 for an image without data), `AbortedError`,
   *   `ImageServiceUnavailableError`, and `InvalidConfigError` for a bad offset
   */
  async open(imageId: string, options: OpenImageOptions = {}): Promise<Readable> {
    assertValidImageId(imageId);
    const { signal } = options;
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new InvalidConfigError('offset', 'an integer from 0 up', offset);
    }
    if (signal?.aborted === true) throw new AbortedError('Download', imageId, signal.reason);
    const path = `/v2/images/${encodeURIComponent(imageId)}/file`;
    const download = new GlanceDownload({
      imageId,
      offset,
      signal,
      options: this.#options,
      start: (headers) => this.#start(path, { accept: 'application/octet-stream', ...headers }),
    });
    await download.begin();
    return download;
  }

  async #start(path: string, headers: OutgoingHttpHeaders): Promise<HttpGet> {
    const { token } = this.#options;
    const value = typeof token === 'function' ? await token() : token;
    if (value !== undefined && (typeof value !== 'string' || value === '')) {
      throw new InvalidConfigError('token', 'a function returning a non-empty string', value);
    }
    const all: OutgoingHttpHeaders = { 'user-agent': 'virt-imagecache', ...headers };
    if (value !== undefined) all['x-auth-token'] = value;
    return new HttpGet(new URL(this.#options.base + path), all, this.#options);
  }
}
