/**
 * The abstract {@link ImageManager}: Nova's `ImageCacheManager` contract, with the periodic pass
 * and the fill path implemented once, over a few protected primitives each backend provides.
 *
 * To write a backend: implement {@link ImageManager.getBase}, {@link ImageManager.scanBaseImages},
 * {@link ImageManager.getDiskUsage} and the protected primitives (`fetchTargetFor`,
 * `entryNamesForImage`, `touchEntry`, `statEntry`, `removeEntry`, `removeStaging`). Everything else
 * (in-use computation, aging with a locked re-check, single-flight verified fetch, reporting,
 * events, and capacity: size cap, watermarks, room before downloads, stats, `list`/`remove`/
 * `prune`, all in `capacity/`) is inherited. A backend that can measure its storage overrides
 * `cacheFilesystemUsage` to turn on the watermarks and the free-space check.
 *
 * @module
 */
import { EventEmitter } from 'node:events';
import pLimit from 'p-limit';
import type { LimitFunction } from 'p-limit';
import { throwIfAborted } from './abort.js';
import { CapacityController } from './capacity/controller.js';
import type { CapacityReport, EvictionEvent } from './capacity/controller.js';
import { listEntries, pruneCache, removeImage } from './capacity/operator.js';
import type { ListedEntry, OperatorOptions, PruneOptions, PruneReport } from './capacity/operator.js';
import type { FilesystemUsage } from './capacity/statfs.js';
import type { CacheStats } from './capacity/stats.js';
import type {
  BaseImageScan,
  CacheEntry,
  KeptEntry,
  PassFailure,
  PassReport,
  RemovedEntry,
} from './cache-entry.js';
import { systemClock } from './clock.js';
import type { Clock } from './clock.js';
import { LockTimeoutError, UnsupportedError, isImageCacheError } from './errors.js';
import type { DownloadProgress, ProgressListener } from './fetch/download.js';
import { ImageFetcher } from './fetch/image-fetcher.js';
import type { EnsureResult, FetchTarget } from './fetch/image-fetcher.js';
import type { LockManager } from './fetch/lock-manager.js';
import { createTemplateImageHandler } from './handlers/template-image-handler.js';
import type { TemplateHandlerContext, TemplateImageHandler } from './handlers/template-image-handler.js';
import { assertValidImageId, checkImageId, vouchFor } from './image-id.js';
import { computeInUse } from './instances.js';
import type { EphemeralNaming, InUseSet, InstanceRecord } from './instances.js';
import { createLogger } from './log.js';
import type { Logger } from './log.js';
import { bytesPerSecondOrInfinity, resolveImageCacheOptions } from './options.js';
import type { ImageCacheOptions, ResolvedImageCacheOptions } from './options.js';
import { MemoryPinStore, checkPinTtlSeconds } from './pins.js';
import type { PinMap, PinStore } from './pins.js';
import type { ImageSource } from './source/image-source.js';

/** Supplies the instances of the given hosts (every non-deleted one, soft-deleted included). */
export type InstanceLister = (
  hosts: readonly string[],
  signal?: AbortSignal,
) => Promise<Iterable<InstanceRecord>> | Iterable<InstanceRecord>;

/** Constructor options common to every backend. */
export interface ImageManagerOptions extends ImageCacheOptions {
  /** This compute host's name (Nova `CONF.host`). Decides local vs remote usage. */
  readonly host: string;
  /** Where images are downloaded from. Backends that never download may omit it. */
  readonly source?: ImageSource | undefined;
  /** Time source; inject a manual clock in tests. Default: the system clock. */
  readonly clock?: Clock | undefined;
  /** Lists instances when {@link ImageManager.update} is called without them. */
  readonly listInstances?: InstanceLister | undefined;
  /** How ephemeral base names are derived (mkfs command / default filesystem). */
  readonly ephemeralNaming?: EphemeralNaming | undefined;
  /** A download limiter shared with other managers in this process. */
  readonly downloadLimiter?: LimitFunction | undefined;
  /**
   * Where pins are kept. Default: in memory for in-memory caches; file-backed backends keep them
   * in a file beside the cache, so they survive a restart.
   */
  readonly pins?: PinStore | undefined;
}

