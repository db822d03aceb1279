/**
 * Timers of any length. Node's `setTimeout` turns a delay above 2^31 - 1 ms (24.8 days) into 1 ms,
 * with nothing but a `TimeoutOverflowWarning`: a 30-day lock wait would time out at once, a
 * throttle's long sleep would not sleep. Every delay that comes from an option or a request goes
 * through {@link setLongTimeout}, which chains timers instead.
 *
 * @module
 */

/** The longest delay node's timers honour; longer ones fire after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A pending {@link setLongTimeout}. */
export interface LongTimer {
  /** Cancels the timer; later calls do nothing. */
  clear(): void;
}

/** Options of {@link setLongTimeout}. */
export interface LongTimeoutOptions {
  /** Keep the process alive while waiting (default true, like `setTimeout`). */
  readonly ref?: boolean | undefined;
}

/**
 * Calls `callback` once after `ms`, however long: delays above {@link MAX_TIMER_MS} are chained
 * from shorter timers. `Infinity` never fires (and holds no timer); a negative or NaN delay counts
 * as 0, as it does for `setTimeout`.
 */
export function setLongTimeout(callback: () => void, ms: number, options: LongTimeoutOptions = {}): LongTimer {
  let timer: NodeJS.Timeout | undefined;
  let cleared = false;
  const arm = (remaining: number): void => {
    const step = Math.min(remaining, MAX_TIMER_MS);
    timer = setTimeout(() => {
      timer = undefined;
      if (cleared) return;
      if (remaining > step) arm(remaining - step);
      else callback();
    }, step);
    if (options.ref === false) timer.unref();
  };
  if (ms !== Number.POSITIVE_INFINITY) arm(Number.isNaN(ms) || ms < 0 ? 0 : ms);
  return {
    clear() {
      cleared = true;
      clearTimeout(timer);
      timer = undefined;
    },
  };
}
