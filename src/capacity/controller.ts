/**
 * Capacity, run by every {@link ImageManager}: the size cap and the disk watermarks at each pass,
 * room made before each download (under the cap and on disk, or `DiskFullError` before a byte is
 * written), the watermarks again after each fill, protection of images being cached, and the
 * counters. Backends provide nothing beyond `cacheFilesystemUsage` (and optionally
 * `entrySizeBytes`); the manager hands this class its view ({@link CapacityPorts}).
 *
 * The in-use rule: an eviction removes only what the policy allows with an exact in-use set, the
 * same one a pass computes (instances of every storage user, backing files, devices, pins). A pass
 * has it. After a fill or before a download there is no instance list, so eviction then runs only
 * when the manager has a `listInstances` callback to compute it; without one, eviction waits for
 * the next pass (a download that does not fit then fails with `DiskFullError`). Images being
 * cached by this process are never victims, whatever the minimum age.
 *
 * @module
 */
import pLimit from 'p-limit';
import type { LimitFunction } from 'p-limit';
import { throwIfAborted } from '../abort.js';
import type { BaseImageScan } from '../cache-entry.js';
import type { PassInUse } from '../core/pass-types.js';
import { removedEntry } from '../core/remover.js';
import type { CapacityPorts } from '../core/store-view.js';
import { DiskFullError, isImageCacheError } from '../errors.js';
import type { EnsureResult, FetchTarget } from '../fetch/image-fetcher.js';
import type { ImageInfo } from '../source/image-source.js';
import { decideEntries, runPolicy } from './policy.js';
import type { EntryRemover, PolicyContext, PolicyResult } from './policy.js';
import { SpaceReservations } from './reservations.js';
import type { SpaceReservation } from './reservations.js';
import { usedPercent } from './statfs.js';
import type { FilesystemUsage } from './statfs.js';
import { CacheStatsRecorder } from './stats.js';
import { capNeed, largestNeed, reclaimNeed, watermarkNeed } from './watermarks.js';
import type { CapacityNeeds } from './watermarks.js';
import type { CapacityReason, CapacityReport, CapacityTrigger } from './types.js';

export type { CapacityReport, CapacityTrigger } from './types.js';
export type { EvictionEvent } from '../core/pass-types.js';
export type { CapacityPorts } from '../core/store-view.js';

/** Inputs of {@link CapacityController.apply}. */
export interface ApplyOptions<TBase> {
  /** The cache location. */
  readonly base: TBase;
  /** Its scan. */
  readonly scan: BaseImageScan;
  /** The in-use set. */
  readonly inUse: PassInUse;
  /** Remove every unused entry past its minimum age first (Nova's aging). */
  readonly ageOut: boolean;
  /** What runs the policy. */
  readonly trigger: CapacityTrigger;
  /** Decide only; remove nothing. */
  readonly dryRun?: boolean | undefined;
  /**
   * When the caller began gathering what is in use: an entry used at or after it is kept (what
   * makes a minimum age of 0 safe; see `ImageManager.removeIfStillUnused`).
   */
  readonly usedSinceMs?: number | undefined;
  /** A download about to start, whose room is to be made. */
  readonly download?: { readonly imageId: string; readonly sizeBytes: number; readonly requiredFreeBytes: number } | undefined;
  /** The filesystem, when already measured. */
  readonly usage?: FilesystemUsage | null | undefined;
  /** Limits concurrent aging removals. */
  readonly limit?: LimitFunction | undefined;
  /** Cancels between entries. */
  readonly signal?: AbortSignal | undefined;
}

/** The outcome of {@link CapacityController.apply}. */
export interface ApplyResult {
  /** Per entry, in scan order, and the evictions. */
  readonly policy: PolicyResult;
  /** The capacity figures. */
  readonly capacity: CapacityReport;
}

/** Aging removals running at once. */
const AGING_CONCURRENCY = 8;

/** Why an image being cached by this process is protected. */
const BEING_CACHED = 'being cached by this process';

/** The capacity rules of one manager. */
export class CapacityController<TBase> {
  /** The counters. */
  readonly stats: CacheStatsRecorder;
  /** The manager's primitives. */
  readonly ports: CapacityPorts<TBase>;
  readonly #reservations = new SpaceReservations();
  /** Entries being cached by this process: how many calls, and for which image. */
  readonly #filling = new Map<string, { count: number; imageId: string }>();
  /**
   * Image ids of entries this process has cached (names are often hashes). Only entries that
   * exist: a failed fill (an unknown id, say) leaves nothing, and a pass forgets what is gone, so
   * the map is bounded by the cache, not by every id ever asked for.
   */
  readonly #imageIds = new Map<string, string>();

