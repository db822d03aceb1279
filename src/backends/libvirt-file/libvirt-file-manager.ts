/**
 * The libvirt-file backend: Nova's libvirt image cache (nova.md sections 2 to 4, 6 and 12), with
 * its known bugs closed.
 *
 * Layout: `<instancesPath>/<subdirectoryName>` holds the bases (`sha1(imageId)`, `swap_<MiB>`,
 * `ephemeral_<GiB>_<ext>`, legacy `<sha1>_<N>` and `<sha1>_sm`); `<instancesPath>/locks` holds the
 * per-image locks shared by fetch, instance-disk creation and removal, across processes and hosts
 * on shared storage; `<instancesPath>/compute_nodes` registers the hosts sharing the storage.
 *
 * @module
 */
import { lstat, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { BaseImageScan, CacheEntry, RemovedEntry } from '../../cache-entry.js';
import { inspectDiskImage } from '../../disk/qcow2-header.js';
import type { DiskImageInfo } from '../../disk/qcow2-header.js';
import { writeQcow2Overlay } from '../../disk/qcow2-overlay.js';
import { copyRawDisk } from '../../disk/raw-copy.js';
import {
  DiskFullError,
  FlavorDiskSmallerThanImageError,
  InvalidConfigError,
  InvalidDiskImageError,
  UnsupportedError,
} from '../../errors.js';
import type { ProgressListener } from '../../fetch/download.js';
import { syncNewDirectories } from '../../fetch/durable.js';
import { fileFetchTarget, isRegularFile } from '../../fetch/file-target.js';
import type { FetchTarget } from '../../fetch/image-fetcher.js';
import { LockManager } from '../../fetch/lock-manager.js';
import { metadataFsFor } from '../../fs/choose-metadata-fs.js';
import type { MetadataFs } from '../../fs/metadata-fs.js';
import { assertValidImageId } from '../../image-id.js';
import { systemClock } from '../../clock.js';
import { isBoolean } from '../../options.js';
import { FilePinStore } from '../../pins.js';
import type { InUseSet } from '../../instances.js';
import { statfsProbe, usageOfDirectory } from '../../capacity/statfs.js';
import type { FilesystemProbe, FilesystemUsage } from '../../capacity/statfs.js';
import { ImageManager } from '../../manager.js';
import type { AgeContext, AgeResult, ImageManagerOptions } from '../../manager.js';
import { cacheDiskUsage, mtimeOf, touchFile } from '../files.js';
import { useCachedImage } from '../use-cached-image.js';
import { collectBackingFiles } from './backing-files.js';
import type { InstanceStagingFile } from './backing-files.js';
import { FINGERPRINT_LENGTH, cacheFileName } from './naming.js';
import { scanBaseDirectory } from './scan.js';
import { STORAGE_REGISTRY_FILE, StorageRegistry } from './storage-registry.js';

/** Options of {@link LibvirtFileImageManager}. */
export interface LibvirtFileImageManagerOptions extends ImageManagerOptions {
  /** Nova's `[DEFAULT]instances_path`: root of instance dirs, the cache dir, locks and the registry. */
  readonly instancesPath: string;
  /**
   * How long a host that stopped registering still protects its instances' bases, seconds.
   * Default 86400 (Nova's hard-coded 24 h). Bases backing an existing disk are protected
   * regardless; this window covers what only instance records show (kernels, ramdisks, bases of
   * raw copies). See the rule in storage-registry.ts and README "Shared storage".
   */
  readonly storageUsersWindowSeconds?: number | undefined;
  /**
   * Measures the cache's filesystem (disk watermarks, free space before a download). Default
   * `statfsProbe` (`statfs(2)`); inject one in tests, or when the cache sits on storage whose
   * limits `statfs` does not show (a quota).
   */
  readonly filesystemProbe?: FilesystemProbe | undefined;
  /**
   * fsync each new instance disk (overlay or raw copy) before `createInstanceDisk` returns, so it
   * survives a host crash in the seconds after the spawn. Default false, as in Nova: `qemu-img
   * create` and `cp` do not sync either, and the guest's first flush makes the disk durable. The
   * fsync (metadata and a device flush, ~1 ms on ext4) is most of a cached spawn's cost. Cached
   * base images are always fsynced before they are published, whatever this says.
   */
  readonly syncInstanceDisks?: boolean | undefined;
}

/** Options of {@link LibvirtFileImageManager.createInstanceDisk}. */
export interface CreateInstanceDiskOptions {
  /** The image to build the disk from. */
  readonly imageId: string;
  /** The instance's directory, e.g. `<instancesPath>/<uuid>`; created if missing. */
  readonly instanceDir: string;
  /**
   * The disk's size in bytes (the flavor's root disk). Omitted or 0: the image's virtual size
   * (Nova: root size 0 means "use the image size"). Rounded up to a multiple of 512.
   */
  readonly sizeBytes?: number | undefined;
  /** `qcow2`: a copy-on-write overlay backed by the base (default); `raw`: a full (reflink or sparse) copy. */
  readonly format?: 'qcow2' | 'raw' | undefined;
  /** File name inside the instance directory. Default `disk`. */
  readonly diskName?: string | undefined;
  /** Cancels the call (the download, the wait for the lock, the copy). */
  readonly signal?: AbortSignal | undefined;
  /** Download progress, when the image is not cached yet. */
  readonly onProgress?: ProgressListener | undefined;
}

/** The outcome of {@link LibvirtFileImageManager.createInstanceDisk}. */
export interface InstanceDiskResult {
  /** The disk's path. */
  readonly path: string;
  /** False when the disk already existed and was left as it was (Nova's behaviour). */
  readonly created: boolean;
  /** The disk's format. */
  readonly format: 'qcow2' | 'raw';
  /** The base it was built from. */
  readonly basePath: string;
  /** Whether the image had to be downloaded first. */
  readonly cacheStatus: 'cached' | 'existing';
  /** For raw disks, how the copy was made. */
  readonly copyMethod: string | null;
  /** The disk's virtual size, bytes. */
  readonly virtualSize: number;
}

/** What follows the fingerprint in a legacy resized base's name (Nova: `<sha1>_[0-9]+$`). */
const RESIZED_SUFFIX = /^_[0-9]+$/;

/** The pin file under the instances path, beside Nova's `compute_nodes`. */
export const PIN_FILE = 'imagecache_pins.json';

/** Nova's libvirt image cache manager. */
export class LibvirtFileImageManager extends ImageManager<string> {
  /** {@inheritDoc ImageManager.hasImageCache} */
  readonly hasImageCache = true;
  /** `[DEFAULT]instances_path`. */
  readonly instancesPath: string;
  /** The cache directory: `<instancesPath>/<subdirectoryName>`. */
  readonly baseDir: string;
  /** The lock directory: `<instancesPath>/locks`. */
  readonly lockDir: string;
  /** The shared-storage registry. */
  readonly registry: StorageRegistry;
  /** Staging files found in instance directories, per pass (keyed by the pass's scan). */
  readonly #instanceStaging = new WeakMap<BaseImageScan, readonly InstanceStagingFile[]>();
  /** Resized variants by fingerprint, per scan. */
  readonly #resizedIndex = new WeakMap<BaseImageScan, ReadonlyMap<string, readonly string[]>>();
  #registryCorrupt = false;
  #lastRegistration = Number.NEGATIVE_INFINITY;
  readonly #filesystemProbe: FilesystemProbe;
  readonly #syncInstanceDisks: boolean;
  /** The metadata calls on the instances path (cache, instance directories): see fs/metadata-fs.ts. */
  readonly #metadataFs: MetadataFs;

  /** @param options - instances path, host, image source and Nova's `[image_cache]` options */
  constructor(options: LibvirtFileImageManagerOptions) {
    const { instancesPath, storageUsersWindowSeconds, filesystemProbe, syncInstanceDisks, ...rest } = options;
    if (typeof instancesPath !== 'string' || !path.isAbsolute(instancesPath)) {
      throw new InvalidConfigError('instancesPath', 'an absolute directory path', instancesPath);
    }
    if (syncInstanceDisks !== undefined) isBoolean('syncInstanceDisks', syncInstanceDisks);
    const lockDir = path.join(instancesPath, 'locks');
    const locks = new LockManager({ lockDir, staleMs: rest.lockStaleMs, timeoutMs: rest.lockTimeoutMs, metadataIo: rest.metadataIo });
    const pins = rest.pins ?? new FilePinStore(path.join(instancesPath, PIN_FILE), locks, rest.clock ?? systemClock);
    super({ ...rest, pins }, locks, 'libvirt');
    this.instancesPath = instancesPath;
    this.baseDir = path.join(instancesPath, this.options.subdirectoryName);
    this.lockDir = lockDir;
    this.#filesystemProbe = filesystemProbe ?? statfsProbe;
    this.#syncInstanceDisks = syncInstanceDisks ?? false;
    this.#metadataFs = metadataFsFor(instancesPath, this.options.metadataIo);
    this.registry = new StorageRegistry({
      instancesPath,
      locks: this.locks,
      clock: this.clock,
      windowSeconds: storageUsersWindowSeconds,
    });
  }

  /** The cache file name of `imageId`: its SHA-1 (Nova's `get_cache_fname`). */
  cacheFileName(imageId: string): string {
    assertValidImageId(imageId);
    return cacheFileName(imageId);
  }

  /** The cache file path of `imageId`. */
  cachePathFor(imageId: string): string {
    return path.join(this.baseDir, this.cacheFileName(imageId));
  }

  /** {@inheritDoc ImageManager.getBase} */
  async getBase(): Promise<string | null> {
    try {
      return (await stat(this.baseDir)).isDirectory() ? this.baseDir : null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** {@inheritDoc ImageManager.scanBaseImages} */
  scanBaseImages(base: string): Promise<BaseImageScan> {
    return scanBaseDirectory(base, this.#metadataFs);
  }

  /** {@inheritDoc ImageManager.getDiskUsage} */
  getDiskUsage(): Promise<number> {
    return cacheDiskUsage(this.instancesPath, this.baseDir);
  }

  /**
   * Registers this host as a user of the instances path now. Passes do it too; call it at start-up
   * when this host does not run passes itself (Nova gap I: otherwise it is invisible to the others).
   */
  async registerStorageUse(): Promise<void> {
    await this.registry.register(this.host);
    this.#lastRegistration = this.clock.now();
  }

  /**
   * Nova's spawn flow for a root disk: make sure the image is cached (download if missing, touch if
   * present), then, under the image's lock, check the base is still there, touch it, check the
   * requested size against the image's virtual size, and create the instance disk: a qcow2 overlay
   * written in-process, or a raw copy extended to the size. The base cannot be removed between the
   * check and its use, because removal takes the same lock and re-checks the age we just reset.
   *
   * @throws `FlavorDiskSmallerThanImageError` when `sizeBytes` is below the image's virtual size;
   *   `InvalidDiskImageError` when the base fails the header safety check; the fetch errors
   */
  async createInstanceDisk(options: CreateInstanceDiskOptions): Promise<InstanceDiskResult> {
    const { imageId, instanceDir, signal } = options;
    assertValidImageId(imageId);
    const format = options.format ?? 'qcow2';
    const diskName = options.diskName ?? 'disk';
    if (diskName === '' || diskName.includes('/') || diskName === '.' || diskName === '..') {
      throw new InvalidConfigError('diskName', 'a plain file name', diskName);
    }
    const diskPath = path.join(instanceDir, diskName);
    const basePath = this.cachePathFor(imageId);
    await this.#registerIfDue();
    const name = path.basename(basePath);
    let usedBaseBytes = 0;
    const { value } = await useCachedImage({
      imageId,
      log: this.log,
      // Check, touch and build under the image's lock: a removal takes the same lock and re-checks
      // the age this touch resets.
      tryUse: (cacheStatus) =>
        this.locks.withLock(
          name,
          async (): Promise<InstanceDiskResult | null> => {
            // The header read is the existence check too: one open instead of a stat and an open.
            const info = await inspectIfPresent(basePath, imageId, this.#metadataFs);
            if (info === null) return null;
            await touchFile(basePath, this.clock, true, this.log, this.#metadataFs);
            const built = await this.#buildDisk(options, basePath, info, diskPath, format, cacheStatus);
            usedBaseBytes = info.fileSize;
            // Touched again once the disk exists: a pass that scanned before the first touch and
            // read the instance directories before the disk appeared sees the base was used since
            // it began, and keeps it (the pass re-checks that under this lock).
            if (built.created) await touchFile(basePath, this.clock, true, this.log, this.#metadataFs);
            return built;
          },
          { signal, imageId },
        ),
      cache: () => this.cacheImage(imageId, { signal, onProgress: options.onProgress, tolerateTouchErrors: true }),
      // The base's size is known from its header read: no second stat on the hit path.
      onHit: () => this.recordCacheHit(name, usedBaseBytes),
    });
    return value;
  }

  async #buildDisk(
    options: CreateInstanceDiskOptions,
    basePath: string,
    info: DiskImageInfo,
    diskPath: string,
    format: 'qcow2' | 'raw',
    cacheStatus: 'cached' | 'existing',
  ): Promise<InstanceDiskResult> {
    const { imageId, instanceDir, signal } = options;
    const sync = this.#syncInstanceDisks;
    if (info.header?.backingFile != null) {
      throw new InvalidDiskImageError(basePath, 'a base image must not have a backing file of its own', imageId);
    }
    const requested = options.sizeBytes ?? 0;
    if (requested !== 0 && requested < info.virtualSize) {
      throw new FlavorDiskSmallerThanImageError(imageId, requested, info.virtualSize);
    }
    const virtualSize = Math.ceil(Math.max(requested, info.virtualSize) / 512) * 512;
    const common = { path: diskPath, format, basePath, cacheStatus, virtualSize };
    if (await isRegularFile(diskPath, this.#metadataFs)) return { ...common, created: false, copyMethod: null };
    const created = await ensureDirectory(instanceDir, this.#metadataFs);
    if (sync && created !== undefined) await syncNewDirectories(instanceDir, created);
    if (format === 'qcow2') {
      await writeQcow2Overlay(diskPath, { backingFile: basePath, backingFormat: info.format, virtualSize, imageId, sync, metadataFs: this.#metadataFs });
      return { ...common, created: true, copyMethod: null };
    }
    if (info.format !== 'raw') {
      throw new UnsupportedError('A raw instance disk from a qcow2 base', 'use format qcow2, or cache images as raw.', imageId);
    }
    const copy = await copyRawDisk(basePath, diskPath, { sizeBytes: virtualSize, signal, imageId, sync });
    return { ...common, created: true, copyMethod: copy.method };
  }

  /** {@inheritDoc ImageManager.storageUsers} */
  protected override async storageUsers(): Promise<readonly string[]> {
    const users = await this.registry.registerAndList(this.host);
    this.#lastRegistration = this.clock.now();
    // Hosts with unreadable entries are unknown users too: their instances cannot be listed.
    this.#registryCorrupt = users.corrupt || users.invalid.length > 0;
    return users.hosts.includes(this.host) ? users.hosts : [...users.hosts, this.host].sort();
  }

  /** {@inheritDoc ImageManager.removalsSuspended} */
  protected override removalsSuspended(): string | null {
    return this.#registryCorrupt
      ? 'the shared-storage registry (compute_nodes) is unreadable, so other hosts\u2019 instances are unknown'
      : null;
  }

  /** {@inheritDoc ImageManager.fetchTargetFor} */
  protected fetchTargetFor(imageId: string): FetchTarget {
    return fileFetchTarget(imageId, this.cachePathFor(imageId), this.#metadataFs);
  }

  /**
   * An image in use keeps its original, its legacy `_sm` base and every legacy resized
   * `<sha1>_<N>` base alive, as Nova's `_find_base_file` does, minus its list walk that skips the
   * variant after each match (gap C): Nova re-creates a missing `<sha1>_<N>` from the original
   * when a disk backed by it is started again, so they live as long as the image is used.
   */
  protected entryNamesForImage(imageId: string, scan: BaseImageScan): readonly string[] {
    const fingerprint = cacheFileName(imageId);
    return [fingerprint, `${fingerprint}_sm`, ...(this.#resizedVariants(scan).get(fingerprint) ?? [])];
  }

  /** The scan's `<sha1>_<digits>` entries by fingerprint, indexed once per scan. */
  #resizedVariants(scan: BaseImageScan): ReadonlyMap<string, readonly string[]> {
    let index = this.#resizedIndex.get(scan);
    if (index === undefined) {
      const built = new Map<string, string[]>();
      for (const entry of scan.entries) {
        if (entry.kind !== 'resized' || !RESIZED_SUFFIX.test(entry.name.slice(FINGERPRINT_LENGTH))) continue;
        const fingerprint = entry.name.slice(0, FINGERPRINT_LENGTH);
        const names = built.get(fingerprint);
        if (names === undefined) built.set(fingerprint, [entry.name]);
        else names.push(entry.name);
      }
      index = built;
      this.#resizedIndex.set(scan, index);
    }
    return index;
  }

  /**
   * The backing files of every disk under the instances path, listed instance or not (see
   * backing-files.ts: a disk that exists is in use whatever a lagging instance list says).
   */
  protected override async collectExtraInUse(_base: string, _inUse: InUseSet, scan: BaseImageScan): Promise<ReadonlyMap<string, string>> {
    // Our own names at the top are never instance directories, whatever is planted there.
    const ours = new Set([this.options.subdirectoryName, path.basename(this.lockDir), STORAGE_REGISTRY_FILE, PIN_FILE]);
    const found = await collectBackingFiles(this.instancesPath, ours, { metadataFs: this.#metadataFs });
    this.#instanceStaging.set(scan, found.staging);
    return found.backing;
  }

  /**
   * The inherited pass, plus what a crash leaves outside the cache directory: staging files of
   * disks whose writer died (once older than `staleStagingAgeSeconds`), and lock directories of
   * dead holders that nobody would take again.
   */
  override async ageAndVerify(context: AgeContext<string>): Promise<AgeResult> {
    const result = await super.ageAndVerify(context);
    const now = this.clock.now();
    for (const leftover of this.#instanceStaging.get(context.scan) ?? []) {
      const ageSeconds = (now - leftover.lastModifiedMs) / 1000;
      if (ageSeconds < this.options.staleStagingAgeSeconds) continue;
      const name = path.relative(this.instancesPath, leftover.path);
      try {
        await unlink(leftover.path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') result.failures.push({ name, operation: 'remove', error });
        continue;
      }
      const removed: RemovedEntry = { name, kind: 'staging', imageId: null, bytes: 0, reason: 'stale-staging', ageSeconds };
      result.removed.push(removed);
      this.emit('removed', removed);
    }
    try {
      await this.locks.removeStaleLocks();
    } catch (error) {
      result.failures.push({ name: path.basename(this.lockDir), operation: 'remove', error });
    }
    return result;
  }

  /** {@inheritDoc ImageManager.touchEntry} */
  protected touchEntry(name: string, tolerateEacces: boolean): Promise<void> {
    return touchFile(path.join(this.baseDir, name), this.clock, tolerateEacces, this.log, this.#metadataFs);
  }

  /** {@inheritDoc ImageManager.statEntry} */
  protected statEntry(base: string, entry: CacheEntry): Promise<number | null> {
    return mtimeOf(path.join(base, entry.name), this.#metadataFs);
  }

  /** {@inheritDoc ImageManager.removeEntry} */
  protected async removeEntry(base: string, entry: CacheEntry): Promise<void> {
    const file = path.join(base, entry.name);
    // Re-checked under the lock, without following links: only a regular file is ever unlinked.
    let st;
    try {
      st = await lstat(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    if (st.isFile()) await unlink(file);
  }

  /** The filesystem of the cache directory (of the instances path before the cache exists). */
  protected override cacheFilesystemUsage(base: string | null): Promise<FilesystemUsage | null> {
    return usageOfDirectory(this.#filesystemProbe, base ?? this.baseDir);
  }

  /** The file's size (what a download would have fetched), or null when it is gone. */
  protected override async entrySizeBytes(name: string): Promise<number | null> {
    try {
      return (await lstat(path.join(this.baseDir, name))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** {@inheritDoc ImageManager.removeStaging} */
  protected async removeStaging(base: string, name: string): Promise<void> {
    await unlink(path.join(base, name));
  }

  async #registerIfDue(): Promise<void> {
    // Spawning hosts register too (gap I): often enough to never fall out of the registry window
    // (every quarter of it, at most hourly), rarely enough to keep the registry lock quiet.
    const everyMs = Math.min(3_600_000, (this.registry.windowSeconds * 1000) / 4);
    if (this.clock.now() - this.#lastRegistration < everyMs) return;
    try {
      await this.registerStorageUse();
    } catch (err) {
      // Refreshing the registration is not the spawn's job: a full filesystem fails the disk
      // itself, with its own typed error, if the disk does not fit either.
      if (!(err instanceof DiskFullError)) throw err;
      this.log('could not register %s before a spawn: %s', this.host, err.message);
    }
  }
}

/**
 * The base's format and sizes, or null when it does not exist (yet, or any more; or the cache
 * directory is not a directory, which the fetch then reports). Anything but a regular file at the
 * name is refused (`InvalidDiskImageError`), never followed.
 */
async function inspectIfPresent(basePath: string, imageId: string, metadataFs: MetadataFs): Promise<DiskImageInfo | null> {
  try {
    return await inspectDiskImage(basePath, imageId, { metadataFs });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw err;
  }
}

/**
 * Creates `dir` unless it exists: one mkdir in the usual case (the driver made the instance
 * directory already), where a recursive mkdir costs a mkdir and a stat. Returns the outermost
 * directory it created, if any.
 */
async function ensureDirectory(dir: string, metadataFs: MetadataFs): Promise<string | undefined> {
  try {
    await metadataFs.mkdir(dir);
    return dir;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return undefined;
    if (code !== 'ENOENT') throw err;
    return metadataFs.mkdir(dir, true);
  }
}
