/**
 * The aggregate ({@link PrecacheAggregate}) and the checks `precacheImages` makes before any host
 * hears of a request: the aggregate's shape (hosts, cells, sites) and every image looked up in the
 * image source; and the plan's grouping by cell.
 *
 * @module
 */
import pLimit from 'p-limit';
import { throwIfAborted } from '../abort.js';
import { ImageNotActiveError, InvalidConfigError, InvalidPrecacheRequestError } from '../errors.js';
import { createLogger } from '../log.js';
import type { ImageSource } from '../source/image-source.js';
import { toImageCacheError } from './cache-images.js';
import type { PrecacheHost } from './host-client.js';
import type { PrecacheAggregateRef } from './summary.js';

const log = createLogger('precache');

/** The cell of hosts that name none. */
export const DEFAULT_CELL = 'default';

/** An aggregate: a named set of hosts. */
export interface PrecacheAggregate extends PrecacheAggregateRef {
  /** Its hosts, each named once. */
  readonly hosts: readonly PrecacheHost[];
}

/** Image lookups in flight during validation: a handful, not one per image at once. */
const LOOKUP_CONCURRENCY = 8;

/** Checks the aggregate's shape and host names; returns its hosts. */
export function validateAggregate(aggregate: PrecacheAggregate): readonly PrecacheHost[] {
  const { id, name, hosts } = aggregate as Partial<Record<keyof PrecacheAggregate, unknown>>;
  if (!(typeof id === 'string' && id !== '') && !(typeof id === 'number' && Number.isSafeInteger(id))) {
    throw new InvalidConfigError('aggregate.id', 'a non-empty string or an integer', id);
  }
  if (typeof name !== 'string') throw new InvalidConfigError('aggregate.name', 'a string', name);
  if (!Array.isArray(hosts)) throw new InvalidConfigError('aggregate.hosts', 'an array of hosts ({ name, cell?, site?, up? })', hosts);
  const seen = new Set<string>();
  for (const candidate of hosts as readonly unknown[]) {
    const host = (typeof candidate === 'object' && candidate !== null ? candidate : {}) as Record<'name' | 'cell' | 'site' | 'up', unknown>;
    if (typeof host.name !== 'string' || host.name === '') {
      throw new InvalidConfigError('aggregate.hosts[].name', 'a non-empty host name', host.name);
    }
    if (host.cell !== undefined && (typeof host.cell !== 'string' || host.cell === '')) {
      throw new InvalidConfigError(`cell of host ${host.name}`, 'a non-empty cell name', host.cell);
    }
    if (host.site !== undefined && (typeof host.site !== 'string' || host.site === '')) {
      throw new InvalidConfigError(`site of host ${host.name}`, 'a non-empty site name', host.site);
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
export async function lookUpImages(source: ImageSource, imageIds: readonly string[], signal: AbortSignal | undefined): Promise<void> {
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

/**
 * `items` by `keyOf`, keys in order of first appearance, items in their order; items whose key is
 * null are left out.
 */
export function groupBy<T>(items: Iterable<T>, keyOf: (item: T) => string | null): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const key = keyOf(item);
    if (key === null) continue;
    const members = groups.get(key);
    if (members === undefined) groups.set(key, [item]);
    else members.push(item);
  }
  return groups;
}

/** Hosts by cell, cells in order of first appearance, hosts in aggregate order. */
export function groupByCell(hosts: readonly PrecacheHost[]): Map<string, PrecacheHost[]> {
  return groupBy(hosts, (host) => host.cell ?? DEFAULT_CELL);
}
