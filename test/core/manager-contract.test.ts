// The ImageManager contract, proven on the in-memory backend: the template methods (the pass, the
// verified single-flight fill) are the same code every backend inherits.
import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { isImageCacheError } from '../../src/index.js';
import type { PassReport, RemovedEntry } from '../../src/index.js';
import { ManualClock, MemoryImageManager, MemoryImageSource } from '../../src/testing/index.js';
import { seededBytes } from '../helpers/tmp.js';

const DAY = 86400;

describe('ImageManager contract (in-memory backend)', () => {
  let clock: ManualClock;
  let source: MemoryImageSource;
  let manager: MemoryImageManager;

  beforeEach(() => {
    clock = new ManualClock(1_700_000_000_000);
    source = new MemoryImageSource([
      { id: 'img-1', data: seededBytes(100_000, 1) },
      { id: 'img-2', data: seededBytes(50_000, 2) },
    ]);
    manager = new MemoryImageManager({ host: 'host1', source, clock });
  });

  it('has an image cache', () => {
    assert.equal(manager.hasImageCache, true);
  });

  it('cacheImage downloads once (cached), then finds it (existing) and touches it', async () => {
    const first = await manager.cacheImage('img-1');
    assert.equal(first.status, 'cached');
    assert.equal(first.bytes, 100_000);
    assert.equal(first.name, 'img-1');
    assert.deepEqual(Buffer.from(manager.get('img-1')?.data ?? []), seededBytes(100_000, 1));
    clock.advance(3600);
    const second = await manager.cacheImage('img-1');
    assert.equal(second.status, 'existing');
    assert.equal(manager.get('img-1')?.lastUsedMs, clock.now(), 'touched');
    assert.equal(source.openCalls('img-1'), 1);
  });

  it('cacheImage failures are typed: unknown image, bad id', async () => {
    await assert.rejects(manager.cacheImage('nope'), (err) => isImageCacheError(err) && err.code === 'ERR_IMAGE_NOT_FOUND');
    await assert.rejects(manager.cacheImage('../x'), (err) => isImageCacheError(err) && err.code === 'ERR_INVALID_IMAGE_ID');
    assert.deepEqual(manager.names(), []);
  });

  it('test_verify_base_images_no_base: a pass with no cache yet does nothing', async () => {
    const report = await manager.update([]);
    assert.equal(report.skipped, 'no-base');
    assert.deepEqual(report.removed, []);
  });

  it('a pass touches entries in use, keeps young unused ones and removes old unused ones', async () => {
    await manager.cacheImage('img-1');
    await manager.cacheImage('img-2');
    clock.advance(DAY + 1);
    const removed: RemovedEntry[] = [];
    manager.on('removed', (entry) => removed.push(entry));
    const report = await manager.update([{ uuid: 'u1', name: 'inst-1', host: 'host1', imageRef: 'img-1' }]);
    assert.deepEqual(report.active, ['img-1']);
    assert.equal(manager.get('img-1')?.lastUsedMs, clock.now(), 'in-use entry touched');
    assert.deepEqual(report.removed.map((r) => [r.name, r.reason]), [['img-2', 'unused']]);
    assert.deepEqual(removed.map((r) => r.name), ['img-2']);
    assert.deepEqual(manager.names(), ['img-1']);
  });

  it('an unused original younger than removeUnusedOriginalMinimumAgeSeconds is kept', async () => {
    await manager.cacheImage('img-1');
    clock.advance(DAY - 1);
    const report = await manager.update([]);
    assert.deepEqual(report.kept.map((k) => [k.name, k.reason]), [['img-1', 'too-young']]);
    assert.deepEqual(manager.names(), ['img-1']);
  });

  it('resized entries age out after removeUnusedResizedMinimumAgeSeconds', async () => {
    manager.put('img-1_resized', Buffer.alloc(10), { kind: 'resized', imageId: null });
    clock.advance(3601);
    const report = await manager.update([]);
    assert.deepEqual(report.removed.map((r) => r.name), ['img-1_resized']);
  });

  it('removeUnusedBaseImages: false removes nothing', async () => {
    const keeper = new MemoryImageManager({ host: 'host1', source, clock, removeUnusedBaseImages: false });
    await keeper.cacheImage('img-1');
    clock.advance(10 * DAY);
    const report = await keeper.update([]);
    assert.deepEqual(report.removed, []);
    assert.deepEqual(report.kept.map((k) => k.reason), ['removal-disabled']);
  });

  it('instances on other hosts sharing the cache protect their images too', async () => {
    await manager.cacheImage('img-2');
    clock.advance(10 * DAY);
    const report = await manager.update([{ uuid: 'u9', name: 'inst-9', host: 'host2', imageRef: 'img-2' }]);
    assert.deepEqual(report.active, ['img-2']);
    assert.match(report.kept[0]?.detail ?? '', /inst-9/);
  });

  it('swap and ephemeral bases follow the original threshold; missing used ones are reported', async () => {
    manager.put('swap_512', Buffer.alloc(1), { kind: 'swap', imageId: null });
    manager.put('ephemeral_1_0706d66', Buffer.alloc(1), { kind: 'ephemeral', imageId: null });
    manager.put('swap_1024', Buffer.alloc(1), { kind: 'swap', imageId: null });
    clock.advance(DAY + 1);
    const report = await manager.update([
      { uuid: 'u', name: 'n', host: 'host1', blockDevices: [{ kind: 'swap', sizeMiB: 512 }, { kind: 'swap', sizeMiB: 2048 }] },
    ]);
    assert.deepEqual(report.active, ['swap_512']);
    assert.deepEqual(report.removed.map((r) => r.name).sort(), ['ephemeral_1_0706d66', 'swap_1024']);
    assert.deepEqual(report.missing, ['swap_2048']);
  });

  it('update() without instances asks listInstances for the storage users', async () => {
    const asked: string[][] = [];
    const listed = new MemoryImageManager({
      host: 'host1',
      source,
      clock,
      listInstances: (hosts) => {
        asked.push([...hosts]);
        return [{ uuid: 'u', name: 'n', host: 'host1', imageRef: 'img-1' }];
      },
    });
    await listed.cacheImage('img-1');
    clock.advance(10 * DAY);
    const report = await listed.update();
    assert.deepEqual(asked, [['host1']]);
    assert.deepEqual(report.active, ['img-1']);
  });

  it('update() without instances and without listInstances is a typed error', async () => {
    await manager.cacheImage('img-1');
    await assert.rejects(manager.update(), (err) => isImageCacheError(err) && err.code === 'ERR_UNSUPPORTED');
  });

  it('emits a pass event with the report', async () => {
    const reports: PassReport[] = [];
    manager.on('pass', (r) => reports.push(r));
    await manager.cacheImage('img-1');
    const report = await manager.update([]);
    assert.deepEqual(reports, [report]);
    assert.equal(report.host, 'host1');
    assert.equal(report.startedAt, clock.now());
  });

  it('an entry touched while the pass waited for its lock is kept (age re-checked inside the lock)', async () => {
    await manager.cacheImage('img-1');
    clock.advance(DAY + 1);
    // Hold the entry's lock as a spawn would; touch it, then let the pass in.
    const spawnLock = await (manager as unknown as { locks: { acquire(n: string): Promise<{ release(): Promise<void> }> } }).locks.acquire('img-1');
    const pass = manager.update([]);
    await new Promise((r) => setTimeout(r, 20));
    const entry = manager.get('img-1');
    if (entry !== undefined) entry.lastUsedMs = clock.now();
    await spawnLock.release();
    const report = await pass;
    assert.deepEqual(report.removed, []);
    assert.deepEqual(report.kept.map((k) => [k.name, k.reason]), [['img-1', 'touched-meanwhile']]);
    assert.deepEqual(manager.names(), ['img-1']);
  });
});
