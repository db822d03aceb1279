/**
 * {@link FileVolumeGroup}: a {@link VolumeGroup} over a local directory, a real stand-in for a VIOS
 * volume group. It runs the localdisk backend on any host (tests, benchmarks, development, a
 * single-host cache on local disk); it is not a PowerVM volume group and talks to no VIOS.
 *
 * Layout: one directory per disk, `<directory>/<name>/` holding `disk` (the raw data, sparse) and
 * `meta.json` (creation time and tags, persisted beside the data). The last-used time is the data
 * file's mtime. Every change that must look atomic is built in a hidden `.creating-<pid>-<random>`
 * directory and published with one `rename()`, which fails when the name exists: a disk appears
 * complete, with its tags, or not at all; a rename never replaces a disk. Deletion renames the disk
 * away first, so a half-deleted disk is never listed. Hidden leftovers of a killed process are
 * removed by the next listing.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { lstat, lutimes, mkdir, open, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { throwIfAborted } from '../../abort.js';
import { systemClock } from '../../clock.js';
import type { Clock } from '../../clock.js';
import { copyRawDisk } from '../../disk/raw-copy.js';
import { InvalidConfigError, VolumeGroupError, isImageCacheError } from '../../errors.js';
import { publishFile, syncNewDirectories } from '../../fetch/durable.js';
import { mapWriteError } from '../../fetch/staging.js';
import { isBoolean } from '../../options.js';
import { processExists } from '../../process-liveness.js';
import { readRegularFile } from '../../regular-file.js';
import { statfsProbe } from '../../capacity/statfs.js';
import type { FilesystemUsage } from '../../capacity/statfs.js';
import { VDISK_NAME_MAX } from './naming.js';
import type { NewDiskSpec, VolumeGroup, VolumeGroupCallOptions, VolumeGroupDisk } from './volume-group.js';

/** Options of {@link FileVolumeGroup}. */
export interface FileVolumeGroupOptions {
  /** The directory holding the disks (absolute; created when missing). */
  readonly directory: string;
  /** Longest accepted disk name. Default 15, the VIOS limit, so names behave as on PowerVM. */
  readonly maxNameLength?: number | undefined;
  /** Source of creation times. Default: the system clock. */
  readonly clock?: Clock | undefined;
  /**
   * Publish each clone (an instance disk) durably: its data, its metadata and its directory are
   * fsynced before it gets its name, and the volume group's directory after. Default false, like
   * the libvirt backend's `syncInstanceDisks` and Nova: a full copy's fsync writes the whole disk
   * to the device before the spawn can go on, and an unsynced clone fsyncs nothing at all. Image
   * disks (created, uploaded, renamed) are always durable.
   */
  readonly syncClones?: boolean | undefined;
}

interface DiskMeta {
  readonly createdMs: number;
  readonly tags: Record<string, string>;
}

const DATA_FILE = 'disk';
const META_FILE = 'meta.json';
const LEFTOVER = /^\.(creating|deleting)-(\d+)-[0-9a-f]+$/;

/** A volume group whose disks are files in a local directory. */
export class FileVolumeGroup implements VolumeGroup {
  /** The directory holding the disks. */
  readonly directory: string;
  /** {@inheritDoc VolumeGroup.description} */
  readonly description: string;
  readonly #maxNameLength: number;
  readonly #clock: Clock;
  readonly #syncClones: boolean;

  /** @param options - the directory, the name limit and the clock */
  constructor(options: FileVolumeGroupOptions) {
    if (typeof options.directory !== 'string' || !path.isAbsolute(options.directory)) {
      throw new InvalidConfigError('directory', 'an absolute directory path', options.directory);
    }
    const maxNameLength = options.maxNameLength ?? VDISK_NAME_MAX;
    if (!Number.isSafeInteger(maxNameLength) || maxNameLength < 1 || maxNameLength > 255) {
      throw new InvalidConfigError('maxNameLength', 'an integer from 1 to 255', maxNameLength);
    }
    this.directory = options.directory;
    this.description = `file volume group ${options.directory}`;
    this.#maxNameLength = maxNameLength;
    this.#clock = options.clock ?? systemClock;
    if (options.syncClones !== undefined) isBoolean('syncClones', options.syncClones);
    this.#syncClones = options.syncClones ?? false;
  }

  /** The data file of disk `name` (to read a disk's bytes, or hand it to a hypervisor). */
  dataPath(name: string): string {
    this.#checkName(name, 'read');
    return path.join(this.directory, name, DATA_FILE);
  }

