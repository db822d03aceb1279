/**
 * Bounds on a server that keeps a connection alive without answering: the idle timeout fires only
 * on silence, so one byte now and then (a head or a body trickled a byte at a time, endless `1xx`
 * interim heads) would hold a download, and the image lock with it, for ever. {@link withDeadline}
 * bounds a wait as a whole (a response head, a metadata answer); {@link SpeedFloor} requires a
 * minimum transfer rate over a window of time, as curl's `--speed-limit` / `--speed-time` do.
 * Both end in a retryable {@link TransportError}, handled like a reset.
 *
 * @module
 */
import { TransportError } from './http-failures.js';
import type { TransportErrorCode } from './http-failures.js';

/**
 * Awaits `work`, or rejects with a `TransportError` of `code` once `ms` passed: `expire` is then
 * called (to close the request behind `work`) after the rejection is settled, so the caller sees
 * the deadline rather than the close it causes.
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, code: TransportErrorCode, message: string, expire: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new TransportError(code, message));
      expire();
    }, ms);
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** The minimum transfer rate of a {@link SpeedFloor}. */
export interface SpeedFloorOptions {
  /** Bytes per second required on average over each window; 0 turns the floor off. */
  readonly minBytesPerSecond: number;
  /** The window, ms of waiting for the server. */
  readonly windowMs: number;
}

/**
 * A minimum transfer rate over windows of the time spent waiting for the server. Only waits count:
 * while the consumer is busy (hashing, writing) and nothing is asked of the server, the clock
 * stops, so a slow disk never passes for a slow server. The windows run on across requests (a
 * resumed download keeps its window), and a window that falls short counts until one does not:
 * a server that trickles and resets before a window closes gains nothing by it. One timer serves
 * many reads (it is armed once per window, not per read).
 */
export class SpeedFloor {
  readonly #windowMs: number;
  /** Bytes a window must bring. */
  readonly #minBytes: number;
  readonly #received: () => number;
  readonly #expire: () => void;
  /** Time waited in the current window, ms, up to the start of the wait in progress. */
  #waitedMs = 0;
  /** `performance.now()` when the wait in progress began. */
  #since: number | undefined;
  /** `received()` when the current window began. */
  #windowStart = 0;
  #shortWindows = 0;
  #timer: NodeJS.Timeout | undefined;
  #failure: TransportError | undefined;

  /**
   * @param received - bytes received from the server so far, a running total (read at window ends)
   * @param expire - closes the request in progress when a window closes short
   */
  constructor(options: SpeedFloorOptions, received: () => number, expire: () => void) {
    this.#windowMs = options.windowMs;
    this.#minBytes = Math.ceil((options.minBytesPerSecond * options.windowMs) / 1000);
    this.#received = received;
    this.#expire = expire;
  }

  /** Windows in a row that brought fewer bytes than the floor (reset by one that did not). */
  get shortWindows(): number {
    return this.#shortWindows;
  }

  /** A wait for the server begins (a read is pending). */
  begin(): void {
    if (this.#minBytes === 0) return;
    this.#since = performance.now();
    if (this.#timer === undefined) {
      this.#timer = setTimeout(this.#onTimer, Math.max(1, this.#windowMs - this.#waitedMs));
      // The download's own reads keep the process busy; a window alone must not.
      this.#timer.unref();
    }
  }

  /** The wait ends (the read settled). */
  end(): void {
    if (this.#since === undefined) return;
    this.#waitedMs += performance.now() - this.#since;
    this.#since = undefined;
  }

  /** The `ERR_TRANSFER_TOO_SLOW` that closed the request, once; undefined when there was none. */
  takeFailure(): TransportError | undefined {
    const failure = this.#failure;
    this.#failure = undefined;
    return failure;
  }

  /** Stops the clock for good. */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#since = undefined;
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined;
    const waiting = this.#since !== undefined;
    if (this.#since !== undefined) {
      const now = performance.now();
      this.#waitedMs += now - this.#since;
      this.#since = now;
    }
    if (this.#waitedMs < this.#windowMs) {
      // Part of the window went by with nobody waiting: it goes on at the next wait.
      if (waiting) this.begin();
      return;
    }
    const total = this.#received();
    const bytes = total - this.#windowStart;
    this.#windowStart = total;
    this.#waitedMs = 0;
    if (bytes >= this.#minBytes) {
      this.#shortWindows = 0;
      if (waiting) this.begin();
      return;
    }
    this.#shortWindows++;
    const rate = Math.round((bytes * 1000) / this.#windowMs);
    this.#failure = new TransportError(
      'ERR_TRANSFER_TOO_SLOW',
      `${bytes} bytes in ${this.#windowMs} ms of waiting (${rate} B/s), below the floor of ${this.#minBytes} bytes per window`,
    );
    this.#expire();
  };
}
