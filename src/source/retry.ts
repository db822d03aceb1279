/**
 * Bounded retries with full-jitter exponential backoff. Full jitter
 * (a uniformly random delay between 0 and the exponential cap) keeps many compute nodes that lost
 * the image service at the same moment from coming back in lock-step.
 *
 * @module
 */
import { abortableSleep } from '../abort.js';
import { AbortedError } from '../errors.js';

/** How long to wait between attempts. */
export interface BackoffOptions {
  /** Cap of the first delay, ms; the cap doubles after every failed attempt. */
  readonly baseMs: number;
  /** Largest delay, ms, however many attempts failed. */
  readonly maxMs: number;
  /** Uniform random source in [0, 1); injectable so tests get fixed delays. Default `Math.random`. */
  readonly random?: (() => number) | undefined;
}

/**
 * The delay before retry number `retry` (1 for the first retry): a uniformly random value between
 * 0 and `min(maxMs, baseMs * 2^(retry - 1))`, rounded down to whole milliseconds.
 */
export function backoffDelay(retry: number, options: BackoffOptions): number {
  // Clamp the exponent: 2^1024 is Infinity, and Infinity * 0 would make the delay NaN.
  const exponent = Math.min(Math.max(retry - 1, 0), 52);
  const cap = Math.min(options.maxMs, options.baseMs * 2 ** exponent);
  const draw = (options.random ?? Math.random)();
  // A broken injected random must not turn into a negative or endless sleep.
  const unit = Number.isFinite(draw) ? Math.min(Math.max(draw, 0), 1) : 0;
  return Math.floor(unit * cap);
}

/** Options of `withRetry`. */
export interface RetryOptions extends BackoffOptions {
  /** Retries after the first attempt; `0` means a single attempt. */
  readonly retries: number;
  /** True when `error` is worth another attempt; any other error is thrown at once. */
  readonly isRetryable: (error: unknown) => boolean;
  /**
   * Turns the last error into the one thrown once every attempt failed (for example a typed
   * "service unavailable" error). Default: the last error itself.
   */
  readonly onExhausted?: ((lastError: unknown, attempts: number) => unknown) | undefined;
  /** Called before each wait, so callers can log the reason and the delay. */
  readonly onRetry?: ((error: unknown, attempt: number, delayMs: number) => void) | undefined;
  /** Cancels the attempts and the waits between them; `AbortedError` is thrown. */
  readonly signal?: AbortSignal | undefined;
  /** What is being attempted, for the `AbortedError` message. */
  readonly what?: string | undefined;
  /** The image concerned, for the `AbortedError`. */
  readonly imageId?: string | undefined;
}

/**
 * Runs `operation` until it succeeds, it throws a non-retryable error, or `retries + 1` attempts
 * failed. `operation` receives the 1-based attempt number.
 *
 * @throws the non-retryable error as is; `AbortedError` when the signal fires between attempts;
 *   after the last attempt, what `onExhausted` returns (default: the last error)
 */
export async function withRetry<T>(
  operation: (attempt: number) => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    if (options.signal?.aborted === true) {
      throw new AbortedError(options.what ?? 'Operation', options.imageId, options.signal.reason);
    }
    try {
      return await operation(attempt);
    } catch (error) {
      if (!options.isRetryable(error)) throw error;
      if (attempt > options.retries) {
        throw options.onExhausted === undefined ? error : options.onExhausted(error, attempt);
      }
      const delay = backoffDelay(attempt, options);
      options.onRetry?.(error, attempt, delay);
      await abortableSleep(delay, options.signal, options.what ?? 'Retry wait', options.imageId);
    }
  }
}
