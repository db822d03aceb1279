/**
 * The backend contract ({@link CacheStoreBase}, the base of `ImageManager`): what a backend
 * implements, and the defaults of what it may leave out. The base validates the options first,
 * then builds the lock manager and the pin store from the {@link StoreFiles} a backend declares.
 *
 * @module
 */
import { EventEmitter } from 'node:events';
import type { BaseImageScan, CacheEntry } from '../cache-entry.js';
import type { FilesystemUsage } from '../capacity/statfs.js';
import { systemClock } from '../clock.js';
import type { Clock } from '../clock.js';
import { UnsupportedError } from '../errors.js';
import { ImageFetcher } from '../fetch/image-fetcher.js';
import type { FetchTarget } from '../fetch/image-fetcher.js';
import { LockManager } from '../fetch/lock-manager.js';
import type { EphemeralNaming, InUseSet } from '../instances.js';
import { createLogger } from '../log.js';
import type { Logger } from '../log.js';
import { resolveImageCacheOptions } from '../options.js';
import type { ResolvedImageCacheOptions } from '../options.js';
import { FilePinStore, MemoryPinStore } from '../pins.js';
import type { PinStore } from '../pins.js';
import type { ImageSource } from '../source/image-source.js';
import type { ImageManagerEvents, ImageManagerOptions, StoreFiles } from './manager-types.js';
import type { RemovalScope } from './pass-types.js';

/**
 * The backend contract of an `ImageManager`: its validated options, locks and pins, the
 * three members every backend implements, the primitives of a cache that holds entries (their
 * defaults throw `UnsupportedError`), and the hooks with safe defaults. Extend `ImageManager`, not
 * this class: it is the manager's base, kept apart so each file has one job.
 *
 * @typeParam TBase - what {@link getBase} returns: a directory path, a volume group handle, ...
 */
export abstract class CacheStoreBase<TBase = unknown> extends EventEmitter<ImageManagerEvents> {
  /** The validated options. */
  readonly options: ResolvedImageCacheOptions;
  /** This host's name. */
  readonly host: string;
  /** Whether this backend keeps an image cache at all (Nova's `has_imagecache`). Default true. */
  readonly hasImageCache: boolean = true;
  /** The time source. */
  protected readonly clock: Clock;
  /** This backend's logger. */
  protected readonly log: Logger;
  /** Per-entry locks shared by fetch, instance-disk creation and removal. */
  protected readonly locks: LockManager;
  /** How ephemeral base names are derived. */
  protected readonly ephemeralNaming: EphemeralNaming;
  /** Where pins are kept. */
  protected readonly pins: PinStore;
  readonly #fetcher: ImageFetcher | undefined;

  /**
   * @param options - shared options (validated here)
   * @param store - where the backend keeps its locks and pins ({@link StoreFiles}; omitted:
   *   in-process locks, pins in memory), or a lock manager it built itself
   * @param logArea - `debug` area of this backend
   */
  protected constructor(options: ImageManagerOptions, store: StoreFiles | LockManager = {}, logArea = 'manager') {
    super();
    // `listInstances` is the manager's (its in-use role); it is taken out of the cache options here.
    // eslint-disable-next-line @typescript-eslint/no-unused-vars
    const { host, source, clock, listInstances, ephemeralNaming, downloadLimiter, pins, ...cacheOptions } = options;
    if (typeof host !== 'string' || host === '') {
      throw new UnsupportedError('An image manager without a host name', 'pass `host` (this compute host\'s name).');
    }
    this.options = resolveImageCacheOptions(cacheOptions);
    this.host = host;
    this.clock = clock ?? systemClock;
    this.log = createLogger(logArea);
    const locks =
      store instanceof LockManager
        ? store
        : new LockManager({ lockDir: store.lockDir, staleMs: cacheOptions.lockStaleMs, timeoutMs: cacheOptions.lockTimeoutMs, metadataIo: cacheOptions.metadataIo });
    const pinFile = store instanceof LockManager ? undefined : store.pinFile;
    this.locks = locks;
    this.ephemeralNaming = ephemeralNaming ?? {};
    this.pins = pins ?? (pinFile === undefined ? new MemoryPinStore() : new FilePinStore(pinFile, locks, this.clock));
    this.#fetcher =
      source === undefined
        ? undefined
        : new ImageFetcher({
            source,
            locks,
            limiter: downloadLimiter,
            maxConcurrentDownloads: this.options.maxConcurrentDownloads,
            maxImageSizeBytes: this.options.maxImageSizeBytes,
            bytesPerSecond: this.options.downloadBytesPerSecond,
            requireChecksum: this.options.requireChecksum,
          });
  }

  /**
   * Where this manager downloads images from (the constructor's `source`); undefined when it was
   * created without one. `cacheImages` builds a `PeerImageSource` over it to read from peers.
   */
  get imageSource(): ImageSource | undefined {
    return this.#fetcher?.source;
  }

  /** The fetcher, for backends that fetch outside `cacheImage` (e.g. a spawn path). */
  protected get fetcher(): ImageFetcher {
    if (this.#fetcher === undefined) {
      throw new UnsupportedError('Downloading images', 'this manager was created without an image `source`.');
    }
    return this.#fetcher;
  }

  // ---- The contract: what every backend implements ----

  /** The cache location, or null when it does not exist yet (a pass then does nothing). */
  abstract getBase(): Promise<TBase | null>;

  /** Lists and classifies the cache's entries (Nova's `_scan_base_images`). */
  abstract scanBaseImages(base: TBase): Promise<BaseImageScan>;

