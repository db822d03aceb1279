/**
 * The site-aware plan of a fan-out ({@link FanOutPlan}): which host to ask next, with which peers
 * and under which speed cap.
 *
 * Per site, one seed host (the site's first up host in plan order) is asked first, with no peers:
 * it pulls from the image service. Once it has answered holding images, the other hosts of the
 * site are asked with `peers` = the site's hosts that hold them (the seed first, then the others
 * as they finish), the list rotated per host so the load spreads, at most
 * {@link MAX_PEERS_PER_HOST} of them. A seed that fails (the call
 * failed, or it holds none of the images) hands over to the next host of the site. Hosts without a
 * site, and the hosts of a site whose peer endpoints are not all known, are asked at once, without
 * peers, as before sites existed.
 *
 * Site speed caps: the site's WAN link carries the image service's bytes, so the site cap is
 * shared by the site's hosts asked without peers (the seed; every host of a site-unaware site).
 * A host's cap is fixed when it is asked: min(its own cap, site cap / such hosts of the site in
 * flight, itself included). This is an approximation: a host asked while another ran alone keeps
 * its larger share until it finishes (so the sum may briefly exceed the site cap), and a host asked
 * with peers is held to its own cap only, even when it falls back to the image service.
 *
 * @module
 */
import { InvalidConfigError } from '../errors.js';
import { createLogger } from '../log.js';
import { bytesPerSecondOrInfinity } from '../options.js';
import type { PeerEndpoint } from '../peer/types.js';
import type { HostClient, PrecacheHost } from './host-client.js';
import type { HostPlace } from './outcomes.js';
import { holdsImages } from './outcomes.js';
import type { PrecacheHostOutcome, SiteFacts } from './summary.js';
import { groupBy } from './validate-aggregate.js';

const log = createLogger('precache');

/**
 * Most peers one host is given: a handful to fall back through is plenty (each peer holds the
 * whole image), and the rotation spreads a large site's load over all its finished hosts anyway.
 */
export const MAX_PEERS_PER_HOST = 8;

/** An up host in the plan. */
export interface PlannedHost {
  /** The host as the aggregate gives it. */
  readonly host: PrecacheHost;
  /** Its names for the outcome. */
  readonly place: HostPlace;
}

/** One call to make: the host, its role and its options. */
export interface HostCall {
  /** The host. */
  readonly planned: PlannedHost;
  /** True when it is asked as its site's seed. */
  readonly seed: boolean;
  /** The site's hosts holding the images, in the order this host should try them. */
  readonly peers: readonly PeerEndpoint[];
  /** Its speed cap, bytes per second (undefined: none). */
  readonly bytesPerSecond: number | undefined;
  /** True when it counts against its site's cap (it pulls from the image service). */
  readonly charged: boolean;
}

interface SiteState {
  readonly name: string;
  readonly peerFanOut: boolean;
  readonly capBytesPerSecond: number;
  /** The current seed (asked, or to be asked), or null when none is left. */
  seed: PlannedHost | null;
  /** The last seed that answered holding images. */
  fed: PlannedHost | null;
  /** Hosts holding the images: the seed first, then in order of finishing. */
  readonly peers: PeerEndpoint[];
  /** Hosts waiting for a seed to finish, in plan order. */
  waiting: PlannedHost[];
  /** Hosts asked with peers so far: the rotation of the next one's list. */
  rotation: number;
  /** Hosts of the site in flight that pull from the image service. */
  pulling: number;
}

/** Checks `siteBytesPerSecond` against the aggregate's sites: a number for each, or one per named site. */
export function siteCapsOf(value: unknown, sites: ReadonlySet<string>): (site: string) => number {
  if (value === undefined) return () => Number.POSITIVE_INFINITY;
  if (typeof value === 'number') {
    bytesPerSecondOrInfinity('siteBytesPerSecond', value);
    return () => value;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidConfigError('siteBytesPerSecond', 'bytes per second for every site, or a site → bytes per second map', value);
  }
  const caps = new Map<string, number>();
  for (const [site, cap] of Object.entries(value)) {
    // A typo in a site name would silently leave that site uncapped.
    if (!sites.has(site)) throw new InvalidConfigError(`siteBytesPerSecond.${site}`, 'a site of the aggregate', site);
    bytesPerSecondOrInfinity(`siteBytesPerSecond.${site}`, cap);
    caps.set(site, cap as number);
  }
  return (site) => caps.get(site) ?? Number.POSITIVE_INFINITY;
}

/** The first `count` items of `list` rotated left by `by` (without copying all of a long list). */
function rotate<T>(list: readonly T[], by: number, count: number): T[] {
  const taken: T[] = [];
  for (let k = 0; k < Math.min(count, list.length); k += 1) taken.push(list[(by + k) % list.length] as T);
  return taken;
}

/** Which host to ask next, with which peers and cap; it learns from every host's outcome. */
export class FanOutPlan {
  readonly #sites = new Map<string, SiteState>();
  readonly #endpoints = new Map<string, PeerEndpoint>();
  readonly #hostCap: number;
  /** Up hosts not finished yet, in plan order (in flight ones included). */
  readonly #remaining: Set<PlannedHost>;
  #ready: PlannedHost[] = [];
  #head = 0;
  /** Seeds taking over from a failed one: asked before anything else. */
  #urgent: PlannedHost[] = [];

