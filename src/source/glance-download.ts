/**
 * {@link GlanceBodyReader}: the state machine behind `GlanceImageSource.openReader` and `open`.
 * It turns a series of GETs of `/v2/images/{id}/file` into one continuous byte stream: transient
 * failures (5xx, 429, resets, refused connections, timeouts) are retried with jittered backoff; a
 * body cut short is resumed with `Range: bytes=N-`, or, when the server ignores `Range`, restarted
 * with the bytes already delivered skipped. How the bytes move (node:http or the raw socket
 * client) is the transport's business: this module only sees {@link BodyExchange}s.
 *
 * @module
 */
import { abortableSleep } from '../abort.js';
import { AbortedError, ImageNotActiveError, ImageServiceUnavailableError, isImageCacheError } from '../errors.js';
import { createLogger } from '../log.js';
import type { BodyExchange, ResponseHead } from './body-exchange.js';
import { SpeedFloor, withDeadline } from './deadlines.js';
import type { SpeedFloorOptions } from './deadlines.js';
import { TransportError, describeFailure, isRetryable, parseContentRange, statusFailure } from './http-failures.js';
import type { ImageReader } from './image-reader.js';
import { backoffDelay } from './retry.js';
import type { BackoffOptions } from './retry.js';

const log = createLogger('source');

/** What a {@link GlanceBodyReader} reads and how it retries. */
export interface GlanceBodyContext {
  /** The image. */
  readonly imageId: string;
  /** First byte wanted. */
  readonly offset: number;
  /** Cancels the download: a pending read rejects with `AbortedError` and the request is closed. */
  readonly signal: AbortSignal | undefined;
  /** Retries after a failed attempt, counted since bytes last arrived. */
  readonly retries: number;
  /** Delays between attempts. */
  readonly backoff: BackoffOptions;
  /** Time a request has to bring its final response head, ms. */
  readonly headTimeoutMs: number;
  /** The body's minimum transfer rate. */
  readonly speedFloor: SpeedFloorOptions;
  /**
   * Starts one GET of the body from `position` (`Range: bytes=<position>-` above 0). A rejection
   * is not the image service's doing (a failing token callback) and is not retried.
   */
  readonly start: (position: number) => Promise<BodyExchange>;
}

/** One image body over as many requests as it takes. Use {@link GlanceBodyReader.begin} first. */
export class GlanceBodyReader implements ImageReader {
  readonly #ctx: GlanceBodyContext;
  #current: BodyExchange | undefined;
  /** Bytes delivered so far, after `offset`. */
  #delivered = 0;
  /** Bytes of the current response to drop because they were delivered already. */
  #skip = 0;
  /** The image's end as the current 206 response announced it, when it did. */
  #total: number | null = null;
  /** Failed attempts since bytes last arrived: a long download may survive many resets. */
  #failures = 0;
  #deliveredAtLastFailure = 0;
  readonly #floor: SpeedFloor;
  /** Body bytes the requests before the current one received. */
  #receivedBefore = 0;
  #ended = false;
  /** Set once the reader is finished with an error; every later call rejects with it. */
  #error: Error | undefined;
  #aborted: AbortedError | undefined;
  readonly #onAbort: () => void;