  /** @param ports - the manager's primitives */
  constructor(ports: CapacityPorts<TBase>) {
    this.ports = ports;
    this.stats = new CacheStatsRecorder(ports.clock.now());
  }

  /** Image ids this process has cached or is caching, by entry name (names are often hashes). */
  get knownImageIds(): ReadonlyMap<string, string> {
    const known = new Map(this.#imageIds);
    for (const [name, fill] of this.#filling) known.set(name, fill.imageId);
    return known;
  }

  /** Forgets entry `name` (removed from the cache). */
  forget(name: string): void {
    this.#imageIds.delete(name);
  }

  /** Entries of images this process is caching right now, with why they are protected. */
  get beingCached(): ReadonlyMap<string, string> {
    return new Map([...this.#filling.keys()].map((name) => [name, BEING_CACHED]));
  }

  /** The policy's view of `inUse` now, images being cached by this process included. */
  policyContext(inUse: PassInUse, overrides: Partial<PolicyContext> = {}): PolicyContext {
    return {
      nowMs: this.ports.clock.now(),
      inUse: inUse.entryNames,
      pinned: inUse.pinnedNames,
      protect: this.beingCached,
      minimumAgeSeconds: (entry) => this.ports.minimumAgeSeconds(entry),
      suspended: this.ports.removalsSuspended(),
      ...overrides,
    };
  }

  /**
   * What the rules ask of a cache holding `scan` on a filesystem at `usage`: the cap (counting a
   * pending download), the watermarks (not before a download: kubelet's rule is about steady
   * state), and the room a pending download needs.
   */
  needsFor(scan: BaseImageScan, usage: FilesystemUsage | null, download?: ApplyOptions<TBase>['download']): CapacityNeeds {
    const settings = this.ports.options;
    return {
      cap: capNeed(cacheBytesOf(scan), settings.maxCacheBytes, download?.sizeBytes ?? 0),
      watermark: settings.diskWatermarks && usage !== null && download === undefined ? watermarkNeed(usage, this.#watermarks()) : 0,
      reclaim: download !== undefined && usage !== null ? reclaimNeed(usage, download.requiredFreeBytes) : 0,
    };
  }

  /**
   * Runs the policy over a scan: aging when asked, then eviction for the cap, the watermarks and
   * a pending download, least recently used first.
   */
  async apply(options: ApplyOptions<TBase>): Promise<ApplyResult> {
    const { base, scan, trigger, download } = options;
    const present = new Set(scan.entries.map((entry) => entry.name));
    for (const name of this.#imageIds.keys()) if (!present.has(name)) this.#imageIds.delete(name);
    const settings = this.ports.options;
    const cacheBytes = cacheBytesOf(scan);
    const usage =
      options.usage !== undefined ? options.usage : settings.diskWatermarks ? await this.ports.filesystemUsage(base) : null;
    if (settings.diskWatermarks && usage === null) this.ports.log('diskWatermarks is on but this backend cannot measure its storage');
    const needs = this.needsFor(scan, usage, download);
    const explain = (reason: CapacityReason): string => {
      if (reason === 'cap') {
        return `the cache holds ${cacheBytes} bytes${download === undefined ? '' : ` and image ${download.imageId} brings ${download.sizeBytes}`}, over maxCacheBytes (${settings.maxCacheBytes})`;
      }
      if (reason === 'watermark' && usage !== null) {
        return `${usage.location ?? 'the filesystem'} is ${usedPercent(usage).toFixed(1)}% full (high watermark ${settings.highWatermarkPercent}%, evicting down to ${settings.lowWatermarkPercent}%)`;
      }
      return `image ${download?.imageId ?? '?'} needs ${download?.requiredFreeBytes ?? 0} bytes free in ${usage?.location ?? 'the cache'}, ${usage?.freeBytes ?? 0} are`;
    };
    const dryRun = options.dryRun ?? false;
    // A dry run walks the same policy with removals that always succeed and touch nothing.
    const remove: EntryRemover = dryRun
      ? ({ entry, ageSeconds }, reason, detail) => Promise.resolve({ removed: removedEntry(entry, reason, ageSeconds, detail), kept: null, failure: null })
      : (decision, reason, detail) =>
          this.ports.remove(base, decision.entry, decision.minAgeSeconds, reason, detail, options.usedSinceMs);
    const policy = await runPolicy({
      decisions: decideEntries(scan.entries, this.policyContext(options.inUse)),
      ageOut: options.ageOut,
      needs,
      remove,
      explain,
      limit: options.limit ?? pLimit(AGING_CONCURRENCY),
      signal: options.signal,
      what: trigger === 'pass' ? 'The cache pass' : `Capacity eviction (${trigger})`,
    });
    if (!dryRun) {
      for (const removed of policy.evicted) this.ports.evicted({ ...removed, reason: removed.reason as CapacityReason, trigger });
    }
    const capacity: CapacityReport = {
      cacheBytes,
      maxCacheBytes: settings.maxCacheBytes,
      filesystem: usage,
      needs,
      freedBytes: policy.freedBytes,
      shortfallBytes: policy.shortfallBytes,
    };
    if (capacity.shortfallBytes > 0) {
      this.ports.log('%s: %d bytes asked for could not be freed (the rest is in use, pinned or too young)', trigger, capacity.shortfallBytes);
    }
    return { policy, capacity };
  }

  /**
   * Tracks one `cacheImage` call: protects its entry from eviction while it runs, admits its
   * download (room made under the cap and on disk, or `DiskFullError`), counts it, and after the
   * fill applies the watermarks (and the cap, when the image's size was not announced).
   */
  beginFill(imageId: string, name: string): FillTracker {
    const filling = this.#filling.get(name);
    if (filling === undefined) this.#filling.set(name, { count: 1, imageId });
    else filling.count += 1;
    let reservation: SpaceReservation | undefined;
    let requiredFreeBytes = 0;
    let sizeKnown = false;
    let ended = false;
    return {
      admit: async (info, signal) => {
        const admitted = await this.#admit(imageId, info, signal);
        reservation = admitted.reservation;
        requiredFreeBytes = admitted.requiredFreeBytes;
        sizeKnown = info.size !== null;
      },
      track: (target) => ({
        // Every member delegated explicitly: targets may be class instances, whose methods a
        // spread would lose.
        name: target.name,
        filePath: target.filePath,
        exists: () => target.exists(),
        ...(target.remove === undefined ? {} : { remove: () => (target.remove as () => Promise<boolean>).call(target) }),
        createSink: async (info, signal) => {
          const sink = await target.createSink(info, signal);
          let written = 0;
          return {
            // Counted once the bytes are written, so they show in statfs before they leave the
            // reservation: concurrent admissions never count them twice or not at all.
            write: async (chunk) => {
              await sink.write(chunk);
              written += chunk.length;
              reservation?.progress(written);
            },
            commit: () => sink.commit(),
            discard: () => sink.discard(),
            // A kept prefix is on disk already (statfs shows it); only the rest is counted here.
            resume: sink.resume,
          };
        },
      }),
      failed: async (error) => {
        if (!isImageCacheError(error) || error.code !== 'ERR_DISK_FULL') return error;
        this.stats.diskFull();
        if (!(error instanceof DiskFullError) || requiredFreeBytes === 0) return error;
        // A write hit ENOSPC mid-download: say what the image needed and what is free now.
        const usage = await this.#usageNow();
        return new DiskFullError(imageId, requiredFreeBytes, usage?.freeBytes ?? 0, usage?.location ?? error.location, error.cause ?? error);
      },
      finish: async (result, signal) => {
        this.#imageIds.set(name, imageId);
        if (result.status === 'existing') await this.recordHit(name);
        else this.stats.miss();
        if (result.status !== 'cached' || result.shared) return;
        this.stats.download(result.bytes);
        // Room under the cap was made before the download when its size was known; the
        // watermarks are checked once the bytes are on disk.
        const { options } = this.ports;
        if (options.diskWatermarks || (Number.isFinite(options.maxCacheBytes) && !sizeKnown)) await this.#evictAfterFill(signal);
      },
      end: () => {
        if (ended) return;
        ended = true;
        reservation?.release();
        const filling = this.#filling.get(name);
        if (filling !== undefined && --filling.count === 0) this.#filling.delete(name);
      },
    };
  }

  /** Free space check, reclaim and reservation for a download, one admission at a time. */
  #admit(
    imageId: string,
    info: ImageInfo,
    signal: AbortSignal | undefined,
  ): Promise<{ reservation: SpaceReservation; requiredFreeBytes: number }> {
    return this.#reservations.exclusive(async () => {
      throwIfAborted(signal, 'Download', imageId);
      const { options, log } = this.ports;
      const sizeBytes = info.size ?? 0;
      if (info.size === null) log('image %s has no announced size: only the reserve is checked', imageId);
      const base = await this.ports.getBase();
      let usage = await this.ports.filesystemUsage(base);
      const requiredFreeBytes = sizeBytes + options.downloadReserveBytes + this.#reservations.outstandingBytes;
      const short = usage !== null && usage.freeBytes < requiredFreeBytes;
      if (base !== null && (short || Number.isFinite(options.maxCacheBytes))) {
        const scan = await this.ports.scan(base);
        const download = { imageId, sizeBytes, requiredFreeBytes };
        if (largestNeed(this.needsFor(scan, usage, download)) > 0) {
          const evicted = await this.#evict(base, scan, 'download', signal, (inUse) =>
            this.apply({ base, scan, inUse, ageOut: false, trigger: 'download', download, usage, signal }),
          );
          if (evicted !== null && evicted.capacity.freedBytes > 0) usage = await this.ports.filesystemUsage(base);
        }
      }
      if (usage !== null && usage.freeBytes < requiredFreeBytes) {
        throw new DiskFullError(imageId, requiredFreeBytes, usage.freeBytes, usage.location ?? 'the cache');
      }
      return { reservation: this.#reservations.reserve(sizeBytes), requiredFreeBytes };
    });
  }

  async #evictAfterFill(signal: AbortSignal | undefined): Promise<void> {
    try {
      const base = await this.ports.getBase();
      if (base === null) return;
      const scan = await this.ports.scan(base);
      const usage = this.ports.options.diskWatermarks ? await this.ports.filesystemUsage(base) : null;
      if (largestNeed(this.needsFor(scan, usage)) === 0) return;
      await this.#evict(base, scan, 'fill', signal, (inUse) =>
        this.apply({ base, scan, inUse, ageOut: false, trigger: 'fill', usage, signal }),
      );
    } catch (error) {
      // The image is cached; a failed eviction is retried by the next fill or pass.
      this.ports.log('eviction after a fill failed: %O', error);
    }
  }

  /** Runs `run` with the exact in-use set, or returns null (logged) when there is none to compute. */
  async #evict(
    base: TBase,
    scan: BaseImageScan,
    trigger: CapacityTrigger,
    signal: AbortSignal | undefined,
    run: (inUse: PassInUse) => Promise<ApplyResult>,
  ): Promise<ApplyResult | null> {
    const inUse = await this.ports.inUse(base, scan, undefined, signal);
    if (inUse === null) {
      this.ports.log('%s: capacity eviction deferred to the next pass (no listInstances to tell what is in use)', trigger);
      return null;
    }
    return run(inUse);
  }

