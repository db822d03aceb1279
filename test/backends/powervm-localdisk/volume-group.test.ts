// The VolumeGroup contract the localdisk backend relies on, for both implementations: unique names,
// clone and rename never replace a disk, tags and times kept, typed failures. FileVolumeGroup also
// persists everything across instances and never lists a half-built disk.
import assert from 'node:assert/strict';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { FileVolumeGroup, VolumeGroupError } from '../../../src/index.js';
import type { VolumeGroup } from '../../../src/index.js';
import { FakeVolumeGroup, ManualClock } from '../../../src/testing/index.js';
import { observeFileHandleSyncs } from '../../helpers/fs-faults.js';
import { listDir, makeTempDir, seededBytes } from '../../helpers/tmp.js';

const NOW = 1_700_000_000_000;
const isReason = (reason: string) => (err: unknown): boolean => err instanceof VolumeGroupError && err.reason === reason;
/** `data` in 1000-byte chunks, each after a turn of the event loop, like a network stream. */
async function* chunks(data: Buffer): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += 1000) {
    await new Promise((resolve) => setImmediate(resolve));
    yield data.subarray(i, i + 1000);
  }
}

const implementations: Record<string, (dir: string, clock: ManualClock) => VolumeGroup> = {
  FakeVolumeGroup: (_dir, clock) => new FakeVolumeGroup({ clock }),
  FileVolumeGroup: (dir, clock) => new FileVolumeGroup({ directory: path.join(dir, 'vg'), clock }),
};

for (const [name, create] of Object.entries(implementations)) {
  describe(`VolumeGroup contract: ${name}`, () => {
    let dir: string;
    let cleanup: () => Promise<void>;
    let clock: ManualClock;
    let group: VolumeGroup;
    beforeEach(async () => {
      ({ dir, cleanup } = await makeTempDir('vic-vg-'));
      clock = new ManualClock(NOW);
      group = create(dir, clock);
    });
    afterEach(async () => {
      await cleanup();
    });

    it('creates, uploads, lists with size, times and tags, touches, renames and deletes', async () => {
      assert.deepEqual(await group.listDisks(), []);
      await group.createDisk({ name: 's_1', sizeBytes: 5000, tags: { a: '1' } });
      assert.equal(await group.uploadDisk('s_1', chunks(seededBytes(4096))), 4096);
      await group.touchDisk('s_1', NOW + 5000);
      await group.renameDisk('s_1', 'i_1');
      const [disk] = await group.listDisks();
      assert.deepEqual({ ...disk }, { name: 'i_1', sizeBytes: 5000, createdMs: NOW, lastUsedMs: NOW + 5000, tags: { a: '1' } });
      await group.deleteDisk('i_1');
      assert.deepEqual(await group.listDisks(), []);
    });

    it('clones the data into a new disk of the given size, with its own tags', async () => {
      await group.createDisk({ name: 'i_1', sizeBytes: 4096, tags: { image: 'x' } });
      await group.uploadDisk('i_1', chunks(seededBytes(4096, 3)));
      await group.cloneDisk('i_1', { name: 'b_1', sizeBytes: 1 << 20, tags: { instance: 'y' } });
      const [clone, image] = await group.listDisks();
      assert.deepEqual([clone?.name, clone?.sizeBytes, clone?.tags], ['b_1', 1 << 20, { instance: 'y' }]);
      assert.deepEqual([image?.name, image?.tags], ['i_1', { image: 'x' }]);
    });

    it('never replaces a disk: create, clone and rename onto a taken name fail with name-taken, both disks intact', async () => {
      await group.createDisk({ name: 'a', sizeBytes: 10, tags: { who: 'a' } });
      await group.createDisk({ name: 'b', sizeBytes: 20, tags: { who: 'b' } });
      await assert.rejects(group.createDisk({ name: 'a', sizeBytes: 1, tags: {} }), isReason('name-taken'));
      await assert.rejects(group.cloneDisk('b', { name: 'a', sizeBytes: 20, tags: {} }), isReason('name-taken'));
      await assert.rejects(group.renameDisk('b', 'a'), isReason('name-taken'));
      assert.deepEqual((await group.listDisks()).map((d) => [d.name, d.sizeBytes, d.tags.who]), [['a', 10, 'a'], ['b', 20, 'b']]);
    });

    it('a missing disk is not-found for upload, clone, rename, touch and delete', async () => {
      await assert.rejects(group.uploadDisk('nope', chunks(Buffer.alloc(1))), isReason('not-found'));
      await assert.rejects(group.cloneDisk('nope', { name: 'x', sizeBytes: 1, tags: {} }), isReason('not-found'));
      await assert.rejects(group.renameDisk('nope', 'x'), isReason('not-found'));
      await assert.rejects(group.touchDisk('nope', NOW), isReason('not-found'));
      await assert.rejects(group.deleteDisk('nope'), isReason('not-found'));
    });

    it('an upload larger than the disk fails', async () => {
      await group.createDisk({ name: 's_1', sizeBytes: 100, tags: {} });
      await assert.rejects(group.uploadDisk('s_1', chunks(Buffer.alloc(200))), VolumeGroupError);
    });
  });
}

