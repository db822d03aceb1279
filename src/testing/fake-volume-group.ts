/**
 * {@link FakeVolumeGroup}: an in-memory {@link VolumeGroup} for driver authors' tests, with fault
 * knobs (fail the Nth create, upload, clone, rename, touch or delete; delay any of them) and call
 * counters. It keeps the contract of a real group: names are unique, a clone or rename never
 * replaces a disk, a failed create or clone leaves nothing behind.
 *
 * @module
 */
import { abortableSleep, throwIfAborted } from '../abort.js';
import type { NewDiskSpec, VolumeGroup, VolumeGroupCallOptions, VolumeGroupDisk } from '../backends/powervm-localdisk/volume-group.js';
import { systemClock } from '../clock.js';
import type { Clock } from '../clock.js';
import type { FilesystemUsage } from '../capacity/statfs.js';
import { VolumeGroupError } from '../errors.js';

/** The operations a {@link FakeVolumeGroup} can fail or delay. */
export type FakeVolumeGroupOperation = 'list' | 'create' | 'upload' | 'clone' | 'rename' | 'touch' | 'delete';

/** Faults of a {@link FakeVolumeGroup}. */
export interface FakeVolumeGroupFaults {
  /**
   * Which calls fail, per operation: call numbers counted from 1 since the faults were set (e.g.
   * `{ clone: [1, 2] }` fails the first two clones). The failure is a plain `Error` with code
   * `EIO`, like a REST call answering 500.
   */
  readonly failOn?: Partial<Record<FakeVolumeGroupOperation, readonly number[]>> | undefined;
  /** Delay before each call of an operation, ms. */
  readonly delayMs?: Partial<Record<FakeVolumeGroupOperation, number>> | undefined;
  /** For uploads: stop and fail after this many bytes (an upload interrupted mid-stream). */
  readonly failUploadAfterBytes?: number | undefined;
}

/** Options of {@link FakeVolumeGroup}. */
export interface FakeVolumeGroupOptions {
  /** The group's name in messages. Default `fake-vg`. */
  readonly name?: string | undefined;
  /** Source of creation times. Default: the system clock. */
  readonly clock?: Clock | undefined;
  /** Initial faults. */
  readonly faults?: FakeVolumeGroupFaults | undefined;
  /**
   * The group's capacity, bytes: free space is the capacity minus every disk's size. Default:
   * none, so the group reports no usage (like a volume group without `usage`).
   */
  readonly capacityBytes?: number | undefined;
}

interface FakeDisk {
  sizeBytes: number;
  readonly createdMs: number;
  lastUsedMs: number;
  readonly tags: Readonly<Record<string, string>>;
  /** The written bytes (the rest of the capacity reads as zeros). */
  data: Buffer;
}

const OPERATIONS: readonly FakeVolumeGroupOperation[] = ['list', 'create', 'upload', 'clone', 'rename', 'touch', 'delete'];

/** An in-memory volume group. */
export class FakeVolumeGroup implements VolumeGroup {
  readonly description: string;
  readonly #disks = new Map<string, FakeDisk>();
  readonly #clock: Clock;
  readonly #capacityBytes: number | undefined;
  #faults: FakeVolumeGroupFaults = {};
  readonly #calls = new Map<FakeVolumeGroupOperation, number>();
  readonly #callsSinceFaults = new Map<FakeVolumeGroupOperation, number>();

  /** @param options - name, clock and faults */
  constructor(options: FakeVolumeGroupOptions = {}) {
    this.description = `volume group ${options.name ?? 'fake-vg'}`;
    this.#capacityBytes = options.capacityBytes;
    this.#clock = options.clock ?? systemClock;
    this.setFaults(options.faults ?? {});
  }

  /** Replaces the faults and restarts their call counts. */
  setFaults(faults: FakeVolumeGroupFaults): void {
    this.#faults = faults;
    this.#callsSinceFaults.clear();
  }

  /** Calls of `operation` since creation (failed ones included). */
  calls(operation: FakeVolumeGroupOperation): number {
    return this.#calls.get(operation) ?? 0;
  }

  /** Calls of every operation since creation. */
  allCalls(): Record<FakeVolumeGroupOperation, number> {
    return Object.fromEntries(OPERATIONS.map((op) => [op, this.calls(op)])) as Record<FakeVolumeGroupOperation, number>;
  }

  /** The disk's written bytes, or undefined when there is no such disk. */
  read(name: string): Buffer | undefined {
    return this.#disks.get(name)?.data;
  }

