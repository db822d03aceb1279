/**
 * The PowerVM localdisk backend: nova-powervm's image cache for the localdisk driver, blueprint
 * "Image Cache Support for localdisk driver" (docs/nova-parity.md, powervm localdisk), over any
 * {@link VolumeGroup}, with its gaps closed:
 *
 * - the image disk is `i_` + the image UUID cut to 15 characters, as nova-powervm names it, but the
 *   full image id is a tag on the disk and lookups go by tag: two images whose short names collide
 *   get two disks, and one is never served for the other;
 * - a miss uploads into a temporary disk, verified, and publishes it by rename (nova-powervm names
 *   the disk first, so a crash mid-upload left a "hit" holding half an image);
 * - a spawn holds the cache lock shared and a cleanup exclusive, across processes (nova-powervm's
 *   lock is in-process); a clone therefore never loses its source to a cleanup;
 * - cleanup removes only disks this library created and tagged, unused, and older than the minimum
 *   age, each under its image's lock with the age re-checked (nova-powervm deletes every unused
 *   `i_*` disk on the first pass, foreign ones included);
 * - the periodic pass, `cacheImage`, aging and reporting are the shared `ImageManager` ones.
 *
 * @module
 */
import type { BaseImageScan, CacheEntry, StagingEntry } from '../../cache-entry.js';
import type { FilesystemUsage } from '../../capacity/statfs.js';
import { InvalidConfigError, LockTimeoutError, VolumeGroupError } from '../../errors.js';
import type { ProgressListener } from '../../fetch/download.js';
import type { FetchTarget } from '../../fetch/image-fetcher.js';
import type { HeldLock } from '../../fetch/lock-manager.js';
import { ReadWriteLock } from '../../fetch/rw-lock.js';
import { assertValidImageId, checkImageId, vouchFor } from '../../image-id.js';
import type { ImageId } from '../../image-id.js';
import { ImageManager } from '../../manager.js';
import type { ImageManagerOptions, RemovalScope } from '../../manager.js';
import { withRetry } from '../../source/retry.js';
import { useCachedImage } from '../use-cached-image.js';
import { ImageDiskTarget } from './image-disk-target.js';
import { DISK_OWNER, DISK_TAGS, VDISK_NAME_MAX, bootDiskName, classifyDisk, findImageDisk, novaImageDiskName } from './naming.js';
import { callVolumeGroup, isTransientVolumeGroupError, listDisks } from './volume-group-call.js';
import type { VolumeGroup, VolumeGroupDisk } from './volume-group.js';

/** Options of {@link LocalDiskImageManager}. */
export interface LocalDiskImageManagerOptions extends ImageManagerOptions {
  /** The volume group holding the cached image disks and the instances' disks. */
  readonly volumeGroup: VolumeGroup;
  /**
   * Directory of the cross-process locks (per-image locks and the cache's readers/writer lock):
   * a local directory every process using this volume group shares, e.g. `/var/lib/nova/locks`.
   * Omitted: locks are in-process only, so only one process may use the volume group.
   */
  readonly lockDir?: string | undefined;
  /** Attempts at building an instance disk before the error is thrown. Default 4 (nova-powervm). */
  readonly diskCreateAttempts?: number | undefined;
  /**
   * Jittered wait between attempts: a random delay up to `baseMs`, doubling per attempt, at most
   * `maxMs`. Default 1000 and 5000 (nova-powervm sleeps 1 to 5 s).
   */
  readonly diskRetryDelayMs?: RetryDelay | undefined;
}

/** The jittered wait between attempts at building a disk. */
export interface RetryDelay {
  /** Cap of the first wait, ms; it doubles per failed attempt. */
  readonly baseMs: number;
  /** Largest wait, ms. */
  readonly maxMs: number;
}

/** An instance, as far as its boot disk is concerned. */
export interface LocalDiskInstance {
  /** Its UUID. */
  readonly uuid: string;
  /** Its name (e.g. `instance-0000002a`). */
  readonly name: string;
}

/** Options of {@link LocalDiskImageManager.createInstanceDisk}. */
export interface LocalDiskSpawnOptions {
  /** The image to build the disk from. */
  readonly imageId: string;
  /** The instance the disk is for. */
  readonly instance: LocalDiskInstance;
  /**
   * The flavor's root disk, bytes (`root_gb` GiB). The disk gets max(this, the image's size)
   * rounded up to whole GiB. Default 0: the image's size.
   */
  readonly flavorDiskBytes?: number | undefined;
  /** The disk's name. Default: nova-powervm's short boot-disk name (`b_<name[:8]>_<uuid[:4]>`). */
  readonly diskName?: string | undefined;
  /** Cancels the call (waits, the upload, the retries). */
  readonly signal?: AbortSignal | undefined;
  /** Upload progress, when the image is not cached yet. */
  readonly onProgress?: ProgressListener | undefined;
}

