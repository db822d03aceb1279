/**
 * The abstract {@link ImageManager}: Nova's `ImageCacheManager` contract, with the periodic pass
 * and the fill path implemented once, over a few protected primitives each backend provides.
 *
 * To write a backend: extend `ImageManager`, implement {@link ImageManager.getBase},
 * {@link ImageManager.scanBaseImages} and `fetchTargetFor`, and, for a cache that holds entries,
 * `touchEntry`, `statEntry` and `removeEntry` (their defaults throw `UnsupportedError`), plus
 * `removeStaging` when its scan reports staging files. Pass the constructor a {@link StoreFiles}
 * (a lock directory, a pin file): the base builds the lock manager and the pin store once the
 * options are validated. The contract and its defaults are in core/store-base.ts.
 *
 * Everything else is inherited, composed here from roles of one job each: what is in use
 * (core/in-use.ts), the one safe removal path (core/remover.ts), the pass (core/pass.ts), the fill
 * (core/fill.ts) and capacity (capacity/: size cap, watermarks, room before downloads, stats,
 * `list`/`remove`/`prune`). They see the backend through one view (core/store-view.ts), built once.
 *
 * @module
 */
import type { CacheEntry, PassReport, RemovedEntry, StagingEntry } from './cache-entry.js';
import { CapacityController } from './capacity/controller.js';
import { listEntries, pruneCache, removeImage } from './capacity/operator.js';
import type { ListedEntry, OperatorOptions, PruneOptions, PruneReport } from './capacity/operator.js';
import type { CacheStats } from './capacity/stats.js';
import { CacheFill } from './core/fill.js';
import { InUseResolver } from './core/in-use.js';
import type { CacheImageOptions, CacheImageResult, ImageManagerOptions, InstanceLister, StoreFiles, UpdateOptions } from './core/manager-types.js';
import { PeriodicPass } from './core/pass.js';
import type { AgeContext, AgeResult, RemovalOutcome } from './core/pass-types.js';
import { SafeRemover } from './core/remover.js';
import { CacheStoreBase } from './core/store-base.js';
import type { StoreView } from './core/store-view.js';
import type { LockManager } from './fetch/lock-manager.js';
import { createTemplateImageHandler } from './handlers/template-image-handler.js';
import type { TemplateImageHandler } from './handlers/types.js';
import { assertValidImageId } from './image-id.js';
import type { InstanceRecord } from './instances.js';
import { checkPinTtlSeconds } from './pins.js';
import type { PinMap } from './pins.js';

export { CacheStoreBase } from './core/store-base.js';
export type {
  CacheImageOptions,
  CacheImageResult,
  ImageManagerEvents,
  ImageManagerOptions,
  InstanceLister,
  StoreFiles,
  UpdateOptions,
} from './core/manager-types.js';
export type { AgeContext, AgeResult, PassInUse, RemovalOutcome, RemovalScope } from './core/pass-types.js';

/**
 * Nova's image cache manager, generalised. One instance per cache (per host, per instances path
 * or volume group). Backends extend it (see {@link CacheStoreBase} for what they implement).
 *
 * @typeParam TBase - what {@link getBase} returns: a directory path, a volume group handle, ...
 */
export abstract class ImageManager<TBase = unknown> extends CacheStoreBase<TBase> {
  readonly #view: StoreView<TBase>;
  readonly #capacity: CapacityController<TBase>;
  readonly #inUse: InUseResolver<TBase>;
  readonly #remover: SafeRemover<TBase>;
  readonly #pass: PeriodicPass<TBase>;
  readonly #fill: CacheFill<TBase>;
  #templateImageHandler: TemplateImageHandler | undefined;

