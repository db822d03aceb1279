/**
 * {@link precacheImages}: pre-caching across an aggregate (Nova's `POST
 * /os-aggregates/{id}/images` handler, `ComputeTaskAPI.cache_images` and the conductor's
 * `cache_images`), in six steps:
 *
 * 1. validate the request and look every image up in the image source before any host is
 *    contacted (Nova: "don't ask a ton of computes to do something impossible");
 * 2. group the hosts by cell and log the plan;
 * 3. skip hosts that are down;
 * 4. ask at most `concurrency` hosts at a time, each within a timeout; a host failing never stops
 *    the others;
 * 5. emit `start`, one `progress` per host (down and failed hosts too) and `end`;
 * 6. resolve to a summary of every host and image.
 *
 * @module
 */
import pLimit from 'p-limit';
import { throwIfAborted } from '../abort.js';
import {
  AbortedError,
  HostTimeoutError,
  HostUnavailableError,
  ImageNotActiveError,
  InvalidConfigError,
  InvalidPrecacheRequestError,
  isImageCacheError,
} from '../errors.js';
import type { ImageCacheError } from '../errors.js';
import { createLogger } from '../log.js';
import { DEFAULT_OPTIONS, integerFrom } from '../options.js';
import type { ImageSource } from '../source/image-source.js';
import { toImageCacheError } from './cache-images.js';
import { validateTimeoutMs } from './deadline.js';
import { DeadlineGroup } from './deadline-group.js';
import type { PrecacheEvent } from './events.js';
import type { HostClient, PrecacheHost } from './host-client.js';
import { validateImageIds, validateRequestOptions } from './request.js';
import type { PrecacheRequestOptions } from './request.js';
import {
  answeredOutcome,
  describePrecacheSummary,
  failedOutcome,
  skippedOutcome,
  splitCachedFailed,
  summarise,
} from './summary.js';
import type { PrecacheAggregateRef, PrecacheHostOutcome, PrecacheSummary } from './summary.js';

const log = createLogger('precache');

/** Nova's `long_rpc_timeout`: how long a compute may take over its `cache_images` call. */
export const DEFAULT_PRECACHE_HOST_TIMEOUT_MS = 1_800_000;

/** The cell of hosts that name none. */
export const DEFAULT_CELL = 'default';

/** Image lookups in flight during validation: a handful, not one per image at once. */
const LOOKUP_CONCURRENCY = 8;

/** An aggregate: a named set of hosts. */
export interface PrecacheAggregate extends PrecacheAggregateRef {
  /** Its hosts, each named once. */
  readonly hosts: readonly PrecacheHost[];
}

/** Options of {@link precacheImages}. */
export interface PrecacheImagesOptions extends PrecacheRequestOptions {
  /** The hosts to pre-cache on. */
  readonly aggregate: PrecacheAggregate;
  /** The images, each once; cached on every host in this order. */
  readonly imageIds: readonly string[];
  /** Where the images are looked up before any host is asked (the hosts download from their own). */
  readonly source: ImageSource;
  /** How hosts are asked. */
  readonly client: HostClient;
  /** Hosts asked at once (Nova's `[image_cache]precache_concurrency`). Default 1. */
  readonly concurrency?: number | undefined;
  /** How long one host may take, ms (`Infinity`: no limit). Default 1800000 (Nova's `long_rpc_timeout`). */
  readonly timeoutMs?: number | undefined;
  /**
   * Cancels the request: hosts not asked yet are not asked, hosts in flight are told to stop, and
   * once every host has completed (each `failed` with `AbortedError`, with its progress event)
   * and `end` was emitted, the call rejects with `AbortedError`.
   */
  readonly signal?: AbortSignal | undefined;
  /** Receives the events. A listener that throws is logged and ignored. */
  readonly onEvent?: ((event: PrecacheEvent) => void) | undefined;
}

/**
 * Pre-caches `imageIds` on every host of `aggregate` and reports what happened on each.
 *
 * @returns the summary: totals, per image, per host and image, duration
 * @throws before any host is contacted and before any event: `InvalidPrecacheRequestError` (no
 *   images, an image twice, a host twice), `InvalidImageIdError`, `InvalidConfigError`, and the
 *   image source's errors for the first bad image (`ImageNotFoundError`, `ImageNotActiveError`,
 *   `NotAuthorizedError`, `ImageServiceUnavailableError`); `AbortedError` when cancelled
 */
