// Class 9, durability order: every name this library publishes (a base, the pins, the shared-storage
// registry, a qcow2 overlay, a raw copy, a linked base, a volume-group disk) gets it in the one order
// that survives a power loss: the file is fsynced, then renamed or linked to its final name, then
// the final name's directory is fsynced (after the staging name of a link is removed), and a
// directory created on the way has its entry fsynced in its parent. With sync off (instance disks
// and clones by default) nothing is fsynced at all. The real calls are recorded in order, whichever
// module makes them; descriptors are named through /proc/self/fd.
import assert from 'node:assert/strict';
import { realpathSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import type { LibvirtFileImageManagerOptions } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { StorageRegistry } from '../../src/backends/libvirt-file/storage-registry.js';
import { FileVolumeGroup } from '../../src/backends/powervm-localdisk/file-volume-group.js';
import { LockManager } from '../../src/fetch/lock-manager.js';
import { FilePinStore } from '../../src/pins.js';
import { ManualClock, MemoryImageSource } from '../../src/testing/index.js';
import { recordFsOperations } from '../helpers/fs-faults.js';
import type { FsOperation } from '../helpers/fs-faults.js';
import { makeTempDir, seededBytes } from '../helpers/tmp.js';

const IMAGE = 'image-1';
const DATA = seededBytes(1024 * 1024 + 4096, 9);

function lastIndexOf(operations: readonly FsOperation[], before: number, match: (o: FsOperation) => boolean): number {
  for (let i = before - 1; i >= 0; i--) if (match(operations[i] as FsOperation)) return i;
  return -1;
}

/**
 * Asserts `finalPath` was published durably: its staged file (or directory) fsynced before the
 * rename or link, each of `inside` (files of a staged directory) fsynced before that directory,
 * the final name's directory fsynced after, and a linked staging name removed before that fsync.
 * Returns the staged path.
 */
function assertDurablyPublished(operations: readonly FsOperation[], finalPath: string, inside: readonly string[] = []): string {
  const at = operations.findIndex((o) => (o.op === 'rename' || o.op === 'link') && o.to === finalPath);
  assert.ok(at >= 0, `${finalPath} is published by a rename or a link`);
  const publish = operations[at] as FsOperation;
  const staged = publish.path;
  const fileSync = lastIndexOf(operations, at, (o) => o.op === 'fsync' && o.path === staged);
  assert.ok(fileSync >= 0, `${staged} is fsynced before it is published as ${finalPath}`);
  for (const name of inside) {
    const file = path.join(staged, name);
    const synced = lastIndexOf(operations, at, (o) => o.op === 'fsync' && o.path === file);
    assert.ok(synced >= 0 && synced < fileSync, `${file} is fsynced, then its directory, before the directory is published`);
  }
  const directory = path.dirname(finalPath);
  const dirSync = operations.findIndex((o, i) => i > at && o.op === 'fsync' && o.path === directory);
  assert.ok(dirSync > at, `${directory} is fsynced after ${finalPath} is published`);
  if (publish.op === 'link') {
    const removed = operations.findIndex((o, i) => i > at && o.op === 'unlink' && o.path === staged);
    assert.ok(removed > at && removed < dirSync, `the staging name ${staged} is removed before the directory fsync covers both`);
  }
  return staged;
}

/** Asserts `dir`, created during the recording, had its own entry fsynced in its parent afterwards. */
function assertNewDirectoryDurable(operations: readonly FsOperation[], dir: string): void {
  const made = operations.findIndex((o) => o.op === 'mkdir' && (o.path === dir || o.path.startsWith(`${dir}/`)));
  assert.ok(made >= 0, `${dir} is created here`);
  const parent = path.dirname(dir);
  assert.ok(operations.some((o, i) => i > made && o.op === 'fsync' && o.path === parent), `${parent} is fsynced after ${dir} is created in it`);
}

function syncsOf(operations: readonly FsOperation[]): FsOperation[] {
  return operations.filter((o) => o.op === 'fsync' || o.op === 'fdatasync');
}

describe('durability order (class 9)', { skip: process.platform !== 'linux' && 'descriptors are named through /proc/self/fd' }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let instancesPath: string;
  let operations: FsOperation[];
  let restore: (() => void) | undefined;
  const record = async (): Promise<void> => {
    ({ operations, restore } = await recordFsOperations());
  };
  const stop = (): void => {
    restore?.();
    restore = undefined;
  };
  const manager = (extra: Partial<LibvirtFileImageManagerOptions> = {}): LibvirtFileImageManager =>
    new LibvirtFileImageManager({
      host: 'host1',
      instancesPath,
      source: new MemoryImageSource([{ id: IMAGE, data: DATA }]),
      clock: new ManualClock(1_700_000_000_000),
      ...extra,
    });

  beforeEach(async () => {
    let made: string;
    ({ dir: made, cleanup } = await makeTempDir('vic-durable-'));
    // The kernel names descriptors by their real path.
    dir = realpathSync(made);
    instancesPath = path.join(dir, 'instances');
    await mkdir(instancesPath);
  });
  afterEach(async () => {
    stop();
    await cleanup();
  });

  it('a downloaded base: fsynced, renamed, its directory fsynced; the new _base directory too', async () => {
    const m = manager();
    await record();
    await m.cacheImage(IMAGE);
    stop();
    assertDurablyPublished(operations, m.cachePathFor(IMAGE));
    assertNewDirectoryDurable(operations, m.baseDir);
  });

  it('a linked base (image store on the same device): the link is fsynced before its rename, the directory after', async () => {
    const store = path.join(dir, 'store');
    await mkdir(store);
    await writeFile(path.join(store, IMAGE), DATA);
    const m = manager({ templateImageHandler: 'link', templateImageStorePath: store });
    await record();
    await m.cacheImage(IMAGE);
    stop();
    const staged = assertDurablyPublished(operations, m.cachePathFor(IMAGE));
    assert.ok(
      operations.some((o) => o.op === 'link' && o.path === path.join(store, IMAGE) && o.to === staged),
      'the base is a hard link of the store file',
    );
    assertNewDirectoryDurable(operations, m.baseDir);
  });

  it('the pins file: fsynced, renamed over the old one, its (new) directory fsynced', async () => {
    const file = path.join(dir, 'state', 'pins.json');
    const clock = new ManualClock(1_000);
    const pins = new FilePinStore(file, new LockManager({ lockDir: path.join(dir, 'locks') }), clock);
    await record();
    await pins.pin(IMAGE, 10_000);
    await pins.pin('image-2', 10_000);
    stop();
    assertDurablyPublished(operations, file);
    assertNewDirectoryDurable(operations, path.dirname(file));
    assert.equal(operations.filter((o) => o.op === 'rename' && o.to === file).length, 2, 'each write is one publish');
  });

  it('the shared-storage registry: fsynced, renamed, its (new) directory fsynced', async () => {
    const shared = path.join(dir, 'new-share', 'instances');
    const registry = new StorageRegistry({
      instancesPath: shared,
      locks: new LockManager({ lockDir: path.join(dir, 'registry-locks') }),
      clock: new ManualClock(1_700_000_000_000),
    });
    await record();
    await registry.registerAndList('host1');
    stop();
    assertDurablyPublished(operations, registry.path);
    assertNewDirectoryDurable(operations, path.join(dir, 'new-share'));
  });

  it('syncInstanceDisks: a qcow2 overlay is fsynced, linked, its staging name removed, then its directory fsynced; a new instance directory too', async () => {
    const m = manager({ syncInstanceDisks: true });
    await m.cacheImage(IMAGE);
    const instanceDir = path.join(instancesPath, 'instance-a');
    await record();
    const disk = await m.createInstanceDisk({ imageId: IMAGE, instanceDir });
    stop();
    assert.equal(disk.created, true);
    assertDurablyPublished(operations, disk.path);
    assertNewDirectoryDurable(operations, instanceDir);
  });

  it('syncInstanceDisks: a raw copy is fsynced, renamed, then its directory fsynced; a new instance directory too', async () => {
    const m = manager({ syncInstanceDisks: true });
    await m.cacheImage(IMAGE);
    const instanceDir = path.join(instancesPath, 'instance-b');
    await record();
    const disk = await m.createInstanceDisk({ imageId: IMAGE, instanceDir, format: 'raw' });
    stop();
    assertDurablyPublished(operations, disk.path);
    assertNewDirectoryDurable(operations, instanceDir);
  });

  it('instance disks by default (sync off): no fsync at all, overlay or copy, new directory or not', async () => {
    const m = manager();
    await m.cacheImage(IMAGE);
    // The registry is written (durably) on a host's first spawn: not an instance disk.
    await m.registerStorageUse();
    await record();
    const overlay = await m.createInstanceDisk({ imageId: IMAGE, instanceDir: path.join(instancesPath, 'fast-a') });
    const copy = await m.createInstanceDisk({ imageId: IMAGE, instanceDir: path.join(instancesPath, 'fast-b'), format: 'raw' });
    stop();
    assert.equal(overlay.created && copy.created, true);
    assert.deepEqual(syncsOf(operations), []);
    // Still published atomically under a staging name.
    assert.ok(operations.some((o) => o.op === 'link' && o.to === overlay.path));
    assert.ok(operations.some((o) => o.op === 'rename' && o.to === copy.path));
  });

  it('a volume-group image disk (create, upload, rename): data and metadata fsynced, then the disk directory, then the volume group directory', async () => {
    const directory = path.join(dir, 'vg');
    const group = new FileVolumeGroup({ directory });
    await record();
    await group.createDisk({ name: 'i_upload', sizeBytes: DATA.length, tags: { role: 'image' } });
    await group.uploadDisk('i_upload', Readable.from([DATA]));
    await group.renameDisk('i_upload', 'i_image');
    stop();
    assertDurablyPublished(operations, path.join(directory, 'i_upload'), ['disk', 'meta.json']);
    const uploaded = path.join(directory, 'i_upload', 'disk');
    const renamed = operations.findIndex((o) => o.op === 'rename' && o.to === path.join(directory, 'i_image'));
    assert.ok(lastIndexOf(operations, renamed, (o) => o.op === 'fsync' && o.path === uploaded) >= 0, 'the uploaded data is fsynced before the disk is renamed');
    assertDurablyPublished(operations, path.join(directory, 'i_image'));
    assertNewDirectoryDurable(operations, directory);
  });

  it('syncClones: a clone\u2019s data and metadata are fsynced, then its directory, then the volume group directory; unsynced clones fsync nothing', async () => {
    const directory = path.join(dir, 'vg');
    const setup = new FileVolumeGroup({ directory });
    await setup.createDisk({ name: 'i_image', sizeBytes: DATA.length, tags: {} });
    await setup.uploadDisk('i_image', Readable.from([DATA]));

    await record();
    await new FileVolumeGroup({ directory, syncClones: true }).cloneDisk('i_image', { name: 'b_durable', sizeBytes: 2 * DATA.length, tags: { role: 'instance' } });
    stop();
    const building = assertDurablyPublished(operations, path.join(directory, 'b_durable'), ['meta.json']);
    // The copy inside the disk directory is itself published durably (from a staging name of its
    // own), before the directory is.
    assertDurablyPublished(operations, path.join(building, 'disk'));

    await record();
    await new FileVolumeGroup({ directory }).cloneDisk('i_image', { name: 'b_fast', sizeBytes: 2 * DATA.length, tags: {} });
    stop();
    assert.deepEqual(syncsOf(operations), []);
    assert.ok(operations.some((o) => o.op === 'rename' && o.to === path.join(directory, 'b_fast')));
  });
});
