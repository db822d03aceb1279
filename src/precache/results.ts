/**
 * What a host reports about a pre-cache request: one result per image, in request order. The
 * shapes are plain data plus typed errors (which serialise through `toJSON`), so a report reads
 * the same in-process, over HTTP and in a JSON log.
 *
 * @module
 */
import type { ImageCacheError } from '../errors.js';
import type { BytesFrom } from '../peer/types.js';

/**
 * The status of one image on one host (Nova's `cache_images` statuses):
 * - `cached`: downloaded by this request;
 * - `existing`: was already cached, and was touched (its expiry reset);
 * - `unsupported`: this host's backend keeps no image cache;
 * - `error`: caching failed; the result carries the typed error.
 */
export type PrecacheImageStatus = 'cached' | 'existing' | 'unsupported' | 'error';

/** The outcome of one image on one host. */
export interface PrecacheImageResult {
  /** The image. */
  readonly imageId: string;
  /** What happened. */
  readonly status: PrecacheImageStatus;
  /** Why, for `error` and `unsupported`; null otherwise. */
  readonly error: ImageCacheError | null;
  /** Bytes downloaded for this image (0 unless `cached`). */
  readonly bytes: number;
  /** Time spent on this image, ms. */
  readonly durationMs: number;
  /** When the pin asked for expires (ms since the epoch), or null when none was asked or set. */
  readonly pinnedUntil: number | null;
  /**
   * Where the downloaded bytes came from, per origin (`glance`, `peer:<host>`); empty unless
   * `cached`.
   */
  readonly bytesFrom: readonly BytesFrom[];
  /**
   * The peers (host names) blamed while caching this image: bytes they served were part of a
   * download that failed verification (a bad digest), so the host discarded them and read the
   * image again elsewhere. Usually empty; each peer once, in the order blamed. A peer named here
   * likely holds a corrupt copy: check its cache.
   */
  readonly blamedPeers: readonly string[];
}

/** A host's answer to a pre-cache request. */
export interface HostCacheReport {
  /** The host that did the work. */
  readonly host: string;
  /** One result per requested image, in request order. */
  readonly images: readonly PrecacheImageResult[];
  /** Time spent on the whole request, ms. */
  readonly durationMs: number;
}
