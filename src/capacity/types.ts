/**
 * Capacity's vocabulary: what started a run of the policy, why it evicts, and what it reports.
 * Types only, over leaf modules, so that the pass report (cache-entry.ts) can name them without
 * importing the controller.
 *
 * @module
 */
import type { FilesystemUsage } from './statfs.js';
import type { CapacityNeeds } from './watermarks.js';

/** What started a run of the policy. */
export type CapacityTrigger = 'pass' | 'fill' | 'download' | 'prune';

/** Why capacity evicts an entry: the size cap, the disk watermarks, or room for a download. */
export type CapacityReason = 'cap' | 'watermark' | 'reclaim';

/** What the capacity rules saw and did in one run (part of pass and prune reports). */
export interface CapacityReport {
  /** Bytes the cache held when the run started. */
  readonly cacheBytes: number;
  /** `maxCacheBytes` (Infinity: no cap). */
  readonly maxCacheBytes: number;
  /** The cache's filesystem when the run started, when it was measured. */
  readonly filesystem: FilesystemUsage | null;
  /** Bytes each rule asked for. */
  readonly needs: CapacityNeeds;
  /** Bytes freed, aging and eviction together. */
  readonly freedBytes: number;
  /** Bytes asked for that could not be freed: what is left is in use, pinned or too young. */
  readonly shortfallBytes: number;
}