  /** {@inheritDoc VolumeGroup.listDisks} */
  async listDisks(options: VolumeGroupCallOptions = {}): Promise<readonly VolumeGroupDisk[]> {
    throwIfAborted(options.signal, `Listing ${this.description}`);
    let names: string[];
    try {
      names = await readdir(this.directory);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const disks = await Promise.all(names.map((name) => (name.startsWith('.') ? this.#sweep(name) : this.#read(name))));
    return disks.filter((disk): disk is VolumeGroupDisk => disk !== null).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** {@inheritDoc VolumeGroup.createDisk} */
  async createDisk(spec: NewDiskSpec, options: VolumeGroupCallOptions = {}): Promise<void> {
    this.#checkSpec(spec, 'create');
    await this.#build(spec, 'create', options, true, async (data) => {
      const handle = await open(data, 'wx', 0o644);
      try {
        await handle.truncate(spec.sizeBytes);
        await handle.sync();
      } finally {
        await handle.close();
      }
    });
  }

  /** {@inheritDoc VolumeGroup.uploadDisk} */
  async uploadDisk(name: string, data: AsyncIterable<Uint8Array>, options: VolumeGroupCallOptions = {}): Promise<number> {
    this.#checkName(name, 'upload');
    const file = path.join(this.directory, name, DATA_FILE);
    let handle;
    try {
      handle = await open(file, 'r+');
    } catch (err) {
      throw this.#mapError(err, 'upload', name);
    }
    try {
      const capacity = (await handle.stat()).size;
      let position = 0;
      for await (const chunk of data) {
        throwIfAborted(options.signal, `Uploading into disk ${name}`);
        if (position + chunk.length > capacity) {
          throw new VolumeGroupError('upload', name, 'failed', {
            cause: new Error(`the data is larger than the disk's ${capacity} bytes`),
          });
        }
        let done = 0;
        while (done < chunk.length) {
          const { bytesWritten } = await handle.write(chunk, done, chunk.length - done, position + done);
          done += bytesWritten;
        }
        position += chunk.length;
      }
      await handle.sync();
      return position;
    } catch (err) {
      throw this.#mapError(err, 'upload', name);
    } finally {
      await handle.close();
    }
  }

  /** {@inheritDoc VolumeGroup.cloneDisk} */
  async cloneDisk(sourceName: string, spec: NewDiskSpec, options: VolumeGroupCallOptions = {}): Promise<void> {
    this.#checkName(sourceName, 'clone');
    this.#checkSpec(spec, 'clone');
    const source = path.join(this.directory, sourceName, DATA_FILE);
    try {
      // Only a regular data file is a disk: the clone never reads through a planted link.
      if (!(await lstat(source)).isFile()) throw new VolumeGroupError('clone', sourceName, 'not-found');
    } catch (err) {
      throw this.#mapError(err, 'clone', sourceName);
    }
    await this.#build(spec, 'clone', options, this.#syncClones, async (data) => {
      // A reflink where the filesystem has one, else a sparse-aware or kernel copy, then extended.
      await copyRawDisk(source, data, { sizeBytes: spec.sizeBytes, signal: options.signal, sync: this.#syncClones });
    });
  }

  /** {@inheritDoc VolumeGroup.renameDisk} */
  async renameDisk(from: string, to: string, options: VolumeGroupCallOptions = {}): Promise<void> {
    this.#checkName(from, 'rename');
    this.#checkName(to, 'rename');
    throwIfAborted(options.signal, `Renaming disk ${from}`);
    await this.#publish(path.join(this.directory, from), to, 'rename', from, true);
  }

  /** {@inheritDoc VolumeGroup.touchDisk} */
  async touchDisk(name: string, atMs: number, options: VolumeGroupCallOptions = {}): Promise<void> {
    this.#checkName(name, 'touch');
    throwIfAborted(options.signal, `Touching disk ${name}`);
    try {
      // lutimes: a link planted at the data file's name is never followed to a file elsewhere.
      await lutimes(path.join(this.directory, name, DATA_FILE), atMs / 1000, atMs / 1000);
    } catch (err) {
      throw this.#mapError(err, 'touch', name);
    }
  }

  /** {@inheritDoc VolumeGroup.deleteDisk} */
  async deleteDisk(name: string, options: VolumeGroupCallOptions = {}): Promise<void> {
    this.#checkName(name, 'delete');
    throwIfAborted(options.signal, `Deleting disk ${name}`);
    const doomed = path.join(this.directory, this.#hiddenName('deleting'));
    try {
      await rename(path.join(this.directory, name), doomed);
    } catch (err) {
      throw this.#mapError(err, 'delete', name);
    }
    await rm(doomed, { recursive: true, force: true });
  }

  /** The filesystem holding the directory: this stand-in's capacity and free space. */
  async usage(options: VolumeGroupCallOptions = {}): Promise<FilesystemUsage> {
    throwIfAborted(options.signal, 'Reading the volume group usage');
    return { ...(await statfsProbe(this.directory)), location: this.directory };
  }

  /**
   * Builds a disk in a hidden directory (`fill` writes its data file, fsynced when `sync`), then
   * publishes it, durably when `sync`.
   */
  async #build(
    spec: NewDiskSpec,
    operation: string,
    options: VolumeGroupCallOptions,
    sync: boolean,
    fill: (data: string) => Promise<void>,
  ): Promise<void> {
    throwIfAborted(options.signal, `Creating disk ${spec.name}`);
    const building = path.join(this.directory, this.#hiddenName('creating'));
    try {
      const first = await mkdir(building, { recursive: true });
      // The hidden directory's own entry needs no fsync (the publish renames it, then fsyncs the
      // volume group's directory); a volume group directory created here does.
      if (sync && first !== undefined && first !== building) await syncNewDirectories(this.directory, first);
      await fill(path.join(building, DATA_FILE));
      const meta: DiskMeta = { createdMs: this.#clock.now(), tags: { ...spec.tags } };
      await writeFile(path.join(building, META_FILE), JSON.stringify(meta), { mode: 0o644, flush: sync });
      throwIfAborted(options.signal, `Creating disk ${spec.name}`);
      await this.#publish(building, spec.name, operation, spec.name, sync);
    } catch (err) {
      await rm(building, { recursive: true, force: true });
      throw this.#mapError(err, operation, spec.name);
    }
  }

  /**
   * Renames the disk directory `from` to disk `name`; never replaces an existing disk. With `sync`
   * the directory `from` (its entries: the data and metadata files) is fsynced before the rename
   * and the volume group's directory after.
   */
  async #publish(from: string, name: string, operation: string, disk: string, sync: boolean): Promise<void> {
    const target = path.join(this.directory, name);
    // rename() would replace an empty directory; a disk directory is never empty, so this check
    // plus rename's own ENOTEMPTY makes the publish exclusive.
    if (await exists(target)) throw new VolumeGroupError(operation, name, 'name-taken');
    try {
      await publishFile(from, target, { sync });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR') throw new VolumeGroupError(operation, name, 'name-taken');
      throw this.#mapError(err, operation, disk);
    }
  }

  async #read(name: string): Promise<VolumeGroupDisk | null> {
    let data;
    try {
      data = await lstat(path.join(this.directory, name, DATA_FILE));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return null; // not a disk, or deleted meanwhile
      throw err;
    }
    // Only a regular data file is a disk: a link there is never followed.
    if (!data.isFile()) return null;
    let meta: { createdMs?: unknown; tags?: unknown } | null = null;
    try {
      // A FIFO planted at the name is not waited on, nor a link followed (both refused).
      meta = JSON.parse((await readRegularFile(path.join(this.directory, name, META_FILE))) ?? 'null') as { createdMs?: unknown; tags?: unknown } | null;
    } catch {
      // A disk without readable metadata has no tags: the cache treats it as foreign.
    }
    const tags: Record<string, string> = {};
    if (typeof meta?.tags === 'object' && meta.tags !== null) {
      for (const [key, value] of Object.entries(meta.tags)) if (typeof value === 'string') tags[key] = value;
    }
    return {
      name,
      sizeBytes: data.size,
      createdMs: typeof meta?.createdMs === 'number' ? meta.createdMs : data.birthtimeMs || data.ctimeMs,
      lastUsedMs: data.mtimeMs,
      tags,
    };
  }

  /** Removes a hidden leftover whose process is gone; never a disk. */
  async #sweep(name: string): Promise<null> {
    const match = LEFTOVER.exec(name);
    if (match !== null && !processExists(Number(match[2]))) {
      await rm(path.join(this.directory, name), { recursive: true, force: true });
    }
    return null;
  }

  #hiddenName(kind: 'creating' | 'deleting'): string {
    return `.${kind}-${process.pid}-${randomBytes(6).toString('hex')}`;
  }

  #checkSpec(spec: NewDiskSpec, operation: string): void {
    this.#checkName(spec.name, operation);
    if (!Number.isSafeInteger(spec.sizeBytes) || spec.sizeBytes < 0) {
      throw new InvalidConfigError('sizeBytes', 'a non-negative safe integer', spec.sizeBytes);
    }
  }

  #checkName(name: string, operation: string): void {
    if (!/^[0-9A-Za-z_][.0-9A-Za-z_]*$/.test(name) || name.length > this.#maxNameLength) {
      throw new VolumeGroupError(operation, name, 'failed', {
        cause: new Error(`not a valid disk name (1 to ${this.#maxNameLength} characters of [.0-9A-Za-z_], not starting with '.')`),
      });
    }
  }

  #mapError(err: unknown, operation: string, disk: string): unknown {
    if (isImageCacheError(err)) return err;
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    if (code === 'ENOENT') return new VolumeGroupError(operation, disk, 'not-found', { cause: err });
    return mapWriteError(err, undefined, this.description);
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await lstat(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
