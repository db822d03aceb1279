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
