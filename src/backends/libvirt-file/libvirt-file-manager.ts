/**
 * The libvirt-file backend: Nova's libvirt image cache, with its known bugs closed (each one
 * listed in docs/nova-parity.md).
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
import type { BaseImageScan, CacheEntry } from '../../cache-entry.js';
import { DiskFullError, InvalidConfigError } from '../../errors.js';
import { fileFetchTarget } from '../../fetch/file-target.js';
import type { FetchTarget } from '../../fetch/image-fetcher.js';
import { removeResumeFiles } from '../../fetch/resume-sidecar.js';
import { isOwnStagingName } from '../../fetch/staging-names.js';
import { assertValidImageId, checkImageId, vouchFor } from '../../image-id.js';
import { metadataFsFor } from '../../fs/choose-metadata-fs.js';
import type { MetadataFs } from '../../fs/metadata-fs.js';
import { isBoolean } from '../../options.js';
import type { InUseSet } from '../../instances.js';
import { statfsProbe, usageOfDirectory } from '../../capacity/statfs.js';
import type { FilesystemProbe, FilesystemUsage } from '../../capacity/statfs.js';
import { ImageManager } from '../../manager.js';
import type { AgeContext, AgeResult, ImageManagerOptions } from '../../manager.js';
import { cacheDiskUsage, mtimeOf, touchFile } from '../files.js';
import { useCachedImage } from '../use-cached-image.js';
import { collectBackingFiles } from './backing-files.js';
import { buildInstanceDisk, inspectIfPresent } from './instance-disk.js';
import type { CreateInstanceDiskOptions, InstanceDiskResult } from './instance-disk.js';
import type { InstanceStagingFile } from './backing-files.js';
import { FINGERPRINT_LENGTH, cacheFileName } from './naming.js';
import { scanBaseDirectory } from './scan.js';
import { STORAGE_REGISTRY_FILE, StorageRegistry } from './storage-registry.js';

export type { CreateInstanceDiskOptions, InstanceDiskResult } from './instance-disk.js';

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

/** What follows the fingerprint in a legacy resized base's name (Nova: `<sha1>_[0-9]+$`). */
const RESIZED_SUFFIX = /^_[0-9]+$/;

/** The pin file under the instances path, beside Nova's `compute_nodes`. */
export const PIN_FILE = 'imagecache_pins.json';

/** Nova's libvirt image cache manager. */
export class LibvirtFileImageManager extends ImageManager<string> {
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
    super(rest, { lockDir, pinFile: path.join(instancesPath, PIN_FILE) }, 'libvirt');
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

