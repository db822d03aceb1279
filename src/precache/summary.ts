/**
 * The fan-out's bookkeeping: what each host did ({@link PrecacheHostOutcome}), the totals Nova's
 * conductor logs, and the summary a pre-cache request resolves to.
 *
 * @module
 */
import type { ImageCacheError } from '../errors.js';
import type { BytesFrom } from '../peer/types.js';
import type { PrecacheImageResult, PrecacheImageStatus } from './results.js';

/** An aggregate, as events and summaries name it (Nova's `AggregatePayload` id and name). */
export interface PrecacheAggregateRef {
  /** The aggregate's id. */
  readonly id: string | number;
  /** The aggregate's name. */
  readonly name: string;
}

/**
 * How a host's part ended:
 * - `done`: the host answered, one status per image;
 * - `skipped`: the host was down and was not contacted (its images are `skipped`);
 * - `failed`: the host could not be asked or did not answer (timeout, refused credentials, network,
 *   cancelled); every image counts as `error` with the host's error. Nova drops such hosts from
 *   its counts and notifications (docs/nova-parity.md, gap G); they are counted here;
 * - `deferred`: the pre-cache window closed before the host finished (or before it was asked) and
 *   no later window came; its images are `deferred` and its error is a `PrecacheWindowClosedError`.
 *   Asking again resumes its downloads from their kept staging.
 */
export type PrecacheHostStatus = 'done' | 'skipped' | 'failed' | 'deferred';

/** One image on one host, as the fan-out reports it. */
export interface PrecacheHostImage extends Omit<PrecacheImageResult, 'status'> {
  /** The host's status for the image, `skipped` when the host was down, `deferred` when no window was left for it. */
  readonly status: PrecacheImageStatus | 'skipped' | 'deferred';
}

/** What one host did. */
export interface PrecacheHostOutcome {
  /** The host. */
  readonly host: string;
  /** Its cell. */
  readonly cell: string;
  /** Its site, or null for a host without one. */
  readonly site: string | null;
  /** True when it was asked as its site's seed: to pull from the image service, with no peers. */
  readonly seed: boolean;
  /** How its part ended. */
  readonly status: PrecacheHostStatus;
  /** One entry per requested image, in request order. */
  readonly images: readonly PrecacheHostImage[];
  /** Bytes it downloaded, per origin, summed over its images (`glance` first, then peers as first seen). */
  readonly bytesFrom: readonly BytesFrom[];
  /**
   * The peers it blamed for serving bytes that failed verification, over its images (each peer
   * once, in the order first blamed); usually empty. Per image: each image's `blamedPeers`.
   */
  readonly blamedPeers: readonly string[];
  /** For `failed` and `deferred`: why the host as a whole did not finish; null otherwise. */
  readonly error: ImageCacheError | null;
  /** Time from the call to the answer, ms (0 for `skipped`). */
  readonly durationMs: number;
}

/**
 * Totals over images x hosts, as Nova's conductor logs them, except `skipped`: the number of hosts
 * that were down (Nova's "skipped (down) hosts").
 */
export interface PrecacheCounts {
  /** Image x host pairs downloaded by this request. */
  readonly cached: number;
  /** Image x host pairs that were already cached (and were touched). */
  readonly existing: number;
  /** Image x host pairs that failed, failed hosts included. */
  readonly error: number;
  /** Image x host pairs whose host keeps no image cache. */
  readonly unsupported: number;
  /** Hosts that were down and not contacted. */
  readonly skipped: number;
  /** Image x host pairs left for a later window (their hosts are `deferred`). */
  readonly deferred: number;
}

/** One site across the aggregate: who pulled from the image service, and the bytes the peers saved. */
export interface PrecacheSiteTotals {
  /** The site. */
  readonly site: string;
  /** Its hosts, down ones included. */
  readonly hosts: number;
  /** The host whose cache fed the others (the last seed that answered with images), or null. */
  readonly seed: string | null;
  /** False when the site was pre-cached site-unaware (a host's peer endpoint was unknown): every host from the image service. */
  readonly peerFanOut: boolean;
  /** Bytes its hosts downloaded from the image service (over the site's WAN link). */
  readonly bytesFromGlance: number;
  /** Bytes its hosts downloaded from each other. */
  readonly bytesFromPeers: number;
  /** Image service bytes the peers saved: {@link PrecacheSiteTotals.bytesFromPeers}. */
  readonly bytesSaved: number;
}

