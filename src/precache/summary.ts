/**
 * The fan-out's bookkeeping: what each host did ({@link PrecacheHostOutcome}), the totals Nova's
 * conductor logs, and the summary a pre-cache request resolves to.
 *
 * @module
 */
import { HostUnavailableError } from '../errors.js';
import type { ImageCacheError } from '../errors.js';
import type { HostCacheReport, PrecacheImageResult, PrecacheImageStatus } from './results.js';

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
 *   its counts and notifications (docs/nova-parity.md, gap G); they are counted here.
 */
export type PrecacheHostStatus = 'done' | 'skipped' | 'failed';

/** One image on one host, as the fan-out reports it. */
export interface PrecacheHostImage extends Omit<PrecacheImageResult, 'status'> {
  /** The host's status for the image, or `skipped` when the host was down. */
  readonly status: PrecacheImageStatus | 'skipped';
}

/** What one host did. */
export interface PrecacheHostOutcome {
  /** The host. */
  readonly host: string;
  /** Its cell. */
  readonly cell: string;
  /** How its part ended. */
  readonly status: PrecacheHostStatus;
  /** One entry per requested image, in request order. */
  readonly images: readonly PrecacheHostImage[];
  /** For `failed`: why the host as a whole failed; null otherwise. */
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
  /** Per image, in request order; `error` is the image's failure count (Nova's per-image warning). */
  readonly images: readonly PrecacheImageTally[];
  /** Per host, in aggregate order, with each image's status. */
  readonly hosts: readonly PrecacheHostOutcome[];
  /** When the fan-out started, ms since the epoch. */
  readonly startedAt: number;
  /** Duration, ms. */
  readonly durationMs: number;
  /** True when the request was cancelled; hosts not finished by then are `failed` with `AbortedError`. */
  readonly aborted: boolean;
}

/** The outcome of a host that was down. */
export function skippedOutcome(host: string, cell: string, imageIds: readonly string[]): PrecacheHostOutcome {
  return {
    host,
    cell,
    status: 'skipped',
    images: imageIds.map((imageId) => ({ imageId, status: 'skipped', error: null, bytes: 0, durationMs: 0, pinnedUntil: null, bytesFrom: [] })),
    error: null,
    durationMs: 0,
  };
}

/** The outcome of a host whose call failed: every image is an `error` carrying the host's error. */
export function failedOutcome(
  host: string,
  cell: string,
  imageIds: readonly string[],
  error: ImageCacheError,
  durationMs: number,
): PrecacheHostOutcome {
  return {
    host,
    cell,
    status: 'failed',
    images: imageIds.map((imageId) => ({ imageId, status: 'error', error, bytes: 0, durationMs: 0, pinnedUntil: null, bytesFrom: [] })),
    error,
    durationMs,
  };
}

/**
 * The outcome of a host that answered. A report that does not list exactly the requested images,
 * in order, makes the host `failed`: a client that answers for other images is broken.
 */
export function answeredOutcome(
  host: string,
  cell: string,
  imageIds: readonly string[],
  report: HostCacheReport,
  durationMs: number,
): PrecacheHostOutcome {
  const answered = report.images.map((image) => image.imageId);
  if (answered.length !== imageIds.length || answered.some((imageId, i) => imageId !== imageIds[i])) {
    const error = new HostUnavailableError(
      host,
      `it answered for images [${answered.join(', ')}] instead of [${imageIds.join(', ')}]`,
    );
    return failedOutcome(host, cell, imageIds, error, durationMs);
  }
  return { host, cell, status: 'done', images: report.images, error: null, durationMs };
}

/** The images a host has (cached or existing) and the ones it has not, as Nova's progress payload lists them. */
export function splitCachedFailed(outcome: PrecacheHostOutcome): { cached: string[]; failed: string[] } {
  const cached: string[] = [];
  const failed: string[] = [];
  for (const image of outcome.images) {
    (image.status === 'cached' || image.status === 'existing' ? cached : failed).push(image.imageId);
  }
  return { cached, failed };
}

/** Builds the summary from the outcomes of every host, in aggregate order. */
export function summarise(parts: {
  aggregate: PrecacheAggregateRef;
  imageIds: readonly string[];
  hosts: readonly PrecacheHostOutcome[];
  startedAt: number;
  durationMs: number;
  aborted: boolean;
}): PrecacheSummary {
  const tallies = new Map(
    parts.imageIds.map((imageId) => [imageId, { imageId, cached: 0, existing: 0, error: 0, unsupported: 0, skipped: 0 }]),
  );
  let failedHosts = 0;
  let skippedHosts = 0;
  for (const outcome of parts.hosts) {
    if (outcome.status === 'failed') failedHosts += 1;
    if (outcome.status === 'skipped') skippedHosts += 1;
    for (const image of outcome.images) {
      const tally = tallies.get(image.imageId);
      if (tally !== undefined) tally[image.status] += 1;
    }
  }
  const images = [...tallies.values()];
  const total = (key: 'cached' | 'existing' | 'error' | 'unsupported'): number => images.reduce((sum, tally) => sum + tally[key], 0);
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
    },
    failedHosts,
    images,
    hosts: parts.hosts,
    startedAt: parts.startedAt,
    durationMs: parts.durationMs,
    aborted: parts.aborted,
  };
}

/**
 * The summary in Nova's conductor wording: "Image pre-cache operation for image(s) ... completed in
 * ... seconds; N cached, N existing, N errors, N unsupported, N skipped (down) hosts", then one
 * "Image pre-cache operation for image X failed N times" per image with errors.
 */
export function describePrecacheSummary(summary: PrecacheSummary): string[] {
  const { counts } = summary;
  const lines = [
    `Image pre-cache operation for image(s) ${summary.imageIds.join(', ')} ${summary.aborted ? 'was cancelled after' : 'completed in'} ` +
      `${(summary.durationMs / 1000).toFixed(2)} seconds; ${counts.cached} cached, ${counts.existing} existing, ` +
      `${counts.error} errors, ${counts.unsupported} unsupported, ${counts.skipped} skipped (down) hosts`,
  ];
  for (const tally of summary.images) {
    if (tally.error > 0) lines.push(`Image pre-cache operation for image ${tally.imageId} failed ${tally.error} times`);
  }
  return lines;
}
