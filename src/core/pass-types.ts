/**
 * What a pass, capacity and the removal path say to each other: the in-use set, the inputs and
 * result of aging, the outcome of one removal, and an eviction. Types only, over leaf modules, so
 * that capacity and the backends can name them without importing the manager.
 *
 * @module
 */
import type { BaseImageScan, KeptEntry, PassFailure, RemovedEntry } from '../cache-entry.js';
import type { CapacityReason, CapacityReport, CapacityTrigger } from '../capacity/types.js';
import type { InUseSet } from '../instances.js';

/** What a pass knows about use, passed to {@link ImageManager.ageAndVerify}. */
export interface PassInUse extends InUseSet {
  /** Entry names in use, each with who uses it. */
  readonly entryNames: ReadonlyMap<string, string>;
  /** Entry names of pinned images, each with its pin's expiry (ms since the epoch). */
  readonly pinnedNames: ReadonlyMap<string, number>;
}

/** The inputs of {@link ImageManager.ageAndVerify}. */
export interface AgeContext<TBase> {
  /** The cache location from {@link ImageManager.getBase}. */
  readonly base: TBase;
  /** The scan. */
  readonly scan: BaseImageScan;
  /** What is in use. */
  readonly inUse: PassInUse;
  /** Cancels between entries. */
  readonly signal?: AbortSignal | undefined;
  /**
   * When the pass began (clock ms, before the scan). An entry used at or after this moment is
   * never removed by the pass, whatever the minimum ages: its use may not be in the in-use data the
   * pass gathered. Default: no such guard.
   */
  readonly startedAt?: number | undefined;
}

/** The result of {@link ImageManager.ageAndVerify}. */
export interface AgeResult {
  /** Entries in use. */
  readonly active: string[];
  /** Entries kept, with reasons. */
  readonly kept: KeptEntry[];
  /** Entries removed. */
  readonly removed: RemovedEntry[];
  /** Used swap/ephemeral names with no entry. */
  readonly missing: string[];
  /** Non-fatal failures. */
  readonly failures: PassFailure[];
  /** What the size cap and watermarks saw and freed. */
  readonly capacity?: CapacityReport | null | undefined;
}

/** What {@link ImageManager.removeIfStillUnused} did with an entry: exactly one field is set, or none when it had gone. */
export interface RemovalOutcome {
  /** Set when the entry was removed. */
  readonly removed: RemovedEntry | null;
  /** Set when the entry was kept (touched meanwhile, or its lock busy). */
  readonly kept: KeptEntry | null;
  /** Set when stat or removal failed. */
  readonly failure: PassFailure | null;
}

/** One eviction (the `evicted` event): the removal, and what triggered it. */
export interface EvictionEvent extends RemovedEntry {
  /** The reason: `cap`, `watermark` or `reclaim`. */
  readonly reason: CapacityReason;
  /** What ran the eviction: a pass, a fill, room for a download, or `prune()`. */
  readonly trigger: CapacityTrigger;
}

/**
 * What removals are about to run (see `ImageManager.withRemovalScope`): a pass's aging, or one
 * removal outside a pass (eviction after a fill, room for a download, an operator's `remove`).
 */
export interface RemovalScope {
  /** `pass`: the aging of a periodic pass; `removal`: one entry, outside a pass. */
  readonly kind: 'pass' | 'removal';
  /** Cancels the wait for the scope (a pass's signal). */
  readonly signal?: AbortSignal | undefined;
}