describe('FileVolumeGroup on disk', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-filevg-'));
  });
  afterEach(async () => {
    await cleanup();
  });

  it('keeps data, tags and times across instances (a restart); the data file holds the bytes, sparse beyond them', async () => {
    const directory = path.join(dir, 'vg');
    const first = new FileVolumeGroup({ directory });
    await first.createDisk({ name: 'i_1', sizeBytes: 8 << 20, tags: { k: 'v' } });
    await first.uploadDisk('i_1', chunks(seededBytes(3000)));
    await first.touchDisk('i_1', NOW);
    const again = new FileVolumeGroup({ directory });
    const [disk] = await again.listDisks();
    assert.deepEqual([disk?.name, disk?.sizeBytes, disk?.lastUsedMs, disk?.tags], ['i_1', 8 << 20, NOW, { k: 'v' }]);
    const head = (await readFile(again.dataPath('i_1'))).subarray(0, 3000);
    assert.deepEqual(head, seededBytes(3000));
    assert.ok((await stat(again.dataPath('i_1'))).blocks * 512 < 1 << 20, 'the unwritten capacity is a hole');
  });

  it('a disk directory without metadata lists with no tags (foreign); half-built and half-deleted disks are never listed, and a dead process\u2019s are swept', async () => {
    const directory = path.join(dir, 'vg');
    const group = new FileVolumeGroup({ directory });
    await mkdir(path.join(directory, 'i_foreign'), { recursive: true });
    await writeFile(path.join(directory, 'i_foreign', 'disk'), 'x');
    await mkdir(path.join(directory, '.creating-999999999-abcdef'), { recursive: true });
    await mkdir(path.join(directory, `.creating-${process.pid}-abcdef`), { recursive: true });
    await writeFile(path.join(directory, 'stray-file'), 'not a disk');
    const disks = await group.listDisks();
    assert.deepEqual(disks.map((d) => [d.name, d.tags]), [['i_foreign', {}]]);
    assert.deepEqual(await listDir(directory), [`.creating-${process.pid}-abcdef`, 'i_foreign', 'stray-file'], 'only the dead process\u2019s leftover went');
  });

  it('rejects names PowerVM would reject (over 15 characters, outside [.0-9A-Za-z_], hidden)', async () => {
    const group = new FileVolumeGroup({ directory: path.join(dir, 'vg') });
    for (const bad of ['a_name_of_16_chr', 'a/b', '.hidden', 'a-b', '']) {
      await assert.rejects(group.createDisk({ name: bad, sizeBytes: 1, tags: {} }), VolumeGroupError, bad);
    }
    assert.throws(() => new FileVolumeGroup({ directory: 'relative' }), { code: 'ERR_INVALID_CONFIG' });
  });

  it('syncClones: a clone (an instance disk) is fsynced only when asked, an upload (an image disk) always', async () => {
    let syncs = 0;
    const restoreSync = await observeFileHandleSyncs(() => {
      syncs++;
    });
    const clonesSynced = async (syncClones: boolean | undefined): Promise<{ upload: number; clone: number }> => {
      const group = new FileVolumeGroup({ directory: path.join(dir, `vg-${String(syncClones)}`), syncClones });
      await group.createDisk({ name: 'i_image', sizeBytes: 4096, tags: {} });
      syncs = 0;
      await group.uploadDisk('i_image', chunks(seededBytes(4096, 3)));
      const upload = syncs;
      syncs = 0;
      await group.cloneDisk('i_image', { name: 'b_instance', sizeBytes: 8192, tags: {} });
      return { upload, clone: syncs };
    };
    try {
      const byDefault = await clonesSynced(undefined);
      const asked = await clonesSynced(true);
      assert.ok(byDefault.upload > 0, 'an upload is fsynced');
      assert.equal(asked.upload, byDefault.upload);
      assert.equal(byDefault.clone, 0, 'an unsynced clone fsyncs nothing, not even its metadata or directory');
      // The copy, the disk directory after the copy's rename, the metadata, the disk directory
      // again before its own rename, the volume group's directory after it.
      assert.equal(asked.clone, 5);
    } finally {
      restoreSync();
    }
    assert.throws(() => new FileVolumeGroup({ directory: path.join(dir, 'vg'), syncClones: 'yes' as unknown as boolean }), { code: 'ERR_INVALID_CONFIG' });
  });
});