  /** {@link cachePathFor} of an id already checked (by a spawn, or by the manager for its fetch). */
  #basePathOf(imageId: string): string {
    return path.join(this.baseDir, cacheFileName(imageId));
  }

  /** {@inheritDoc CacheStoreBase.getBase} */
  async getBase(): Promise<string | null> {
    try {
      return (await stat(this.baseDir)).isDirectory() ? this.baseDir : null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** {@inheritDoc CacheStoreBase.scanBaseImages} */
  scanBaseImages(base: string): Promise<BaseImageScan> {
    return scanBaseDirectory(base, this.#metadataFs);
  }

  /** {@inheritDoc CacheStoreBase.getDiskUsage} */
  override getDiskUsage(): Promise<number> {
    return cacheDiskUsage(this.instancesPath, this.baseDir);
  }

  /**
   * Registers this host as a user of the instances path now. Passes do it too; call it at start-up
   * when this host does not run passes itself; otherwise it is invisible to the others
   * (docs/nova-parity.md, gap I).
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
    checkImageId(imageId);
    const format = options.format ?? 'qcow2';
    const diskName = options.diskName ?? 'disk';
    if (diskName === '' || diskName.includes('/') || diskName === '.' || diskName === '..') {
      throw new InvalidConfigError('diskName', 'a plain file name', diskName);
    }
    const diskPath = path.join(instanceDir, diskName);
    const basePath = this.#basePathOf(imageId);
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
            const built = await buildInstanceDisk(options, { basePath, info, diskPath, format, cacheStatus, sync: this.#syncInstanceDisks, metadataFs: this.#metadataFs });
            usedBaseBytes = info.fileSize;
            // Touched again once the disk exists: a pass that scanned before the first touch and
            // read the instance directories before the disk appeared sees the base was used since
            // it began, and keeps it (the pass re-checks that under this lock).
            if (built.created) await touchFile(basePath, this.clock, true, this.log, this.#metadataFs);
            return built;
          },
          { signal, imageId },
        ),
      cache: () => this.cacheImage(imageId, vouchFor(imageId, { signal, onProgress: options.onProgress, tolerateTouchErrors: true })),
      // The base's size is known from its header read: no second stat on the hit path.
      onHit: () => this.recordCacheHit(name, usedBaseBytes),
    });
    return value;
  }

  /** {@inheritDoc CacheStoreBase.storageUsers} */
  protected override async storageUsers(): Promise<readonly string[]> {
    const users = await this.registry.registerAndList(this.host);
    this.#lastRegistration = this.clock.now();
    // Hosts with unreadable entries are unknown users too: their instances cannot be listed.
    this.#registryCorrupt = users.corrupt || users.invalid.length > 0;
    return users.hosts.includes(this.host) ? users.hosts : [...users.hosts, this.host].sort();
  }

  /** {@inheritDoc CacheStoreBase.removalsSuspended} */
  protected override removalsSuspended(): string | null {
    return this.#registryCorrupt
      ? 'the shared-storage registry (compute_nodes) is unreadable, so other hosts\u2019 instances are unknown'
      : null;
  }

  /** {@inheritDoc CacheStoreBase.fetchTargetFor} */
  protected fetchTargetFor(imageId: string): FetchTarget {
    return fileFetchTarget(imageId, this.#basePathOf(imageId), this.#metadataFs, { resume: this.options.resumeDownloads });
  }

  /**
   * An image in use keeps its original, its legacy `_sm` base and every legacy resized
   * `<sha1>_<N>` base alive, as Nova's `_find_base_file` does, minus its list walk that skips the
   * variant after each match (docs/nova-parity.md, gap C): Nova re-creates a missing
   * `<sha1>_<N>` from the original when a disk backed by it is started again, so they live as long
   * as the image is used.
   */
  protected override entryNamesForImage(imageId: string, scan: BaseImageScan): readonly string[] {
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
    const leftovers = (this.#instanceStaging.get(context.scan) ?? []).map((leftover) => ({
      name: path.relative(this.instancesPath, leftover.path),
      lastModifiedMs: leftover.lastModifiedMs,
    }));
    const swept = await this.sweepStagingLeftovers(leftovers, async (name) => {
      try {
        await unlink(path.join(this.instancesPath, name));
        return true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
        throw error;
      }
    });
    result.removed.push(...swept.removed);
    result.failures.push(...swept.failures);
    try {
      await this.locks.removeStaleLocks();
    } catch (error) {
      result.failures.push({ name: path.basename(this.lockDir), operation: 'remove', error });
    }
    return result;
  }

  /** {@inheritDoc CacheStoreBase.touchEntry} */
  protected override touchEntry(name: string, tolerateEacces: boolean): Promise<void> {
    return touchFile(path.join(this.baseDir, name), this.clock, tolerateEacces, this.log, this.#metadataFs);
  }

  /** {@inheritDoc CacheStoreBase.statEntry} */
  protected override statEntry(base: string, entry: CacheEntry): Promise<number | null> {
    return mtimeOf(path.join(base, entry.name), this.#metadataFs);
  }

  /** {@inheritDoc CacheStoreBase.removeEntry} */
  protected override async removeEntry(base: string, entry: CacheEntry): Promise<void> {
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

  /** {@inheritDoc CacheStoreBase.removeStaging} */
  protected override async removeStaging(base: string, name: string): Promise<void> {
    await unlink(path.join(base, name));
    // A kept download's resume sidecar goes with it.
    if (isOwnStagingName(name)) await removeResumeFiles(path.join(base, name));
  }

  async #registerIfDue(): Promise<void> {
    // Spawning hosts register too (docs/nova-parity.md, gap I): often enough to never fall out of
    // the registry window (every quarter of it, at most hourly), rarely enough to keep the registry
    // lock quiet.
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
