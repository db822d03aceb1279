/**
 * How many bytes the capacity rules ask to free: the size cap, kubelet's high/low disk watermarks,
 * and the room a download needs. Each is a plain number of bytes; 0 means "nothing to free".
 *
 * @module
 */
import { usedPercent } from './statfs.js';
import type { FilesystemUsage } from './statfs.js';

/** Bytes to free, by rule. */
export interface CapacityNeeds {
  /** To bring the cache under `maxCacheBytes` (counting an image about to be downloaded). */
  readonly cap: number;
  /** To bring the filesystem from above the high watermark down to the low one. */
  readonly watermark: number;
  /** To make room for a download (its size, the reserve and other downloads in flight). */
  readonly reclaim: number;
}

/** No rule asks for anything. */
export const NO_NEEDS: CapacityNeeds = Object.freeze({ cap: 0, watermark: 0, reclaim: 0 });

/** The largest of the needs: freeing that much satisfies every rule. */
export function largestNeed(needs: CapacityNeeds): number {
  return Math.max(needs.cap, needs.watermark, needs.reclaim);
}

/** Bytes over the cap once `incomingBytes` more are cached; 0 when under it or when there is no cap. */
export function capNeed(cacheBytes: number, maxCacheBytes: number, incomingBytes = 0): number {
  if (!Number.isFinite(maxCacheBytes)) return 0;
  return Math.max(0, Math.ceil(cacheBytes + incomingBytes - maxCacheBytes));
}

/** The high and low watermarks, percent of the filesystem's capacity. */
export interface Watermarks {
  /** Usage at or above which eviction starts (kubelet `imageGCHighThresholdPercent`, 85). */
  readonly highPercent: number;
  /** Usage eviction brings the filesystem down to (kubelet `imageGCLowThresholdPercent`, 80). */
  readonly lowPercent: number;
}

/**
 * Kubelet's rule: at or above the high watermark, free `capacity × (100 − low)/100 − available`
 * bytes, which brings usage down to the low watermark; below it, nothing (the gap between the two
 * keeps eviction from running on every fill). A report with no capacity asks for nothing.
 */
export function watermarkNeed(usage: FilesystemUsage, watermarks: Watermarks): number {
  const percent = usedPercent(usage);
  if (Number.isNaN(percent) || percent < watermarks.highPercent) return 0;
  return Math.max(0, Math.ceil((usage.totalBytes * (100 - watermarks.lowPercent)) / 100 - usage.freeBytes));
}

/** Bytes missing for a download that needs `requiredBytes` of free space. */
export function reclaimNeed(usage: FilesystemUsage, requiredBytes: number): number {
  return Math.max(0, Math.ceil(requiredBytes - usage.freeBytes));
}
