/**
 * Validation shared by every entry point of pre-caching (the per-host call, the aggregate fan-out
 * and the host agent), so a request is judged the same wherever it arrives and is rejected before
 * any work starts.
 *
 * @module
 */
import { InvalidPrecacheRequestError } from '../errors.js';
import { assertValidImageId } from '../image-id.js';
import { bytesPerSecondOrInfinity } from '../options.js';
import { checkPinTtlSeconds } from '../pins.js';

/** Options every pre-cache request may carry, per host. */
export interface PrecacheRequestOptions {
  /**
   * Pin each image for this many seconds once it is cached: until then it is neither aged out nor
   * evicted, used or not (a pin survives a restart on file-backed caches). Above 0, at most 10
   * years. Default: no pin, the image ages like any other (Nova's behaviour).
   */
  readonly pinTtlSeconds?: number | undefined;
  /** Cap on this host's pre-cache download speed, bytes per second, at least 1 (edge sites on thin links). */
  readonly bytesPerSecond?: number | undefined;
}

/** Lists returned by {@link validateImageIds}: frozen, so they stay valid. */
const validated = new WeakSet<object>();

/**
 * Checks a list of image ids: at least one, each well-formed, none twice (Nova: "Duplicate images
 * in request", exact string equality).
 *
 * @returns a frozen copy, so the list cannot change under a running request
 */
export function validateImageIds(imageIds: unknown): readonly string[] {
  // A fan-out hands the same validated list to every host: check it once, not once per host.
  if (validated.has(imageIds as object)) return imageIds as readonly string[];
  if (!Array.isArray(imageIds)) {
    throw new InvalidPrecacheRequestError('the images must be given as an array of image ids.');
  }
  if (imageIds.length === 0) {
    throw new InvalidPrecacheRequestError('no images were given; list at least one image id.');
  }
  const seen = new Set<string>();
  for (const imageId of imageIds as unknown[]) {
    assertValidImageId(imageId);
    if (seen.has(imageId)) {
      throw new InvalidPrecacheRequestError(`image ${imageId} is listed more than once; list each image once.`, imageId);
    }
    seen.add(imageId);
  }
  const checked = Object.freeze([...seen]);
  validated.add(checked);
  return checked;
}

/** Checks {@link PrecacheRequestOptions}; throws `InvalidConfigError` naming the bad option. */
export function validateRequestOptions(options: PrecacheRequestOptions): void {
  const { pinTtlSeconds, bytesPerSecond } = options;
  if (pinTtlSeconds !== undefined) checkPinTtlSeconds('pinTtlSeconds', pinTtlSeconds);
  if (bytesPerSecond !== undefined) bytesPerSecondOrInfinity('bytesPerSecond', bytesPerSecond);
}
