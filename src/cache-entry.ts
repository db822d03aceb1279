/**
 * What a cache holds, and what a pass reports about it: the vocabulary shared by every backend.
 *
 * @module
 */
import type { CapacityReport } from './capacity/types.js';

/**
 * The class of a cache entry, which decides its minimum age:
 * `original` (an image as downloaded) uses `removeUnusedOriginalMinimumAgeSeconds`; `resized`
 * (Nova's legacy `<sha1>_<N>` and `<sha1>_sm`, and any other derived base) uses
 * `removeUnusedResizedMinimumAgeSeconds`; `swap` and `ephemeral` bases use the original threshold.
 */
export type CacheEntryKind = 'original' | 'resized' | 'swap' | 'ephemeral';

/** One entry of a cache, as a scan found it. */
export interface CacheEntry {
  /** The entry's name in its cache (file name, disk name). Unique within the cache. */
  readonly name: string;
  /** Its class. */
  readonly kind: CacheEntryKind;
  /** The image it holds, when the backend records it (null when only a fingerprint is known). */
  readonly imageId: string | null;
  /** Bytes it occupies on its storage (allocated blocks where the backend can tell). */
  readonly sizeBytes: number;
  /** When it was last used (its mtime): the recency signal that aging and eviction read. */
  readonly lastUsedMs: number;
}

/** A leftover staging file (an interrupted download), found by a scan. */
export interface StagingEntry {
  /** Its name. */
  readonly name: string;
  /** When it was last written. */
  readonly lastModifiedMs: number;
  /**
   * The lock its writer holds while writing it (the lock of the entry it will be published as),
   * when the backend can tell: a leftover whose lock is free has no live writer.
   */
  readonly lockName?: string | undefined;
  /**
   * True when an interrupted download kept it, with its resume sidecar, for the next download of
   * the image to continue: it is kept until `staleStagingAgeSeconds`, even by `init()`, and its
   * removal takes the sidecar with it.
   */
  readonly resumable?: boolean | undefined;
}

/** The result of {@link ImageManager.scanBaseImages}. */
export interface BaseImageScan {
  /** Entries, in a stable order. */
  readonly entries: readonly CacheEntry[];
  /** Staging files found beside them. */
  readonly staging: readonly StagingEntry[];
}

/** Why an entry was kept by a pass. */
export type KeptReason = 'in-use' | 'too-young' | 'removal-disabled' | 'busy' | 'touched-meanwhile' | 'pinned';

/**
 * Why an entry was removed: `unused` (aged out by a pass), `stale-staging` (a crash's leftover),
 * `cap` (over `maxCacheBytes`), `watermark` (filesystem above the high watermark), `reclaim`
 * (room for a download), `operator` (`remove()`).
 */
export type RemovalReason = 'unused' | 'stale-staging' | 'cap' | 'watermark' | 'reclaim' | 'operator';

/** An entry a pass removed. */
export interface RemovedEntry {
  /** Its name. */
  readonly name: string;
  /** Its class (`staging` for a leftover staging file). */
  readonly kind: CacheEntryKind | 'staging';
  /** The image, when known. */
  readonly imageId: string | null;
  /** Bytes freed. */
  readonly bytes: number;
  /** Why it went. */
  readonly reason: RemovalReason;
  /** How long it had been unused, seconds. */
  readonly ageSeconds: number;
  /** Why, in words (e.g. which rule and figures made it go). */
  readonly detail?: string | undefined;
}

/** An entry a pass kept, with the reason. */
export interface KeptEntry {
  /** Its name. */
  readonly name: string;
  /** Its class. */
  readonly kind: CacheEntryKind;
  /** Why it stays. */
  readonly reason: KeptReason;
  /** For `in-use`, who uses it. */
  readonly detail?: string | undefined;
}

/** A failure during a pass; logged and reported, never fatal to the pass. */
export interface PassFailure {
  /** The entry concerned. */
  readonly name: string;
  /** What was being done. */
  readonly operation: 'touch' | 'remove' | 'stat';
  /** The error. */
  readonly error: unknown;
}

/** The report of one periodic pass. */
export interface PassReport {
  /** This host. */
  readonly host: string;
  /** When the pass started, ms since the epoch (from the manager's clock). */
  readonly startedAt: number;
  /** How long it took, ms. */
  readonly durationMs: number;
  /** Set when the pass did nothing, and why (e.g. no cache directory yet). */
  readonly skipped: 'no-base' | null;
  /** Hosts whose instances were considered. */
  readonly hosts: readonly string[];
  /** Instances considered. */
  readonly instanceCount: number;
  /** Entries in use (touched). */
  readonly active: readonly string[];
  /** Entries kept, with reasons (active ones included as `in-use`). */
  readonly kept: readonly KeptEntry[];
  /** Entries removed. */
  readonly removed: readonly RemovedEntry[];
  /** Swap/ephemeral bases an instance uses that do not exist (Nova's warning). */
  readonly missing: readonly string[];
  /** Failures (touch or removal errors). */
  readonly failures: readonly PassFailure[];
  /** What the size cap and disk watermarks saw and freed; null when the pass was skipped. */
  readonly capacity?: CapacityReport | null | undefined;
}