  /** Names of every disk, sorted. */
  names(): string[] {
    return [...this.#disks.keys()].sort();
  }

  async listDisks(options: VolumeGroupCallOptions = {}): Promise<readonly VolumeGroupDisk[]> {
    await this.#enter('list', options);
    return [...this.#disks].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([name, disk]) => ({
      name,
      sizeBytes: disk.sizeBytes,
      createdMs: disk.createdMs,
      lastUsedMs: disk.lastUsedMs,
      tags: { ...disk.tags },
    }));
  }

  async createDisk(spec: NewDiskSpec, options: VolumeGroupCallOptions = {}): Promise<void> {
    await this.#enter('create', options);
    this.#add(spec, Buffer.alloc(0), 'create');
  }

  async uploadDisk(name: string, data: AsyncIterable<Uint8Array>, options: VolumeGroupCallOptions = {}): Promise<number> {
    await this.#enter('upload', options);
    const disk = this.#get(name, 'upload');
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of data) {
      throwIfAborted(options.signal, `Uploading into disk ${name}`);
      const limit = this.#faults.failUploadAfterBytes;
      if (limit !== undefined && total + chunk.length > limit) {
        throw Object.assign(new Error(`upload into ${name} interrupted after ${total} bytes (fault)`), { code: 'EIO' });
      }
      if (total + chunk.length > disk.sizeBytes) {
        throw new VolumeGroupError('upload', name, 'failed', { cause: new Error(`the data is larger than the disk's ${disk.sizeBytes} bytes`) });
      }
      chunks.push(Buffer.from(chunk));
      total += chunk.length;
    }
    disk.data = Buffer.concat(chunks, total);
    disk.lastUsedMs = this.#clock.now();
    return total;
  }

  async cloneDisk(sourceName: string, spec: NewDiskSpec, options: VolumeGroupCallOptions = {}): Promise<void> {
    await this.#enter('clone', options);
    const source = this.#get(sourceName, 'clone');
    if (spec.sizeBytes < source.sizeBytes) {
      throw new VolumeGroupError('clone', spec.name, 'failed', { cause: new Error(`smaller than the source's ${source.sizeBytes} bytes`) });
    }
    this.#add(spec, source.data, 'clone');
  }

  async renameDisk(from: string, to: string, options: VolumeGroupCallOptions = {}): Promise<void> {
    await this.#enter('rename', options);
    const disk = this.#get(from, 'rename');
    if (this.#disks.has(to)) throw new VolumeGroupError('rename', to, 'name-taken');
    this.#disks.delete(from);
    this.#disks.set(to, disk);
  }

  async touchDisk(name: string, atMs: number, options: VolumeGroupCallOptions = {}): Promise<void> {
    await this.#enter('touch', options);
    this.#get(name, 'touch').lastUsedMs = atMs;
  }

  async deleteDisk(name: string, options: VolumeGroupCallOptions = {}): Promise<void> {
    await this.#enter('delete', options);
    this.#get(name, 'delete');
    this.#disks.delete(name);
  }

  /** Capacity and free space (the capacity minus every disk's size), when a capacity was given. */
  usage(options: VolumeGroupCallOptions = {}): Promise<FilesystemUsage> {
    throwIfAborted(options.signal, 'Volume group usage');
    if (this.#capacityBytes === undefined) return Promise.reject(new Error('this fake volume group was created without capacityBytes'));
    let used = 0;
    for (const disk of this.#disks.values()) used += disk.sizeBytes;
    return Promise.resolve({ totalBytes: this.#capacityBytes, freeBytes: Math.max(0, this.#capacityBytes - used), location: this.description });
  }

  async #enter(operation: FakeVolumeGroupOperation, options: VolumeGroupCallOptions): Promise<void> {
    this.#calls.set(operation, this.calls(operation) + 1);
    const n = (this.#callsSinceFaults.get(operation) ?? 0) + 1;
    this.#callsSinceFaults.set(operation, n);
    const delay = this.#faults.delayMs?.[operation] ?? 0;
    if (delay > 0) await abortableSleep(delay, options.signal, `Volume group ${operation}`);
    throwIfAborted(options.signal, `Volume group ${operation}`);
    if (this.#faults.failOn?.[operation]?.includes(n) === true) {
      throw Object.assign(new Error(`${operation} call ${n} failed (fault)`), { code: 'EIO' });
    }
  }

  #add(spec: NewDiskSpec, data: Buffer, operation: string): void {
    if (this.#disks.has(spec.name)) throw new VolumeGroupError(operation, spec.name, 'name-taken');
    const now = this.#clock.now();
    this.#disks.set(spec.name, { sizeBytes: spec.sizeBytes, createdMs: now, lastUsedMs: now, tags: { ...spec.tags }, data });
  }

  #get(name: string, operation: string): FakeDisk {
    const disk = this.#disks.get(name);
    if (disk === undefined) throw new VolumeGroupError(operation, name, 'not-found');
    return disk;
  }
}