/**
 * A peer blamed by a host for serving bytes of an image that failed verification (a bad digest):
 * the host discarded them and read the image elsewhere, but the peer likely holds a corrupt copy.
 */
export interface PrecacheBlamedPeer {
  /** The peer (host name) that served the bad bytes. */
  readonly peer: string;
  /** The host that blamed it. */
  readonly by: string;
  /** The image. */
  readonly imageId: string;
}

/** One image across the aggregate: how many hosts ended in each status. */
export interface PrecacheImageTally extends PrecacheCounts {
  /** The image. */
  readonly imageId: string;
}

/** What a pre-cache request resolves to. Serialisable with `JSON.stringify`. */
export interface PrecacheSummary {
  /** The aggregate. */
  readonly aggregate: PrecacheAggregateRef;
  /** The images, in request order. */
  readonly imageIds: readonly string[];
  /** Hosts in the aggregate, down ones included. */
  readonly totalHosts: number;
  /** Totals. */
  readonly counts: PrecacheCounts;
  /** Hosts whose call failed as a whole (their images are counted under `error`). */
  readonly failedHosts: number;
  /** Hosts left for a later window (their images are counted under `deferred`). */
  readonly deferredHosts: number;
  /** Per site, in order of first appearance in the aggregate; empty when no host names a site. */
  readonly sites: readonly PrecacheSiteTotals[];
  /** Per image, in request order; `error` is the image's failure count (Nova's per-image warning). */
  readonly images: readonly PrecacheImageTally[];
  /** Per host, in aggregate order, with each image's status. */
  readonly hosts: readonly PrecacheHostOutcome[];
  /**
   * Peers blamed for serving bad bytes (a bad digest), by host (aggregate order) and image
   * (request order); usually empty. Each one is worth checking: its cache likely holds a corrupt copy.
   */
  readonly blamedPeers: readonly PrecacheBlamedPeer[];
  /** When the fan-out started, ms since the epoch. */
  readonly startedAt: number;
  /** Duration, ms. */
  readonly durationMs: number;
  /** True when the request was cancelled; hosts not finished by then are `failed` with `AbortedError`. */
  readonly aborted: boolean;
}

/** Builds the summary from the outcomes of every host, in aggregate order. */
export function summarise(parts: {
  aggregate: PrecacheAggregateRef;
  imageIds: readonly string[];
  hosts: readonly PrecacheHostOutcome[];
  /** Each site's seed and whether its peers were used (sites without an up host may be missing). */
  sites: readonly SiteFacts[];
  startedAt: number;
  durationMs: number;
  aborted: boolean;
}): PrecacheSummary {
  const tallies = new Map(
    parts.imageIds.map((imageId) => [imageId, { imageId, cached: 0, existing: 0, error: 0, unsupported: 0, skipped: 0, deferred: 0 }]),
  );
  let failedHosts = 0;
  let skippedHosts = 0;
  let deferredHosts = 0;
  for (const outcome of parts.hosts) {
    if (outcome.status === 'failed') failedHosts += 1;
    if (outcome.status === 'skipped') skippedHosts += 1;
    if (outcome.status === 'deferred') deferredHosts += 1;
    for (const image of outcome.images) {
      const tally = tallies.get(image.imageId);
      if (tally !== undefined) tally[image.status] += 1;
    }
  }
  const images = [...tallies.values()];
  const total = (key: 'cached' | 'existing' | 'error' | 'unsupported' | 'deferred'): number => images.reduce((sum, tally) => sum + tally[key], 0);
  return {
    aggregate: { id: parts.aggregate.id, name: parts.aggregate.name },
    imageIds: parts.imageIds,
    totalHosts: parts.hosts.length,
    counts: {
      cached: total('cached'),
      existing: total('existing'),
      error: total('error'),
      unsupported: total('unsupported'),
      skipped: skippedHosts,
      deferred: total('deferred'),
    },
    failedHosts,
    deferredHosts,
    sites: siteTotals(parts.sites, parts.hosts),
    images,
    hosts: parts.hosts,
    blamedPeers: parts.hosts.flatMap((outcome) =>
      outcome.images.flatMap((image) => image.blamedPeers.map((peer) => ({ peer, by: outcome.host, imageId: image.imageId }))),
    ),
    startedAt: parts.startedAt,
    durationMs: parts.durationMs,
    aborted: parts.aborted,
  };
}

