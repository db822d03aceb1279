/**
 * {@link GlanceImageSource}: the {@link ImageSource} that speaks Glance v2. Metadata goes over
 * node:http / node:https; image bytes over the raw socket client for `http:` endpoints (see the
 * `transport` option) and node:http otherwise, under one state machine (`GlanceBodyReader`):
 * transient failures (5xx, 429, resets, refused connections, connect and idle timeouts, and the
 * deadlines of a server that trickles: head, metadata, minimum transfer rate) are retried with
 * jittered backoff; a download interrupted mid-body resumes with a `Range` request,
 * or restarts and skips what was already delivered when the server ignores `Range`, so the caller
 * always sees one continuous byte stream.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { AbortedError, ImageNotActiveError, ImageServiceUnavailableError, InvalidConfigError } from '../errors.js';
import { assertImageSize } from '../fetch/verifier.js';
import { checkImageId } from '../image-id.js';
import { createLogger } from '../log.js';
import type { BodyExchange } from './body-exchange.js';
import { startBodyExchange } from './body-transport.js';
import { GlanceBodyReader } from './glance-download.js';
import { checkToken, resolveOptions } from './glance-options.js';
import { HEADER_VALUE_RULE } from './header-value.js';
import type { GlanceImageSourceOptions, ResolvedOptions } from './glance-options.js';
import { TransportError, describeFailure, isRetryable, statusFailure } from './http-failures.js';
import { readableFromReader } from './image-reader.js';
import type { ImageReader } from './image-reader.js';
import type { ImageInfo, ImageSource, OpenImageOptions, SourceCallOptions } from './image-source.js';
import { HttpGet } from './node-http-get.js';
import { withRetry } from './retry.js';

export type { GlanceImageSourceOptions } from './glance-options.js';

const log = createLogger('source');

/** Metadata documents are small; anything bigger is not Glance talking. */
const MAX_METADATA_BYTES = 4 * 1024 * 1024;

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
  /** Cleared when the endpoint answers a download in a way only node:http reads. */
  #rawTransport: boolean;

  /**
   * @param options - endpoint, token, timeouts and retry policy
   * @throws `InvalidConfigError` naming the first bad option
   */
  constructor(options: GlanceImageSourceOptions) {
    this.#options = resolveOptions(options);
    this.#rawTransport = this.#options.rawTransport;
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
    checkImageId(imageId, options);
    const { signal } = options;
    const opts = this.#options;
    return withRetry(
      async (attempt) => {
        const get = await this.#start(`/v2/images/${encodeURIComponent(imageId)}`, { accept: 'application/json' });
        const abort = (): void => {
          get.fail(new AbortedError('Describe', imageId, signal?.reason));
        };
        signal?.addEventListener('abort', abort, { once: true });
        // The idle timeout fires only on silence: this bounds a head or body trickled a byte at a time.
        const deadline = setTimeout(() => {
          get.fail(new TransportError('ERR_METADATA_TIMEOUT', `no whole answer from ${get.url} within ${opts.metadataTimeoutMs} ms`));
        }, opts.metadataTimeoutMs);
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
          clearTimeout(deadline);
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
   * Opens `GET /v2/images/{id}/file` from `offset` (with `Range` when above 0) as a stream.
   * Resolves once the first response is usable; interruptions after that are resumed inside the
   * stream, and only a failure that outlasts the retries is emitted as the stream's error.
   *
   * @throws `InvalidImageIdError`, `ImageNotFoundError`, `NotAuthorizedError`,
   *   `ImageNotActiveError` (Glance's 204 for an image without data), `AbortedError`,
   *   `ImageServiceUnavailableError`, and `InvalidConfigError` for a bad offset
   */
  async open(imageId: string, options: OpenImageOptions = {}): Promise<Readable> {
    const reader = await this.openReader(imageId, options);
    return readableFromReader(reader, { signal: options.signal, imageId });
  }

  /**
   * Opens the same bytes as {@link GlanceImageSource.open} as an {@link ImageReader}, which reads
   * straight into the caller's memory (over the raw socket client for an `http:` endpoint, each
   * read filling the buffer it is given unless the image ends first). Same recovery and errors as
   * `open`.
   *
   * @throws `InvalidImageIdError`, `ImageNotFoundError`, `NotAuthorizedError`,
   *   `ImageNotActiveError`, `AbortedError`, `ImageServiceUnavailableError`, and
   *   `InvalidConfigError` for a bad offset
   */
  async openReader(imageId: string, options: OpenImageOptions = {}): Promise<ImageReader> {
    checkImageId(imageId, options);
    const { signal } = options;
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new InvalidConfigError('offset', 'an integer from 0 up', offset);
    }
    if (signal?.aborted === true) throw new AbortedError('Download', imageId, signal.reason);
    const path = `/v2/images/${encodeURIComponent(imageId)}/file`;
    const { retries, backoff, headTimeoutMs, speedFloor } = this.#options;
    const reader = new GlanceBodyReader({
      imageId,
      offset,
      signal,
      retries,
      backoff,
      headTimeoutMs,
      speedFloor,
      start: (position) => this.#startBody(path, position),
    });
    await reader.begin();
    return reader;
  }

  /** One GET of an image body from `position`, over the raw client when it may be used. */
  async #startBody(path: string, position: number): Promise<BodyExchange> {
    const headers = await this.#headers(position > 0 ? { accept: 'application/octet-stream', range: `bytes=${position}-` } : { accept: 'application/octet-stream' });
    const url = new URL(this.#options.base + path);
    return startBodyExchange(url, headers, this.#options, this.#rawTransport, () => {
      // Such a server likely frames every body this way: stop asking twice.
      this.#rawTransport = false;
      log('%s framed its body in a way the raw client does not read: using node:http from now on', url.href);
    });
  }

  /** The headers of every request: ours, the caller's, and the current token. */
  async #headers(extra: Readonly<Record<string, string>>): Promise<Record<string, string>> {
    const { token } = this.#options;
    const value = typeof token === 'function' ? await token() : token;
    const all: Record<string, string> = { 'user-agent': 'virt-imagecache', ...extra };
    if (value !== undefined) all['x-auth-token'] = checkToken(value, `a function returning a non-empty string of ${HEADER_VALUE_RULE}`);
    return all;
  }

  async #start(path: string, headers: Readonly<Record<string, string>>): Promise<HttpGet> {
    return new HttpGet(new URL(this.#options.base + path), await this.#headers(headers), this.#options);
  }
}