export async function precacheImages(options: PrecacheImagesOptions): Promise<PrecacheSummary> {
  const { aggregate, source, client, signal, onEvent, pinTtlSeconds, bytesPerSecond } = options;
  // 1. Validate everything before the first host hears of it.
  const imageIds = validateImageIds(options.imageIds);
  validateRequestOptions(options);
  const concurrency = options.concurrency ?? DEFAULT_OPTIONS.precacheConcurrency;
  integerFrom(1)('concurrency', concurrency);
  const timeoutMs = options.timeoutMs ?? DEFAULT_PRECACHE_HOST_TIMEOUT_MS;
  validateTimeoutMs('timeoutMs', timeoutMs);
  const hosts = validateAggregate(aggregate);
  await lookUpImages(source, imageIds, signal);

  const startedAt = Date.now();
  const started = performance.now();
  const ref: PrecacheAggregateRef = { id: aggregate.id, name: aggregate.name };
  const hostNames = hosts.map((host) => host.name);
  // A function, not a narrowed property: the signal may fire during any await.
  const aborted = (): boolean => signal?.aborted === true;
  const emit = (event: PrecacheEvent): void => {
    try {
      onEvent?.(event);
    } catch (listenerError) {
      log('onEvent listener threw on %s: %O', event.type, listenerError);
    }
  };

  // 2. The plan, by cell.
  const cells = groupByCell(hosts);
  log(
    'Preparing to request pre-caching of image(s) %s on %d hosts across %d cells.',
    imageIds.join(', '),
    hosts.length,
    cells.size,
  );
  emit({ type: 'aggregate.cache_images.start', aggregate: { ...ref, hosts: hostNames }, imageIds, total: hosts.length });

  const outcomes = new Map<string, PrecacheHostOutcome>();
  let completed = 0;
  // Single-threaded: the count and the event are one synchronous step, so indexes are 1..total
  // with no gaps or repeats (Nova increments outside its lock:
  // docs/nova-parity.md, gap G).
  const complete = (outcome: PrecacheHostOutcome): void => {
    outcomes.set(outcome.host, outcome);
    completed += 1;
    const { cached, failed } = splitCachedFailed(outcome);
    emit({
      type: 'aggregate.cache_images.progress',
      aggregate: ref,
      host: outcome.host,
      cell: outcome.cell,
      status: outcome.status,
      index: completed,
      total: hosts.length,
      images_cached: cached,
      images_failed: failed,
      error: outcome.error,
    });
  };

  // One timer and signal per batch of hosts started together, not per host (see DeadlineGroup).
  const deadlines = new DeadlineGroup(signal, timeoutMs);
  const askHost = async (host: PrecacheHost, cell: string): Promise<void> => {
    const hostStarted = performance.now();
    if (aborted()) {
      complete(failedOutcome(host.name, cell, imageIds, new AbortedError(`Pre-caching on host ${host.name}`, undefined, signal?.reason), 0));
      return;
    }
    const deadline = deadlines.start();
    try {
      const report = await deadline.race(
        client.cacheImages(host, imageIds, { signal: deadline.signal, pinTtlSeconds, bytesPerSecond }),
      );
      complete(answeredOutcome(host.name, cell, imageIds, report, performance.now() - hostStarted));
    } catch (thrown) {
      let error: ImageCacheError;
      if (deadline.timedOut) error = new HostTimeoutError(host.name, timeoutMs);
      else if (aborted()) error = new AbortedError(`Pre-caching on host ${host.name}`, undefined, signal?.reason);
      else error = toHostError(thrown, host.name);
      log('pre-caching on host %s failed: %s', host.name, error.message);
      complete(failedOutcome(host.name, cell, imageIds, error, performance.now() - hostStarted));
    } finally {
      deadline.done();
    }
  };

  // 3 and 4. Down hosts complete at once; the others queue in plan order, `concurrency` at a time.
  const limit = pLimit(concurrency);
  const running: Promise<void>[] = [];
  for (const [cell, cellHosts] of cells) {
    for (const host of cellHosts) {
      if (host.up === false) {
        log("Skipping image pre-cache request to compute '%s' because it is not up", host.name);
        complete(skippedOutcome(host.name, cell, imageIds));
      } else {
        running.push(limit(askHost, host, cell));
      }
    }
  }
  try {
    await Promise.all(running);
  } finally {
    deadlines.close();
  }

  // 5 and 6.
  const summary = summarise({
    aggregate: ref,
    imageIds,
    hosts: hosts.map((host) => outcomes.get(host.name) ?? unreachable(host.name)),
    startedAt,
    durationMs: performance.now() - started,
    aborted: aborted(),
  });
  for (const line of describePrecacheSummary(summary)) log('%s', line);
  emit({ type: 'aggregate.cache_images.end', aggregate: { ...ref, hosts: hostNames }, summary });
  throwIfAborted(signal, 'Pre-caching');
  return summary;
}

