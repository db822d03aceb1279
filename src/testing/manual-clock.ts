/**
 * A clock tests move by hand, so files age without sleeping.
 *
 * @module
 */
import type { Clock } from '../clock.js';

/** A {@link Clock} that only moves when told to. */
export class ManualClock implements Clock {
  #now: number;

  /** @param startMs - initial time, ms since the epoch; default: the real time now, to the second */
  constructor(startMs: number = Math.floor(Date.now() / 1000) * 1000) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  /** Moves the clock forward by `seconds`. */
  advance(seconds: number): void {
    this.#now += seconds * 1000;
  }

  /** Sets the clock to `ms` since the epoch. */
  set(ms: number): void {
    this.#now = ms;
  }
}