/** Options of {@link ImageManager.cacheImage}. */
export interface CacheImageOptions {
  /** Cancels this call. */
  readonly signal?: AbortSignal | undefined;
  /** Download progress (bytes done and total). */
  readonly onProgress?: ProgressListener | undefined;
  /**
   * Spawn-path semantics: a touch refused with EACCES (or EPERM, see `touchFile`) is logged and
   * ignored (NFS, Nova bug 1809123). Default false: pre-caching touches strictly, as Nova's
   * `cache_image` does.
   */
  readonly tolerateTouchErrors?: boolean | undefined;
  /** Speed cap for this download, bytes per second (at least 1, or Infinity). */
  readonly bytesPerSecond?: number | undefined;
}

/** The outcome of {@link ImageManager.cacheImage}. */
export interface CacheImageResult {
  /** `cached`: downloaded by this call (or a concurrent one it joined); `existing`: was present, touched. */
  readonly status: 'cached' | 'existing';
  /** The image. */
  readonly imageId: string;
  /** The entry's name in the cache. */
  readonly name: string;
  /** Bytes downloaded (0 for `existing`). */
  readonly bytes: number;
  /** True when this call joined a download another call had started. */
  readonly shared: boolean;
  /** The verified digest's algorithm, when one was verified. */
  readonly algorithm: string | null;
  /** The verified digest, when one was verified. */
  readonly digest: string | null;
  /** Duration, ms. */
  readonly durationMs: number;
}

/** Options of {@link ImageManager.update}. */
export interface UpdateOptions {
  /** Cancels the pass between entries. */
  readonly signal?: AbortSignal | undefined;
  /**
   * Lists the instances of the storage users when `update()` is called without instances;
   * overrides the manager's `listInstances` for this pass. The hosts it receives are read once
   * per pass, the same ones the report names.
   */
  readonly listInstances?: InstanceLister | undefined;
}

/** What a pass knows about use, passed to {@link ImageManager.ageAndVerify}. */
export interface PassInUse extends InUseSet {
  /** Entry names in use, each with who uses it. */
  readonly entryNames: ReadonlyMap<string, string>;
  /** Entry names of pinned images, each with its pin's expiry (ms since the epoch). */
  readonly pinnedNames: ReadonlyMap<string, number>;
}

/** The inputs of {@link ImageManager.ageAndVerify}. */
export interface AgeContext<TBase> {
  /** The cache location from {@link ImageManager.getBase}. */
  readonly base: TBase;
  /** The scan. */
  readonly scan: BaseImageScan;
  /** What is in use. */
  readonly inUse: PassInUse;
  /** Cancels between entries. */
  readonly signal?: AbortSignal | undefined;
  /**
   * When the pass began (clock ms, before the scan). An entry used at or after this moment is
   * never removed by the pass, whatever the minimum ages: its use may not be in the in-use data the
   * pass gathered. Default: no such guard.
   */
  readonly startedAt?: number | undefined;
}

/** The result of {@link ImageManager.ageAndVerify}. */
export interface AgeResult {
  /** Entries in use. */
  readonly active: string[];
  /** Entries kept, with reasons. */
  readonly kept: KeptEntry[];
  /** Entries removed. */
  readonly removed: RemovedEntry[];
  /** Used swap/ephemeral names with no entry. */
  readonly missing: string[];
  /** Non-fatal failures. */
  readonly failures: PassFailure[];
  /** What the size cap and watermarks saw and freed. */
  readonly capacity?: CapacityReport | null | undefined;
}