/** What a client threw, as a typed error about the host (an untyped throw is a broken client). */
function toHostError(thrown: unknown, host: string): ImageCacheError {
  if (isImageCacheError(thrown)) return thrown;
  const detail = thrown instanceof Error ? thrown.message : String(thrown);
  return new HostUnavailableError(host, `its client failed: ${detail}`, { cause: thrown });
}

function unreachable(host: string): never {
  throw new Error(`internal error: host ${host} has no outcome`);
}

/** Checks the aggregate's shape and host names; returns its hosts. */
function validateAggregate(aggregate: PrecacheAggregate): readonly PrecacheHost[] {
  const { id, name, hosts } = aggregate as Partial<Record<keyof PrecacheAggregate, unknown>>;
  if (!(typeof id === 'string' && id !== '') && !(typeof id === 'number' && Number.isSafeInteger(id))) {
    throw new InvalidConfigError('aggregate.id', 'a non-empty string or an integer', id);
  }
  if (typeof name !== 'string') throw new InvalidConfigError('aggregate.name', 'a string', name);
  if (!Array.isArray(hosts)) throw new InvalidConfigError('aggregate.hosts', 'an array of hosts ({ name, cell?, up? })', hosts);
  const seen = new Set<string>();
  for (const candidate of hosts as readonly unknown[]) {
    const host = (typeof candidate === 'object' && candidate !== null ? candidate : {}) as Record<'name' | 'cell' | 'up', unknown>;
    if (typeof host.name !== 'string' || host.name === '') {
      throw new InvalidConfigError('aggregate.hosts[].name', 'a non-empty host name', host.name);
    }
    if (host.cell !== undefined && (typeof host.cell !== 'string' || host.cell === '')) {
      throw new InvalidConfigError(`cell of host ${host.name}`, 'a non-empty cell name', host.cell);
    }
    if (host.up !== undefined && typeof host.up !== 'boolean') {
      throw new InvalidConfigError(`up of host ${host.name}`, 'true or false', host.up);
    }
    if (seen.has(host.name)) {
      throw new InvalidPrecacheRequestError(`host ${host.name} appears twice in aggregate ${aggregate.name}; list each host once.`);
    }
    seen.add(host.name);
  }
  return hosts as readonly PrecacheHost[];
}

/**
 * Describes every image; the first bad one in request order fails the request (so the error does
 * not depend on which lookup answered first). A source that reports a non-active image without
 * rejecting is caught here too.
 */
async function lookUpImages(source: ImageSource, imageIds: readonly string[], signal: AbortSignal | undefined): Promise<void> {
  const limit = pLimit(LOOKUP_CONCURRENCY);
  const lookups = await Promise.allSettled(
    imageIds.map((imageId) =>
      limit(async () => {
        throwIfAborted(signal, 'Pre-cache validation', imageId);
        const info = await source.describe(imageId, { signal });
        if (info.status !== 'active') throw new ImageNotActiveError(imageId, info.status);
      }),
    ),
  );
  for (const [i, lookup] of lookups.entries()) {
    if (lookup.status === 'rejected') {
      const imageId = imageIds[i] ?? '';
      log('pre-cache request rejected: image %s failed validation', imageId);
      throw toImageCacheError(lookup.reason, imageId);
    }
  }
}

/** Hosts by cell, cells in order of first appearance, hosts in aggregate order. */
function groupByCell(hosts: readonly PrecacheHost[]): Map<string, PrecacheHost[]> {
  const cells = new Map<string, PrecacheHost[]>();
  for (const host of hosts) {
    const cell = host.cell ?? DEFAULT_CELL;
    const members = cells.get(cell);
    if (members === undefined) cells.set(cell, [host]);
    else members.push(host);
  }
  return cells;
}