/** The outcome of {@link LocalDiskImageManager.createInstanceDisk}. */
export interface LocalDiskSpawnResult {
  /** The instance's disk. */
  readonly diskName: string;
  /** False when this instance's disk already existed (tagged with its UUID) and was left as it was. */
  readonly created: boolean;
  /** Its capacity, bytes (whole GiB). */
  readonly sizeBytes: number;
  /** The cached image disk it was cloned from. */
  readonly imageDiskName: string;
  /** Whether the image had to be uploaded into the cache first. */
  readonly cacheStatus: 'cached' | 'existing';
  /** Attempts made (1 unless a volume-group failure was retried). */
  readonly attempts: number;
}

/** Bytes in a GiB. */
const GiB = 1024 * 1024 * 1024;

/** The name of the cache's readers/writer lock. */
const CACHE_LOCK_NAME = 'localdisk-cache';

/** A disk size in whole GiB, at least 1 (a virtual disk cannot be empty). */
export function roundUpToGiB(bytes: number): number {
  return Math.max(1, Math.ceil(bytes / GiB)) * GiB;
}

/** nova-powervm's localdisk image cache, over a {@link VolumeGroup}. */
export class LocalDiskImageManager extends ImageManager<VolumeGroup> {
  /** The volume group. */
  readonly volumeGroup: VolumeGroup;
  /** Spawns hold it shared, cleanup exclusive (nova-powervm's `cache_lock`, across processes). */
  readonly cacheLock: ReadWriteLock;
  readonly #attempts: number;
  readonly #delay: RetryDelay;

  /** @param options - the volume group, host, image source and cache options */
  constructor(options: LocalDiskImageManagerOptions) {
    const { volumeGroup, lockDir, diskCreateAttempts, diskRetryDelayMs, ...rest } = options;
    if (typeof volumeGroup !== 'object' || (volumeGroup as Partial<VolumeGroup> | null)?.listDisks === undefined) {
      throw new InvalidConfigError('volumeGroup', 'a VolumeGroup', volumeGroup);
    }
    if (lockDir !== undefined && (typeof lockDir !== 'string' || !lockDir.startsWith('/'))) {
      throw new InvalidConfigError('lockDir', 'an absolute directory path', lockDir);
    }
    const attempts = diskCreateAttempts ?? 4;
    if (!Number.isSafeInteger(attempts) || attempts < 1) throw new InvalidConfigError('diskCreateAttempts', 'an integer from 1 up', attempts);
    const delay = diskRetryDelayMs ?? { baseMs: 1000, maxMs: 5000 };
    if (!(delay.baseMs >= 0 && delay.maxMs >= delay.baseMs && Number.isFinite(delay.maxMs))) {
      throw new InvalidConfigError('diskRetryDelayMs', 'finite { baseMs, maxMs } with 0 <= baseMs <= maxMs', delay);
    }
    super(rest, { lockDir }, 'localdisk');
    this.volumeGroup = volumeGroup;
    this.cacheLock = new ReadWriteLock({ locks: this.locks, name: CACHE_LOCK_NAME, staleMs: this.options.lockStaleMs });
    this.#attempts = attempts;
    this.#delay = delay;
  }

  /** The disk holding `imageId` in the volume group now, or null when it is not cached. */
  async imageDiskName(imageId: string): Promise<string | null> {
    assertValidImageId(imageId);
    return findImageDisk(await listDisks(this.volumeGroup), imageId)?.name ?? null;
  }

  /** {@inheritDoc CacheStoreBase.getBase} */
  getBase(): Promise<VolumeGroup> {
    return Promise.resolve(this.volumeGroup);
  }

  /**
   * Our published image disks are the entries (`original`); our upload disks are staging. Every
   * other disk (untagged `i_*` disks, boot disks, anything foreign) is invisible to the cache.
   */
  async scanBaseImages(base: VolumeGroup): Promise<BaseImageScan> {
    const entries: CacheEntry[] = [];
    const staging: StagingEntry[] = [];
    for (const disk of await listDisks(base)) {
      const role = classifyDisk(disk);
      if (role.role === 'image') {
        entries.push({ name: disk.name, kind: 'original', imageId: role.imageId, sizeBytes: disk.sizeBytes, lastUsedMs: disk.lastUsedMs });
      } else if (role.role === 'upload') {
        staging.push({
          name: disk.name,
          lastModifiedMs: Math.max(disk.createdMs, disk.lastUsedMs),
          lockName: novaImageDiskName(role.imageId),
        });
      }
    }
    return { entries, staging };
  }

