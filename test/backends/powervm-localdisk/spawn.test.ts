// nova-powervm's localdisk spawn (_create_disk_from_image, _get_or_upload_image), with its gaps
// closed: hit = clone into the instance's disk sized max(flavor, image) in whole GiB; miss = upload
// into a temporary disk, verified, then renamed; names collide safely; creation retried with jitter.
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { FileVolumeGroup, VolumeGroupError, isImageCacheError } from '../../../src/index.js';
import { novaImageDiskName } from '../../../src/backends/powervm-localdisk/naming.js';
import type { VolumeGroup } from '../../../src/index.js';
import { FakeVolumeGroup } from '../../../src/testing/index.js';
import { seededBytes } from '../../helpers/tmp.js';
import { GiB, IMAGES, MiB, TWIN_A, TWIN_B, fakeGroupFixture, fileGroupFixture } from './fixture.js';
import type { LocalDiskFixture } from './fixture.js';

const inst = (n: number): { uuid: string; name: string } => ({ uuid: `${String(n).repeat(4)}0000-aaaa-bbbb-cccc-dddddddddddd`, name: `instance-${n}` });
const bytesOf = (id: string): Buffer => Buffer.from(IMAGES.find((i) => i.id === id)?.data ?? []);

const groups = {
  'FakeVolumeGroup': fakeGroupFixture,
  'FileVolumeGroup': fileGroupFixture,
} as const;

