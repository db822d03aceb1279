// `node --import tsx examples/powervm-localdisk.ts` (after `npm run build`): a PowerVM driver's
// localdisk image cache. The driver author writes one class, a VolumeGroup whose methods make the
// PowerVM REST calls; here those calls go to a small in-memory stand-in for the VIOS, so the example
// runs anywhere. A fake Glance serves the image; the first spawn uploads it into the volume group,
// the second clones the cached disk without touching Glance; a cleanup pass removes it once unused.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GlanceImageSource, LocalDiskImageManager, VolumeGroupError } from 'virt-imagecache';
import type { NewDiskSpec, VolumeGroup, VolumeGroupDisk } from 'virt-imagecache';
import { ManualClock, startFakeGlance } from 'virt-imagecache/testing';

const MiB = 1024 * 1024;
const IMAGE = '3e865d14-8c1e-4615-a4d5-1f2e3d4c5b6a';

// ---------------------------------------------------------------------------------------------
// What the PowerVM REST API offers, reduced to the calls a VolumeGroup needs (pypowervm names in
// the comments). A real driver sends these to https://<hmc-or-novalink>:12443/rest/api/uom/...;
// this stand-in keeps the virtual disks in memory.
// ---------------------------------------------------------------------------------------------
interface VirtualDiskRecord {
  name: string;
  capacityGb: number;
  data: Buffer;
}

class ViosRestStandIn {
  readonly #disks = new Map<string, VirtualDiskRecord>();