  /** The volume group's capacity and free space, when it can tell (see {@link VolumeGroup.usage}). */
  protected override async cacheFilesystemUsage(): Promise<FilesystemUsage | null> {
    if (this.volumeGroup.usage === undefined) return null;
    return this.volumeGroup.usage();
  }

  /**
   * Capacity of the cache's disks (images and uploads) in the volume group: they take space from the
   * instances' disks. 0 on any error, like Nova's (a missing cache must not fail the resource
   * tracker: Nova bug 1884214).
   */
  override async getDiskUsage(): Promise<number> {
    try {
      const { entries, staging } = await this.scanBaseImages(this.volumeGroup);
      const names = new Set(staging.map((s) => s.name));
      let total = entries.reduce((sum, entry) => sum + entry.sizeBytes, 0);
      for (const disk of await listDisks(this.volumeGroup)) if (names.has(disk.name)) total += disk.sizeBytes;
      return total;
    } catch {
      return 0;
    }
  }

  /**
   * nova-powervm's `create_disk_from_image`: holding the cache lock shared, makes sure the image is
   * cached (uploads it on a miss), touches it under its lock, and clones it into the instance's
   * disk, sized to max(flavor disk, image) rounded up to whole GiB. A transient volume-group failure
   * is retried {@link LocalDiskImageManagerOptions.diskCreateAttempts} times in all, with jitter.
   *
   * @throws `InvalidConfigError` for a bad instance, size or disk name; `VolumeGroupError` when the
   *   group kept failing; the fetch errors (`ImageNotFoundError`, `ChecksumMismatchError`, ...)
   */
  async createInstanceDisk(options: LocalDiskSpawnOptions): Promise<LocalDiskSpawnResult> {
    const { imageId, instance, signal } = options;
    checkImageId(imageId);
    if (typeof instance !== 'object' || typeof instance.uuid !== 'string' || instance.uuid === '' || typeof instance.name !== 'string' || instance.name === '') {
      throw new InvalidConfigError('instance', 'an instance with a non-empty uuid and name', instance);
    }
    const flavorDiskBytes = options.flavorDiskBytes ?? 0;
    if (!Number.isSafeInteger(flavorDiskBytes) || flavorDiskBytes < 0) {
      throw new InvalidConfigError('flavorDiskBytes', 'a non-negative safe integer', flavorDiskBytes);
    }
    const diskName = options.diskName ?? bootDiskName(instance);
    if (!/^[0-9A-Za-z_][.0-9A-Za-z_]*$/.test(diskName) || diskName.length > VDISK_NAME_MAX || diskName.startsWith('i_') || diskName.startsWith('s_')) {
      throw new InvalidConfigError('diskName', `a disk name of 1 to ${VDISK_NAME_MAX} characters of [.0-9A-Za-z_], not starting with i_ or s_`, diskName);
    }
    return this.cacheLock.withShared(
      () =>
        withRetry((attempt) => this.#spawnOnce(options, diskName, flavorDiskBytes, attempt), {
          retries: this.#attempts - 1,
          baseMs: this.#delay.baseMs,
          maxMs: this.#delay.maxMs,
          isRetryable: isTransientVolumeGroupError,
          onRetry: (error, attempt, delayMs) => {
            this.log('disk for %s failed (attempt %d), retrying in %d ms: %O', instance.uuid, attempt, delayMs, error);
          },
          signal,
          what: 'Creating the instance disk',
          imageId,
        }),
      { signal, imageId },
    );
  }

  async #spawnOnce(options: LocalDiskSpawnOptions, diskName: string, flavorDiskBytes: number, attempt: number): Promise<LocalDiskSpawnResult> {
    const { imageId, signal } = options;
    const group = this.volumeGroup;
    const { value: image, cacheStatus } = await useCachedImage<VolumeGroupDisk>({
      imageId,
      log: this.log,
      tryUse: () =>
        this.locks.withLock(
          novaImageDiskName(imageId),
          async () => {
            const disk = findImageDisk(await listDisks(group, signal), imageId);
            if (disk !== undefined) await callVolumeGroup('touch', disk.name, imageId, () => group.touchDisk(disk.name, this.clock.now()));
            return disk ?? null;
          },
          { signal, imageId },
        ),
      cache: () => this.cacheImage(imageId, vouchFor(imageId as ImageId, { signal, onProgress: options.onProgress, tolerateTouchErrors: true })),
      onHit: (disk) => this.recordCacheHit(disk.name, disk.sizeBytes),
    });
    // From here to the end of the clone the shared cache lock keeps every cleanup out.
    const role = classifyDisk(image);
    const imageBytes = role.role === 'image' && role.imageSize !== null ? role.imageSize : image.sizeBytes;
    const sizeBytes = roundUpToGiB(Math.max(flavorDiskBytes, imageBytes));
    const result = { diskName, imageDiskName: image.name, cacheStatus, attempts: attempt };
    const existing = (await listDisks(group, signal)).find((disk) => disk.name === diskName);
    if (existing !== undefined) {
      // nova-powervm's short names can collide (8 characters of the name, 4 of the UUID): a disk of
      // that name is this instance's only when its tag says so; never hand out another's disk.
      if (existing.tags[DISK_TAGS.instanceUuid] !== options.instance.uuid) {
        throw new VolumeGroupError('clone', diskName, 'name-taken', {
          imageId,
          cause: new Error(`the disk belongs to ${existing.tags[DISK_TAGS.instanceUuid] ?? 'no instance this library created'}; pass another diskName`),
        });
      }
      return { ...result, created: false, sizeBytes: existing.sizeBytes };
    }
    const tags = { [DISK_TAGS.owner]: DISK_OWNER, [DISK_TAGS.imageId]: imageId, [DISK_TAGS.instanceUuid]: options.instance.uuid };
    await callVolumeGroup('clone', diskName, imageId, () => group.cloneDisk(image.name, { name: diskName, sizeBytes, tags }, { signal }));
    this.log('cloned %s (%s) into %s, %d bytes', image.name, imageId, diskName, sizeBytes);
    return { ...result, created: true, sizeBytes };
  }

  /**
   * Every removal holds the cache lock exclusively (nova-powervm's write lock), so no clone can be
   * reading a disk while it is removed: a pass holds it for its whole aging, a removal outside a
   * pass for itself. When spawns hold the lock past `lockTimeoutMs`, the pass still touches what is
   * in use but removes nothing, and a single removal keeps its entry as `busy`.
   */
  protected override async withRemovalScope<T>(scope: RemovalScope, removals: (suspended: string | null) => Promise<T>): Promise<T> {
    let held: HeldLock;
    try {
      held = await this.cacheLock.acquireExclusive({ signal: scope.signal, timeoutMs: this.options.lockTimeoutMs });
    } catch (err) {
      if (!(err instanceof LockTimeoutError)) throw err;
      return removals(`spawns held the cache lock for ${this.options.lockTimeoutMs} ms`);
    }
    try {
      return await removals(null);
    } finally {
      await held.release();
    }
  }

  /** {@inheritDoc CacheStoreBase.fetchTargetFor} */
  protected fetchTargetFor(imageId: string): FetchTarget {
    return new ImageDiskTarget({
      group: this.volumeGroup,
      imageId,
      tryExclusive: () => this.cacheLock.acquireExclusive({ timeoutMs: 0, imageId }),
    });
  }

  /** The disk the image is in: the one the target found or published, else looked up by tag. */
  protected override async entryNameOf(imageId: string, target: FetchTarget): Promise<string> {
    if (target instanceof ImageDiskTarget && target.diskName !== undefined) return target.diskName;
    return (await this.imageDiskName(imageId)) ?? target.name;
  }

  /** An image disk's lock is its image's (the fetch's and the spawn's), not its own name. */
  protected override lockNameFor(entry: CacheEntry): string {
    return entry.imageId === null ? entry.name : novaImageDiskName(entry.imageId);
  }

  /** {@inheritDoc CacheStoreBase.touchEntry} */
  protected override touchEntry(name: string): Promise<void> {
    return callVolumeGroup('touch', name, undefined, () => this.volumeGroup.touchDisk(name, this.clock.now()));
  }

  /** {@inheritDoc CacheStoreBase.statEntry} */
  protected override async statEntry(base: VolumeGroup, entry: CacheEntry): Promise<number | null> {
    return (await this.#ours(base, entry.name, entry.imageId))?.lastUsedMs ?? null;
  }

  /** Deletes the disk only if it is still our disk of the same image (re-checked under the lock). */
  protected override async removeEntry(base: VolumeGroup, entry: CacheEntry): Promise<void> {
    const disk = await this.#ours(base, entry.name, entry.imageId);
    if (disk === null) return;
    await callVolumeGroup('delete', disk.name, entry.imageId ?? undefined, () => base.deleteDisk(disk.name));
  }

  /** Deletes an upload disk only if it is still ours. */
  protected override async removeStaging(base: VolumeGroup, name: string): Promise<void> {
    const disk = (await listDisks(base)).find((d) => d.name === name);
    if (disk === undefined || classifyDisk(disk).role !== 'upload') return;
    await callVolumeGroup('delete', name, undefined, () => base.deleteDisk(name));
  }

  async #ours(base: VolumeGroup, name: string, imageId: string | null): Promise<VolumeGroupDisk | null> {
    const disk = (await listDisks(base)).find((d) => d.name === name);
    if (disk === undefined) return null;
    const role = classifyDisk(disk);
    return role.role === 'image' && role.imageId === imageId ? disk : null;
  }
}
