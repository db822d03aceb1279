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
 * a server that trickles and resets before a window closes gains nothing by it.
 */
export class SpeedFloor {
  readonly #windowMs: number;
  /** Bytes a window must bring. */
  readonly #minBytes: number;
  /** Time waited in the current window before the wait in progress, ms. */
  #waitedMs = 0;
  /** `received()` when the current window began. */
  #windowStart = 0;
  /** Windows in a row that fell short. */
  #shortWindows = 0;

  constructor(options: SpeedFloorOptions) {
    this.#windowMs = options.windowMs;
    this.#minBytes = Math.ceil((options.minBytesPerSecond * options.windowMs) / 1000);
  }

  /** Windows in a row that brought fewer bytes than the floor (reset by one that did not). */
  get shortWindows(): number {
    return this.#shortWindows;
  }

  /**
   * Awaits `work` (a read from the server), counting the wait. When a window closes during it
   * short of bytes, rejects with `ERR_TRANSFER_TOO_SLOW` and calls `expire` (to close the request).
   *
   * @param received - bytes received from the server so far, a running total (read at window ends)
   */
  async wait<T>(work: Promise<T>, received: () => number, expire: () => void): Promise<T> {
    if (this.#minBytes === 0) return work;
    let segmentStart = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const short = new Promise<never>((_resolve, reject) => {
      const arm = (): void => {
        timer = setTimeout(closeWindow, Math.max(1, this.#windowMs - this.#waitedMs));
      };
      const closeWindow = (): void => {
        const now = received();
        const bytes = now - this.#windowStart;
        this.#windowStart = now;
        this.#waitedMs = 0;
        segmentStart = performance.now();
        if (bytes >= this.#minBytes) {
          this.#shortWindows = 0;
          arm();
          return;
        }
        this.#shortWindows++;
        const rate = Math.round((bytes * 1000) / this.#windowMs);
        reject(new TransportError('ERR_TRANSFER_TOO_SLOW', `${bytes} bytes in ${this.#windowMs} ms (${rate} B/s) is below the floor of ${this.#minBytes} bytes per window`));
        expire();
      };
      arm();
    });
    try {
      return await Promise.race([work, short]);
    } finally {
      clearTimeout(timer);
      this.#waitedMs += performance.now() - segmentStart;
    }
  }
}
