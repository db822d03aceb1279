/**
 * How long each lock path has kept one identity, by this process's monotonic clock: the only time
 * a lease's staleness is judged by (see `lease.ts`).
 *
 * @module
 */
import path from 'node:path';

/** Observations kept per tracker: a bound on memory whatever the number of names. */
const MAX_TRACKED = 4096;

/**
 * How long each path has kept one identity, by this process's monotonic clock: the only time
 * staleness is judged by. Bounded: the oldest observations are dropped past 4096 paths (a dropped
 * one only restarts its wait).
 */
export class SilenceTracker {
  readonly #seen = new Map<string, { identity: string; since: number }>();
  readonly #now: () => number;

  /** @param now - a monotonic clock, ms; default `performance.now` */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** How long `p` has been seen with `identity`, ms: 0 when it is new or changed since last seen. */
  silentFor(p: string, identity: string): number {
    const now = this.#now();
    const seen = this.#seen.get(p);
    if (seen?.identity === identity) return now - seen.since;
    this.#seen.delete(p);
    this.#seen.set(p, { identity, since: now });
    if (this.#seen.size > MAX_TRACKED) {
      const oldest = this.#seen.keys().next().value;
      if (oldest !== undefined) this.#seen.delete(oldest);
    }
    return 0;
  }

  /** Forgets `p` (it was taken, or is gone). */
  forget(p: string): void {
    this.#seen.delete(p);
  }

  /** Forgets every path directly under `dir` whose name is not in `present`. */
  retain(dir: string, present: ReadonlySet<string>): void {
    for (const p of this.#seen.keys()) {
      if (path.dirname(p) === dir && !present.has(path.basename(p))) this.#seen.delete(p);
    }
  }
}
