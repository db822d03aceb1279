/**
 * The fan-out's per-host outcomes ({@link PrecacheHostOutcome}) built from what happened to a
 * host: down, failed, answered, or left for a later window; and the per-origin byte sums.
 *
 * @module
 */
import { HostUnavailableError } from '../errors.js';
import type { ImageCacheError } from '../errors.js';
import type { BytesFrom } from '../peer/types.js';
import type { HostCacheReport, PrecacheImageResult } from './results.js';
import type { PrecacheHostImage, PrecacheHostOutcome } from './summary.js';

/** A host as its outcome names it. */
export interface HostPlace {
  /** The host. */
  readonly host: string;
  /** Its cell. */
  readonly cell: string;
  /** Its site, or null. */
  readonly site: string | null;
}

/** Every image in one status, carrying `error`. */
function allImages(imageIds: readonly string[], status: PrecacheHostImage['status'], error: ImageCacheError | null): PrecacheHostImage[] {
  return imageIds.map((imageId) => ({ imageId, status, error, bytes: 0, bytesFrom: [], blamedPeers: [], durationMs: 0, pinnedUntil: null }));
}

/** The outcome of a host that was down. */
export function skippedOutcome(place: HostPlace, imageIds: readonly string[]): PrecacheHostOutcome {
  return {
    ...place,
    seed: false,
    status: 'skipped',
    images: allImages(imageIds, 'skipped', null),
    bytesFrom: [],
    blamedPeers: [],
    error: null,
    durationMs: 0,
  };
}

/**
 * The outcome of a host that did not finish: `failed` (its call failed; every image is an `error`
 * carrying the host's error) or `deferred` (no window was left for it: paused at a window's end,
 * or never asked; every image is `deferred`).
 */
export function unfinishedOutcome(
  status: 'failed' | 'deferred',
  place: HostPlace,
  imageIds: readonly string[],
  error: ImageCacheError,
  durationMs: number,
  seed = false,
): PrecacheHostOutcome {
  const images = allImages(imageIds, status === 'failed' ? 'error' : 'deferred', error);
  return { ...place, seed, status, images, bytesFrom: [], blamedPeers: [], error, durationMs };
}

/**
 * The outcome of a host that answered. A report that does not list exactly the requested images,
 * in order, makes the host `failed`: a client that answers for other images is broken.
 */
export function answeredOutcome(
  place: HostPlace,
  imageIds: readonly string[],
  report: HostCacheReport,
  durationMs: number,
  seed = false,
): PrecacheHostOutcome {
  const answered = report.images.map((image) => image.imageId);
  if (answered.length !== imageIds.length || answered.some((imageId, i) => imageId !== imageIds[i])) {
    const error = new HostUnavailableError(
      place.host,
      `it answered for images [${answered.join(', ')}] instead of [${imageIds.join(', ')}]`,
    );
    return unfinishedOutcome('failed', place, imageIds, error, durationMs, seed);
  }
  const images = report.images.map((image) => ({ ...image, bytesFrom: bytesFromOf(image), blamedPeers: blamedPeersOf(image) }));
  return {
    ...place,
    seed,
    status: 'done',
    images,
    bytesFrom: sumBytesFrom(images.map((image) => image.bytesFrom)),
    blamedPeers: [...new Set(images.flatMap((image) => image.blamedPeers))],
    error: null,
    durationMs,
  };
}

/** True when the host now holds at least one of the images: it can serve its site's peers. */
export function holdsImages(outcome: PrecacheHostOutcome): boolean {
  return outcome.status === 'done' && outcome.images.some((image) => image.status === 'cached' || image.status === 'existing');
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

/**
 * An image's byte origins. A client written before origins were reported (no `bytesFrom`) is read
 * as having downloaded its `cached` bytes from the image service.
 */
function bytesFromOf(image: PrecacheImageResult): readonly BytesFrom[] {
  const given: unknown = (image as Partial<PrecacheImageResult>).bytesFrom;
  if (Array.isArray(given)) return given as readonly BytesFrom[];
  return image.status === 'cached' && image.bytes > 0 ? [{ from: 'glance', bytes: image.bytes }] : [];
}

/** An image's blamed peers; a client written before blame was reported (no `blamedPeers`) is read as blaming none. */
function blamedPeersOf(image: PrecacheImageResult): readonly string[] {
  const given: unknown = (image as Partial<PrecacheImageResult>).blamedPeers;
  return Array.isArray(given) ? (given as readonly string[]) : [];
}

/** Per-origin sums: `glance` first, then the peers in order of first appearance; zero sums left out. */
export function sumBytesFrom(lists: Iterable<readonly BytesFrom[]>): BytesFrom[] {
  const sums = new Map<BytesFrom['from'], number>([['glance', 0]]);
  for (const list of lists) {
    for (const { from, bytes } of list) sums.set(from, (sums.get(from) ?? 0) + bytes);
  }
  return [...sums].filter(([, bytes]) => bytes > 0).map(([from, bytes]) => ({ from, bytes }));
}
