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
import { CacheImageFailedError, InvalidConfigError, UnsupportedError, isImageCacheError } from '../errors.js';
import type { ImageCacheError } from '../errors.js';
import { createLogger } from '../log.js';
import type { ImageManager } from '../manager.js';
import { PeerImageSource } from '../peer/peer-image-source.js';
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
  /**
   * Hosts of the same site that may already hold the images (their agents): the images are read
   * from them first, through a `PeerImageSource` over the manager's own source (which still
   * describes each image and serves what no peer does), and verified as any download. This host
   * itself is left out. Requires `peerToken`. A peer whose bytes fail verification is left for
   * that image and named in its result's `blamedPeers`.
   */
  readonly peers?: readonly PeerEndpoint[] | undefined;
  /** The bearer token of the peers' agents (the host agent passes its own). */
  readonly peerToken?: string | undefined;
}

/**
 * The source reading from `options.peers` (this host left out) over the manager's own, or
 * undefined when there are no peers to ask. It keeps the peers it blamed for a bad digest, per
 * image (`badPeers`).
 *
 * @throws `InvalidConfigError` for peers without a `peerToken`, or a bad peer
 */
function peerSourceFor(manager: ImageManager, options: CacheImagesOptions): PeerImageSource | undefined {
  const peers = (options.peers ?? []).filter((peer) => peer.name !== manager.host);
  const upstream = manager.imageSource;
  if (peers.length === 0 || upstream === undefined) return undefined;
  if (options.peerToken === undefined) {
    throw new InvalidConfigError('peerToken', "the peers' agent token, to read images from peers", undefined);
  }
  return new PeerImageSource({
    upstream,
    peers,
    token: options.peerToken,
    onPeerEvent: (event) => {
      log('%s: image %s, peer %s: %s%s', manager.host, event.imageId, event.peer, event.type, event.reason === null ? '' : ` (${event.reason})`);
    },
  });
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
 * @param options - pin, speed cap, signal, the site's peers
 * @returns one result per image, in request order
 * @throws `InvalidPrecacheRequestError`, `InvalidImageIdError` or `InvalidConfigError` for a bad
 *   request (peers without a `peerToken` too), before any image is touched; `AbortedError` when
 *   the signal fires
 */
export async function cacheImages(
  manager: ImageManager,
  imageIds: readonly string[],
  options: CacheImagesOptions = {},
): Promise<HostCacheReport> {
  const ids = validateImageIds(imageIds);
  validateRequestOptions(options);
  const { signal, pinTtlSeconds, bytesPerSecond, onImage } = options;
  // The source is this request's own: the peers it blamed are this request's.
  const source = peerSourceFor(manager, options);
  const blamedPeersOf = (imageId: string): string[] => [...(source?.badPeers.get(imageId) ?? [])];
  const started = performance.now();
  log('%s: caching %d image(s) by request', manager.host, ids.length);
  const images: PrecacheImageResult[] = [];
  let warnedUnsupported = false;
  const unsupported = (imageId: string, error: ImageCacheError): PrecacheImageResult => {
    if (!warnedUnsupported) {
      warnedUnsupported = true;
      log('WARNING %s: the backend does not support image pre-caching; ignoring request (%s)', manager.host, error.message);
    }
    return { imageId, status: 'unsupported', error, bytes: 0, durationMs: 0, pinnedUntil: null, bytesFrom: [], blamedPeers: blamedPeersOf(imageId) };
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
        const cached = await manager.cacheImage(imageId, { signal, bytesPerSecond, source });
        const pinnedUntil = pinTtlSeconds === undefined ? null : await manager.pinImage(imageId, pinTtlSeconds);
        log('%s: image %s %s', manager.host, imageId, cached.status === 'cached' ? 'cached by request' : 'already cached; timestamp updated');
        result = {
          imageId,
          status: cached.status,
          error: null,
          bytes: cached.bytes,
          durationMs: performance.now() - imageStarted,
          pinnedUntil,
          bytesFrom: cached.bytesFrom,
          blamedPeers: blamedPeersOf(imageId),
        };
      } catch (thrown) {
        const error = toImageCacheError(thrown, imageId);
        if (error.code === 'ERR_ABORTED' && signal?.aborted === true) throw error;
        if (error.code === 'ERR_UNSUPPORTED') {
          result = unsupported(imageId, error);
        } else {
          log('%s: failed to cache image %s: %s', manager.host, imageId, error.message);
          result = {
            imageId,
            status: 'error',
            error,
            bytes: 0,
            durationMs: performance.now() - imageStarted,
            pinnedUntil: null,
            bytesFrom: [],
            blamedPeers: blamedPeersOf(imageId),
          };
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
