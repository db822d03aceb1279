/**
 * {@link cacheImages}: pre-caching on one host (Nova's `ComputeManager.cache_images` and the
 * driver's `cache_image`). Images are processed one after the other, in request order, each
 * through {@link ImageManager.cacheImage}: under the same per-image lock as a spawn (Nova's gap
 * closed: docs/nova-parity.md, gap A), downloaded and verified when missing, touched (expiry
 * reset) when present.
 *
 * @module
 */
import { throwIfAborted } from '../abort.js';
import { CacheImageFailedError, UnsupportedError, isImageCacheError } from '../errors.js';
import type { ImageCacheError } from '../errors.js';
import { createLogger } from '../log.js';
import type { ImageManager } from '../manager.js';
import type { PeerEndpoint } from '../peer/types.js';
import { validateImageIds, validateRequestOptions } from './request.js';
import type { PrecacheRequestOptions } from './request.js';
import type { HostCacheReport, PrecacheImageResult } from './results.js';

const log = createLogger('precache');

/** Options of {@link cacheImages}. */
export interface CacheImagesOptions extends PrecacheRequestOptions {
  /**
   * Cancels the request: the image in progress stops (nothing partial is kept), later ones are not
   * started, and the call rejects with `AbortedError`. Images finished before stay cached.
   */
  readonly signal?: AbortSignal | undefined;
  /** Called as each image finishes, in order. A listener that throws is logged and ignored. */
  readonly onImage?: ((result: PrecacheImageResult, index: number) => void) | undefined;
  /** Hosts of this host's site to fetch the bytes from before the image service (see `HostCacheOptions.peers`). */
  readonly peers?: readonly PeerEndpoint[] | undefined;
}

/** Anything thrown while caching, as a typed error about `imageId`. */
export function toImageCacheError(error: unknown, imageId: string): ImageCacheError {
  return isImageCacheError(error) ? error : new CacheImageFailedError(imageId, error);
}

/**
 * Caches `imageIds` on the host `manager` serves, in order, and reports each image's status. One
 * image failing never stops the others. A backend without an image cache (`hasImageCache` false)
 * or whose `cacheImage` rejects with `ERR_UNSUPPORTED` gets `unsupported`; the warning is logged
 * once per request (Nova logs it once per image).
 *
 * @param manager - this host's cache
 * @param imageIds - the images, each once
 * @param options - pin, speed cap, signal
 * @returns one result per image, in request order
 * @throws `InvalidPrecacheRequestError`, `InvalidImageIdError` or `InvalidConfigError` for a bad
 *   request, before any image is touched; `AbortedError` when the signal fires
 */
export async function cacheImages(
  manager: ImageManager,
  imageIds: readonly string[],
  options: CacheImagesOptions = {},
): Promise<HostCacheReport> {
  const ids = validateImageIds(imageIds);
  validateRequestOptions(options);
  const { signal, pinTtlSeconds, bytesPerSecond, onImage } = options;
  const started = performance.now();
  log('%s: caching %d image(s) by request', manager.host, ids.length);
  const images: PrecacheImageResult[] = [];
  let warnedUnsupported = false;
  const unsupported = (imageId: string, error: ImageCacheError): PrecacheImageResult => {
    if (!warnedUnsupported) {
      warnedUnsupported = true;
      log('WARNING %s: the backend does not support image pre-caching; ignoring request (%s)', manager.host, error.message);
    }
    return { imageId, status: 'unsupported', error, bytes: 0, durationMs: 0, pinnedUntil: null, bytesFrom: [] };
  };
  for (const imageId of ids) {
    throwIfAborted(signal, 'Pre-caching', imageId);
    const imageStarted = performance.now();
    let result: PrecacheImageResult;
    if (!manager.hasImageCache) {
      result = unsupported(
        imageId,
        new UnsupportedError('Image pre-caching', `host ${manager.host} keeps no image cache (hasImageCache is false).`, imageId),
      );
    } else {
      try {
        const cached = await manager.cacheImage(imageId, { signal, bytesPerSecond });
        const pinnedUntil = pinTtlSeconds === undefined ? null : await manager.pinImage(imageId, pinTtlSeconds);
        log('%s: image %s %s', manager.host, imageId, cached.status === 'cached' ? 'cached by request' : 'already cached; timestamp updated');
        result = {
          imageId,
          status: cached.status,
          error: null,
          bytes: cached.bytes,
          durationMs: performance.now() - imageStarted,
          pinnedUntil,
          bytesFrom: cached.status === 'cached' ? [{ from: 'glance', bytes: cached.bytes }] : [],
        };
      } catch (thrown) {
        const error = toImageCacheError(thrown, imageId);
        if (error.code === 'ERR_ABORTED' && signal?.aborted === true) throw error;
        if (error.code === 'ERR_UNSUPPORTED') {
          result = unsupported(imageId, error);
        } else {
          log('%s: failed to cache image %s: %s', manager.host, imageId, error.message);
          result = { imageId, status: 'error', error, bytes: 0, durationMs: performance.now() - imageStarted, pinnedUntil: null, bytesFrom: [] };
        }
      }
    }
    images.push(result);
    try {
      onImage?.(result, images.length - 1);
    } catch (listenerError) {
      // A broken listener must not cost the remaining images.
      log('%s: onImage listener threw: %O', manager.host, listenerError);
    }
  }
  return { host: manager.host, images, durationMs: performance.now() - started };
}
