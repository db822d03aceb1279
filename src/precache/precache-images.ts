/**
 * {@link precacheImages}: pre-caching across an aggregate (Nova's `POST
 * /os-aggregates/{id}/images` handler, `ComputeTaskAPI.cache_images` and the conductor's
 * `cache_images`), in six steps:
 *
 * 1. validate the request and look every image up in the image source before any host is
 *    contacted (Nova: "don't ask a ton of computes to do something impossible");
 * 2. group the hosts by cell and log the plan;
 * 3. skip hosts that are down;
 * 4. ask at most `concurrency` hosts at a time, each within a timeout, site by site through a seed
 *    and its peers (see sites.ts), only inside the pre-cache window if one is given (pausing the
 *    hosts still working at its end, resuming them in the next); a host failing never stops the
 *    others;
 * 5. emit `start`, `window` changes, one `progress` per host (down and failed hosts too) and `end`;
 * 6. resolve to a summary of every host, image and site.
 *
 * @module
 */
import { throwIfAborted } from '../abort.js';
import { systemClock } from '../clock.js';
import type { Clock } from '../clock.js';
import { InvalidConfigError } from '../errors.js';
import { createLogger } from '../log.js';
import { DEFAULT_OPTIONS, integerFrom } from '../options.js';
import type { ImageSource } from '../source/image-source.js';
import { validateTimeoutMs } from './deadline.js';
import type { PrecacheEvent } from './events.js';
import type { HostClient } from './host-client.js';
import { skippedOutcome, splitCachedFailed } from './outcomes.js';
import { validateImageIds, validateRequestOptions } from './request.js';
import type { PrecacheRequestOptions } from './request.js';
import { HostCalls } from './host-calls.js';
import { FanOutPlan, siteCapsOf } from './sites.js';
import type { PlannedHost } from './sites.js';
import { describePrecacheSummary, summarise } from './summary.js';
import type { PrecacheAggregateRef, PrecacheHostOutcome, PrecacheSummary } from './summary.js';
import { groupByCell, lookUpImages, validateAggregate } from './validate-aggregate.js';
import type { PrecacheAggregate } from './validate-aggregate.js';
import { runInWindows, toSchedule } from './window.js';
import type { PrecacheSchedule, PrecacheWindow } from './window.js';

export { DEFAULT_CELL } from './validate-aggregate.js';
export type { PrecacheAggregate } from './validate-aggregate.js';

const log = createLogger('precache');

/** Nova's `long_rpc_timeout`: how long a compute may take over its `cache_images` call. */
export const DEFAULT_PRECACHE_HOST_TIMEOUT_MS = 1_800_000;

/** Options of {@link precacheImages}. */
export interface PrecacheImagesOptions extends PrecacheRequestOptions {
  /** The hosts to pre-cache on. */
  readonly aggregate: PrecacheAggregate;
  /** The images, each once; cached on every host in this order. */
  readonly imageIds: readonly string[];
  /** Where the images are looked up before any host is asked (the hosts download from their own). */
  readonly source: ImageSource;
  /**
   * How hosts are asked. For hosts with a `site`, its `peerEndpointOf` says where each serves its
   * cache to its site's peers; a site with a host it knows no endpoint of runs site-unaware.
   */
  readonly client: HostClient;
  /** Hosts asked at once (Nova's `[image_cache]precache_concurrency`), seeds and peers alike. Default 1. */
  readonly concurrency?: number | undefined;
  /** How long one host may take, ms (`Infinity`: no limit). Default 1800000 (Nova's `long_rpc_timeout`). */
  readonly timeoutMs?: number | undefined;
  /**
   * Cap on a site's image-service download speed, bytes per second (its WAN link): one number for
   * every site, or per site name. The hosts of a site pulling from the image service at once share
   * it (each: min(`bytesPerSecond`, site cap / such hosts in flight), fixed when it is asked); hosts
   * fed by peers are held to `bytesPerSecond` only. Hosts without a site are not concerned.
   */
  readonly siteBytesPerSecond?: number | Readonly<Record<string, number>> | undefined;
  /**
   * When hosts may be asked: one window, or a schedule of windows ({@link dailyWindow}). Hosts are
   * asked only inside a window; at its end every host still working is aborted with a
   * `PrecacheWindowClosedError` reason (its download keeps its staging) and asked again in the next
   * window. With no window left, the unfinished hosts are reported `deferred`. Default: now, no end.
   */
  readonly window?: PrecacheWindow | PrecacheSchedule | undefined;
  /** The clock windows are read from. Default: the system clock. */
  readonly clock?: Clock | undefined;
  /**
   * Cancels the request: hosts not asked yet are not asked, hosts in flight are told to stop (a
   * wait for a window ends at once), and once every host has completed (each `failed` with
   * `AbortedError`, with its progress event) and `end` was emitted, the call rejects with `AbortedError`.
   */
  readonly signal?: AbortSignal | undefined;
  /** Receives the events. A listener that throws is logged and ignored. */
  readonly onEvent?: ((event: PrecacheEvent) => void) | undefined;
}

