/**
 * A per-call deadline: a signal that aborts when the caller's signal does or when `timeoutMs`
 * passes, whichever comes first, and remembers which. Used for the fan-out's per-host timeout and
 * the HTTP client's request timeout. (`AbortSignal.any` with `AbortSignal.timeout` would do, but
 * leaves a timer and a listener per call behind until the timeout; a fan-out makes thousands.)
 *
 * @module
 */
import { InvalidConfigError } from '../errors.js';
import { MAX_TIMER_MS, setLongTimeout } from '../timer.js';

/** A running deadline. */
export interface Deadline {
  /** Aborts at the deadline or when the parent signal aborts. */
  readonly signal: AbortSignal;
  /** True once the deadline itself (not the parent) aborted the signal. */
  readonly timedOut: boolean;
  /** Stops the timer and detaches from the parent; call when the guarded work is over. */
  clear(): void;
}

/** Checks a timeout option: a positive integer number of ms up to 2^31 - 1, or `Infinity` for none. */
export function validateTimeoutMs(option: string, value: unknown): void {
  if (value === Number.POSITIVE_INFINITY) return;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > MAX_TIMER_MS) {
    throw new InvalidConfigError(option, `an integer number of ms from 1 to ${MAX_TIMER_MS}, or Infinity`, value);
  }
}

/** Starts a deadline of `timeoutMs` (`Infinity`: none) under `parent`. */
export function startDeadline(parent: AbortSignal | undefined, timeoutMs: number): Deadline {
  const controller = new AbortController();
  let timedOut = false;
  const onParentAbort = (): void => {
    controller.abort(parent?.reason);
  };
  if (parent?.aborted === true) controller.abort(parent.reason);
  else parent?.addEventListener('abort', onParentAbort, { once: true });
  const timer = setLongTimeout(() => {
    timedOut = true;
    controller.abort(new Error(`deadline of ${timeoutMs} ms expired`));
  }, timeoutMs);
  return {
    signal: controller.signal,
    get timedOut() {
      return timedOut;
    },
    clear() {
      timer.clear();
      parent?.removeEventListener('abort', onParentAbort);
    },
  };
}