/** Events every manager emits. */
export interface ImageManagerEvents {
  /** A periodic pass finished. */
  pass: [report: PassReport];
  /** An entry was removed (by a pass, by eviction, or by an operator). */
  removed: [entry: RemovedEntry];
  /** An entry was evicted for capacity (also reported as `removed`). */
  evicted: [event: EvictionEvent];
  /** An image was downloaded into the cache. */
  cached: [result: CacheImageResult];
  /** Download progress of any image. */
  progress: [progress: DownloadProgress];
}

/** What {@link ImageManager.removeIfStillUnused} did with an entry: exactly one field is set, or none when it had gone. */
export interface RemovalOutcome {
  /** Set when the entry was removed. */
  readonly removed: RemovedEntry | null;
  /** Set when the entry was kept (touched meanwhile, or its lock busy). */
  readonly kept: KeptEntry | null;
  /** Set when stat or removal failed. */
  readonly failure: PassFailure | null;
}

/** Touches and removals a pass runs at once. */
const PASS_CONCURRENCY = 8;

/** How long a pass waits for an entry's lock before leaving it for the next pass. */
const PASS_LOCK_WAIT_MS = 2000;

/** File times round-trip through floating-point seconds: a time can read back a hair earlier. */
const TIMESTAMP_SLACK_MS = 1;

/**
 * Nova's image cache manager, generalised. One instance per cache (per host, per instances path
 * or volume group).
 *
 * @typeParam TBase - what {@link getBase} returns: a directory path, a volume group handle, ...
 */
export abstract class ImageManager<TBase = unknown> extends EventEmitter<ImageManagerEvents> {
  /** The validated options. */
  readonly options: ResolvedImageCacheOptions;
  /** This host's name. */
  readonly host: string;
  /** Whether this backend keeps an image cache at all (Nova's `has_imagecache`). */
  abstract readonly hasImageCache: boolean;
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
  readonly #listInstances: InstanceLister | undefined;
  readonly #fetcher: ImageFetcher | undefined;
  readonly #capacity: CapacityController<TBase>;
  #templateImageHandler: TemplateImageHandler | undefined;

  /**
   * @param options - shared options (validated here)
   * @param locks - the lock manager; file backends pass one with their lock directory
   * @param logArea - `debug` area of this backend
   */
  protected constructor(options: ImageManagerOptions, locks: LockManager, logArea: string) {
    super();
    const { host, source, clock, listInstances, ephemeralNaming, downloadLimiter, pins, ...cacheOptions } = options;
    if (typeof host !== 'string' || host === '') {
      throw new UnsupportedError('An image manager without a host name', 'pass `host` (this compute host\'s name).');
    }
    this.options = resolveImageCacheOptions(cacheOptions);
    this.host = host;
    this.clock = clock ?? systemClock;
    this.log = createLogger(logArea);
    this.locks = locks;
    this.ephemeralNaming = ephemeralNaming ?? {};
    this.pins = pins ?? new MemoryPinStore();
    this.#listInstances = listInstances;
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
    this.#capacity = this.#createCapacity();
  }

  /** The fetcher, for backends that fetch outside {@link cacheImage} (e.g. a spawn path). */
  protected get fetcher(): ImageFetcher {
    if (this.#fetcher === undefined) {
      throw new UnsupportedError('Downloading images', 'this manager was created without an image `source`.');
    }
    return this.#fetcher;
  }

  /**
   * How images enter this cache: the template image handler the `templateImageHandler` option
   * chose (download, or link from a local image store). Call its `init()` once when the service
   * starts: it removes the staging leftovers of a crash and re-checks links.
   */
  get templateImageHandler(): TemplateImageHandler {
    this.#templateImageHandler ??= createTemplateImageHandler(this.options, this.#handlerContext());
    return this.#templateImageHandler;
  }

  // ---- The contract (Nova's abstract methods) ----

  /** The cache location, or null when it does not exist yet (a pass then does nothing). */
  abstract getBase(): Promise<TBase | null>;

  /** Lists and classifies the cache's entries (Nova's `_scan_base_images`). */
  abstract scanBaseImages(base: TBase): Promise<BaseImageScan>;

