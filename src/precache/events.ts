/**
 * The fan-out's events, named and shaped after Nova's notifications: one `start`, one `progress`
 * per host (down and failed hosts included, unlike Nova), one `end`. The progress payload keeps
 * Nova's `AggregateCachePayload` field names (`images_cached`, `images_failed`) so a bridge to a
 * notification bus can forward it as is.
 *
 * @module
 */
import type { ImageCacheError } from '../errors.js';
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
  /** For a failed host, why. */
  readonly error: ImageCacheError | null;
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
export type PrecacheEvent = PrecacheStartEvent | PrecacheProgressEvent | PrecacheEndEvent;
