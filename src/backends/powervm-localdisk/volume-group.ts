/**
 * The {@link VolumeGroup} interface: the few operations the localdisk backend needs from a volume
 * group, small enough to back with the PowerVM REST API (a VIOS volume group's virtual disks).
 *
 * | Method | PowerVM REST (pypowervm) |
 * |---|---|
 * | `listDisks` | GET the VolumeGroup (child of the VIOS), read its `virtual_disks` |
 * | `createDisk` | add a VirtualDisk of the capacity to the VG and POST it (`crt_vdisk`) |
 * | `uploadDisk` | create a VIOS File for the disk and stream the bytes (`upload_vopt`-style IO_STREAM) |
 * | `cloneDisk` | `crt_copy_vdisk`: a new VirtualDisk with `base_image` set; the VIOS copies it |
 * | `renameDisk` | update the VirtualDisk's name and POST the VG |
 * | `touchDisk` | record the time beside the disk (PowerVM keeps none: e.g. a JSON store on the host) |
 * | `deleteDisk` | `rm_vg_storage(vg, vdisks=[disk])` |
 * | `usage` (optional) | the VolumeGroup's `GroupCapacity` and `FreeSpace` (GB in the REST API) |
 *
 * Tags and times are kept by the implementation (PowerVM has no such fields: keep them in a small
 * store beside the VG). The localdisk backend records the full image id as a tag and trusts only
 * disks it tagged: it never serves or deletes any other disk.
 *
 * @module
 */

import type { FilesystemUsage } from '../../capacity/statfs.js';

/** One virtual disk of a volume group. */
export interface VolumeGroupDisk {
  /** The disk's name, unique in the group (PowerVM: at most 15 characters of `[.0-9A-Za-z_]`). */
  readonly name: string;
  /** Its capacity, bytes. */
  readonly sizeBytes: number;
  /** When it was created, ms since the epoch. */
  readonly createdMs: number;
  /** When it was last written or touched, ms since the epoch. */
  readonly lastUsedMs: number;
  /** Its tags (empty for a disk created without any, e.g. by another tool). */
  readonly tags: Readonly<Record<string, string>>;
}

/** What a new disk is: its name, capacity and tags. */
export interface NewDiskSpec {
  /** The name; must not exist yet. */
  readonly name: string;
  /** The capacity, bytes. An implementation may round it up (PowerVM: to whole GB). */
  readonly sizeBytes: number;
  /** Tags stored with the disk. */
  readonly tags: Readonly<Record<string, string>>;
}

/** Options of every volume-group call. */
export interface VolumeGroupCallOptions {
  /** Cancels the call. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * A volume group holding virtual disks. Failures are thrown as `VolumeGroupError` with reason
 * `name-taken` (create, clone or rename onto an existing name) or `not-found` (no such disk); any
 * other error is treated as transient by the localdisk backend and retried a bounded number of
 * times.
 */
export interface VolumeGroup {
  /** A description for messages and logs (the VG's name, its path). */
  readonly description: string;
  /** Every disk of the group. */
  listDisks(options?: VolumeGroupCallOptions): Promise<readonly VolumeGroupDisk[]>;
  /** Creates an empty disk (reads as zeros). Fails with `name-taken` when the name exists. */
  createDisk(spec: NewDiskSpec, options?: VolumeGroupCallOptions): Promise<void>;
  /**
   * Writes `data` into the disk from its first byte and makes it durable; resolves to the bytes
   * written. Each chunk belongs to the implementation once yielded (it is not reused).
   */
  uploadDisk(name: string, data: AsyncIterable<Uint8Array>, options?: VolumeGroupCallOptions): Promise<number>;
  /**
   * Creates `spec.name` as a full copy of `sourceName` with capacity `spec.sizeBytes` (at least the
   * source's). The new disk must appear only when complete. Fails with `name-taken` when it exists.
   */
  cloneDisk(sourceName: string, spec: NewDiskSpec, options?: VolumeGroupCallOptions): Promise<void>;
  /** Renames a disk, keeping its data, tags and times. Fails with `name-taken` when `to` exists. */
  renameDisk(from: string, to: string, options?: VolumeGroupCallOptions): Promise<void>;
  /** Sets the disk's last-used time. */
  touchDisk(name: string, atMs: number, options?: VolumeGroupCallOptions): Promise<void>;
  /** Deletes a disk. Fails with `not-found` when it does not exist. */
  deleteDisk(name: string, options?: VolumeGroupCallOptions): Promise<void>;
  /**
   * The group's capacity and free space. Optional: without it the cache still honours
   * `maxCacheBytes`, but disk watermarks and the free-space check before an upload are off.
   */
  usage?(options?: VolumeGroupCallOptions): Promise<FilesystemUsage>;
}
