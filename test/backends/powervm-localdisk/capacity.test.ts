// Capacity on the localdisk backend comes from the shared code (src/capacity/) once the volume
// group reports its usage: the same cap, watermarks and room-before-upload rules as libvirt-file.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { MiB, fakeGroupFixture } from './fixture.js';
import type { LocalDiskFixture } from './fixture.js';
import type { FakeVolumeGroup } from '../../../src/testing/index.js';

const DAY = 86400;

describe('localdisk capacity (shared policy over VolumeGroup.usage)', () => {
  let f: LocalDiskFixture<FakeVolumeGroup> | undefined;
  afterEach(async () => {
    await f?.cleanup();
  });

  it('disk watermarks evict the least recently used unused image disk down to the low mark; the one in use stays', async () => {
    // 4 image disks of 3.5 MiB in a 16 MiB group: 87.5 % used, above the 85 % high mark.
    f = await fakeGroupFixture({ removeUnusedBaseImages: false, diskWatermarks: true }, 16 * MiB);
    const old = f.clock.now() - 2 * DAY * 1000;
    for (let i = 0; i < 4; i++) await f.cachedImageDisk(`i_img_${String(i)}`, `img-${String(i)}`, 3.5 * MiB, { lastUsedMs: old + i * 1000 });
    const report = await f.manager.update([{ uuid: 'u0', name: 'inst-0', host: 'host1', imageRef: 'img-0' }]);
    assert.deepEqual(report.removed.map((r) => [r.name, r.reason]), [['i_img_1', 'watermark']]);
    assert.deepEqual(f.group.names(), ['i_img_0', 'i_img_2', 'i_img_3']);
  });

  it('an upload that cannot fit in the volume group fails with DiskFullError before a disk is created', async () => {
    f = await fakeGroupFixture({}, 1 * MiB);
    await assert.rejects(f.manager.cacheImage('img-1'), { code: 'ERR_DISK_FULL' });
    assert.equal(f.group.calls('create'), 0);
    assert.deepEqual(f.group.names(), []);
  });
});