  /**
   * @param hosts - the up hosts, in plan order
   * @param client - asked for each site host's peer endpoint
   * @param hostCap - the per-host cap (`bytesPerSecond`), Infinity for none
   * @param siteCap - each site's cap, Infinity for none
   */
  constructor(hosts: readonly PlannedHost[], client: HostClient, hostCap: number, siteCap: (site: string) => number) {
    this.#remaining = new Set(hosts);
    this.#hostCap = hostCap;
    for (const [name, siteHosts] of groupBy(hosts, (planned) => planned.place.site)) {
      let unknown: string | undefined;
      for (const { host } of siteHosts) {
        const endpoint = client.peerEndpointOf?.(host);
        if (endpoint === undefined) unknown ??= host.name;
        else this.#endpoints.set(host.name, endpoint);
      }
      if (unknown !== undefined && siteHosts.length > 1) {
        log('WARNING site %s: no peer endpoint is known for host %s; its hosts all pull from the image service', name, unknown);
      }
      this.#sites.set(name, {
        name,
        // A site of one host has no peers to feed: it needs no endpoint.
        peerFanOut: unknown === undefined || siteHosts.length === 1,
        capBytesPerSecond: siteCap(name),
        seed: null,
        fed: null,
        peers: [],
        waiting: [],
        rotation: 0,
        pulling: 0,
      });
    }
    this.startRound();
  }

  /** Up hosts not finished yet, in plan order. */
  get remaining(): readonly PlannedHost[] {
    return [...this.#remaining];
  }

  /** Each site's seed and mode, in order of first appearance (up hosts only). */
  siteFacts(): SiteFacts[] {
    return [...this.#sites.values()].map((site) => ({ site: site.name, seed: site.fed?.host.name ?? null, peerFanOut: site.peerFanOut }));
  }

  /** Queues the unfinished hosts for a new round (a new window): each site's seed, or all its hosts once a seed fed it. */
  startRound(): void {
    this.#ready = [];
    this.#head = 0;
    this.#urgent = [];
    for (const site of this.#sites.values()) site.waiting = [];
    for (const planned of this.#remaining) {
      const site = this.#siteOf(planned);
      if (site === undefined || site.peers.length > 0) {
        this.#ready.push(planned);
      } else {
        site.seed ??= planned;
        if (site.seed === planned) this.#ready.push(planned);
        else site.waiting.push(planned);
      }
    }
  }

  /** The next call to make, or undefined when every unfinished host waits for a seed (or none is left). */
  take(): HostCall | undefined {
    let planned = this.#urgent.shift();
    if (planned === undefined) {
      planned = this.#ready[this.#head];
      if (planned === undefined) return undefined;
      this.#head += 1;
    }
    const site = this.#site(planned);
    if (site?.peerFanOut === true && site.seed !== planned && site.peers.length > 0) {
      const peers = rotate(site.peers, site.rotation, MAX_PEERS_PER_HOST);
      site.rotation += 1;
      return { planned, seed: false, peers, bytesPerSecond: finite(this.#hostCap), charged: false };
    }
    if (site === undefined) return { planned, seed: false, peers: [], bytesPerSecond: finite(this.#hostCap), charged: false };
    site.pulling += 1;
    const cap = Math.min(this.#hostCap, Math.max(1, Math.floor(site.capBytesPerSecond / site.pulling)));
    return { planned, seed: site.peerFanOut, peers: [], bytesPerSecond: finite(cap), charged: true };
  }

  /** A call ended for good (answered or failed): the host is finished. */
  finish(call: HostCall, outcome: PrecacheHostOutcome): void {
    this.#release(call);
    this.#remaining.delete(call.planned);
    const site = this.#siteOf(call.planned);
    if (site === undefined) return;
    const endpoint = this.#endpoints.get(call.planned.host.name);
    if (holdsImages(outcome) && endpoint !== undefined) site.peers.push(endpoint);
    if (!call.seed) return;
    if (holdsImages(outcome)) {
      site.fed = call.planned;
      this.#ready.push(...site.waiting);
      site.waiting = [];
    } else {
      // The seed holds nothing to share: the next host of the site pulls from the image service.
      site.seed = site.waiting.shift() ?? null;
      if (site.seed !== null) {
        log('site %s: seed %s failed; %s is the new seed', site.name, call.planned.host.name, site.seed.host.name);
        this.#urgent.push(site.seed);
      }
    }
  }

  /** A call was aborted at a window's end: the host stays unfinished, for the next round. */
  pause(call: HostCall): void {
    this.#release(call);
  }

  #release(call: HostCall): void {
    if (!call.charged) return;
    const site = this.#site(call.planned);
    if (site !== undefined) site.pulling -= 1;
  }

  /** The host's site state (peer fan-out or not), if it has a site. */
  #site(planned: PlannedHost): SiteState | undefined {
    return planned.place.site === null ? undefined : this.#sites.get(planned.place.site);
  }

  /** The host's site state when that site fans out through peers. */
  #siteOf(planned: PlannedHost): SiteState | undefined {
    const site = this.#site(planned);
    return site?.peerFanOut === true ? site : undefined;
  }
}

function finite(cap: number): number | undefined {
  return Number.isFinite(cap) ? cap : undefined;
}