  /** Bytes the cache occupies on the storage instances use (0 when the cache is elsewhere). */
  abstract getDiskUsage(): Promise<number>;

  // ---- Primitives each backend provides ----

  /** Where `imageId` is published in this cache. */
  protected abstract fetchTargetFor(imageId: string): FetchTarget;

  /** Names of the entries that an instance using `imageId` keeps alive. */
  protected abstract entryNamesForImage(imageId: string, scan: BaseImageScan): readonly string[];

  /**
   * Sets the entry's last use to now (`clock.now()`).
   *
   * @param tolerateEacces - log and ignore a refused touch, EACCES or EPERM (spawn path), else throw
   */
  protected abstract touchEntry(name: string, tolerateEacces: boolean): Promise<void>;

  /** The entry's current last-use time, or null when it no longer exists. */
  protected abstract statEntry(base: TBase, entry: CacheEntry): Promise<number | null>;

  /** Deletes the entry. Called under the entry's lock, after the age was re-checked. */
  protected abstract removeEntry(base: TBase, entry: CacheEntry): Promise<void>;

  /** Deletes a leftover staging file. */
  protected abstract removeStaging(base: TBase, name: string): Promise<void>;

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

  /**
   * Counts a request a backend served from the cache without going through {@link cacheImage}.
   *
   * @param sizeBytes - the entry's size when the backend has it at hand (else it is looked up)
   */
  protected recordCacheHit(name: string, sizeBytes?: number): Promise<void> {
    return this.#capacity.recordHit(name, sizeBytes);
  }

  // ---- Template methods ----