  constructor(ctx: GlanceBodyContext) {
    this.#ctx = ctx;
    this.#floor = new SpeedFloor(
      ctx.speedFloor,
      () => this.#receivedBefore + (this.#current?.received ?? 0),
      () => {
        // What the slow request already brought is kept: the next request resumes after it.
        this.#current?.close({ keepReceived: true });
      },
    );
    this.#onAbort = () => {
      this.#aborted = new AbortedError('Download', ctx.imageId, ctx.signal?.reason);
      this.#current?.close();
    };
    ctx.signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  /**
   * Makes requests until one answers with the image's bytes (or the image turns out to end exactly
   * at `offset`).
   *
   * @throws `ImageNotFoundError`, `NotAuthorizedError`, `ImageNotActiveError`,
   *   `ImageServiceUnavailableError`, `AbortedError`
   */
  async begin(): Promise<void> {
    await this.#connect();
  }

  /** {@inheritDoc ImageReader.read} */
  async read(into: Uint8Array): Promise<number> {
    for (;;) {
      this.#check();
      if (this.#ended) return 0;
      const exchange = this.#current ?? (await this.#connect());
      if (exchange === undefined) return 0;
      let n: number;
      try {
        // While skipping, read no further than the bytes to drop.
        this.#floor.begin();
        n = await exchange.read(this.#skip > 0 ? into.subarray(0, Math.min(into.length, this.#skip)) : into);
      } catch (error) {
        this.#floor.end();
        // A window that closed short closed the request: say so, rather than "closed".
        await this.#failed(this.#floor.takeFailure() ?? error);
        continue;
      }
      this.#floor.end();
      if (n === 0) {
        const reached = this.#ctx.offset + this.#delivered;
        if (this.#total !== null && reached < this.#total) {
          // A server may answer an open-ended range with only part of it; ask for the rest.
          await this.#failed(new TransportError('ERR_STREAM_PREMATURE_CLOSE', `${exchange.url} sent a range ending at ${reached} of ${this.#total}`));
          continue;
        }
        this.#finish();
        return 0;
      }
      if (this.#skip > 0) {
        this.#skip -= n;
        continue;
      }
      this.#delivered += n;
      return n;
    }
  }

  /** {@inheritDoc ImageReader.destroy} */
  destroy(): void {
    this.#fatal(new TransportError('ERR_STREAM_PREMATURE_CLOSE', `the download of image ${this.#ctx.imageId} was destroyed`));
  }

  /** Requests until a response is usable; undefined when the image ends where we are. */
  async #connect(): Promise<BodyExchange | undefined> {
    const { imageId, offset } = this.#ctx;
    for (;;) {
      this.#check();
      const position = offset + this.#delivered;
      let exchange: BodyExchange;
      try {
        exchange = await this.#ctx.start(position);
      } catch (error) {
        throw this.#fatal(error);
      }
      this.#current = exchange;
      let head: ResponseHead;
      try {
        this.#check();
        head = await this.#headOf(exchange);
      } catch (error) {
        await this.#failed(error);
        continue;
      }
      const { status } = head;
      if (status === 200 || status === 206) {
        this.#accept(exchange, head, position);
        return exchange;
      }
      this.#drop();
      if (status === 416 && position > 0 && (await this.#sizeAfter416(head, position)) === position) {
        // Asked for the bytes after the last one: the image ends exactly here.
        this.#finish();
        return undefined;
      }
      if (status === 204) {
        // Glance answers 204 for an image without data (still queued or saving).
        throw this.#fatal(new ImageNotActiveError(imageId, 'queued'));
      }
      await this.#failed(statusFailure(imageId, status, exchange.url, this.#failures + 1));
    }
  }

  /**
   * The image's size as a 416 to `Range: bytes=<position>-` tells it. An RFC 9110 server says it
   * in `Content-Range: bytes * /<size>`; the real Glance sends no Content-Range, so ask for the
   * byte before `position`: its `Content-Range` (or a whole body's length) gives the size when
   * that byte exists. Null when nothing says.
   */
  async #sizeAfter416(head: ResponseHead, position: number): Promise<number | null> {
    const stated = head.header('content-range');
    if (stated !== undefined) return parseContentRange(stated)?.total ?? null;
    let probe: BodyExchange | undefined;
    try {
      probe = await this.#ctx.start(position - 1);
      const answer = await this.#headOf(probe);
      if (answer.status === 206) return parseContentRange(answer.header('content-range'))?.total ?? null;
      const length = Number(answer.header('content-length'));
      return answer.status === 200 && Number.isSafeInteger(length) ? length : null;
    } catch {
      return null;
    } finally {
      probe?.close();
    }
  }

  /**
   * The final response head of `exchange`, within `headTimeoutMs`: interim 1xx heads and a head
   * trickled a byte at a time keep the socket busy, never the deadline. The request is closed when
   * the deadline passes.
   */
  #headOf(exchange: BodyExchange): Promise<ResponseHead> {
    const { headTimeoutMs } = this.#ctx;
    return withDeadline(exchange.head, headTimeoutMs, 'ERR_HEAD_TIMEOUT', `no response head from ${exchange.url} within ${headTimeoutMs} ms`, () => {
      exchange.close();
    });
  }

  /** Checks a 200/206 against the position asked for and sets what to skip. */
  #accept(exchange: BodyExchange, head: ResponseHead, position: number): void {
    this.#total = null;
    if (head.status === 206) {
      const range = parseContentRange(head.header('content-range'));
      const first = range?.first ?? null;
      this.#total = range?.total ?? null;
      if (first === null || first > position) {
        throw this.#fatal(
          new ImageServiceUnavailableError(
            this.#ctx.imageId,
            this.#failures + 1,
            new Error(`${exchange.url} answered a range starting at ${first ?? '?'} to a request for ${position}`),
          ),
        );
      }
      this.#skip = position - first;
    } else {
      if (position > 0) log('%s ignored Range: restarting image %s and skipping %d bytes', exchange.url, this.#ctx.imageId, position);
      this.#skip = position;
    }
  }

  /** Counts a failed attempt and waits before the next one; throws when it is the last. */
  async #failed(error: unknown): Promise<void> {
    this.#drop();
    this.#check();
    const { imageId, retries, backoff, signal } = this.#ctx;
    if (!isRetryable(error)) {
      throw this.#fatal(isImageCacheError(error) ? error : new ImageServiceUnavailableError(imageId, this.#failures + 1, error));
    }
    // Bytes a window found too few are no progress: a trickle is not let off its retries.
    const tooSlow = (error as { code?: unknown }).code === 'ERR_TRANSFER_TOO_SLOW';
    if (!tooSlow && this.#delivered > this.#deliveredAtLastFailure) {
      this.#failures = 0;
      this.#deliveredAtLastFailure = this.#delivered;
    }
    this.#failures++;
    if (this.#failures > retries || this.#floor.shortWindows > retries) throw this.#fatal(new ImageServiceUnavailableError(imageId, this.#failures, error));
    const delay = backoffDelay(this.#failures, backoff);
    log(
      'download of image %s failed at byte %d (%s); retry %d/%d in %d ms',
      imageId,
      this.#ctx.offset + this.#delivered,
      describeFailure(error),
      this.#failures,
      retries,
      delay,
    );
    try {
      await abortableSleep(delay, signal, 'Download', imageId);
    } catch (abort) {
      throw this.#fatal(abort);
    }
  }

  /** Throws the error the reader ended with, or the abort that just happened. */
  #check(): void {
    if (this.#error !== undefined) throw this.#error;
    if (this.#aborted !== undefined) throw this.#fatal(this.#aborted);
  }

  /** Ends the reader with `error`; returns it for throwing. */
  #fatal(error: unknown): Error {
    this.#error ??= error instanceof Error ? error : new Error(String(error));
    this.#release();
    return this.#error;
  }

  #finish(): void {
    this.#ended = true;
    this.#release();
  }

  #release(): void {
    this.#ctx.signal?.removeEventListener('abort', this.#onAbort);
    this.#floor.stop();
    this.#drop();
  }

  /** Closes the current request, keeping the count of what it received. */
  #drop(): void {
    const exchange = this.#current;
    if (exchange === undefined) return;
    this.#current = undefined;
    exchange.close();
    this.#receivedBefore += exchange.received;
  }
}
