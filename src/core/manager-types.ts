/**
 * The manager's public vocabulary (types only): its constructor options, the instance lister,
 * `cacheImage`'s options and result, `update`'s options, and the events. Re-exported by
 * manager.ts; kept here so the roles in core/ can name them without importing the manager.
 *
 * @module
 */
import type { LimitFunction } from 'p-limit';
import type { PassReport, RemovedEntry } from '../cache-entry.js';
import type { Clock } from '../clock.js';
import type { DownloadProgress, ProgressListener } from '../fetch/download.js';
import type { EphemeralNaming, InstanceRecord } from '../instances.js';
import type { ImageCacheOptions } from '../options.js';
import type { BytesFrom } from '../peer/types.js';
import type { PinStore } from '../pins.js';
import type { ImageSource } from '../source/image-source.js';
import type { EvictionEvent } from './pass-types.js';

/** Supplies the instances of the given hosts (every non-deleted one, soft-deleted included). */
export type InstanceLister = (
  hosts: readonly string[],
  signal?: AbortSignal,
) => Promise<Iterable<InstanceRecord>> | Iterable<InstanceRecord>;

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
  /**
   * The image source for this call instead of the manager's `source`: e.g. a `PeerImageSource`
   * over it, to read from the site's peers. A call joining a download of the same image already in
   * flight in this manager shares that download, and so its first caller's source.
   */
  readonly source?: ImageSource | undefined;
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
  /**
   * Where the downloaded bytes came from, per origin (`glance`, `peer:<host>`); empty for
   * `existing` and for a local fill (a link from an image store).
   */
  readonly bytesFrom: readonly BytesFrom[];
  /**
   * Bytes an interrupted earlier download had kept and this one resumed from (re-hashed from disk,
   * not fetched again); 0 when it started from zero or the image was already cached.
   */
  readonly resumedFromBytes: number;
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

/**
 * Where a backend keeps its cross-process state, given to the {@link ImageManager} constructor:
 * the base builds the lock manager and the pin store from it once the options are validated.
 */
export interface StoreFiles {
  /** Directory of cross-process locks. Omitted: locks are in-process only. */
  readonly lockDir?: string | undefined;
  /**
   * File of the pins, used when the options give no `pins` store. Omitted: pins are kept in
   * memory.
   */
  readonly pinFile?: string | undefined;
}
