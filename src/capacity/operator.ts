/**
 * The operator API every manager inherits: `list()`, `remove(imageId)` and `prune({ dryRun })`.
 * Glance has list and delete; Nova, Ironic and kubelet have neither. `remove` and `prune` decide
 * with the same policy as the pass and eviction, so an operator can never remove what the pass
 * would have to keep for an instance or a pin.
 *
 * @module
 */
import { throwIfAborted } from '../abort.js';
import type { CacheEntryKind, KeptEntry, PassFailure, RemovedEntry } from '../cache-entry.js';
import { ImageInUseError, UnsupportedError } from '../errors.js';
import type { InstanceRecord } from '../instances.js';
import type { PassInUse } from '../core/pass-types.js';
import type { CapacityController } from './controller.js';
import type { CapacityReport } from './types.js';
import { decideEntries } from './policy.js';

/** One cache entry, as {@link ImageManager.list} shows it. */
export interface ListedEntry {
  /** Its name in the cache. */
  readonly name: string;
  /** Its class. */
  readonly kind: CacheEntryKind;
  /**
   * The image it holds, when known: recorded by the backend, or learnt from pins, from the
   * instances, or from this process having cached it (file names are hashes of the id).
   */
  readonly imageId: string | null;
  /** Bytes it occupies. */
  readonly sizeBytes: number;
  /** When it was last used, ms since the epoch (its mtime: survives restarts). */
  readonly lastUsedMs: number;
  /** Whether it is in use; null when that cannot be told (no instances given, no `listInstances`). */
  readonly inUse: boolean | null;
  /** Who uses it, when in use. */
  readonly usedBy: string | null;
  /** Until when it is pinned (ms since the epoch), or null. */
  readonly pinnedUntilMs: number | null;
}

/** Options of the operator calls. */
export interface OperatorOptions {
  /**
   * Every non-deleted instance of every host sharing the cache. Omitted: the manager's
   * `listInstances` callback is asked, when there is one.
   */
  readonly instances?: Iterable<InstanceRecord> | undefined;
  /** Cancels the call between entries. */
  readonly signal?: AbortSignal | undefined;
}

/** Options of {@link ImageManager.prune}. */
export interface PruneOptions extends OperatorOptions {
  /** Decide and report, remove nothing. Default false. */
  readonly dryRun?: boolean | undefined;
}

/** What {@link ImageManager.prune} removed (or, in a dry run, would remove), and why. */
export interface PruneReport {
  /** True when nothing was removed: `removed` lists what would be. */
  readonly dryRun: boolean;
  /** Entries removed (or to remove), each with its reason and a `detail` saying why. */
  readonly removed: readonly RemovedEntry[];
  /** Entries kept, with reasons. */
  readonly kept: readonly KeptEntry[];
  /** Removal failures. */
  readonly failures: readonly PassFailure[];
  /** The capacity figures; null when there is no cache yet. */
  readonly capacity: CapacityReport | null;
}

/** {@link ImageManager.list}. */
export async function listEntries<TBase>(capacity: CapacityController<TBase>, options: OperatorOptions): Promise<ListedEntry[]> {
  const { ports } = capacity;
  const base = await ports.getBase();
  if (base === null) return [];
  const scan = await ports.scan(base);
  const inUse = await ports.inUse(base, scan, options.instances, options.signal);
  const imageIds = new Map(capacity.knownImageIds);
  const pinned = new Map<string, number>();
  for (const [imageId, untilMs] of await ports.activePins()) {
    for (const name of ports.entryNamesForImage(imageId, scan)) {
      pinned.set(name, untilMs);
      imageIds.set(name, imageId);
    }
  }
  for (const imageId of inUse?.usedImages.keys() ?? []) {
    for (const name of ports.entryNamesForImage(imageId, scan)) imageIds.set(name, imageId);
  }
  const beingCached = capacity.beingCached;
  return scan.entries.map((entry) => {
    const usedBy = inUse?.entryNames.get(entry.name) ?? beingCached.get(entry.name) ?? null;
    return {
      name: entry.name,
      kind: entry.kind,
      imageId: entry.imageId ?? imageIds.get(entry.name) ?? null,
      sizeBytes: entry.sizeBytes,
      lastUsedMs: entry.lastUsedMs,
      inUse: usedBy !== null ? true : inUse === null ? null : false,
      usedBy,
      pinnedUntilMs: pinned.get(entry.name) ?? null,
    };
  });
}

