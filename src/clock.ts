/**
 * Time, injectable: every age the library computes reads {@link Clock.now}, and every touch sets
 * mtime to it, so tests age files by moving a clock instead of sleeping.
 *
 * @module
 */

/** A source of wall-clock time in milliseconds since the epoch. */
export interface Clock {
  /** The current time, ms since the epoch. */
  now(): number;
}

/** The real clock. */
export const systemClock: Clock = Object.freeze({ now: () => Date.now() });

/**
 * A clock that can also wake a waiter at a moment of its own time: a test's manual clock wakes
 * its waiters as it is moved, so a pre-cache window opens and closes without sleeping. Code that
 * waits on a plain {@link Clock} polls it with real timers instead.
 */
export interface WaitableClock extends Clock {
  /**
   * Resolves once `now()` has reached `atMs`; rejects with `AbortedError` as soon as `signal`
   * aborts.
   */
  waitUntil(atMs: number, signal?: AbortSignal): Promise<void>;
}
