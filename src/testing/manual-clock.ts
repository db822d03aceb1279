/**
 * A clock tests move by hand, so files age and pre-cache windows open and close without sleeping.
 *
 * @module
 */
import type { WaitableClock } from '../clock.js';
import { AbortedError } from '../errors.js';

interface Waiter {
  readonly atMs: number;
  readonly wake: () => void;
}

/** A {@link WaitableClock} that only moves when told to. */
export class ManualClock implements WaitableClock {
  #now: number;
  readonly #waiters = new Set<Waiter>();

  /** @param startMs - initial time, ms since the epoch; default: the real time now, to the second */
  constructor(startMs: number = Math.floor(Date.now() / 1000) * 1000) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  /** Moves the clock forward by `seconds`, waking the waiters whose moment has come. */
  advance(seconds: number): void {
    this.set(this.#now + seconds * 1000);
  }

  /** Sets the clock to `ms` since the epoch, waking the waiters whose moment has come. */
  set(ms: number): void {
    this.#now = ms;
    for (const waiter of this.#waiters) {
      if (waiter.atMs <= ms) waiter.wake();
    }
  }

  /** How many calls wait on {@link ManualClock.waitUntil} (a test can wait for a waiter to appear). */
  get waiting(): number {
    return this.#waiters.size;
  }

  /** Resolves once the clock is moved to `atMs` or later (at once if it is there already). */
  waitUntil(atMs: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted === true) return Promise.reject(new AbortedError('Waiting for the clock', undefined, signal.reason));
    if (this.#now >= atMs) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiters.delete(waiter);
        reject(new AbortedError('Waiting for the clock', undefined, signal?.reason));
      };
      const waiter: Waiter = {
        atMs,
        wake: () => {
          this.#waiters.delete(waiter);
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      this.#waiters.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