/** {@link ImageManager.remove}. */
export async function removeImage<TBase>(
  capacity: CapacityController<TBase>,
  imageId: string,
  options: OperatorOptions,
): Promise<RemovedEntry[]> {
  const { ports } = capacity;
  const base = await ports.getBase();
  if (base === null) return [];
  const scan = await ports.scan(base);
  const names = new Set(ports.entryNamesForImage(imageId, scan));
  const entries = scan.entries.filter((entry) => names.has(entry.name));
  if (entries.length === 0) return [];
  const inUse = await requireInUse(ports.inUse(base, scan, options.instances, options.signal), `Removing image ${imageId} from the cache`, 'remove()');
  // An operator overrides the minimum age (that is the point of "remove now"), nothing else.
  const decisions = decideEntries(entries, capacity.policyContext(inUse, { minimumAgeSeconds: () => Number.NEGATIVE_INFINITY }));
  for (const decision of decisions) {
    if (decision.removable) continue;
    if (decision.reason === 'in-use') throw new ImageInUseError(imageId, `${decision.entry.name}: ${decision.detail ?? 'in use'}`);
    if (decision.reason === 'pinned') throw new ImageInUseError(imageId, `pinned ${decision.detail ?? ''}; unpin it first`);
    throw new UnsupportedError(`Removing image ${imageId} from the cache`, `removals are suspended: ${decision.detail ?? decision.reason}.`, imageId);
  }
  const removed: RemovedEntry[] = [];
  for (const decision of decisions) {
    throwIfAborted(options.signal, 'Removing', imageId);
    if (!decision.removable) continue;
    const outcome = await ports.remove(base, decision.entry, decision.minAgeSeconds, 'operator', 'removed by an operator', undefined);
    if (outcome.failure !== null) throw outcome.failure.error;
    if (outcome.kept !== null) {
      throw new ImageInUseError(imageId, `${decision.entry.name} is locked: an instance disk is being built from it right now`);
    }
    if (outcome.removed !== null) removed.push(outcome.removed);
  }
  return removed;
}

/** {@link ImageManager.prune}. */
export async function pruneCache<TBase>(capacity: CapacityController<TBase>, options: PruneOptions): Promise<PruneReport> {
  const { ports } = capacity;
  const dryRun = options.dryRun ?? false;
  const base = await ports.getBase();
  if (base === null) return { dryRun, removed: [], kept: [], failures: [], capacity: null };
  const scan = await ports.scan(base);
  const inUse = await requireInUse(ports.inUse(base, scan, options.instances, options.signal), 'Pruning the cache', 'prune()');
  const applied = await capacity.apply({
    base,
    scan,
    inUse,
    ageOut: ports.options.removeUnusedBaseImages,
    trigger: 'prune',
    dryRun,
    signal: options.signal,
  });
  const report = { dryRun, removed: [] as RemovedEntry[], kept: [] as KeptEntry[], failures: [] as PassFailure[], capacity: applied.capacity };
  for (const slot of applied.policy.slots) {
    if (slot.removed !== undefined) report.removed.push(slot.removed);
    if (slot.kept !== undefined) report.kept.push(slot.kept);
    if (slot.failure !== undefined) report.failures.push(slot.failure);
  }
  return report;
}

async function requireInUse(inUse: Promise<PassInUse | null>, operation: string, call: string): Promise<PassInUse> {
  const known = await inUse;
  if (known === null) {
    throw new UnsupportedError(operation, `nothing tells what is in use: pass the instances to ${call}, or give the manager a \`listInstances\` callback.`);
  }
  return known;
}