  /**
   * Makes sure `imageId` is in the cache: downloads and verifies it if missing, touches it if
   * present, under the per-image lock (Nova's `cache_image`, with the lock Nova forgot: gap A).
   * Before a download, room is made (see the capacity options); after it, the size cap and the
   * watermarks are enforced when a `listInstances` callback can tell what is in use.
   *
   * @throws a typed `ImageCacheError` on failure (`DiskFullError` when the image does not fit);
   *   nothing partial is left behind
   */
  async cacheImage(imageId: string, options: CacheImageOptions = {}): Promise<CacheImageResult> {
    checkImageId(imageId, options);
    if (options.bytesPerSecond !== undefined) bytesPerSecondOrInfinity('bytesPerSecond', options.bytesPerSecond);
    const target = this.fetchTargetFor(imageId);
    const tolerate = options.tolerateTouchErrors ?? false;
    const fill = this.#capacity.beginFill(imageId, target.name);
    const touch = async (): Promise<void> => this.touchEntry(await this.entryNameOf(imageId, target), tolerate);
    let result: EnsureResult;
    try {
      result = await this.templateImageHandler.fetchImage(imageId, fill.track(target), vouchFor(imageId, {
        signal: options.signal,
        bytesPerSecond: options.bytesPerSecond,
        onProgress: (progress) => {
          options.onProgress?.(progress);
          this.emit('progress', progress);
        },
        onExisting: touch,
        beforeDownload: (info, downloadSignal) => fill.admit(info, downloadSignal),
        afterDownload: touch,
      }));
      await fill.finish(result, options.signal);
    } catch (error) {
      throw await fill.failed(error);
    } finally {
      fill.end();
    }
    const outcome: CacheImageResult = {
      status: result.status,
      imageId,
      name: await this.entryNameOf(imageId, target),
      bytes: result.bytes,
      shared: result.shared,
      algorithm: result.algorithm,
      digest: result.digest,
      durationMs: result.durationMs,
    };
    if (outcome.status === 'cached' && !outcome.shared) this.emit('cached', outcome);
    return outcome;
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
  async update(instances?: Iterable<InstanceRecord>, options: UpdateOptions = {}): Promise<PassReport> {
    const { signal } = options;
    const startedAt = this.clock.now();
    const started = performance.now();
    const hosts = await this.storageUsers();
    const base = await this.getBase();
    if (base === null) {
      this.log('skipping the pass: no cache yet');
      const report = this.#report({ startedAt, started, hosts, instanceCount: 0, skipped: 'no-base' });
      this.emit('pass', report);
      return report;
    }
    const records = [...(instances ?? (await this.#listAll(hosts, signal, options.listInstances)))];
    throwIfAborted(signal, 'The cache pass');
    const scan = await this.scanBaseImages(base);
    const inUse = await this.#collectInUse(base, records, scan, signal);
    const aged = await this.ageAndVerify({ base, scan, inUse, signal, startedAt });
    const report = this.#report({ startedAt, started, hosts, instanceCount: records.length, skipped: null, ...aged });
    this.log(
      'pass: %d active, %d removed, %d kept, %d failures in %d ms',
      report.active.length,
      report.removed.length,
      report.kept.length,
      report.failures.length,
      Math.round(report.durationMs),
    );
    this.emit('pass', report);
    return report;
  }

  /**
   * Nova's `_age_and_verify_cached_images` plus the swap and ephemeral variants: touch what is in
   * use; remove what is unused and older than its minimum age, under the entry's lock with the age
   * checked again inside it; remove stale staging files. Errors are recorded, never fatal.
   */
  async ageAndVerify(context: AgeContext<TBase>): Promise<AgeResult> {
    const { base, scan, inUse, signal, startedAt } = context;
    const result: AgeResult = { active: [], kept: [], removed: [], missing: [], failures: [] };
    const now = this.clock.now();
    const suspended = this.removalsSuspended();
    if (suspended !== null) this.log('removals suspended this pass: %s', suspended);
    const present = new Set(scan.entries.map((entry) => entry.name));
    for (const name of [...inUse.usedSwap, ...inUse.usedEphemeral]) {
      if (!present.has(name)) {
        this.log('%s is used by an instance but no base file exists', name);
        result.missing.push(name);
      }
    }
    // The policy decides (capacity/policy.ts: the same rules as eviction and prune()); in-use
    // entries are touched meanwhile. Each removal runs under its own lock; the report keeps scan order.
    const limit = pLimit(PASS_CONCURRENCY);
    const touchFailures = new Map<string, PassFailure>();
    const touches = scan.entries
      .filter((entry) => inUse.entryNames.has(entry.name))
      .map((entry) =>
        limit(async () => {
          throwIfAborted(signal, 'The cache pass');
          try {
            await this.touchEntry(entry.name, false);
          } catch (error) {
            this.log('touching in-use %s failed: %O', entry.name, error);
            touchFailures.set(entry.name, { name: entry.name, operation: 'touch', error });
          }
        }),
      );
    const [applied] = await Promise.all([
      this.#capacity.apply({
        base,
        scan,
        inUse,
        ageOut: this.options.removeUnusedBaseImages,
        trigger: 'pass',
        signal,
        limit,
        usedSinceMs: startedAt,
      }),
      Promise.all(touches),
    ]);
    for (const [index, entry] of scan.entries.entries()) {
      const slot = applied.policy.slots[index];
      if (inUse.entryNames.has(entry.name)) result.active.push(entry.name);
      if (slot?.kept !== undefined) result.kept.push(slot.kept);
      if (slot?.removed !== undefined) result.removed.push(slot.removed);
      if (slot?.failure !== undefined) result.failures.push(slot.failure);
      const touchFailure = touchFailures.get(entry.name);
      if (touchFailure !== undefined) result.failures.push(touchFailure);
    }
    for (const staging of scan.staging) {
      const age = (now - staging.lastModifiedMs) / 1000;
      if (age < this.options.staleStagingAgeSeconds) continue;
      // A staging file whose lock a live download holds is still being written, however old.
      let held;
      try {
        held = staging.lockName === undefined ? undefined : await this.locks.acquire(staging.lockName, { timeoutMs: 0 });
      } catch (error) {
        if (error instanceof LockTimeoutError) continue;
        result.failures.push({ name: staging.name, operation: 'remove', error });
        continue;
      }
      try {
        await this.removeStaging(base, staging.name);
        const removed: RemovedEntry = {
          name: staging.name,
          kind: 'staging',
          imageId: null,
          bytes: 0,
          reason: 'stale-staging',
          ageSeconds: age,
        };
        result.removed.push(removed);
        this.#recordRemoval(removed);
      } catch (error) {
        result.failures.push({ name: staging.name, operation: 'remove', error });
      } finally {
        await held?.release();
      }
    }
    return { ...result, capacity: applied.capacity };
  }

  /**
   * Removes `entry` under its lock if it still exists, is still at least `minAgeSeconds` old, and
   * was not used since the scan saw it (a spawn may have touched it while we waited). A busy lock
   * means the entry is being used right now: it is left for the next pass.
   *
   * The last two checks are what make a minimum age of 0 safe: every use touches the entry under
   * this lock, so an entry whose last use changed since the scan, or falls at or after
   * `usedSinceMs` (the moment the caller began gathering what is in use), may be in use in a way
   * the caller could not see, and is kept.
   *
   * @param detail - why it goes, in words (kept in the {@link RemovedEntry})
   * @param usedSinceMs - when the caller began gathering what is in use
   */
  protected async removeIfStillUnused(
    base: TBase,
    entry: CacheEntry,
    minAgeSeconds: number,
    reason: RemovedEntry['reason'],
    detail?: string,
    usedSinceMs?: number,
  ): Promise<RemovalOutcome> {
    const none: RemovalOutcome = { removed: null, kept: null, failure: null };
    try {
      return await this.locks.withLock(
        this.lockNameFor(entry),
        async () => {
          let lastUsed: number | null;
          try {
            lastUsed = await this.statEntry(base, entry);
          } catch (error) {
            return { ...none, failure: { name: entry.name, operation: 'stat' as const, error } };
          }
          if (lastUsed === null) return none;
          const age = (this.clock.now() - lastUsed) / 1000;
          const usedSinceScan =
            Math.abs(lastUsed - entry.lastUsedMs) > TIMESTAMP_SLACK_MS ||
            (usedSinceMs !== undefined && lastUsed > usedSinceMs - TIMESTAMP_SLACK_MS);
          if (age < minAgeSeconds || usedSinceScan) {
            return { ...none, kept: { name: entry.name, kind: entry.kind, reason: 'touched-meanwhile' as const } };
          }
          try {
            await this.removeEntry(base, entry);
          } catch (error) {
            this.log('failed to remove %s: %O', entry.name, error);
            return { ...none, failure: { name: entry.name, operation: 'remove' as const, error } };
          }
          this.log('removed %s (%s, unused for %ds)', entry.name, entry.kind, Math.round(age));
          const removed: RemovedEntry = {
            name: entry.name,
            kind: entry.kind,
            imageId: entry.imageId,
            bytes: entry.sizeBytes,
            reason,
            ageSeconds: age,
            detail,
          };
          this.#recordRemoval(removed);
          return { ...none, removed };
        },
        { timeoutMs: PASS_LOCK_WAIT_MS, imageId: entry.imageId ?? undefined, offThread: true },
      );
    } catch (error) {
      if (error instanceof LockTimeoutError) {
        return { ...none, kept: { name: entry.name, kind: entry.kind, reason: 'busy' } };
      }
      if (isImageCacheError(error) && error.code === 'ERR_ABORTED') throw error;
      return { ...none, failure: { name: entry.name, operation: 'remove', error } };
    }
  }

  #handlerContext(): TemplateHandlerContext {
    return {
      locks: this.locks,
      fetcher: () => this.fetcher,
      targetFor: (imageId) => {
        assertValidImageId(imageId);
        return this.fetchTargetFor(imageId);
      },
      listStaging: async () => {
        const base = await this.getBase();
        return base === null ? [] : (await this.scanBaseImages(base)).staging;
      },
      removeStaging: async (name) => {
        const base = await this.getBase();
        if (base !== null) await this.removeStaging(base, name);
      },
    };
  }

  async #listAll(
    hosts: readonly string[],
    signal: AbortSignal | undefined,
    lister: InstanceLister | undefined = this.#listInstances,
  ): Promise<Iterable<InstanceRecord>> {
    if (lister === undefined) {
      throw new UnsupportedError(
        'A cache pass without instances',
        'pass the instances to update(), or give the manager a `listInstances` callback.',
      );
    }
    return lister(hosts, signal);
  }

