/**
 * {@link DeadlineGroup}: per-call timeouts for a fan-out of thousands of calls, without a timer,
 * an `AbortController` and listeners per call. Calls started within a short window share one
 * batch: one signal, one timer, one listener on the caller's signal. Each call still times out
 * after at least `timeoutMs` (at most one window more), and a batch only aborts calls that are
 * still running. Per-call controllers and timers were most of the fan-out's own CPU (and garbage)
 * in `bench/precache`.
 *
 * @module
 */
import { setMaxListeners } from 'node:events';
import { abandon } from '../abort.js';
import { AbortedError } from '../errors.js';
import { setLongTimeout } from '../timer.js';
import type { LongTimer } from '../timer.js';

/** Longest joining window of a batch, ms: the most a call's timeout can overshoot. */
const MAX_WINDOW_MS = 1000;

/** One call's view of its deadline. */
export interface GroupedDeadline {
  /** Aborts when the call's deadline passes or the caller's signal aborts. */
  readonly signal: AbortSignal;
  /** True once the deadline (not the caller's signal) aborted the call. */
  readonly timedOut: boolean;
  /** Settles like `work`, or rejects with `AbortedError` as soon as `signal` aborts (the work may go on). */
  race<T>(work: Promise<T>): Promise<T>;
  /** The call is over; release its share of the batch. Call exactly once. */
  done(): void;
}

interface Batch {
  readonly controller: AbortController;
  readonly closesAt: number;
  readonly racing: Set<(error: unknown) => void>;
  timer: LongTimer | undefined;
  members: number;
  timedOut: boolean;
}

/** Shared deadlines of `timeoutMs` (`Infinity`: none) under an optional caller signal. */
export class DeadlineGroup {
  readonly #parent: AbortSignal | undefined;
  readonly #timeoutMs: number;
  readonly #windowMs: number;
  readonly #live = new Set<Batch>();
  #current: Batch | undefined;

  /**
   * @param parent - the caller's signal: aborting it aborts every running call
   * @param timeoutMs - each call's timeout, ms (validated by the caller)
   */
  constructor(parent: AbortSignal | undefined, timeoutMs: number) {
    this.#parent = parent;
    this.#timeoutMs = timeoutMs;
    // 1% of the timeout: a call never runs more than 1% (and at most 1 s) past its timeout.
    this.#windowMs = Number.isFinite(timeoutMs) ? Math.min(MAX_WINDOW_MS, Math.max(1, Math.floor(timeoutMs / 100))) : Number.POSITIVE_INFINITY;
  }

  /** Starts a call's deadline. */
  start(): GroupedDeadline {
    const batch = this.#joinable() ?? this.#open();
    batch.members += 1;
    return new Ticket(batch, this.#release);
  }

  /** Stops every timer and listener; call when no call can start any more. */
  close(): void {
    for (const batch of this.#live) this.#retire(batch);
    this.#current = undefined;
  }

  #joinable(): Batch | undefined {
    const current = this.#current;
    if (current === undefined) return undefined;
    if (!current.controller.signal.aborted && performance.now() < current.closesAt) return current;
    this.#current = undefined;
    if (current.members === 0) this.#retire(current);
    return undefined;
  }

  #open(): Batch {
    const controller = new AbortController();
    // Every running call of the batch listens to this one signal, by design: no leak warning.
    setMaxListeners(0, controller.signal);
    const batch: Batch = {
      controller,
      closesAt: performance.now() + this.#windowMs,
      racing: new Set(),
      timer: undefined,
      members: 0,
      timedOut: false,
    };
    if (this.#parent?.aborted === true) {
      abortBatch(batch, this.#parent.reason);
    } else {
      this.#parent?.addEventListener('abort', this.#onParentAbort, { once: true });
      // The last member joins at most one window after the first: the batch gives it its full
      // timeout (which may thus exceed node's longest timer).
      batch.timer = setLongTimeout(() => {
        batch.timedOut = true;
        abortBatch(batch, new Error(`deadline of ${this.#timeoutMs} ms expired`));
      }, this.#timeoutMs + this.#windowMs);
    }
    this.#live.add(batch);
    this.#current = batch;
    return batch;
  }

  /** A call of `batch` is over. */
  #release = (batch: Batch): void => {
    batch.members -= 1;
    if (batch.members === 0 && batch !== this.#current) this.#retire(batch);
  };

  #onParentAbort = (): void => {
    for (const batch of this.#live) abortBatch(batch, this.#parent?.reason);
  };

  #retire(batch: Batch): void {
    batch.timer?.clear();
    this.#live.delete(batch);
    if (this.#live.size === 0) this.#parent?.removeEventListener('abort', this.#onParentAbort);
  }
}

/** A call's deadline: a class, not an object of closures, because a fan-out makes thousands. */
class Ticket implements GroupedDeadline {
  readonly #batch: Batch;
  readonly #release: (batch: Batch) => void;
  #finished = false;

  constructor(batch: Batch, release: (batch: Batch) => void) {
    this.#batch = batch;
    this.#release = release;
  }

  get signal(): AbortSignal {
    return this.#batch.controller.signal;
  }

  get timedOut(): boolean {
    return this.#batch.timedOut;
  }

  race<T>(work: Promise<T>): Promise<T> {
    const batch = this.#batch;
    if (batch.controller.signal.aborted) {
      abandon(work);
      return Promise.reject(aborted(batch));
    }
    return new Promise<T>((resolve, reject) => {
      batch.racing.add(reject);
      work.then(
        (value) => {
          batch.racing.delete(reject);
          resolve(value);
        },
        (error: unknown) => {
          batch.racing.delete(reject);
          reject(error instanceof Error ? error : new Error(String(error)));
        },
      );
    });
  }

  done(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#release(this.#batch);
  }
}

/** Aborts the batch's signal and stops every race of its running calls. */
function abortBatch(batch: Batch, reason: unknown): void {
  if (batch.controller.signal.aborted) return;
  batch.controller.abort(reason);
  const error = aborted(batch);
  for (const reject of batch.racing) reject(error);
  batch.racing.clear();
}

function aborted(batch: Batch): AbortedError {
  return new AbortedError(batch.timedOut ? 'A host call (deadline expired)' : 'A host call', undefined, batch.controller.signal.reason);
}
