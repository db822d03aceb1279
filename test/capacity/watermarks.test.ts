// Kubelet's disk watermarks (imageGCHighThresholdPercent / imageGCLowThresholdPercent, 85/80): at
// or above the high mark, unused entries go least recently used first until usage is down to the
// low mark. On a real 16 MiB tmpfs (statfs tells the truth), and through an injected probe for the
// exact arithmetic and the hysteresis between the marks.
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { statfsProbe, usedPercent } from '../../src/capacity/statfs.js';
import { mountTmpfs } from '../helpers/tmpfs.js';
import type { Tmpfs } from '../helpers/tmpfs.js';
import { DAY, MiB, collectEvictions, fixtures, fp, makeCapacityFixture, sourceOf, virtualDisk } from './fixture.js';
import type { CapacityFixture } from './fixture.js';

const WATERMARKS = { diskWatermarks: true, highWatermarkPercent: 85, lowWatermarkPercent: 80 } as const;

/** A file outside the cache standing for instance disks on the same filesystem. */
async function instanceDisk(instancesPath: string, bytes: number): Promise<void> {
  await mkdir(path.join(instancesPath, 'uuid-other'), { recursive: true });
  await writeFile(path.join(instancesPath, 'uuid-other', 'disk.raw'), Buffer.alloc(bytes, 1));
}

describe('disk watermarks on a real tmpfs', () => {
  let mount: Tmpfs | undefined;
  let f: CapacityFixture | undefined;
  afterEach(async () => {
    await f?.cleanup();
    await mount?.cleanup();
    f = mount = undefined;
  });

  it('a pass at 87% evicts LRU unused entries down to <= 80%; the in-use oldest entry stays', async (t) => {
    mount = await mountTmpfs(t, 16 * MiB);
    if (mount === undefined) return;
    f = await makeCapacityFixture(sourceOf(3, 3 * MiB), { instancesPath: mount.dir });
    const filler = f.make();
    await f.cacheAt(filler, 'img-1', 3 * DAY);
    await f.cacheAt(filler, 'img-2', 2 * DAY);
    await f.cacheAt(filler, 'img-3', 1 * DAY);
    await instanceDisk(mount.dir, 5 * MiB);
    const before = usedPercent(await statfsProbe(mount.dir));
    assert.ok(before >= 85, `the tmpfs is ${before}% full`);

    const manager = f.make({ ...WATERMARKS, removeUnusedBaseImages: false });
    const evicted = collectEvictions(manager);
    const report = await manager.update([{ uuid: 'u1', name: 'inst-1', host: 'host1', imageRef: 'img-1' }]);
    assert.deepEqual(evicted.map((e) => [e.name, e.reason, e.trigger]), [[fp('img-2'), 'watermark', 'pass']]);
    assert.match(evicted[0]?.detail ?? '', /% full \(high watermark 85%, evicting down to 80%\)/);
    assert.ok((report.capacity?.needs.watermark ?? 0) > 0);
    assert.equal(report.capacity?.shortfallBytes, 0);
    const after = usedPercent(await statfsProbe(mount.dir));
    assert.ok(after <= 80, `down to ${after}%`);
    assert.deepEqual(await f.files(), [fp('img-1'), fp('img-3')].sort());
  });

  it('a fill that pushes the disk over the high mark evicts right after it (listInstances known), never the new image', async (t) => {
    mount = await mountTmpfs(t, 16 * MiB);
    if (mount === undefined) return;
    f = await makeCapacityFixture(sourceOf(3, 3 * MiB), { instancesPath: mount.dir });
    await instanceDisk(mount.dir, 5 * MiB);
    const manager = f.make({ ...WATERMARKS, removeUnusedBaseImages: false, removeUnusedOriginalMinimumAgeSeconds: 0 });
    await f.cacheAt(manager, 'img-1', 3 * DAY);
    await f.cacheAt(manager, 'img-2', 2 * DAY);
    const evicted = collectEvictions(manager);
    await manager.cacheImage('img-3');
    assert.deepEqual(evicted.map((e) => [e.name, e.reason, e.trigger]), [[fp('img-1'), 'watermark', 'fill']]);
    assert.ok(usedPercent(await statfsProbe(mount.dir)) <= 80);
    assert.deepEqual(await f.files(), [fp('img-2'), fp('img-3')].sort());
  });
});

