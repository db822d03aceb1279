/**
 * The transport between the fan-out and the hosts. {@link precacheImages} only needs "ask this host
 * to cache these images and tell me what happened"; `InProcessHostClient` answers it with local
 * managers, `HttpHostClient` with host agents over HTTP, and a deployment may bring its own (its
 * message bus, its RPC).
 *
 * @module
 */
import type { PeerEndpoint } from '../peer/types.js';
import type { PrecacheRequestOptions } from './request.js';
import type { HostCacheReport } from './results.js';

/** A host of an aggregate, as the fan-out sees it. */
export interface PrecacheHost {
  /** The host's name (Nova `CONF.host`); unique within the aggregate. */
  readonly name: string;
  /** The cell the host belongs to; hosts are grouped by cell for the plan. Default `default`. */
  readonly cell?: string | undefined;
  /**
   * The site the host belongs to (hosts behind one WAN link). Hosts of a site pull an image once
   * from the image service (the site's seed) and then from each other; hosts without a site pull
   * everything from the image service. Default: none.
   */
  readonly site?: string | undefined;
  /**
   * Whether the host's service is up (Nova's `service_is_up`). A host that is down is not
   * contacted: its images are reported `skipped`. Default true.
   */
  readonly up?: boolean | undefined;
}

/** Options of {@link HostClient.cacheImages}. */
export interface HostCacheOptions extends PrecacheRequestOptions {
  /** Aborted when the caller gives up: the per-host timeout expired or the request was cancelled. */
  readonly signal: AbortSignal;
  /**
   * Hosts of the same site the host may read the images from (their agents), before the image
   * service: see `CacheImagesOptions.peers`.
   */
  readonly peers?: readonly PeerEndpoint[] | undefined;
}

/** Asks one host to pre-cache images. */
export interface HostClient {
  /**
   * Has `host` cache `imageIds` (in order) and resolves to its report, one result per image.
   * Rejects with a typed error when the host could not be asked or did not answer properly
   * (`HostUnavailableError`, `HostUnauthorizedError`, `AbortedError`, ...); the fan-out then
   * reports every image of that host as `error` with that error.
   */
  cacheImages(host: PrecacheHost, imageIds: readonly string[], options: HostCacheOptions): Promise<HostCacheReport>;
  /**
   * Where `host` serves its cache to its site's peers (its agent's base URL), or undefined when
   * unknown. Without it (or when it answers undefined for a host of a site) the fan-out treats that
   * site as site-unaware: every host pulls from the image service.
   */
  peerEndpointOf?(host: PrecacheHost): PeerEndpoint | undefined;
}