  async #collectInUse(
    base: TBase,
    records: readonly InstanceRecord[],
    scan: BaseImageScan,
    signal: AbortSignal | undefined,
  ): Promise<PassInUse> {
    const inUse = computeInUse(records, this.host, this.ephemeralNaming);
    const entryNames = new Map<string, string>();
    for (const [imageId, usage] of inUse.usedImages) {
      for (const name of this.entryNamesForImage(imageId, scan)) {
        entryNames.set(name, `image ${imageId} of ${usage.instanceNames.join(', ')}`);
      }
    }
    for (const name of inUse.usedSwap) entryNames.set(name, 'swap device');
    for (const name of inUse.usedEphemeral) entryNames.set(name, 'ephemeral device');
    const extra = await this.collectExtraInUse(base, inUse, scan, signal);
    for (const [name, user] of extra) if (!entryNames.has(name)) entryNames.set(name, user);
    const pinnedNames = new Map<string, number>();
    for (const [imageId, until] of await this.pins.active(this.clock.now())) {
      for (const name of this.entryNamesForImage(imageId, scan)) pinnedNames.set(name, until);
    }
    return { ...inUse, entryNames, pinnedNames };
  }

  #recordRemoval(removed: RemovedEntry): void {
    this.#capacity.stats.removal(removed);
    this.#capacity.forget(removed.name);
    this.emit('removed', removed);
  }

  /** Capacity runs over this manager's primitives (capacity/controller.ts). */
  #createCapacity(): CapacityController<TBase> {
    return new CapacityController<TBase>({
      options: this.options,
      clock: this.clock,
      log: this.log,
      getBase: () => this.getBase(),
      scan: (base) => this.scanBaseImages(base),
      // The exact in-use set of a pass, or null when there is no way to list the instances.
      inUse: async (base, scan, instances, signal) => {
        if (instances === undefined && this.#listInstances === undefined) return null;
        const hosts = await this.storageUsers();
        const records = [...(instances ?? (await this.#listAll(hosts, signal)))];
        return this.#collectInUse(base, records, scan, signal);
      },
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
      removalsSuspended: () => this.removalsSuspended(),
      remove: (base, entry, minAgeSeconds, reason, detail, usedSinceMs) =>
        this.removeIfStillUnused(base, entry, minAgeSeconds, reason, detail, usedSinceMs),
      evicted: (event) => this.emit('evicted', event),
      entryNamesForImage: (imageId, scan) => this.entryNamesForImage(imageId, scan),
      activePins: () => this.pins.active(this.clock.now()),
    });
  }

  #report(parts: {
    startedAt: number;
    started: number;
    hosts: readonly string[];
    instanceCount: number;
    skipped: PassReport['skipped'];
    active?: string[];
    kept?: KeptEntry[];
    removed?: RemovedEntry[];
    missing?: string[];
    failures?: PassFailure[];
    capacity?: CapacityReport | null | undefined;
  }): PassReport {
    return {
      host: this.host,
      startedAt: parts.startedAt,
      durationMs: performance.now() - parts.started,
      skipped: parts.skipped,
      hosts: parts.hosts,
      instanceCount: parts.instanceCount,
      active: parts.active ?? [],
      kept: parts.kept ?? [],
      removed: parts.removed ?? [],
      missing: parts.missing ?? [],
      failures: parts.failures ?? [],
      capacity: parts.capacity ?? null,
    };
  }
}
