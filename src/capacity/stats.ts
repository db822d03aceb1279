/**
 * Cache statistics: hits, misses, downloads, bytes, removals by reason. Glance counts hits; Nova
 * and Ironic only log. Counters live in memory: they cover this manager in this process since it
 * was created (or since {@link CacheStatsRecorder.reset}), and start again at zero after a restart.
 * Export them to your metrics system to keep history.
 *
 * @module
 */
import type { RemovalReason, RemovedEntry } from '../cache-entry.js';
import { isEvictionReason } from './policy.js';

/** A count and the bytes it concerns. */
export interface CountAndBytes {
  /** How many. */
  readonly count: number;
  /** Bytes, summed. */
  readonly bytes: number;
}

/** A snapshot of a manager's counters (see {@link ImageManager.getStats}). */
export interface CacheStats {
  /** When counting started, ms since the epoch (the manager's clock). */
  readonly sinceMs: number;
  /** Requests served from the cache without a download (`cacheImage` `existing`, cached spawns). */
  readonly hits: number;
  /** Requests that found the image missing (the caller downloaded it or waited for a download). */
  readonly misses: number;
  /** Downloads completed into the cache by this process. */
  readonly downloads: number;
  /** Bytes downloaded by those downloads. */
  readonly bytesDownloaded: number;
  /** Bytes served from the cache: the image's size on each hit, i.e. downloads saved. */
  readonly bytesServedFromCache: number;
  /** Entries evicted for capacity (`cap`, `watermark`, `reclaim`), and the bytes they freed. */
  readonly evictions: CountAndBytes;
  /** Every removal, by reason (aging, stale staging, capacity, operator). */
  readonly removals: Readonly<Record<RemovalReason, CountAndBytes>>;
  /** Downloads refused or stopped because the disk was full (`DiskFullError`). */
  readonly diskFullFailures: number;
}

const REASONS: readonly RemovalReason[] = ['unused', 'stale-staging', 'cap', 'watermark', 'reclaim', 'operator'];

interface MutableCount {
  count: number;
  bytes: number;
}

/** The counters behind {@link CacheStats}. */
export class CacheStatsRecorder {
  #sinceMs: number;
  #hits = 0;
  #misses = 0;
  #downloads = 0;
  #bytesDownloaded = 0;
  #bytesServed = 0;
  #diskFull = 0;
  #removals = new Map<RemovalReason, MutableCount>();

  /** @param nowMs - when counting starts */
  constructor(nowMs: number) {
    this.#sinceMs = nowMs;
  }

  /** A request served from the cache; `bytes` is the image's size. */
  hit(bytes: number): void {
    this.#hits += 1;
    this.#bytesServed += bytes;
  }

  /** A request that found the image missing. */
  miss(): void {
    this.#misses += 1;
  }

  /** A download completed. */
  download(bytes: number): void {
    this.#downloads += 1;
    this.#bytesDownloaded += bytes;
  }

  /** A removal, whatever its reason. */
  removal(entry: RemovedEntry): void {
    let count = this.#removals.get(entry.reason);
    if (count === undefined) {
      count = { count: 0, bytes: 0 };
      this.#removals.set(entry.reason, count);
    }
    count.count += 1;
    count.bytes += entry.bytes;
  }

  /** A download refused or stopped for lack of space. */
  diskFull(): void {
    this.#diskFull += 1;
  }

  /** Starts counting again from zero at `nowMs`. */
  reset(nowMs: number): void {
    this.#sinceMs = nowMs;
    this.#hits = this.#misses = this.#downloads = this.#bytesDownloaded = this.#bytesServed = this.#diskFull = 0;
    this.#removals = new Map();
  }

  /** The counters now, as a frozen copy. */
  snapshot(): CacheStats {
    const removals = Object.fromEntries(
      REASONS.map((reason) => [reason, Object.freeze({ ...(this.#removals.get(reason) ?? { count: 0, bytes: 0 }) })]),
    ) as Record<RemovalReason, CountAndBytes>;
    const evictions = REASONS.filter(isEvictionReason).reduce(
      (sum, reason) => ({ count: sum.count + removals[reason].count, bytes: sum.bytes + removals[reason].bytes }),
      { count: 0, bytes: 0 },
    );
    return Object.freeze({
      sinceMs: this.#sinceMs,
      hits: this.#hits,
      misses: this.#misses,
      downloads: this.#downloads,
      bytesDownloaded: this.#bytesDownloaded,
      bytesServedFromCache: this.#bytesServed,
      evictions: Object.freeze(evictions),
      removals: Object.freeze(removals),
      diskFullFailures: this.#diskFull,
    });
  }
}