  /** Counts a hit on entry `name`, served its size (0 when unreadable: a counter never fails a request). */
  async recordHit(name: string, sizeBytes?: number): Promise<void> {
    let bytes = sizeBytes ?? 0;
    try {
      if (sizeBytes === undefined) bytes = (await this.ports.entrySizeBytes(name)) ?? 0;
    } catch (error) {
      this.ports.log('cannot read the size of %s: %O', name, error);
    }
    this.stats.hit(bytes);
  }

  async #usageNow(): Promise<FilesystemUsage | null> {
    try {
      return await this.ports.filesystemUsage(await this.ports.getBase());
    } catch {
      return null;
    }
  }

  #watermarks(): { highPercent: number; lowPercent: number } {
    return { highPercent: this.ports.options.highWatermarkPercent, lowPercent: this.ports.options.lowWatermarkPercent };
  }
}

/** Bytes the scanned entries occupy. */
function cacheBytesOf(scan: BaseImageScan): number {
  return scan.entries.reduce((sum, entry) => sum + entry.sizeBytes, 0);
}

/** One `cacheImage` call, as capacity follows it (see {@link CapacityController.beginFill}). */
export interface FillTracker {
  /** The fetcher's `beforeDownload`: makes room or throws `DiskFullError`, then reserves the space. */
  admit(info: ImageInfo, signal: AbortSignal | undefined): Promise<void>;
  /** Wraps the fill's target so that bytes written shrink the reservation as they land on disk. */
  track(target: FetchTarget): FetchTarget;
  /** Maps a failure (counts disk-full ones, and says what the image needed); returns the error to throw. */
  failed(error: unknown): Promise<unknown>;
  /** Counts the outcome and, after a download, enforces the cap and watermarks. */
  finish(result: EnsureResult, signal: AbortSignal | undefined): Promise<void>;
  /** Releases the reservation and the protection. Idempotent. */
  end(): void;
}
