/**
 * The fan-out's events, named and shaped after Nova's notifications: one `start`, one `progress`
 * per host (down and failed hosts included, unlike Nova), one `end`; with a pre-cache window, a
 * `window` event as the fan-out waits for a window, as it opens and as it closes. The progress payload keeps
 * Nova's `AggregateCachePayload` field names (`images_cached`, `images_failed`) so a bridge to a
 * notification bus can forward it as is.
 *
 * @module
 */
import type { ImageCacheError } from '../errors.js';
import type { BytesFrom } from '../peer/types.js';
import type { PrecacheAggregateRef, PrecacheHostStatus, PrecacheSummary } from './summary.js';

/** The aggregate with its host names, as start and end events carry it (Nova's `AggregatePayload`). */
export interface PrecacheAggregateWithHosts extends PrecacheAggregateRef {
  /** Its hosts, in aggregate order. */
  readonly hosts: readonly string[];
}

/** Emitted once, after validation and before any host is contacted. */
export interface PrecacheStartEvent {
  /** Nova's event type. */
  readonly type: 'aggregate.cache_images.start';
  /** The aggregate and its hosts. */
  readonly aggregate: PrecacheAggregateWithHosts;
  /** The images, in request order. */
  readonly imageIds: readonly string[];
  /** Hosts in the aggregate. */
  readonly total: number;
}

/** Emitted once per host, when it finished, failed or was skipped. */
export interface PrecacheProgressEvent {
  /** Nova's event type. */
  readonly type: 'aggregate.cache_images.progress';
  /** The aggregate. */
  readonly aggregate: PrecacheAggregateRef;
  /** The host just completed. */
  readonly host: string;
  /** Its cell. */
  readonly cell: string;
  /** Its site, or null for a host without one. */
  readonly site: string | null;
  /** True when it was asked as its site's seed (from the image service, no peers). */
  readonly seed: boolean;
  /** How its part ended. */
  readonly status: PrecacheHostStatus;
  /** 1 to `total`, in order of completion (not host order). */
  readonly index: number;
  /** Hosts in the aggregate, down ones included. */
  readonly total: number;
  /** Images the host now has (`cached` or `existing`). */
  readonly images_cached: readonly string[];
  /** Images it has not (`error`, `unsupported`, `skipped`). */
  readonly images_failed: readonly string[];
  /** Bytes it downloaded, per origin (`glance`, `peer:<host>`), summed over its images. */
  readonly bytes_from: readonly BytesFrom[];
  /** Peers it blamed for serving bytes that failed verification (a bad digest), over its images; usually empty. */
  readonly blamed_peers: readonly string[];
  /** For a failed or deferred host, why. */
  readonly error: ImageCacheError | null;
}

/**
 * A pre-cache window's state changed:
 * - `waiting`: no window is open; hosts are asked once it opens at `start`;
 * - `open`: hosts are asked until `end`;
 * - `closed`: the window ended with hosts unfinished; `paused` were aborted mid-call (their
 *   downloads keep their staging) and are asked again in the next window, with the others.
 */
export interface PrecacheWindowEvent {
  /** The event type. */
  readonly type: 'aggregate.cache_images.window';
  /** The aggregate. */
  readonly aggregate: PrecacheAggregateRef;
  /** What happened. */
  readonly state: 'waiting' | 'open' | 'closed';
  /** When the window opens (opened), ms since the epoch. */
  readonly start: number;
  /** When it closes (closed), ms since the epoch. */
  readonly end: number;
  /** For `closed`: the hosts aborted at its end; empty otherwise. */
  readonly paused: readonly string[];
  /** Hosts not finished yet (down hosts excluded). */
  readonly remaining: number;
}

/** Emitted once, after every host completed (also when the request was cancelled). */
export interface PrecacheEndEvent {
  /** Nova's event type. */
  readonly type: 'aggregate.cache_images.end';
  /** The aggregate and its hosts. */
  readonly aggregate: PrecacheAggregateWithHosts;
  /** What happened, as the request resolves to. */
  readonly summary: PrecacheSummary;
}

/** Any fan-out event. */
export type PrecacheEvent = PrecacheStartEvent | PrecacheProgressEvent | PrecacheWindowEvent | PrecacheEndEvent;
