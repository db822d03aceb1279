/**
 * Errors about the storage the cache lives on: space, locks, disk images, paths, entries in use and
 * volume groups.
 *
 * @module
 */
import { ImageCacheError, type ImageCacheErrorOptions } from './base.js';

/** There is not enough free space for the image, even after reclaiming what may be reclaimed. */
export class DiskFullError extends ImageCacheError {
  /** Bytes needed. */
  readonly required: number;
  /** Bytes available. */
  readonly available: number;
  /** The directory or volume group that is full. */
  readonly location: string;
  /**
   * @param imageId - the image being cached
   * @param required - bytes needed
   * @param available - bytes free
   * @param location - what is full
   * @param cause - the ENOSPC, if one was hit
   */
  constructor(
    imageId: string | undefined,
    required: number,
    available: number,
    location: string,
    cause?: unknown,
  ) {
    super(
      'ERR_DISK_FULL',
      `Not enough space in ${location} for image ${imageId ?? '(unknown)'}: ${required} bytes needed, ${available} free. Free space or lower the cache size; nothing partial was left behind.`,
      { imageId, cause },
    );
    this.required = required;
    this.available = available;
    this.location = location;
  }
}

/** A cross-process lock could not be taken within the allowed time. */
export class LockTimeoutError extends ImageCacheError {
  /** The lock's name. */
  readonly lockName: string;
  /**
   * @param lockName - the lock
   * @param waitedMs - how long we waited
   * @param imageId - the image, if any
   */
  constructor(lockName: string, waitedMs: number, imageId?: string) {
    super(
      'ERR_LOCK_TIMEOUT',
      `Lock ${lockName}${imageId === undefined ? '' : ` for image ${imageId}`} was still held by another process after ${waitedMs} ms: check for a hung process, or raise lockTimeoutMs.`,
      { imageId },
    );
    this.lockName = lockName;
  }
}

/** A disk image file is malformed or unsafe (bad qcow2 header, offsets past the end, ...). */
export class InvalidDiskImageError extends ImageCacheError {
  /** The file concerned. */
  readonly path: string;
  /**
   * @param path - the file
   * @param reason - what is wrong
   * @param imageId - the image, if any
   */
  constructor(path: string, reason: string, imageId?: string) {
    super(
      'ERR_INVALID_DISK_IMAGE',
      `Disk image ${path}${imageId === undefined ? '' : ` (image ${imageId})`} is invalid: ${reason}. Remove it and let it be rebuilt.`,
      { imageId },
    );
    this.path = path;
  }
}

/**
 * A path the cache needs cannot be used as it is: a symbolic link that does not resolve (its
 * target is missing, or the links loop), or something other than a directory where the cache
 * directory belongs. Raised, for instance, when the cache directory is a dangling link (a spawn
 * cannot create its base) and by a pass that meets an instance disk or instance directory whose
 * link does not resolve: the bases such a disk may use cannot be known, so the pass removes nothing.
 */
export class UnusablePathError extends ImageCacheError {
  /** The path concerned. */
  readonly path: string;
  /**
   * @param path - the path
   * @param reason - what is wrong with it
   * @param cause - the underlying error
   */
  constructor(path: string, reason: string, cause?: unknown) {
    super('ERR_UNUSABLE_PATH', `${path}: ${reason}; nothing was changed. Restore what should be there (the link's target, a directory) or remove it.`, { cause });
    this.path = path;
  }
}

/** The flavor's disk is smaller than the image's virtual size (Nova's `FlavorDiskSmallerThanImage`). */
export class FlavorDiskSmallerThanImageError extends ImageCacheError {
  /** Requested disk size in bytes. */
  readonly flavorSize: number;
  /** The image's virtual size in bytes. */
  readonly imageSize: number;
  /**
   * @param imageId - the image
   * @param flavorSize - requested size
   * @param imageSize - image virtual size
   */
  constructor(imageId: string, flavorSize: number, imageSize: number) {
    super(
      'ERR_FLAVOR_DISK_SMALLER_THAN_IMAGE',
      `The requested disk of ${flavorSize} bytes is smaller than image ${imageId}'s virtual size of ${imageSize} bytes: use a flavor with a larger disk.`,
      { imageId },
    );
    this.flavorSize = flavorSize;
    this.imageSize = imageSize;
  }
}

/** The cache entry is in use by an instance (or pinned) and cannot be removed. */
export class ImageInUseError extends ImageCacheError {
  /** Why the entry is considered in use. */
  readonly reason: string;
  /**
   * @param imageId - the image
   * @param reason - who uses it
   */
  constructor(imageId: string, reason: string) {
    super(
      'ERR_IMAGE_IN_USE',
      `Image ${imageId} is in use (${reason}) and was not removed: delete the instances using it first.`,
      { imageId },
    );
    this.reason = reason;
  }
}

/** Why a volume-group operation failed: the name is taken, the disk is missing, or anything else. */
export type VolumeGroupFailure = 'name-taken' | 'not-found' | 'failed';

/**
 * A volume-group operation (create, upload, clone, rename, touch, delete a disk) failed. Volume
 * group implementations throw it with `name-taken` when a create, clone or rename target exists and
 * with `not-found` when the disk is missing; the localdisk backend wraps any other failure in it
 * (`failed`) and retries those a bounded number of times.
 */
export class VolumeGroupError extends ImageCacheError {
  /** What failed. */
  readonly reason: VolumeGroupFailure;
  /** The operation: `create`, `upload`, `clone`, `rename`, `touch`, `delete` or `list`. */
  readonly operation: string;
  /** The disk concerned (empty for `list`). */
  readonly disk: string;
  /**
   * @param operation - the operation
   * @param disk - the disk's name
   * @param reason - the failure class
   * @param options - the image and the underlying error
   */
  constructor(operation: string, disk: string, reason: VolumeGroupFailure, options: ImageCacheErrorOptions = {}) {
    const remedy =
      reason === 'name-taken'
        ? 'a disk with that name already exists; remove it or choose another name'
        : reason === 'not-found'
          ? 'the disk does not exist (removed meanwhile?); retry the operation'
          : `check the volume group and its server (VIOS), then retry${options.cause instanceof Error ? ` (${options.cause.message})` : ''}`;
    super(
      'ERR_VOLUME_GROUP',
      `Volume group ${operation}${disk === '' ? '' : ` of disk ${disk}`}${options.imageId === undefined ? '' : ` for image ${options.imageId}`} failed: ${remedy}.`,
      options,
    );
    this.reason = reason;
    this.operation = operation;
    this.disk = disk;
  }
}
