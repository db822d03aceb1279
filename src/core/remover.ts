/**
 * The one safe removal path. Every removal of a cache entry (aging, eviction, `remove()`,
 * `prune()`) runs {@link SafeRemover.removeIfStillUnused}: under the entry's lock, with its age and
 * last use checked again. Every removal of a staging leftover (the pass, the handler's `init()`,
 * a backend's own leftovers) runs {@link SafeRemover.sweepStaging}. Either way the removal is
 * built by {@link removedEntry}, counted in the stats and emitted as `removed`.
 *
 * @module
 */
import type { CacheEntry, PassFailure, RemovalReason, RemovedEntry, StagingEntry } from '../cache-entry.js';
import { LockTimeoutError, isImageCacheError } from '../errors.js';
import type { HeldLock } from '../fetch/lock-manager.js';
import type { RemovalOutcome } from './pass-types.js';
import type { StoreView } from './store-view.js';

/** How long a removal waits for an entry's lock before leaving it for the next pass. */
const PASS_LOCK_WAIT_MS = 2000;

/** File times round-trip through floating-point seconds: a time can read back a hair earlier. */
const TIMESTAMP_SLACK_MS = 1;

/**
 * The record of a removal: the one place a {@link RemovedEntry} is built. `detail` is set as given
 * when passed (even undefined), absent when not.
 */
export function removedEntry(
  entry: Pick<CacheEntry, 'name' | 'imageId' | 'sizeBytes'> & { readonly kind: RemovedEntry['kind'] },
  reason: RemovalReason,
  ageSeconds: number,
  ...detail: [detail: string | undefined] | []
): RemovedEntry {
  const removed = { name: entry.name, kind: entry.kind, imageId: entry.imageId, bytes: entry.sizeBytes, reason, ageSeconds };
  return detail.length === 0 ? removed : { ...removed, detail: detail[0] };
}

/** A sweep of staging leftovers (see {@link SafeRemover.sweepStaging}). */
export interface StagingSweep {
  /** The leftovers. */
  readonly leftovers: readonly StagingEntry[];
  /** Now, ms (ages are measured from it). */
  readonly nowMs: number;
  /** Leftovers younger than this are kept, seconds (0: any age goes). */
  readonly minAgeSeconds: number;
  /**
   * Resumable leftovers (a download's kept staging) younger than this are kept, seconds, even when
   * `minAgeSeconds` is lower. Default `minAgeSeconds`.
   */
  readonly resumableMinAgeSeconds?: number | undefined;
  /** What to do with a leftover without a lock name: remove it (past the age), or skip it. */
  readonly withoutLock: 'remove' | 'skip';
  /** A lock that fails for another reason than being held: record a failure, or throw. */
  readonly lockErrors: 'record' | 'throw';
  /** Cancels the wait for a lock. */
  readonly signal?: AbortSignal | undefined;
  /** Removes one leftover; resolves `false` when it had gone already (then not reported). */
  remove(name: string): Promise<unknown>;
}

/** What a sweep did. */
export interface StagingSweepResult {
  /** Leftovers removed (each counted and emitted). */
  readonly removed: RemovedEntry[];
  /** Leftovers a live writer holds. */
  readonly busy: string[];
  /** Failures. */
  readonly failures: PassFailure[];
}

/** The one removal path of a manager. */
export class SafeRemover<TBase> {
  readonly #view: StoreView<TBase>;
  /** Set while a pass's aging holds the removal scope: removals inside it do not take it again. */
  #inPassScope = false;
  /** Why the running pass may not remove (its scope could not be had), or null. */
  #passSuspension: string | null = null;

  /** @param view - the manager's view */
  constructor(view: StoreView<TBase>) {
    this.#view = view;
  }

  /** Why removals are suspended by the running pass's scope, or null. */
  get scopeSuspension(): string | null {
    return this.#passSuspension;
  }