/** The bytes of a disk, whatever the group (trailing capacity beyond `length` is not read). */
async function readDisk(group: VolumeGroup, name: string, length: number): Promise<Buffer> {
  if (group instanceof FakeVolumeGroup) return group.read(name)?.subarray(0, length) ?? Buffer.alloc(0);
  assert.ok(group instanceof FileVolumeGroup);
  const handle = await open(group.dataPath(name), 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

for (const [groupName, fixture] of Object.entries(groups)) {
  describe(`localdisk spawn over ${groupName}`, () => {
    let f: LocalDiskFixture<VolumeGroup>;
    beforeEach(async () => {
      f = await fixture();
    });
    afterEach(async () => {
      await f.cleanup();
    });

    it('test_capabilities: has_imagecache is true', () => {
      assert.equal(f.manager.hasImageCache, true);
    });

    it('miss: uploads the image into i_<uuid[:13]> once, then a hit clones it into the instance\u2019s disk without contacting the image service', async () => {
      const first = await f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1) });
      assert.equal(first.cacheStatus, 'cached');
      assert.equal(first.imageDiskName, 'i_img_1');
      assert.equal(first.diskName, 'b_instance_1111');
      assert.equal(first.created, true);
      const second = await f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(2) });
      assert.equal(second.cacheStatus, 'existing');
      assert.equal(f.source.openCalls('img-1'), 1);
      assert.equal(f.source.describeCalls('img-1'), 1, 'a hit does not even describe the image');
      for (const result of [first, second]) {
        assert.deepEqual(await readDisk(f.group, result.diskName, 2 * MiB), bytesOf('img-1'));
      }
      const names = (await f.group.listDisks()).map((d) => d.name);
      assert.deepEqual(names, ['b_instance_1111', 'b_instance_2222', 'i_img_1'], 'no upload disk is left');
    });

    it('the instance disk is max(flavor disk, image size) rounded up to whole GiB', async () => {
      // The image's size is what its upload recorded (1.5 GiB); a small capacity keeps the clones cheap.
      await f.cachedImageDisk('i_big', 'big-image', 1.5 * GiB, { capacityBytes: 64 * 1024 });
      const byImage = await f.manager.createInstanceDisk({ imageId: 'big-image', instance: inst(1), flavorDiskBytes: 1 * GiB });
      assert.equal(byImage.sizeBytes, 2 * GiB, 'the image (1.5 GiB) is larger than the flavor (1 GiB)');
      const byFlavor = await f.manager.createInstanceDisk({ imageId: 'big-image', instance: inst(2), flavorDiskBytes: 3 * GiB + 1 });
      assert.equal(byFlavor.sizeBytes, 4 * GiB);
      const small = await f.manager.createInstanceDisk({ imageId: 'img-2', instance: inst(3) });
      assert.equal(small.sizeBytes, 1 * GiB, 'a 1 MiB image on a 0 GB flavor gets one whole GiB');
      const sizes = Object.fromEntries((await f.group.listDisks()).map((d) => [d.name, d.sizeBytes]));
      assert.equal(sizes[byImage.diskName], 2 * GiB);
      assert.equal(sizes[byFlavor.diskName], 4 * GiB);
    });

    it('two UUIDs with the same 15-character name get two disks, and each spawn gets its own image', async () => {
      assert.equal(novaImageDiskName(TWIN_A), novaImageDiskName(TWIN_B));
      const a = await f.manager.createInstanceDisk({ imageId: TWIN_A, instance: inst(1) });
      const b = await f.manager.createInstanceDisk({ imageId: TWIN_B, instance: inst(2) });
      assert.equal(a.imageDiskName, 'i_3e865d14_8c1e');
      assert.notEqual(b.imageDiskName, a.imageDiskName, 'nova-powervm would have served A\u2019s disk for B');
      assert.match(b.imageDiskName, /^i_[0-9a-f]{13}$/);
      assert.deepEqual(await readDisk(f.group, a.diskName, MiB), bytesOf(TWIN_A));
      assert.deepEqual(await readDisk(f.group, b.diskName, MiB + 4096), bytesOf(TWIN_B));
      // Hits resolve by the full id too, in either order.
      const b2 = await f.manager.createInstanceDisk({ imageId: TWIN_B, instance: inst(3) });
      const a2 = await f.manager.createInstanceDisk({ imageId: TWIN_A, instance: inst(4) });
      assert.deepEqual([a2.imageDiskName, b2.imageDiskName, a2.cacheStatus, b2.cacheStatus], [a.imageDiskName, b.imageDiskName, 'existing', 'existing']);
      assert.deepEqual(await readDisk(f.group, b2.diskName, MiB + 4096), bytesOf(TWIN_B));
      assert.equal(f.source.openCalls(TWIN_A) + f.source.openCalls(TWIN_B), 2);
    });

    it('a foreign disk already named i_<uuid[:13]> is never served: the image gets another name, the foreign disk is untouched', async () => {
      await f.group.createDisk({ name: 'i_3e865d14_8c1e', sizeBytes: 4096, tags: {} });
      const spawned = await f.manager.createInstanceDisk({ imageId: TWIN_A, instance: inst(1) });
      assert.notEqual(spawned.imageDiskName, 'i_3e865d14_8c1e');
      assert.deepEqual(await readDisk(f.group, spawned.diskName, MiB), bytesOf(TWIN_A));
      const foreign = (await f.group.listDisks()).find((d) => d.name === 'i_3e865d14_8c1e');
      assert.deepEqual(foreign?.tags, {});
      assert.equal(foreign.sizeBytes, 4096);
    });

    it('concurrent spawns of one image upload it once and each get their own disk', async () => {
      const results = await Promise.all([1, 2, 3, 4, 5].map((n) => f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(n) })));
      assert.equal(f.source.openCalls('img-1'), 1);
      assert.equal(new Set(results.map((r) => r.diskName)).size, 5);
      for (const r of results) assert.deepEqual(await readDisk(f.group, r.diskName, 2 * MiB), bytesOf('img-1'));
    });

    it('an existing instance disk is left as it is (created: false); another instance’s disk of the same short name is never handed out', async () => {
      await f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1) });
      const again = await f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1) });
      assert.equal(again.created, false);
      // nova-powervm's b_<name[:8]>_<uuid[:4]> collides for these two instances.
      const twin = { uuid: `${inst(1).uuid.slice(0, 4)}ffff-0000-0000-0000-000000000000`, name: 'instance-99' };
      await assert.rejects(f.manager.createInstanceDisk({ imageId: 'img-1', instance: twin }), (err) => err instanceof VolumeGroupError && err.reason === 'name-taken');
      const named = await f.manager.createInstanceDisk({ imageId: 'img-1', instance: twin, diskName: 'b_instance_99' });
      assert.equal(named.created, true);
    });

    it('a spawn touches the image disk (its last use is the clock\u2019s now)', async () => {
      await f.manager.cacheImage('img-1');
      f.clock.advance(5000);
      await f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1) });
      const disk = (await f.group.listDisks()).find((d) => d.name === 'i_img_1');
      assert.equal(disk?.lastUsedMs, f.clock.now());
    });

    it('cacheImage (pre-caching) reports cached, then existing, naming the disk that holds the image', async () => {
      await f.group.createDisk({ name: 'i_3e865d14_8c1e', sizeBytes: 1, tags: {} });
      const first = await f.manager.cacheImage(TWIN_A);
      assert.equal(first.status, 'cached');
      const second = await f.manager.cacheImage(TWIN_A);
      assert.equal(second.status, 'existing');
      assert.equal(first.name, second.name);
      assert.equal(first.name, await f.manager.imageDiskName(TWIN_A));
      assert.notEqual(first.name, 'i_3e865d14_8c1e');
    });

    it('a checksum mismatch leaves neither an image disk nor an upload disk, and is typed', async () => {
      f.source.add({ id: 'bad', data: seededBytes(MiB, 9) });
      const good = f.source;
      // Publish a digest the bytes do not have.
      const describe = good.describe.bind(good);
      good.describe = async (id, o) => ({ ...(await describe(id, o)), hashValue: 'ab'.repeat(64), hashAlgo: 'sha512' });
      await assert.rejects(f.manager.createInstanceDisk({ imageId: 'bad', instance: inst(1) }), (err) => isImageCacheError(err) && err.code === 'ERR_CHECKSUM_MISMATCH');
      assert.deepEqual((await f.group.listDisks()).map((d) => d.name), []);
    });

    it('bad input is rejected before the volume group is touched', async () => {
      await assert.rejects(f.manager.createInstanceDisk({ imageId: '../x', instance: inst(1) }), { code: 'ERR_INVALID_IMAGE_ID' });
      await assert.rejects(f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1), diskName: 'i_sneaky' }), { code: 'ERR_INVALID_CONFIG' });
      await assert.rejects(f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1), flavorDiskBytes: -1 }), { code: 'ERR_INVALID_CONFIG' });
      await assert.rejects(f.manager.createInstanceDisk({ imageId: 'img-1', instance: { uuid: '', name: 'x' } }), { code: 'ERR_INVALID_CONFIG' });
      assert.deepEqual(await f.group.listDisks(), []);
    });
  });
}