  /** GET VirtualIOServer/{vios}/VolumeGroup/{vg}: the VG with its `virtual_disks`. */
  getVolumeGroup(): Promise<VirtualDiskRecord[]> {
    return Promise.resolve([...this.#disks.values()]);
  }

  /** POST the VG with one more VirtualDisk (pypowervm `crt_vdisk`; capacity in GB). */
  createVirtualDisk(name: string, capacityGb: number): Promise<void> {
    if (this.#disks.has(name)) return Promise.reject(Object.assign(new Error(`vdisk ${name} exists`), { code: 'EEXIST' }));
    this.#disks.set(name, { name, capacityGb, data: Buffer.alloc(0) });
    return Promise.resolve();
  }

  /** Create a VIOS File for the disk and stream the bytes into it (`UploadType.IO_STREAM`). */
  async uploadToVirtualDisk(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    const disk = this.#disks.get(name);
    if (disk === undefined) throw Object.assign(new Error(`no vdisk ${name}`), { code: 'ENOENT' });
    const parts: Buffer[] = [];
    for await (const chunk of data) parts.push(Buffer.from(chunk));
    disk.data = Buffer.concat(parts);
    return disk.data.length;
  }

  /** pypowervm `crt_copy_vdisk`: a new VirtualDisk with `base_image` set; the VIOS copies it. */
  copyVirtualDisk(source: string, name: string, capacityGb: number): Promise<void> {
    const from = this.#disks.get(source);
    if (from === undefined) return Promise.reject(Object.assign(new Error(`no vdisk ${source}`), { code: 'ENOENT' }));
    if (this.#disks.has(name)) return Promise.reject(Object.assign(new Error(`vdisk ${name} exists`), { code: 'EEXIST' }));
    this.#disks.set(name, { name, capacityGb, data: from.data });
    return Promise.resolve();
  }

  /** Update the VirtualDisk's name and POST the VG. */
  renameVirtualDisk(from: string, to: string): Promise<void> {
    const disk = this.#disks.get(from);
    if (disk === undefined) return Promise.reject(Object.assign(new Error(`no vdisk ${from}`), { code: 'ENOENT' }));
    if (this.#disks.has(to)) return Promise.reject(Object.assign(new Error(`vdisk ${to} exists`), { code: 'EEXIST' }));
    this.#disks.delete(from);
    this.#disks.set(to, { ...disk, name: to });
    return Promise.resolve();
  }

  /** pypowervm `rm_vg_storage(vg, vdisks=[disk])`. */
  removeVirtualDisk(name: string): Promise<void> {
    if (!this.#disks.delete(name)) return Promise.reject(Object.assign(new Error(`no vdisk ${name}`), { code: 'ENOENT' }));
    return Promise.resolve();
  }
}

// ---------------------------------------------------------------------------------------------
// The driver author's part: a VolumeGroup over those REST calls. PowerVM keeps no tags or times on
// a virtual disk, so they live in a small JSON file on the compute host beside the VG.
// ---------------------------------------------------------------------------------------------
interface SideRecord {
  createdMs: number;
  lastUsedMs: number;
  tags: Record<string, string>;
}

class PowerVmVolumeGroup implements VolumeGroup {
  readonly description = 'volume group rootvg on VIOS 1 (REST)';
  readonly #rest: ViosRestStandIn;
  readonly #sideFile: string;

  constructor(rest: ViosRestStandIn, sideFile: string) {
    this.#rest = rest;
    this.#sideFile = sideFile;
  }

  async listDisks(): Promise<VolumeGroupDisk[]> {
    const [disks, side] = await Promise.all([this.#rest.getVolumeGroup(), this.#readSide()]);
    return disks.map((disk) => ({
      name: disk.name,
      sizeBytes: disk.capacityGb * 1024 * MiB,
      createdMs: side.get(disk.name)?.createdMs ?? 0,
      lastUsedMs: side.get(disk.name)?.lastUsedMs ?? 0,
      tags: side.get(disk.name)?.tags ?? {}, // a disk made by another tool has no tags: never touched
    }));
  }

  async createDisk(spec: NewDiskSpec): Promise<void> {
    await this.#rest.createVirtualDisk(spec.name, gb(spec.sizeBytes));
    await this.#updateSide(spec.name, { createdMs: Date.now(), lastUsedMs: Date.now(), tags: { ...spec.tags } });
  }

  uploadDisk(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    return this.#rest.uploadToVirtualDisk(name, data);
  }

  async cloneDisk(sourceName: string, spec: NewDiskSpec): Promise<void> {
    await this.#rest.copyVirtualDisk(sourceName, spec.name, gb(spec.sizeBytes));
    await this.#updateSide(spec.name, { createdMs: Date.now(), lastUsedMs: Date.now(), tags: { ...spec.tags } });
  }

  async renameDisk(from: string, to: string): Promise<void> {
    await this.#rest.renameVirtualDisk(from, to);
    const record = (await this.#readSide()).get(from);
    if (record !== undefined) await this.#updateSide(to, record, from);
  }

  async touchDisk(name: string, atMs: number): Promise<void> {
    const record = (await this.#readSide()).get(name);
    if (record === undefined) throw new VolumeGroupError('touch', name, 'not-found');
    await this.#updateSide(name, { ...record, lastUsedMs: atMs });
  }

  async deleteDisk(name: string): Promise<void> {
    await this.#rest.removeVirtualDisk(name);
    await this.#updateSide(name, undefined);
  }

  async #readSide(): Promise<Map<string, SideRecord>> {
    try {
      return new Map(Object.entries(JSON.parse(await readFile(this.#sideFile, 'utf8')) as Record<string, SideRecord>));
    } catch {
      return new Map();
    }
  }

  async #updateSide(name: string, record: SideRecord | undefined, remove?: string): Promise<void> {
    const side = await this.#readSide();
    if (remove !== undefined) side.delete(remove);
    if (record === undefined) side.delete(name);
    else side.set(name, record);
    await writeFile(this.#sideFile, JSON.stringify(Object.fromEntries(side)));
  }
}

/** PowerVM sizes virtual disks in GB; round up. */
function gb(bytes: number): number {
  return Math.max(1, Math.ceil(bytes / (1024 * MiB)));
}

// ---------------------------------------------------------------------------------------------
// The compute host: two spawns of one image, then the periodic cleanup pass.
// ---------------------------------------------------------------------------------------------
const dir = await mkdtemp(path.join(os.tmpdir(), 'virt-imagecache-powervm-'));
const glance = await startFakeGlance({ images: [{ id: IMAGE, name: 'rhel9', content: { size: 64 * MiB, seed: 9 } }] });
try {
  const clock = new ManualClock();
  const volumeGroup = new PowerVmVolumeGroup(new ViosRestStandIn(), path.join(dir, 'rootvg-tags.json'));
  const manager = new LocalDiskImageManager({
    host: 'compute-1',
    volumeGroup,
    lockDir: path.join(dir, 'locks'),
    source: new GlanceImageSource({ endpoint: glance.url }),
    clock,
  });
  console.log(`fake Glance at ${glance.url}; image ${IMAGE} (64 MiB)`);

  const instances = [
    { uuid: 'd5065c2c-ac43-3fa6-af32-ea84a3960291', name: 'web-0001' },
    { uuid: '7b1f0e3a-0c5e-4a8e-9a51-3a3b9f1c2d4e', name: 'web-0002' },
  ];
  for (const [i, instance] of instances.entries()) {
    const started = performance.now();
    const disk = await manager.createInstanceDisk({ imageId: IMAGE, instance, flavorDiskBytes: 20 * 1024 * MiB });
    const ms = Math.round(performance.now() - started);
    console.log(
      `spawn ${i + 1}: ${disk.cacheStatus} (${disk.cacheStatus === 'cached' ? 'miss: uploaded into the VG' : 'hit: Glance not contacted'}), ` +
        `cloned ${disk.imageDiskName} into ${disk.diskName} (${disk.sizeBytes / 1024 / MiB} GiB) in ${ms} ms`,
    );
  }
  console.log(`bytes pulled from Glance: ${glance.bytesServed(IMAGE) / MiB} MiB for ${instances.length} spawns`);
  console.log(`volume group now: ${(await volumeGroup.listDisks()).map((d) => d.name).join(', ')}`);

  // A day later both instances are gone: the pass removes the image disk (and only it).
  clock.advance(86400 + 1);
  const pass = await manager.update([]);
  console.log(`cleanup pass: removed ${pass.removed.map((r) => `${r.name} (${r.reason})`).join(', ') || 'nothing'}`);
  console.log(`volume group after cleanup: ${(await volumeGroup.listDisks()).map((d) => d.name).join(', ')}`);
} finally {
  await glance.close();
  await rm(dir, { recursive: true, force: true });
}