  /**
   * Runs a pass's aging inside the backend's removal scope (see `ImageManager.withRemovalScope`).
   * When the scope cannot be had, the pass runs with removals suspended.
   */
  inPassScope<T>(signal: AbortSignal | undefined, aging: () => Promise<T>): Promise<T> {
    return this.#view.withRemovalScope({ kind: 'pass', signal }, async (suspended) => {
      if (suspended === null) this.#inPassScope = true;
      else this.#passSuspension = suspended;
      try {
        return await aging();
      } finally {
        this.#inPassScope = false;
        this.#passSuspension = null;
      }
    });
  }

  /**
   * Removes `entry` under its lock if it still exists, is still at least `minAgeSeconds` old, and
   * was not used since the scan saw it (a spawn may have touched it while we waited). A busy lock
   * means the entry is being used right now: it is left for the next pass. Outside a pass, the
   * backend's removal scope is taken first; when it cannot be had, the entry is kept as `busy`.
   *
   * The last two checks are what make a minimum age of 0 safe: every use touches the entry under
   * this lock, so an entry whose last use changed since the scan, or falls at or after
   * `usedSinceMs` (the moment the caller began gathering what is in use), may be in use in a way
   * the caller could not see, and is kept.
   */
  removeIfStillUnused(
    base: TBase,
    entry: CacheEntry,
    minAgeSeconds: number,
    reason: RemovalReason,
    detail?: string,
    usedSinceMs?: number,
  ): Promise<RemovalOutcome> {
    const remove = (): Promise<RemovalOutcome> => this.#removeLocked(base, entry, minAgeSeconds, reason, detail, usedSinceMs);
    if (this.#inPassScope) return remove();
    return this.#view.withRemovalScope({ kind: 'removal' }, (suspended) =>
      suspended === null ? remove() : Promise.resolve({ removed: null, kept: { name: entry.name, kind: entry.kind, reason: 'busy' as const }, failure: null }),
    );
  }

  async #removeLocked(
    base: TBase,
    entry: CacheEntry,
    minAgeSeconds: number,
    reason: RemovalReason,
    detail: string | undefined,
    usedSinceMs: number | undefined,
  ): Promise<RemovalOutcome> {
    const view = this.#view;
    const none: RemovalOutcome = { removed: null, kept: null, failure: null };
    try {
      return await view.locks.withLock(
        view.lockNameFor(entry),
        async () => {
          let lastUsed: number | null;
          try {
            lastUsed = await view.statEntry(base, entry);
          } catch (error) {
            return { ...none, failure: { name: entry.name, operation: 'stat' as const, error } };
          }
          if (lastUsed === null) return none;
          const age = (view.clock.now() - lastUsed) / 1000;
          const usedSinceScan =
            Math.abs(lastUsed - entry.lastUsedMs) > TIMESTAMP_SLACK_MS ||
            (usedSinceMs !== undefined && lastUsed > usedSinceMs - TIMESTAMP_SLACK_MS);
          if (age < minAgeSeconds || usedSinceScan) {
            return { ...none, kept: { name: entry.name, kind: entry.kind, reason: 'touched-meanwhile' as const } };
          }
          try {
            await view.removeEntry(base, entry);
          } catch (error) {
            view.log('failed to remove %s: %O', entry.name, error);
            return { ...none, failure: { name: entry.name, operation: 'remove' as const, error } };
          }
          view.log('removed %s (%s, unused for %ds)', entry.name, entry.kind, Math.round(age));
          const removed = removedEntry(entry, reason, age, detail);
          view.recordRemoval(removed);
          return { ...none, removed };
        },
        { timeoutMs: PASS_LOCK_WAIT_MS, imageId: entry.imageId ?? undefined, offThread: true },
      );
    } catch (error) {
      if (error instanceof LockTimeoutError) {
        return { ...none, kept: { name: entry.name, kind: entry.kind, reason: 'busy' } };
      }
      if (isImageCacheError(error) && error.code === 'ERR_ABORTED') throw error;
      return { ...none, failure: { name: entry.name, operation: 'remove', error } };
    }
  }

  /**
   * Removes the staging leftovers past their age whose writer is gone: each one's lock (the lock
   * its writer holds from the first byte to the publish) is tried without waiting, and a held lock
   * means a live writer, however old the file. A resumable leftover (kept for the next download of
   * its image) stays until `resumableMinAgeSeconds` as well.
   */
  async sweepStaging(sweep: StagingSweep): Promise<StagingSweepResult> {
    const view = this.#view;
    const result: StagingSweepResult = { removed: [], busy: [], failures: [] };
    for (const leftover of sweep.leftovers) {
      const ageSeconds = (sweep.nowMs - leftover.lastModifiedMs) / 1000;
      const minAge = leftover.resumable === true ? Math.max(sweep.minAgeSeconds, sweep.resumableMinAgeSeconds ?? sweep.minAgeSeconds) : sweep.minAgeSeconds;
      if (ageSeconds < minAge) continue;
      if (leftover.lockName === undefined && sweep.withoutLock === 'skip') continue;
      let held: HeldLock | undefined;
      try {
        held = leftover.lockName === undefined ? undefined : await view.locks.acquire(leftover.lockName, { timeoutMs: 0, signal: sweep.signal });
      } catch (error) {
        if (error instanceof LockTimeoutError) result.busy.push(leftover.name);
        else if (sweep.lockErrors === 'throw') throw error;
        else result.failures.push({ name: leftover.name, operation: 'remove', error });
        continue;
      }
      try {
        if ((await sweep.remove(leftover.name)) === false) continue;
        const removed = removedEntry({ name: leftover.name, kind: 'staging', imageId: null, sizeBytes: 0 }, 'stale-staging', ageSeconds);
        view.log('removed staging leftover %s', leftover.name);
        result.removed.push(removed);
        view.recordRemoval(removed);
      } catch (error) {
        result.failures.push({ name: leftover.name, operation: 'remove', error });
      } finally {
        await held?.release();
      }
    }
    return result;
  }
}