/**
 * Pre-caches `imageIds` on every host of `aggregate` and reports what happened on each.
 *
 * @returns the summary: totals, per image, per host and image, per site, duration
 * @throws before any host is contacted and before any event: `InvalidPrecacheRequestError` (no
 *   images, an image twice, a host twice), `InvalidImageIdError`, `InvalidConfigError`, and the
 *   image source's errors for the first bad image (`ImageNotFoundError`, `ImageNotActiveError`,
 *   `NotAuthorizedError`, `ImageServiceUnavailableError`); `AbortedError` when cancelled
 */
export async function precacheImages(options: PrecacheImagesOptions): Promise<PrecacheSummary> {
  const { aggregate, source, client, signal, onEvent, pinTtlSeconds } = options;
  // 1. Validate everything before the first host hears of it.
  const imageIds = validateImageIds(options.imageIds);
  validateRequestOptions(options);
  const concurrency = options.concurrency ?? DEFAULT_OPTIONS.precacheConcurrency;
  integerFrom(1)('concurrency', concurrency);
  const timeoutMs = options.timeoutMs ?? DEFAULT_PRECACHE_HOST_TIMEOUT_MS;
  validateTimeoutMs('timeoutMs', timeoutMs);
  const hosts = validateAggregate(aggregate);
  const siteCap = siteCapsOf(options.siteBytesPerSecond, new Set(hosts.flatMap((host) => (host.site === undefined ? [] : [host.site]))));
  const schedule = options.window === undefined ? undefined : toSchedule(options.window);
  const clock = options.clock ?? systemClock;
  if (typeof (clock as Partial<Clock>).now !== 'function') throw new InvalidConfigError('clock', 'a Clock ({ now(): number })', clock);
  await lookUpImages(source, imageIds, signal);

  const startedAt = clock.now();
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
      site: outcome.site,
      seed: outcome.seed,
      status: outcome.status,
      index: completed,
      total: hosts.length,
      images_cached: cached,
      images_failed: failed,
      bytes_from: outcome.bytesFrom,
      blamed_peers: outcome.blamedPeers,
      error: outcome.error,
    });
  };

  // 3. Down hosts complete at once; the others go to the plan in plan order.
  const up: PlannedHost[] = [];
  for (const [cell, cellHosts] of cells) {
    for (const host of cellHosts) {
      const place = { host: host.name, cell, site: host.site ?? null };
      if (host.up === false) {
        log("Skipping image pre-cache request to compute '%s' because it is not up", host.name);
        complete(skippedOutcome(place, imageIds));
      } else {
        up.push({ host, place });
      }
    }
  }
  const plan = new FanOutPlan(up, client, options.bytesPerSecond ?? Number.POSITIVE_INFINITY, siteCap);
  const calls = new HostCalls({ client, imageIds, pinTtlSeconds, timeoutMs, concurrency, signal, plan, complete });

  // 4. Rounds: one without a window, one per window with one.
  const lastEnd =
    schedule === undefined
      ? (await calls.round(undefined), null)
      : await runInWindows({
          schedule,
          clock,
          signal,
          unfinished: () => plan.remaining.length,
          round: (windowSignal) => {
            plan.startRound();
            return calls.round(windowSignal);
          },
          onWindow: (state, window, paused) => {
            emit({ type: 'aggregate.cache_images.window', aggregate: ref, state, ...window, paused, remaining: plan.remaining.length });
          },
        });

  // Hosts left over: cancelled, or no window was left for them.
  calls.settleLeftovers(lastEnd);

  // 5 and 6.
  const summary = summarise({
    aggregate: ref,
    imageIds,
    hosts: hosts.map((host) => outcomes.get(host.name) ?? unreachable(host.name)),
    sites: plan.siteFacts(),
    startedAt,
    durationMs: performance.now() - started,
    aborted: aborted(),
  });
  for (const line of describePrecacheSummary(summary)) log('%s', line);
  emit({ type: 'aggregate.cache_images.end', aggregate: { ...ref, hosts: hostNames }, summary });
  throwIfAborted(signal, 'Pre-caching');
  return summary;
}

function unreachable(host: string): never {
  throw new Error(`internal error: host ${host} has no outcome`);
}