describe('disk watermarks through an injected statfs', () => {
  const fixture = fixtures();

  it('at exactly the high mark: frees capacity x (100 - low)/100 - available (kubelet), LRU, skipping in-use and pinned', async () => {
    const f = await fixture(sourceOf(10, MiB));
    const other = { bytes: 75 * MiB };
    const filler = f.make();
    for (let i = 1; i <= 10; i++) await f.cacheAt(filler, `img-${i}`, (11 - i) * DAY);
    const manager = f.make({ ...WATERMARKS, removeUnusedBaseImages: false, filesystemProbe: virtualDisk(f, 100 * MiB, other) });
    await manager.pinImage('img-2', DAY);
    const evicted = collectEvictions(manager);
    const report = await manager.update([{ uuid: 'u', name: 'inst', host: 'host1', imageRef: 'img-1' }]);
    assert.equal(report.capacity?.needs.watermark, 5 * MiB);
    // In eviction order: least recently used first, img-1 (in use) and img-2 (pinned) skipped.
    assert.deepEqual(evicted.map((e) => [e.name, e.reason]), ['img-3', 'img-4', 'img-5', 'img-6', 'img-7'].map((id) => [fp(id), 'watermark']));
    assert.equal(report.capacity.filesystem?.location, 'virtual-disk');
    // Now at the low mark: the next pass leaves everything alone.
    assert.deepEqual((await manager.update([])).removed, []);
  });

  it('the just-filled image is never the victim of its own fill, even with a minimum age of 0', async () => {
    const f = await fixture(sourceOf(3, MiB));
    const manager = f.make({
      ...WATERMARKS,
      removeUnusedBaseImages: false,
      removeUnusedOriginalMinimumAgeSeconds: 0,
      filesystemProbe: virtualDisk(f, 10 * MiB, { bytes: 6 * MiB }),
    });
    f.use('img-1');
    await manager.pinImage('img-2', DAY);
    await f.cacheAt(manager, 'img-1', 2 * DAY);
    await f.cacheAt(manager, 'img-2', DAY);
    const evicted = collectEvictions(manager);
    // 9 of 10 MiB after the fill: over the high mark, and the only unprotected entry is img-3.
    const result = await manager.cacheImage('img-3');
    assert.equal(result.status, 'cached');
    assert.deepEqual(evicted, []);
    assert.deepEqual(await f.files(), [fp('img-1'), fp('img-2'), fp('img-3')].sort());
    assert.deepEqual((await manager.list()).find((e) => e.name === fp('img-3'))?.inUse, false, 'protected only while being cached');
    // A pass keeps what was used at or after it began (what makes age 0 safe); a later one may take it.
    f.clock.advance(1);
    const pass = await manager.update(f.instances);
    assert.deepEqual(pass.removed.map((r) => [r.name, r.reason]), [[fp('img-3'), 'watermark']], 'a later pass may take it');
  });

  it('between the marks nothing is evicted (hysteresis), and with the switch off nothing ever is', async () => {
    const f = await fixture(sourceOf(4, MiB));
    const other = { bytes: 80 * MiB };
    const filler = f.make();
    for (let i = 1; i <= 4; i++) await f.cacheAt(filler, `img-${i}`, (5 - i) * DAY);
    const probe = virtualDisk(f, 100 * MiB, other);
    const manager = f.make({ ...WATERMARKS, removeUnusedBaseImages: false, filesystemProbe: probe });
    assert.deepEqual((await manager.update([])).removed, [], '84% is below the high mark');
    other.bytes = 95 * MiB;
    const off = f.make({ removeUnusedBaseImages: false, filesystemProbe: probe });
    assert.deepEqual((await off.update([])).removed, [], 'watermarks are off by default');
    const evicted = collectEvictions(manager);
    await manager.update([]);
    assert.deepEqual(evicted.map((e) => e.name), [fp('img-1'), fp('img-2'), fp('img-3'), fp('img-4')], 'at 99%, LRU order, everything unused');
  });
});