describe('localdisk spawn: upload protocol and retries (FakeVolumeGroup faults)', () => {
  let f: LocalDiskFixture<FakeVolumeGroup>;
  beforeEach(async () => {
    f = await fakeGroupFixture();
  });
  afterEach(async () => {
    await f.cleanup();
  });

  it('while the upload runs only an s_ disk exists; the i_ name appears, by rename, once the image is complete and verified', async () => {
    f.group.setFaults({ delayMs: { upload: 50 } });
    let seenDuringUpload: string[] = [];
    const spawn = f.manager.createInstanceDisk({
      imageId: 'img-1',
      instance: inst(1),
      onProgress: () => {
        seenDuringUpload = f.group.names();
      },
    });
    const result = await spawn;
    assert.equal(seenDuringUpload.length, 1);
    assert.match(seenDuringUpload[0] ?? '', /^s_[0-9a-f]{13}$/);
    assert.deepEqual(f.group.names(), [result.diskName, 'i_img_1'].sort());
    assert.deepEqual(
      { create: f.group.calls('create'), upload: f.group.calls('upload'), rename: f.group.calls('rename'), clone: f.group.calls('clone') },
      { create: 1, upload: 1, rename: 1, clone: 1 },
    );
  });

  it('test_create_disk_from_image: a failing clone is retried with jitter and succeeds on the third attempt', async () => {
    f.group.setFaults({ failOn: { clone: [1, 2] } });
    const result = await f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1) });
    assert.equal(result.attempts, 3);
    assert.equal(f.group.calls('clone'), 3);
    assert.equal(f.source.openCalls('img-1'), 1, 'the image was uploaded once; only the clone was retried');
  });

  it('a failing disk creation is retried: the upload disk of a failed attempt is gone, nothing is published half-done', async () => {
    f.group.setFaults({ failOn: { create: [1] } });
    const result = await f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1) });
    assert.equal(result.attempts, 2);
    assert.deepEqual(f.group.names(), [result.diskName, 'i_img_1'].sort());
  });

  it('an upload interrupted mid-stream is discarded (no i_ disk, no s_ disk) and retried', async () => {
    f.group.setFaults({ failUploadAfterBytes: MiB });
    await assert.rejects(f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1) }), (err) => err instanceof VolumeGroupError && err.operation === 'upload');
    assert.deepEqual(f.group.names(), []);
    assert.equal(f.source.openCalls('img-1'), 4, 'four attempts in all (nova-powervm: 4)');
    f.group.setFaults({});
    const result = await f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1) });
    assert.equal(result.created, true);
  });

  it('creation is retried a bounded number of times, then the typed error names the disk and the image', async () => {
    f.group.setFaults({ failOn: { clone: [1, 2, 3, 4, 5, 6] } });
    const manager = f.make({ diskCreateAttempts: 3 });
    await assert.rejects(manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1) }), (err) => {
      assert.ok(err instanceof VolumeGroupError);
      assert.equal(err.code, 'ERR_VOLUME_GROUP');
      assert.equal(err.reason, 'failed');
      assert.match(err.message, /clone of disk b_instance_1111 for image img-1/);
      return true;
    });
    assert.equal(f.group.calls('clone'), 3);
  });

  it('errors that no retry can fix are not retried (an unknown image: one describe, no wait)', async () => {
    const started = performance.now();
    await assert.rejects(f.manager.createInstanceDisk({ imageId: 'no-such-image', instance: inst(1) }), { code: 'ERR_IMAGE_NOT_FOUND' });
    assert.equal(f.source.describeCalls('no-such-image'), 1);
    assert.ok(performance.now() - started < 1000);
  });

  it('an abort stops the spawn and leaves nothing behind', async () => {
    f.group.setFaults({ delayMs: { upload: 5000 } });
    const controller = new AbortController();
    const spawn = f.manager.createInstanceDisk({ imageId: 'img-1', instance: inst(1), signal: controller.signal });
    setTimeout(() => {
      controller.abort();
    }, 50);
    await assert.rejects(spawn, { code: 'ERR_ABORTED' });
    // The caller is released at once; the upload disk goes as soon as the upload has stopped.
    for (let waited = 0; f.group.names().length > 0; waited += 10) {
      assert.ok(waited < 4000, `left behind: ${f.group.names().join(', ')}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  });
});