/**
 * The summary in Nova's conductor wording: "Image pre-cache operation for image(s) ... completed in
 * ... seconds; N cached, N existing, N errors, N unsupported, N skipped (down) hosts", then one
 * "Image pre-cache operation for image X failed N times" per image with errors; then one line per
 * site, and one "Peer P served bad bytes for image X to host H; check its cache" per blamed peer.
 */
export function describePrecacheSummary(summary: PrecacheSummary): string[] {
  const { counts } = summary;
  const lines = [
    `Image pre-cache operation for image(s) ${summary.imageIds.join(', ')} ${summary.aborted ? 'was cancelled after' : 'completed in'} ` +
      `${(summary.durationMs / 1000).toFixed(2)} seconds; ${counts.cached} cached, ${counts.existing} existing, ` +
      `${counts.error} errors, ${counts.unsupported} unsupported, ${counts.skipped} skipped (down) hosts` +
      (counts.deferred > 0 ? `, ${counts.deferred} deferred to a later window (${summary.deferredHosts} hosts)` : ''),
  ];
  for (const tally of summary.images) {
    if (tally.error > 0) lines.push(`Image pre-cache operation for image ${tally.imageId} failed ${tally.error} times`);
  }
  for (const site of summary.sites) {
    const how = site.peerFanOut ? `seed ${site.seed ?? 'none'}` : 'site-unaware: no peer endpoints';
    lines.push(
      `Site ${site.site} (${site.hosts} hosts, ${how}): ${site.bytesFromGlance} bytes from glance, ` +
        `${site.bytesFromPeers} bytes from peers (${site.bytesSaved} bytes saved)`,
    );
  }
  for (const blame of summary.blamedPeers) lines.push(describeBlamedPeer(blame));
  return lines;
}

/** "Peer P served bad bytes for image X to host H; check its cache". */
export function describeBlamedPeer(blame: PrecacheBlamedPeer): string {
  return `Peer ${blame.peer} served bad bytes for image ${blame.imageId} to host ${blame.by}; check its cache`;
}

/** What the fan-out knows of a site besides its hosts' outcomes. */
export interface SiteFacts {
  /** The site. */
  readonly site: string;
  /** The seed whose cache fed the others, or null. */
  readonly seed: string | null;
  /** False when the site ran site-unaware. */
  readonly peerFanOut: boolean;
}

function siteTotals(sites: readonly SiteFacts[], hosts: readonly PrecacheHostOutcome[]): PrecacheSiteTotals[] {
  const facts = new Map(sites.map((site) => [site.site, site]));
  const totals = new Map<string, { hosts: number; bytesFromGlance: number; bytesFromPeers: number }>();
  // In aggregate order, down hosts included: a site whose hosts were all down still has its line.
  for (const outcome of hosts) {
    if (outcome.site === null) continue;
    const total = totals.get(outcome.site) ?? { hosts: 0, bytesFromGlance: 0, bytesFromPeers: 0 };
    totals.set(outcome.site, total);
    total.hosts += 1;
    for (const { from, bytes } of outcome.bytesFrom) {
      if (from === 'glance') total.bytesFromGlance += bytes;
      else total.bytesFromPeers += bytes;
    }
  }
  return [...totals].map(([site, total]) => ({
    site,
    hosts: total.hosts,
    seed: facts.get(site)?.seed ?? null,
    peerFanOut: facts.get(site)?.peerFanOut ?? false,
    bytesFromGlance: total.bytesFromGlance,
    bytesFromPeers: total.bytesFromPeers,
    bytesSaved: total.bytesFromPeers,
  }));
}
