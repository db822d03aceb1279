// The operator API (Glance's list/delete of cached images; Nova, Ironic and kubelet have none):
// list() shows what the cache holds and why it stays, remove(imageId) refuses anything in use or
// pinned with a typed error, prune({ dryRun }) says what would go and why, with the pass's own
// policy. And the counters: hits, misses, downloads, bytes, evictions and removals by reason.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { RemovedEntry } from '../../src/cache-entry.js';
import { ImageInUseError, isImageCacheError } from '../../src/errors.js';
import { DAY, MiB, NOW, collectEvictions, fp, fixtures, sourceOf } from './fixture.js';

describe('operator API', () => {
  const fixture = fixtures();

  it('list(): size, kind, image id, last use, pin, and in use (null when nothing can tell)', async () => {
    const f = await fixture(sourceOf(3, MiB));
    const manager = f.make();
    await f.cacheAt(manager, 'img-1', 2 * DAY);
    await f.cacheAt(manager, 'img-2', DAY);
    await f.cacheAt(manager, 'img-3', 60);
    await manager.pinImage('img-2', DAY);
    f.use('img-1', 'web-1');
    const listed = new Map((await manager.list()).map((e) => [e.name, e]));
    assert.deepEqual(listed.get(fp('img-1')), {
      name: fp('img-1'), kind: 'original', imageId: 'img-1', sizeBytes: MiB, lastUsedMs: NOW - 2 * DAY * 1000,
      inUse: true, usedBy: 'image img-1 of web-1', pinnedUntilMs: null,
    });
    assert.equal(listed.get(fp('img-2'))?.pinnedUntilMs, NOW + DAY * 1000);
    assert.equal(listed.get(fp('img-2'))?.inUse, false);
    // A new process knows no ids it did not see, and without instances cannot tell use.
    const fresh = f.make({ withLister: false });
    const unknown = new Map((await fresh.list()).map((e) => [e.name, e]));
    assert.equal(unknown.get(fp('img-3'))?.imageId, null, 'file names are hashes; the id is not recoverable');
    assert.equal(unknown.get(fp('img-2'))?.imageId, 'img-2', 'known from its pin');
    assert.equal(unknown.get(fp('img-1'))?.inUse, null);
    const withInstances = new Map((await fresh.list({ instances: f.instances })).map((e) => [e.name, e]));
    assert.equal(withInstances.get(fp('img-1'))?.inUse, true);
    assert.equal(withInstances.get(fp('img-1'))?.imageId, 'img-1', 'known from the instance');
  });

  it('remove(): refuses an image in use or pinned with ImageInUseError (ERR_IMAGE_IN_USE), removing nothing', async () => {
    const f = await fixture(sourceOf(2, MiB));
    const manager = f.make();
    await manager.cacheImage('img-1');
    await manager.cacheImage('img-2');
    f.use('img-1', 'db-7');
    await manager.pinImage('img-2', 3600);
    await assert.rejects(manager.remove('img-1'), (err: unknown) => {
      assert.ok(err instanceof ImageInUseError);
      assert.equal(err.code, 'ERR_IMAGE_IN_USE');
      assert.match(err.message, /img-1.*db-7/);
      return true;
    });
    await assert.rejects(manager.remove('img-2'), (err: unknown) => err instanceof ImageInUseError && /pinned until .*unpin it first/.test(err.reason));
    assert.equal((await f.files()).length, 2);
  });

  it('remove(): an unused entry goes now, whatever its age (reason operator); unknown image: nothing to do', async () => {
    const f = await fixture(sourceOf(1, MiB));
    const manager = f.make();
    await manager.cacheImage('img-1');
    const events: RemovedEntry[] = [];
    manager.on('removed', (entry) => events.push(entry));
    const removed = await manager.remove('img-1');
    assert.deepEqual(removed.map((r) => [r.name, r.reason, r.bytes]), [[fp('img-1'), 'operator', MiB]]);
    assert.deepEqual(events, removed);
    assert.ok(!existsSync(path.join(f.baseDir, fp('img-1'))));
    assert.deepEqual(await manager.remove('img-1'), []);
    assert.equal(manager.getStats().removals.operator.count, 1);
  });

  it('remove() refuses when nothing tells what is in use (no instances, no listInstances)', async () => {
    const f = await fixture(sourceOf(1, MiB));
    const manager = f.make({ withLister: false });
    await manager.cacheImage('img-1');
    await assert.rejects(manager.remove('img-1'), (err: unknown) => isImageCacheError(err) && err.code === 'ERR_UNSUPPORTED' && /listInstances/.test(err.message));
    assert.equal((await manager.remove('img-1', { instances: [] })).length, 1);
  });

  it('prune({ dryRun: true }) says what would go and why and removes nothing; prune() then removes exactly that', async () => {
    const f = await fixture(sourceOf(5, MiB));
    const filler = f.make();
    for (let i = 1; i <= 5; i++) await f.cacheAt(filler, `img-${i}`, (6 - i) * DAY);
    f.use('img-1');
    // Aging removes what is unused for a week (img-1 is in use); the cap then takes the LRU rest.
    const manager = f.make({ removeUnusedOriginalMinimumAgeSeconds: 4 * DAY, maxCacheBytes: 2 * MiB });
    const plan = await manager.prune({ dryRun: true });
    assert.equal(plan.dryRun, true);
    assert.deepEqual(plan.removed.map((r) => [r.name, r.reason]), [[fp('img-2'), 'unused']]);
    assert.match(plan.removed[0]?.detail ?? '', /unused for 4d.*minimum age of 4d/);
    assert.deepEqual(plan.kept.map((k) => k.reason).sort(), ['in-use', 'too-young', 'too-young', 'too-young']);
    assert.equal(plan.capacity?.shortfallBytes, 2 * MiB, 'the cap cannot be met: the rest is too young');
    assert.equal((await f.files()).length, 5, 'a dry run removes nothing');

    const aging = f.make({ removeUnusedBaseImages: false, removeUnusedOriginalMinimumAgeSeconds: 2 * DAY, maxCacheBytes: 3 * MiB });
    const capPlan = await aging.prune({ dryRun: true });
    assert.deepEqual(capPlan.removed.map((r) => [r.name, r.reason]), [[fp('img-2'), 'cap'], [fp('img-3'), 'cap']]);
    assert.match(capPlan.removed[0]?.detail ?? '', /least recently used .*over maxCacheBytes/);
    const evicted = collectEvictions(aging);
    const done = await aging.prune();
    assert.equal(done.dryRun, false);
    assert.deepEqual(done.removed.map((r) => [r.name, r.reason]), capPlan.removed.map((r) => [r.name, r.reason]));
    assert.deepEqual(evicted.map((e) => e.trigger), ['prune', 'prune']);
    assert.deepEqual(await f.files(), [fp('img-1'), fp('img-4'), fp('img-5')].sort());
  });

  it('getStats(): hits, misses, downloads, bytes downloaded and served from cache, evictions and removals by reason', async () => {
    const f = await fixture(sourceOf(3, MiB));
    const manager = f.make({ removeUnusedBaseImages: false, maxCacheBytes: 2 * MiB });
    await f.cacheAt(manager, 'img-1', 2 * DAY);
    await f.cacheAt(manager, 'img-2', DAY);
    await manager.cacheImage('img-1');
    await manager.createInstanceDisk({ imageId: 'img-1', instanceDir: path.join(f.instancesPath, 'uuid-x') });
    f.use('img-1');
    await manager.cacheImage('img-3'); // over the cap: img-2 (LRU, unused) makes room
    const stats = manager.getStats();
    assert.equal(stats.hits, 2, 'a cacheImage hit and a cached spawn');
    assert.equal(stats.misses, 3);
    assert.equal(stats.downloads, 3);
    assert.equal(stats.bytesDownloaded, 3 * MiB);
    assert.equal(stats.bytesServedFromCache, 2 * MiB);
    assert.deepEqual(stats.evictions, { count: 1, bytes: MiB });
    assert.deepEqual(stats.removals.cap, { count: 1, bytes: MiB });
    assert.equal(stats.removals.unused.count, 0);
    assert.equal(stats.sinceMs, NOW);
    manager.resetStats();
    assert.equal(manager.getStats().hits, 0);
  });
});
