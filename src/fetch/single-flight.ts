/**
 * In-process single flight: concurrent requests for one key share one execution. Each caller may
 * abort its own wait; the shared work is aborted only when every caller has gone.
 *
 * @module
 */
import { raceAbort, throwIfAborted } from '../abort.js';

interface Flight<T> {
  readonly promise: Promise<T>;
  readonly controller: AbortController;
  waiters: number;
}

/** The value of a flight, and whether this caller joined one that was already running. */
export interface FlightResult<T> {
  /** What the shared task resolved to. */
  readonly value: T;
  /** True when this caller joined a flight started by another caller. */
  readonly shared: boolean;
}

/** Shares one running task per key among concurrent callers. */
export class SingleFlight<T> {
  readonly #flights = new Map<string, Flight<T>>();

  /** Keys with a task in flight right now. */
  get size(): number {
    return this.#flights.size;
  }

  /** True when a task for `key` is in flight. */
  has(key: string): boolean {
    return this.#flights.has(key);
  }

  /**
   * Runs `task` for `key`, or joins the task already running for it.
   *
   * @param key - what identifies the work
   * @param task - the work; receives a signal aborted once every caller has aborted
   * @param signal - this caller's signal; aborting it rejects only this caller's promise
   * @param what - description used in the `AbortedError`
   */
  async run(
    key: string,
    task: (signal: AbortSignal) => Promise<T>,
    signal?: AbortSignal,
    what = 'Operation',
  ): Promise<FlightResult<T>> {
    throwIfAborted(signal, what);
    let flight = this.#flights.get(key);
    const shared = flight !== undefined;
    if (flight === undefined) {
      const controller = new AbortController();
      const created: Flight<T> = {
        controller,
        waiters: 0,
        promise: Promise.resolve()
          .then(() => task(controller.signal))
          .finally(() => {
            if (this.#flights.get(key) === created) this.#flights.delete(key);
          }),
      };
      // Nobody may be waiting when it fails (all aborted); keep that from being unhandled.
      created.promise.catch(() => undefined);
      this.#flights.set(key, created);
      flight = created;
    }
    const joined = flight;
    joined.waiters += 1;
    try {
      const value = await raceAbort(joined.promise, signal, what);
      return { value, shared };
    } finally {
      joined.waiters -= 1;
      if (joined.waiters === 0 && signal?.aborted === true) {
        // The last caller left: stop the work, and let the next caller start afresh.
        joined.controller.abort(signal.reason);
        if (this.#flights.get(key) === joined) this.#flights.delete(key);
      }
    }
  }
}
