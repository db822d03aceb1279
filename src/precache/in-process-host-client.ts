/**
 * {@link InProcessHostClient}: a {@link HostClient} over image managers living in this process,
 * for drivers that manage several caches from one service, for tests, and for benchmarks.
 *
 * @module
 */
import { HostUnavailableError } from '../errors.js';
import type { ImageManager } from '../manager.js';
import type { PeerEndpoint } from '../peer/types.js';
import { cacheImages } from './cache-images.js';
import type { HostCacheOptions, HostClient, PrecacheHost } from './host-client.js';
import type { HostCacheReport } from './results.js';

/** Calls {@link cacheImages} on the manager registered for each host. */
export class InProcessHostClient implements HostClient {
  readonly #managers: ReadonlyMap<string, ImageManager>;
  readonly #peerToken: string | undefined;
  readonly #peerEndpoints: Readonly<Record<string, string>>;

  /**
   * @param managers - host name → manager, or a list of managers registered under their `host`
   * @param options - the peers' agent token and the hosts' peer endpoints
   */
  constructor(managers: ReadonlyMap<string, ImageManager> | Iterable<ImageManager>, options: InProcessHostClientOptions = {}) {
    this.#managers = isMap(managers) ? new Map(managers) : new Map([...managers].map((manager) => [manager.host, manager]));
    this.#peerToken = options.peerToken;
    this.#peerEndpoints = options.peerEndpoints ?? {};
  }

  /** `host`'s peer endpoint, when one was given. */
  peerEndpointOf(host: PrecacheHost): PeerEndpoint | undefined {
    const url = Object.hasOwn(this.#peerEndpoints, host.name) ? this.#peerEndpoints[host.name] : undefined;
    return url === undefined ? undefined : { name: host.name, url };
  }

  /** Runs {@link cacheImages} on `host`'s manager. */
  cacheImages(host: PrecacheHost, imageIds: readonly string[], options: HostCacheOptions): Promise<HostCacheReport> {
    const manager = this.#managers.get(host.name);
    if (manager === undefined) {
      return Promise.reject(new HostUnavailableError(host.name, 'no image manager is registered for it in this InProcessHostClient'));
    }
    return cacheImages(manager, imageIds, { ...options, peerToken: this.#peerToken });
  }
}

/** Options of {@link InProcessHostClient}. */
export interface InProcessHostClientOptions {
  /**
   * The bearer token of the peers' agents, sent when a request names peers to read from
   * (`HostCacheOptions.peers`). Required for such requests.
   */
  readonly peerToken?: string | undefined;
  /**
   * Host name → the base URL its agent serves its cache to its site's peers at (a
   * `createHostAgent` over the same manager). Hosts not listed have no peer endpoint.
   */
  readonly peerEndpoints?: Readonly<Record<string, string>> | undefined;
}

function isMap(value: ReadonlyMap<string, ImageManager> | Iterable<ImageManager>): value is ReadonlyMap<string, ImageManager> {
  return value instanceof Map;
}