  /** Where `imageId` is published in this cache. */
  protected abstract fetchTargetFor(imageId: string): FetchTarget;

  // ---- Primitives of a cache that holds entries (defaults: unsupported) ----

  /**
   * Sets the entry's last use to now (`clock.now()`). With `tolerateEacces` (the spawn path), a
   * refused touch (EACCES or EPERM) is logged and ignored; otherwise it throws. Default: throws
   * `UnsupportedError`.
   */
  protected touchEntry(name: string, _tolerateEacces: boolean): Promise<void> {
    return this.#unsupported('Touching a cache entry', 'touchEntry', name);
  }

  /** The entry's current last-use time, or null when it no longer exists. Default: throws `UnsupportedError`. */
  protected statEntry(_base: TBase, entry: CacheEntry): Promise<number | null> {
    return this.#unsupported('Reading a cache entry', 'statEntry', entry.name);
  }

  /**
   * Deletes the entry. Called under the entry's lock, after the age was re-checked. Default:
   * throws `UnsupportedError` (the removal is then a reported failure; nothing is deleted).
   */
  protected removeEntry(_base: TBase, entry: CacheEntry): Promise<void> {
    return this.#unsupported('Removing a cache entry', 'removeEntry', entry.name);
  }

  /** Deletes a leftover staging file the scan reported. Default: throws `UnsupportedError`. */
  protected removeStaging(_base: TBase, name: string): Promise<void> {
    return this.#unsupported('Removing a staging file', 'removeStaging', name);
  }

  // ---- Hooks, with defaults ----

  /** Bytes the cache occupies on the storage instances use. Default: the scanned entries' sizes (0 without a cache). */
  async getDiskUsage(): Promise<number> {
    const base = await this.getBase();
    if (base === null) return 0;
    return (await this.scanBaseImages(base)).entries.reduce((sum, entry) => sum + entry.sizeBytes, 0);
  }

  /**
   * Names of the entries that an instance using `imageId` keeps alive. Default: the scanned
   * entries whose `imageId` is `imageId`.
   */
  protected entryNamesForImage(imageId: string, scan: BaseImageScan): readonly string[] {
    return scan.entries.filter((entry) => entry.imageId === imageId).map((entry) => entry.name);
  }

  /**
   * Entry names in use for reasons the instance records do not show (Nova: backing files of
   * instance disks). Default: none.
   */
  protected collectExtraInUse(
    _base: TBase,
    _inUse: InUseSet,
    _scan: BaseImageScan,
    _signal?: AbortSignal,
  ): Promise<ReadonlyMap<string, string>> {
    return Promise.resolve(new Map());
  }

  /**
   * The hosts whose instances protect this cache. Default: this host only. Backends on shared
   * storage return every registered host.
   */
  protected storageUsers(): Promise<readonly string[]> {
    return Promise.resolve([this.host]);
  }

  /** The minimum age, seconds, before an unused entry may be removed. */
  protected minimumAgeSeconds(entry: CacheEntry): number {
    return entry.kind === 'resized'
      ? this.options.removeUnusedResizedMinimumAgeSeconds
      : this.options.removeUnusedOriginalMinimumAgeSeconds;
  }

  /**
   * Why removals must not happen in the current pass, or null when they may (default). A backend
   * returns a reason when it cannot prove what is in use, e.g. an unreadable shared-storage
   * registry: Nova then treats every other host as absent and may delete their bases.
   */
  protected removalsSuspended(): string | null {
    return null;
  }

  /**
   * Runs `removals` in the scope removals need on this backend: a pass's aging (`kind: 'pass'`,
   * once per pass) or one removal outside a pass (`kind: 'removal'`: eviction after a fill, room
   * for a download, `remove()`). Call `removals(null)` to go ahead, or `removals(reason)` when the
   * scope cannot be had: the pass then removes nothing (it still touches what is in use), and a
   * single removal keeps its entry as `busy`. Default: no scope, `removals(null)`. The localdisk
   * backend holds its cache lock exclusively here, so no clone reads a disk being removed.
   */
  protected withRemovalScope<T>(_scope: RemovalScope, removals: (suspended: string | null) => Promise<T>): Promise<T> {
    return removals(null);
  }

  /**
   * The entry holding `imageId` once `target` has published it: what `cacheImage` touches and
   * reports. Default: the target's name. A backend whose entry names can differ from the target's
   * (localdisk, after a short-name collision) resolves it here.
   */
  protected entryNameOf(_imageId: string, target: FetchTarget): Promise<string> | string {
    return target.name;
  }

  /** The lock protecting an entry. Default: its name. */
  protected lockNameFor(entry: CacheEntry): string {
    return entry.name;
  }

  /**
   * Size and free space of the storage holding the cache (`base` is null when the cache does not
   * exist yet: measure where it will be created), or null when the backend cannot tell (the
   * default). The disk watermarks and the free-space check before a download need it; the size
   * cap does not.
   */
  protected cacheFilesystemUsage(_base: TBase | null): Promise<FilesystemUsage | null> {
    return Promise.resolve(null);
  }

  /** The size of entry `name` as served, bytes (the bytes-saved counter), or null when it is gone. Default: from a scan. */
  protected async entrySizeBytes(name: string): Promise<number | null> {
    const base = await this.getBase();
    if (base === null) return null;
    return (await this.scanBaseImages(base)).entries.find((entry) => entry.name === name)?.sizeBytes ?? null;
  }

  #unsupported(operation: string, member: string, name: string): Promise<never> {
    return Promise.reject(new UnsupportedError(operation, `this backend does not implement \`${member}\` (entry ${name}).`));
  }
}