  /**
   * @param options - shared options (validated first)
   * @param store - where the backend keeps its locks and pins ({@link StoreFiles}; omitted:
   *   in-process locks, pins in memory), or a lock manager it built itself
   * @param logArea - `debug` area of this backend
   */
  protected constructor(options: ImageManagerOptions, store?: StoreFiles | LockManager, logArea?: string) {
    super(options, store, logArea);
    this.#view = this.#createView(options.listInstances);
    this.#capacity = new CapacityController<TBase>(this.#view);
    this.#inUse = new InUseResolver<TBase>(this.#view);
    this.#remover = new SafeRemover<TBase>(this.#view);
    this.#pass = new PeriodicPass<TBase>({
      view: this.#view,
      inUse: this.#inUse,
      remover: this.#remover,
      capacity: this.#capacity,
      ageAndVerify: (context) => this.ageAndVerify(context),
    });
    this.#fill = new CacheFill<TBase>(this.#view, this.#capacity, () => this.templateImageHandler);
  }

  /**
   * How images enter this cache: the template image handler the `templateImageHandler` option
   * chose (download, or link from a local image store). Call its `init()` once when the service
   * starts: it removes the staging leftovers of a crash and re-checks links.
   */
  get templateImageHandler(): TemplateImageHandler {
    this.#templateImageHandler ??= createTemplateImageHandler(this.options, this.#view);
    return this.#templateImageHandler;
  }

  /**
   * Counts a request a backend served from the cache without going through {@link cacheImage}.
   *
   * @param sizeBytes - the entry's size when the backend has it at hand (else it is looked up)
   */
  protected recordCacheHit(name: string, sizeBytes?: number): Promise<void> {
    return this.#capacity.recordHit(name, sizeBytes);
  }

  // ---- What every backend inherits ----

  /**
   * Makes sure `imageId` is in the cache: downloads and verifies it if missing, touches it if
   * present, under the per-image lock: Nova's `cache_image`, with the lock Nova forgot
   * (docs/nova-parity.md, gap A). Before a download, room is made (see the capacity options);
   * after it, the size cap and the watermarks are enforced when a `listInstances` callback can
   * tell what is in use.
   *
   * @throws a typed `ImageCacheError` on failure (`DiskFullError` when the image does not fit);
   *   nothing partial is left behind
   */
  cacheImage(imageId: string, options: CacheImageOptions = {}): Promise<CacheImageResult> {
    return this.#fill.cacheImage(imageId, options);
  }

  /**
   * The file holding `imageId`'s complete, verified image in this cache, for reading it (the host
   * agent serves it to the site's peers): only ever the final name, which a fill gives the image
   * once it is verified, never a staging file. Reading is not a use: nothing is touched.
   *
   * @returns the path, or null when the image is not cached or this backend does not keep images
   *   as files (a volume group, memory)
   * @throws `InvalidImageIdError`; `UnsupportedError` for a backend that keeps no cache;
   *   `InvalidDiskImageError` when something other than a regular file was planted under the name
   */
  async cachedImageFile(imageId: string): Promise<string | null> {
    assertValidImageId(imageId);
    const target = this.fetchTargetFor(imageId);
    if (target.filePath === undefined || !(await target.exists())) return null;
    return target.filePath;
  }

  /**
   * Pins `imageId` for `ttlSeconds` from now: until then its entries are neither aged out nor
   * evicted, used or not. A longer existing pin is kept. Pins outlive the process where the
   * backend keeps them in a file.
   *
   * @returns the pin's expiry, ms since the epoch (the manager's clock)
   */
  async pinImage(imageId: string, ttlSeconds: number): Promise<number> {
    assertValidImageId(imageId);
    checkPinTtlSeconds('pin ttlSeconds', ttlSeconds);
    const untilMs = this.clock.now() + ttlSeconds * 1000;
    await this.pins.pin(imageId, untilMs);
    this.log('pinned %s until %s', imageId, new Date(untilMs).toISOString());
    return (await this.pins.active(this.clock.now())).get(imageId) ?? untilMs;
  }

  /** Removes the pin of `imageId`; the image then ages as usual from its last use. */
  async unpinImage(imageId: string): Promise<void> {
    assertValidImageId(imageId);
    await this.pins.unpin(imageId);
  }

  /** The active pins: image id → expiry, ms since the epoch. */
  listPins(): Promise<PinMap> {
    return this.pins.active(this.clock.now());
  }

  /**
   * The cache's entries with size, kind, image id (when known), last use, pin, and whether they
   * are in use: known when `options.instances` is given or the manager has `listInstances`.
   */
  list(options: OperatorOptions = {}): Promise<ListedEntry[]> {
    return listEntries(this.#capacity, options);
  }

  /**
   * Removes `imageId`'s entries now, whatever their age. Refuses, removing nothing, when one is
   * in use, pinned, being cached, or locked by a spawn.
   *
   * @throws `ImageInUseError` (`ERR_IMAGE_IN_USE`) when in use or pinned; `UnsupportedError` when
   *   nothing tells what is in use (no instances given and no `listInstances`)
   * @returns the entries removed (none when the image is not cached)
   */
  remove(imageId: string, options: OperatorOptions = {}): Promise<RemovedEntry[]> {
    assertValidImageId(imageId);
    return removeImage(this.#capacity, imageId, options);
  }

  /**
   * Applies the pass's removal policy now (aging, then the size cap and watermarks, least
   * recently used first) without touching anything in use. With `dryRun`, only says what would
   * go and why.
   *
   * @throws `UnsupportedError` when nothing tells what is in use
   */
  prune(options: PruneOptions = {}): Promise<PruneReport> {
    return pruneCache(this.#capacity, options);
  }

  /**
   * Hits, misses, downloads, bytes downloaded and served from the cache, evictions and removals by
   * reason. In-process counters: this manager since it was created or {@link resetStats}, reset
   * by a restart.
   */
  getStats(): CacheStats {
    return this.#capacity.stats.snapshot();
  }

  /** Starts the counters of {@link getStats} again from zero. */
  resetStats(): void {
    this.#capacity.stats.reset(this.clock.now());
  }

  /**
   * One periodic pass (Nova's `update`): compute what is in use, scan, age and verify, report.
   *
   * @param instances - every non-deleted instance of every host sharing this cache; omit to ask
   *   the `listInstances` callback for the instances of {@link storageUsers}
   */
  update(instances?: Iterable<InstanceRecord>, options: UpdateOptions = {}): Promise<PassReport> {
    return this.#pass.update(instances, options);
  }

  /**
   * Nova's `_age_and_verify_cached_images` plus the swap and ephemeral variants: touch what is in
   * use; remove what is unused and older than its minimum age, under the entry's lock with the age
   * checked again inside it; remove stale staging files. Runs inside {@link withRemovalScope}.
   * Errors are recorded, never fatal. A backend may extend it (and call `super`).
   */
  ageAndVerify(context: AgeContext<TBase>): Promise<AgeResult> {
    return this.#pass.ageAndVerify(context);
  }

  /**
   * Removes `entry` under its lock if it still exists, is still at least `minAgeSeconds` old, and
   * was not used since the scan saw it (a spawn may have touched it while we waited); a busy lock
   * keeps it for the next pass. Every removal of an entry goes through here (see
   * core/remover.ts for why a minimum age of 0 is safe).
   *
   * @param detail - why it goes, in words (kept in the {@link RemovedEntry})
   * @param usedSinceMs - when the caller began gathering what is in use
   */
  protected removeIfStillUnused(
    base: TBase,
    entry: CacheEntry,
    minAgeSeconds: number,
    reason: RemovedEntry['reason'],
    detail?: string,
    usedSinceMs?: number,
  ): Promise<RemovalOutcome> {
    return this.#remover.removeIfStillUnused(base, entry, minAgeSeconds, reason, detail, usedSinceMs);
  }

  /**
   * Removes staging leftovers the backend finds outside its scan (e.g. in instance directories)
   * through the one staging sweep: past `staleStagingAgeSeconds`, counted and emitted as
   * `removed`. `remove` resolves false when the file had gone already.
   */
  protected sweepStagingLeftovers(
    leftovers: readonly StagingEntry[],
    remove: (name: string) => Promise<boolean>,
  ): Promise<Pick<AgeResult, 'removed' | 'failures'>> {
    return this.#remover.sweepStaging({
      leftovers,
      nowMs: this.clock.now(),
      minAgeSeconds: this.options.staleStagingAgeSeconds,
      withoutLock: 'remove',
      lockErrors: 'record',
      remove,
    });
  }

  /** The one view every role works through: each member calls this manager, overrides included. */
  #createView(listInstances: InstanceLister | undefined): StoreView<TBase> {
    return {
      options: this.options,
      clock: this.clock,
      log: this.log,
      host: this.host,
      locks: this.locks,
      ephemeralNaming: this.ephemeralNaming,
      listInstances,
      fetcher: () => this.fetcher,
      targetFor: (imageId) => {
        assertValidImageId(imageId);
        return this.fetchTargetFor(imageId);
      },
      fetchTargetFor: (imageId) => this.fetchTargetFor(imageId),
      sweepStaging: async (options = {}) => {
        const base = await this.getBase();
        const leftovers = base === null ? [] : (await this.scanBaseImages(base)).staging;
        const swept = await this.#remover.sweepStaging({
          leftovers,
          nowMs: this.clock.now(),
          minAgeSeconds: Number.NEGATIVE_INFINITY,
          // A download's kept staging is worth its age: the next download resumes it.
          resumableMinAgeSeconds: this.options.staleStagingAgeSeconds,
          withoutLock: 'skip',
          lockErrors: 'throw',
          signal: options.signal,
          remove: async (name) => {
            const current = await this.getBase();
            if (current !== null) await this.removeStaging(current, name);
          },
        });
        return { removed: swept.removed.map((removed) => removed.name), busy: swept.busy, failures: swept.failures };
      },
      getBase: () => this.getBase(),
      scan: (base) => this.scanBaseImages(base),
      inUse: (base, scan, instances, signal) => this.#inUse.resolve(base, scan, instances, signal),
      storageUsers: () => this.storageUsers(),
      collectExtraInUse: (base, inUse, scan, signal) => this.collectExtraInUse(base, inUse, scan, signal),
      filesystemUsage: async (base) => {
        try {
          return await this.cacheFilesystemUsage(base);
        } catch (error) {
          this.log('cannot measure the cache storage: %O', error);
          return null;
        }
      },
      entrySizeBytes: (name) => this.entrySizeBytes(name),
      minimumAgeSeconds: (entry) => this.minimumAgeSeconds(entry),
      removalsSuspended: () => this.#remover.scopeSuspension ?? this.removalsSuspended(),
      withRemovalScope: (scope, removals) => this.withRemovalScope(scope, removals),
      remove: (base, entry, minAgeSeconds, reason, detail, usedSinceMs) =>
        this.removeIfStillUnused(base, entry, minAgeSeconds, reason, detail, usedSinceMs),
      touchEntry: (name, tolerateEacces) => this.touchEntry(name, tolerateEacces),
      statEntry: (base, entry) => this.statEntry(base, entry),
      removeEntry: (base, entry) => this.removeEntry(base, entry),
      removeStagingAt: (base, name) => this.removeStaging(base, name),
      lockNameFor: (entry) => this.lockNameFor(entry),
      entryNameOf: (imageId, target) => this.entryNameOf(imageId, target),
      entryNamesForImage: (imageId, scan) => this.entryNamesForImage(imageId, scan),
      activePins: () => this.pins.active(this.clock.now()),
      evicted: (event) => this.emit('evicted', event),
      recordRemoval: (removed) => {
        this.#capacity.stats.removal(removed);
        this.#capacity.forget(removed.name);
        this.emit('removed', removed);
      },
      emit: (event, ...args) => {
        (this.emit as (event: string, ...args: unknown[]) => boolean)(event, ...args);
      },
    };
  }
}
