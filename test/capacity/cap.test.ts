// The size cap (`maxCacheBytes`) on the libvirt-file backend, real files: enforced by every pass
// and after every fill, least recently used first (Glance's pruner and Ironic's cache cap, which
// Nova lacks), never at the expense of an entry in use, pinned, younger than its minimum age, or
// just filled. The in-memory backend gets the same behaviour from the same base-class code.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { utimes } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { LockManager } from '../../src/fetch/lock-manager.js';
import type { ImageSource } from '../../src/source/image-source.js';
import { ManualClock, MemoryImageManager } from '../../src/testing/index.js';
import { DAY, MiB, collectEvictions, fp, fixtures, sourceOf } from './fixture.js';

describe('size cap (maxCacheBytes)', () => {
  const fixture = fixtures();

  it('a pass evicts LRU unused entries until under the cap; the in-use and the pinned ones survive even though older', async () => {
    const f = await fixture(sourceOf(5, MiB));
    const filler = f.make();
    for (let i = 1; i <= 5; i++) await f.cacheAt(filler, `img-${i}`, (6 - i) * DAY);
    // Aging off: an LRU cache bounded by size alone.
    const manager = f.make({ removeUnusedBaseImages: false, maxCacheBytes: 3.5 * MiB });
    await manager.pinImage('img-2', 7 * DAY);
    const evicted = collectEvictions(manager);
    const report = await manager.update([{ uuid: 'u1', name: 'inst-1', host: 'host1', imageRef: 'img-1' }]);

    assert.deepEqual(report.removed.map((r) => [r.name, r.reason]), [[fp('img-3'), 'cap'], [fp('img-4'), 'cap']]);
    assert.deepEqual(evicted.map((e) => [e.name, e.reason, e.trigger]), [[fp('img-3'), 'cap', 'pass'], [fp('img-4'), 'cap', 'pass']]);
    const kept = new Map(report.kept.map((k) => [k.name, k.reason]));
    assert.equal(kept.get(fp('img-1')), 'in-use');
    assert.equal(kept.get(fp('img-2')), 'pinned');
    assert.equal(kept.get(fp('img-5')), 'removal-disabled');
    assert.deepEqual(report.capacity?.needs, { cap: 1.5 * MiB, watermark: 0, reclaim: 0 });
    assert.equal(report.capacity.freedBytes, 2 * MiB);
    assert.equal(report.capacity.shortfallBytes, 0);
    assert.deepEqual(await f.files(), [fp('img-1'), fp('img-2'), fp('img-5')].sort());
  });

  it('never below the minimum age: a cap that only young entries could meet is reported as a shortfall', async () => {
    const f = await fixture(sourceOf(3, MiB));
    const filler = f.make();
    await f.cacheAt(filler, 'img-1', 2 * DAY);
    await f.cacheAt(filler, 'img-2', 3600);
    await f.cacheAt(filler, 'img-3', 60);
    const manager = f.make({ removeUnusedBaseImages: false, maxCacheBytes: MiB, removeUnusedOriginalMinimumAgeSeconds: DAY });
    const report = await manager.update([]);
    assert.deepEqual(report.removed.map((r) => r.name), [fp('img-1')]);
    assert.deepEqual(report.kept.map((k) => k.reason), ['too-young', 'too-young']);
    assert.equal(report.capacity?.shortfallBytes, MiB);
  });

  it('LRU means last use: a hit refreshes an entry, and the order survives a restart (mtime is the record)', async () => {
    const f = await fixture(sourceOf(3, MiB));
    const first = f.make({ removeUnusedBaseImages: false });
    await f.cacheAt(first, 'img-1', 3 * DAY);
    await f.cacheAt(first, 'img-2', 2 * DAY);
    await f.cacheAt(first, 'img-3', 1 * DAY);
    assert.equal((await first.cacheImage('img-1')).status, 'existing', 'a spawn reuses img-1 now');
    // A new process with a cap of two entries: the least recently *used* is img-2, not img-1.
    const restarted = f.make({ removeUnusedBaseImages: false, maxCacheBytes: 2 * MiB });
    const report = await restarted.update([]);
    assert.deepEqual(report.removed.map((r) => [r.name, r.reason]), [[fp('img-2'), 'cap']]);
    assert.deepEqual(await f.files(), [fp('img-1'), fp('img-3')].sort());
  });

  it('a download first makes room under the cap (listInstances tells what is in use): LRU unused entries go before a byte is fetched', async () => {
    const source = sourceOf(4, MiB);
    const f = await fixture(source);
    const manager = f.make({ removeUnusedBaseImages: false, maxCacheBytes: 2.5 * MiB, removeUnusedOriginalMinimumAgeSeconds: 3600 });
    await f.cacheAt(manager, 'img-1', 3 * DAY);
    await f.cacheAt(manager, 'img-2', 2 * DAY);
    f.use('img-1');
    const opensAtEviction: number[] = [];
    manager.on('evicted', () => opensAtEviction.push(source.openCalls('img-3')));
    const evicted = collectEvictions(manager);
    await manager.cacheImage('img-3');
    assert.deepEqual(evicted.map((e) => [e.name, e.reason, e.trigger]), [[fp('img-2'), 'cap', 'download']]);
    assert.deepEqual(opensAtEviction, [0], 'room was made before the download started');
    assert.deepEqual(await f.files(), [fp('img-1'), fp('img-3')].sort());
  });

  it('an image whose size is not announced: the cap is enforced right after its fill', async () => {
    const source = sourceOf(3, MiB);
    const sizeless: ImageSource = {
      describe: async (imageId, options) => ({ ...(await source.describe(imageId, options)), size: null }),
      open: (imageId, options) => source.open(imageId, options),
    };
    const f = await fixture(sizeless);
    const manager = f.make({ removeUnusedBaseImages: false, maxCacheBytes: 2 * MiB, removeUnusedOriginalMinimumAgeSeconds: 0 });
    await f.cacheAt(manager, 'img-1', 2 * DAY);
    await f.cacheAt(manager, 'img-2', DAY);
    const evicted = collectEvictions(manager);
    await manager.cacheImage('img-3');
    assert.deepEqual(evicted.map((e) => [e.name, e.reason, e.trigger]), [[fp('img-1'), 'cap', 'fill']]);
    assert.deepEqual(await f.files(), [fp('img-2'), fp('img-3')].sort());
  });

  it('without listInstances a download cannot make room (in use cannot be proven): the cap waits for the next pass', async () => {
    const f = await fixture(sourceOf(3, MiB));
    const manager = f.make({ withLister: false, removeUnusedBaseImages: false, maxCacheBytes: 2 * MiB });
    await f.cacheAt(manager, 'img-1', 3 * DAY);
    await f.cacheAt(manager, 'img-2', 2 * DAY);
    await manager.cacheImage('img-3');
    assert.equal((await f.files()).length, 3, 'over the cap until a pass knows what is in use');
    const report = await manager.update([{ uuid: 'u', name: 'inst', host: 'host1', imageRef: 'img-1' }]);
    assert.deepEqual(report.removed.map((r) => [r.name, r.reason]), [[fp('img-2'), 'cap']]);
    assert.ok(existsSync(path.join(f.baseDir, fp('img-1'))));
  });

  it('an LRU victim a spawn touches while eviction waits for its lock is kept; the next one goes instead', async () => {
    const f = await fixture(sourceOf(3, MiB));
    const filler = f.make();
    for (let i = 1; i <= 3; i++) await f.cacheAt(filler, `img-${i}`, (4 - i) * DAY);
    const manager = f.make({ removeUnusedBaseImages: false, maxCacheBytes: 2 * MiB });
    // Another process holds img-1's lock, as a spawn building a disk from it would.
    const spawn = await new LockManager({ lockDir: path.join(f.instancesPath, 'locks'), staleMs: 2000 }).acquire(fp('img-1'));
    const pass = manager.update([]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = f.clock.now() / 1000;
    await utimes(path.join(f.baseDir, fp('img-1')), now, now);
    await spawn.release();
    const report = await pass;
    assert.deepEqual(report.removed.map((r) => [r.name, r.reason]), [[fp('img-2'), 'cap']]);
    assert.equal(report.kept.find((k) => k.name === fp('img-1'))?.reason, 'touched-meanwhile');
    assert.deepEqual(await f.files(), [fp('img-1'), fp('img-3')].sort());
  });

  it('the same base-class code caps the in-memory backend (no backend code involved)', async () => {
    const clock = new ManualClock(1_700_000_000_000);
    const manager = new MemoryImageManager({ host: 'h', source: sourceOf(4, 1000), clock, removeUnusedBaseImages: false, maxCacheBytes: 2500 });
    for (let i = 1; i <= 4; i++) {
      await manager.cacheImage(`img-${i}`);
      clock.advance(DAY + 1);
    }
    const report = await manager.update([{ uuid: 'u', name: 'n', host: 'h', imageRef: 'img-1' }]);
    assert.deepEqual(report.removed.map((r) => [r.name, r.reason]), [['img-2', 'cap'], ['img-3', 'cap']]);
    assert.deepEqual(manager.names(), ['img-1', 'img-4']);
  });
});
