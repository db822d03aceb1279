/**
 * The libvirt-file instance disk: options and result of `createInstanceDisk`, and the build itself
 * (a qcow2 overlay written in-process, or a raw copy), run under the image's lock.
 *
 * @module
 */
import { inspectDiskImage } from '../../disk/qcow2-header.js';
import type { DiskImageInfo } from '../../disk/qcow2-header.js';
import { writeQcow2Overlay } from '../../disk/qcow2-overlay.js';
import { copyRawDisk } from '../../disk/raw-copy.js';
import { FlavorDiskSmallerThanImageError, InvalidDiskImageError, UnsupportedError } from '../../errors.js';
import type { ProgressListener } from '../../fetch/download.js';
import { syncNewDirectories } from '../../fetch/durable.js';
import { isRegularFile } from '../../fetch/file-target.js';
import type { MetadataFs } from '../../fs/metadata-fs.js';

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

/** Where and how {@link buildInstanceDisk} builds the disk. */
export interface InstanceDiskPlan {
  /** The base's path. */
  readonly basePath: string;
  /** The base's format and sizes (its header read). */
  readonly info: DiskImageInfo;
  /** The disk's path. */
  readonly diskPath: string;
  /** The disk's format. */
  readonly format: 'qcow2' | 'raw';
  /** Whether the image had to be downloaded first. */
  readonly cacheStatus: 'cached' | 'existing';
  /** fsync the new disk and the directories created for it. */
  readonly sync: boolean;
  /** The file-system seam of the instances path. */
  readonly metadataFs: MetadataFs;
}

/**
 * Builds the instance disk from a base held under the image's lock: checks the base's header and
 * the requested size, then writes a qcow2 overlay or a raw copy (an existing disk is left as it
 * is, as Nova does).
 */
export async function buildInstanceDisk(options: CreateInstanceDiskOptions, plan: InstanceDiskPlan): Promise<InstanceDiskResult> {
  const { imageId, instanceDir, signal } = options;
  const { basePath, info, diskPath, format, cacheStatus, sync, metadataFs } = plan;
  if (info.header?.backingFile != null) {
    throw new InvalidDiskImageError(basePath, 'a base image must not have a backing file of its own', imageId);
  }
  const requested = options.sizeBytes ?? 0;
  if (requested !== 0 && requested < info.virtualSize) {
    throw new FlavorDiskSmallerThanImageError(imageId, requested, info.virtualSize);
  }
  const virtualSize = Math.ceil(Math.max(requested, info.virtualSize) / 512) * 512;
  const common = { path: diskPath, format, basePath, cacheStatus, virtualSize };
  if (await isRegularFile(diskPath, metadataFs)) return { ...common, created: false, copyMethod: null };
  const created = await ensureDirectory(instanceDir, metadataFs);
  if (sync && created !== undefined) await syncNewDirectories(instanceDir, created);
  if (format === 'qcow2') {
    await writeQcow2Overlay(diskPath, { backingFile: basePath, backingFormat: info.format, virtualSize, imageId, sync, metadataFs });
    return { ...common, created: true, copyMethod: null };
  }
  if (info.format !== 'raw') {
    throw new UnsupportedError('A raw instance disk from a qcow2 base', 'use format qcow2, or cache images as raw.', imageId);
  }
  const copy = await copyRawDisk(basePath, diskPath, { sizeBytes: virtualSize, signal, imageId, sync });
  return { ...common, created: true, copyMethod: copy.method };
}

/**
 * The base's format and sizes, or null when it does not exist (yet, or any more; or the cache
 * directory is not a directory, which the fetch then reports). Anything but a regular file at the
 * name is refused (`InvalidDiskImageError`), never followed.
 */
export async function inspectIfPresent(basePath: string, imageId: string, metadataFs: MetadataFs): Promise<DiskImageInfo | null> {
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
