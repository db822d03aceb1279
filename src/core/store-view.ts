/**
 * The one view of a backend that the manager's roles work through, built once per manager. Each
 * role names the part it needs ({@link CapacityPorts} for capacity, `TemplateHandlerContext` for
 * the template handler); {@link StoreView} is all of it. Its members call the manager, so a
 * subclass's overrides (and tests' overrides) are what the roles see. Types only.
 *
 * @module
 */
import type { BaseImageScan, CacheEntry, RemovalReason, RemovedEntry } from '../cache-entry.js';
import type { FilesystemUsage } from '../capacity/statfs.js';
import type { Clock } from '../clock.js';
import type { FetchTarget } from '../fetch/image-fetcher.js';
import type { TemplateHandlerContext } from '../handlers/types.js';
import type { EphemeralNaming, InUseSet, InstanceRecord } from '../instances.js';
import type { Logger } from '../log.js';
import type { ResolvedImageCacheOptions } from '../options.js';
import type { PinMap } from '../pins.js';
import type { ImageManagerEvents, InstanceLister } from './manager-types.js';
import type { EvictionEvent, PassInUse, RemovalOutcome, RemovalScope } from './pass-types.js';

/** The manager's primitives, as capacity needs them. */
export interface CapacityPorts<TBase> {
  /** The validated options. */
  readonly options: ResolvedImageCacheOptions;
  /** The manager's clock. */
  readonly clock: Clock;
  /** The manager's logger. */
  readonly log: Logger;
  /** The cache location, or null when there is none yet. */
  getBase(): Promise<TBase | null>;
  /** Lists the cache. */
  scan(base: TBase): Promise<BaseImageScan>;
  /**
   * The exact in-use set, as a pass computes it: from `instances` when given, else from the
   * `listInstances` callback; null when neither exists.
   */
  inUse(base: TBase, scan: BaseImageScan, instances: Iterable<InstanceRecord> | undefined, signal?: AbortSignal): Promise<PassInUse | null>;
  /** The cache's storage usage, or null when the backend cannot tell. */
  filesystemUsage(base: TBase | null): Promise<FilesystemUsage | null>;
  /** An entry's size as served (bytes), or null when it is gone. */
  entrySizeBytes(name: string): Promise<number | null>;
  /** The entry's minimum age, seconds. */
  minimumAgeSeconds(entry: CacheEntry): number;
  /** Why removals are suspended, or null. */
  removalsSuspended(): string | null;
  /** Removes an entry under its lock with its age re-checked. */
  remove(
    base: TBase,
    entry: CacheEntry,
    minAgeSeconds: number,
    reason: RemovalReason,
    detail: string,
    usedSinceMs: number | undefined,
  ): Promise<RemovalOutcome>;
  /** Emits the `evicted` event. */
  evicted(event: EvictionEvent): void;
  /** Names of the entries an instance using `imageId` keeps alive. */
  entryNamesForImage(imageId: string, scan: BaseImageScan): readonly string[];
  /** The active pins. */
  activePins(): Promise<PinMap>;
}

/** Everything the roles (in-use, removal, pass, fill, capacity, template handler) see of a manager. */
export interface StoreView<TBase> extends CapacityPorts<TBase>, TemplateHandlerContext {
  /** This host's name. */
  readonly host: string;
  /** How ephemeral base names are derived. */
  readonly ephemeralNaming: EphemeralNaming;
  /** The manager's `listInstances` callback, if it has one. */
  readonly listInstances: InstanceLister | undefined;
  /** The hosts whose instances protect this cache. */
  storageUsers(): Promise<readonly string[]>;
  /** Entry names in use for reasons the instance records do not show. */
  collectExtraInUse(base: TBase, inUse: InUseSet, scan: BaseImageScan, signal?: AbortSignal): Promise<ReadonlyMap<string, string>>;
  /** Sets the entry's last use to now. */
  touchEntry(name: string, tolerateEacces: boolean): Promise<void>;
  /** The entry's current last-use time, or null when it no longer exists. */
  statEntry(base: TBase, entry: CacheEntry): Promise<number | null>;
  /** Deletes the entry (under its lock, age re-checked). */
  removeEntry(base: TBase, entry: CacheEntry): Promise<void>;
  /** Deletes a leftover staging file of the cache at `base`. */
  removeStagingAt(base: TBase, name: string): Promise<void>;
  /** Where `imageId` is published (the caller validated the id). */
  fetchTargetFor(imageId: string): FetchTarget;
  /** The lock protecting an entry. */
  lockNameFor(entry: CacheEntry): string;
  /** The entry holding `imageId` once `target` has published it. */
  entryNameOf(imageId: string, target: FetchTarget): Promise<string> | string;
  /** Runs removals in the scope the backend needs for them (see `ImageManager.withRemovalScope`). */
  withRemovalScope<T>(scope: RemovalScope, removals: (suspended: string | null) => Promise<T>): Promise<T>;
  /** Counts a removal in the stats, forgets the entry, emits `removed`. */
  recordRemoval(removed: RemovedEntry): void;
  /** Emits a manager event. */
  emit<K extends keyof ImageManagerEvents>(event: K, ...args: ImageManagerEvents[K]): void;
}
