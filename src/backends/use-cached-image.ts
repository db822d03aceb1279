/**
 * Nova's spawn flow over any cache, with its fetch-to-use window closed (docs/nova-parity.md,
 * race 4.7): look for the image and use it under its lock; on a miss cache it and look again. A base that a cleanup removed between the
 * fetch and its use is simply fetched again, a bounded number of times.
 *
 * @module
 */
import { UnsupportedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { CacheImageResult } from '../core/manager-types.js';

/** How many times a spawn re-fetches a base that a cleanup removed between fetch and use. */
export const SPAWN_REFETCHES = 3;

/** Inputs of {@link useCachedImage}. */
export interface UseCachedImageOptions<T> {
  /** The image. */
  readonly imageId: string;
  /**
   * Under the image's lock: finds the published image and uses it (touch, build an instance disk),
   * or resolves to null when it is not there. Receives how the image got into the cache.
   */
  readonly tryUse: (cacheStatus: CacheImageResult['status']) => Promise<T | null>;
  /** Caches the image after a miss (`manager.cacheImage`). */
  readonly cache: () => Promise<CacheImageResult>;
  /** Where to say that a base vanished. */
  readonly log: Logger;
  /** Called when the image was there at the first look: a hit that no fetch counted (stats). */
  readonly onHit?: ((value: T) => Promise<void> | void) | undefined;
}

/** What {@link useCachedImage} produced, and whether the image had to be downloaded. */
export interface UsedCachedImage<T> {
  /** What `tryUse` returned. */
  readonly value: T;
  /** `cached` when this spawn (or one it joined) put the image in the cache. */
  readonly cacheStatus: CacheImageResult['status'];
}

/**
 * Runs `tryUse`; after each miss caches the image and tries again.
 *
 * @throws `UnsupportedError` when the base vanished {@link SPAWN_REFETCHES} times in a row; what
 *   `tryUse` and `cache` throw
 */
export async function useCachedImage<T>(options: UseCachedImageOptions<T>): Promise<UsedCachedImage<T>> {
  let cacheStatus: CacheImageResult['status'] = 'existing';
  for (let attempt = 1; ; attempt++) {
    // A cached spawn takes the lock once. Only a miss fetches (the fetch takes the same lock) and
    // comes back here.
    const value = await options.tryUse(cacheStatus);
    if (value !== null) {
      if (attempt === 1) await options.onHit?.(value);
      return { value, cacheStatus };
    }
    if (attempt > SPAWN_REFETCHES) {
      throw new UnsupportedError(
        `Creating a disk from image ${options.imageId}`,
        `its base was removed ${attempt - 1} times between download and use; check for a cleanup running with a minimum age of 0.`,
        options.imageId,
      );
    }
    if (attempt > 1) options.log('base of %s vanished before use; fetching again', options.imageId);
    const fetched = await options.cache();
    if (fetched.status === 'cached') cacheStatus = 'cached';
  }
}
