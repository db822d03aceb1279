// Pre-caching on one host: Nova's compute-side catalogue (docs/nova-parity.md, catalogue:
// ComputeManager and libvirt cache_image tests), each test named after the Nova test it reproduces,
// plus what Nova lacks: the per-image lock (gap A), pins, a speed cap, cancellation and
// serialisable typed errors.
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { UnsupportedError, cacheImages, isImageCacheError } from '../../src/index.js';
import type { CacheImageOptions, CacheImageResult } from '../../src/index.js';
import { ManualClock, MemoryImageManager, MemoryImageSource } from '../../src/testing/index.js';
import { makeFixture } from '../backends/libvirt-file/fixture.js';
import type { Fixture } from '../backends/libvirt-file/fixture.js';
import { captureLog } from '../helpers/capture-log.js';
import { seededBytes } from '../helpers/tmp.js';

const DAY = 86_400;

/** Nova's default `ComputeDriver`: no image cache at all. */
class CachelessManager extends MemoryImageManager {
  override readonly hasImageCache = false;
}

/** A backend that has a cache but refuses pre-caching with ERR_UNSUPPORTED (like a no-op backend). */
class RefusingManager extends MemoryImageManager {
  override cacheImage(imageId: string): Promise<CacheImageResult> {
    return Promise.reject(new UnsupportedError('Image pre-caching', 'this backend never downloads.', imageId));
  }
}

/** A backend whose touch fails with a raw file-system error (EACCES on NFS, say). */
class BrokenTouchManager extends MemoryImageManager {
  protected override touchEntry(): Promise<void> {
    return Promise.reject(Object.assign(new Error('EACCES: permission denied, utime'), { code: 'EACCES' }));
  }
}

function memoryHost(source = new MemoryImageSource([]), clock = new ManualClock(1_700_000_000_000)): MemoryImageManager {
  return new MemoryImageManager({ host: 'compute1', source, clock });
}

describe("Nova's ComputeManager.cache_images catalogue", () => {
  it('test_cache_images_unsupported: a backend without an image cache answers unsupported, with exactly one warning', async () => {
    const source = new MemoryImageSource([{ id: 'an-image', data: Buffer.from('x') }]);
    const manager = new CachelessManager({ host: 'compute1', source });
    const log = captureLog('virt-imagecache:precache');
    let report;
    try {
      report = await cacheImages(manager, ['an-image']);
    } finally {
      log.restore();
    }
    assert.deepEqual(report.images.map((r) => [r.imageId, r.status]), [['an-image', 'unsupported']]);
    assert.equal(report.images[0]?.error?.code, 'ERR_UNSUPPORTED');
    assert.equal(log.lines.filter((line) => line.includes('WARNING')).length, 1);
    assert.match(log.lines.find((line) => line.includes('WARNING')) ?? '', /does not support image pre-caching; ignoring request/);
    assert.equal(source.describeCalls('an-image') + source.openCalls('an-image'), 0);
  });

  it('unsupported also for a backend whose cacheImage rejects with ERR_UNSUPPORTED; still one warning for several images', async () => {
    const manager = new RefusingManager({ host: 'compute1' });
    const log = captureLog('virt-imagecache:precache');
    let report;
    try {
      report = await cacheImages(manager, ['image-a', 'image-b']);
    } finally {
      log.restore();
    }
    assert.deepEqual(report.images.map((r) => r.status), ['unsupported', 'unsupported']);
    assert.equal(log.lines.filter((line) => line.includes('WARNING')).length, 1);
  });

  it('test_cache_image_existing / _downloaded / _failed, test_cache_images_multi: statuses per image, in order; a failure stops nothing', async () => {
    const source = new MemoryImageSource([
      { id: 'downloaded', data: seededBytes(300_000, 3) },
      { id: 'after-failure', data: seededBytes(1000, 4) },
    ]);
    const clock = new ManualClock(1_700_000_000_000);
    const manager = memoryHost(source, clock);
    manager.put('existing', Buffer.from('old'), { lastUsedMs: clock.now() - 3 * DAY * 1000 });

    const report = await cacheImages(manager, ['existing', 'downloaded', 'failed', 'after-failure']);

    assert.equal(report.host, 'compute1');
    assert.deepEqual(
      report.images.map((r) => [r.imageId, r.status]),
      [['existing', 'existing'], ['downloaded', 'cached'], ['failed', 'error'], ['after-failure', 'cached']],
    );
    const [existing, downloaded, failed] = report.images;
    // existing: touched (expiry reset), nothing fetched.
    assert.equal(existing?.bytes, 0);
    assert.equal(manager.get('existing')?.lastUsedMs, clock.now());
    assert.equal(source.openCalls('existing'), 0);
    // downloaded: fetched once, verified, stored.
    assert.equal(downloaded?.bytes, 300_000);
    assert.deepEqual(manager.get('downloaded')?.data, seededBytes(300_000, 3));
    // failed: the typed error of the image source, naming the image.
    assert.equal(failed?.error?.code, 'ERR_IMAGE_NOT_FOUND');
    assert.match(failed.error.message, /failed/);
    assert.equal(failed.error.imageId, 'failed');
  });

  it('an error that is not ours (EACCES from a touch) becomes ERR_CACHE_FAILED with the cause; reports serialise to JSON with the codes', async () => {
    const manager = new BrokenTouchManager({ host: 'compute1', source: new MemoryImageSource([]) });
    manager.put('present', Buffer.from('x'));
    const report = await cacheImages(manager, ['present']);
    const error = report.images[0]?.error;
    assert.equal(error?.code, 'ERR_CACHE_FAILED');
    assert.match(error.message, /Caching image present failed: EACCES/);
    assert.equal((error.cause as NodeJS.ErrnoException).code, 'EACCES');
    const json = JSON.parse(JSON.stringify(report)) as { images: { status: string; error: { code: string; name: string; imageId: string } }[] };
    assert.deepEqual(json.images[0]?.error, {
      name: 'CacheImageFailedError',
      code: 'ERR_CACHE_FAILED',
      message: error.message,
      imageId: 'present',
    });
  });

  it('a bad request is refused with a typed error before any image is touched', async () => {
    const source = new MemoryImageSource([{ id: 'image-1', data: Buffer.from('x') }]);
    const manager = memoryHost(source);
    await assert.rejects(cacheImages(manager, []), { code: 'ERR_INVALID_REQUEST' });
    await assert.rejects(cacheImages(manager, ['image-1', 'image-1']), (err: unknown) => {
      assert.ok(isImageCacheError(err));
      assert.equal(err.code, 'ERR_INVALID_REQUEST');
      assert.equal(err.imageId, 'image-1');
      assert.match(err.message, /image image-1 is listed more than once/);
      return true;
    });
    await assert.rejects(cacheImages(manager, ['image-1', '../etc/passwd']), { code: 'ERR_INVALID_IMAGE_ID' });
    await assert.rejects(cacheImages(manager, ['image-1'], { pinTtlSeconds: 0 }), { code: 'ERR_INVALID_CONFIG' });
    await assert.rejects(cacheImages(manager, ['image-1'], { bytesPerSecond: -1 }), { code: 'ERR_INVALID_CONFIG' });
    assert.equal(source.describeCalls('image-1'), 0);
    assert.deepEqual(manager.names(), []);
  });

  it('cancelling stops before the next image and rejects with ERR_ABORTED; images finished before stay cached', async () => {
    const source = new MemoryImageSource([
      { id: 'first', data: Buffer.from('1') },
      { id: 'second', data: Buffer.from('2') },
    ]);
    const manager = memoryHost(source);
    const controller = new AbortController();
    await assert.rejects(
      cacheImages(manager, ['first', 'second'], {
        signal: controller.signal,
        onImage: () => {
          controller.abort();
        },
      }),
      { code: 'ERR_ABORTED' },
    );
    assert.deepEqual(manager.names(), ['first']);
    assert.equal(source.describeCalls('second'), 0);
  });

  it('the per-host speed cap is applied to the download (edge sites on thin links)', async () => {
    const size = 256 * 1024;
    const source = new MemoryImageSource([
      { id: 'capped', data: seededBytes(size, 5) },
      { id: 'uncapped', data: seededBytes(size, 6) },
    ]);
    const manager = memoryHost(source);
    const capped = await cacheImages(manager, ['capped'], { bytesPerSecond: 1024 * 1024 });
    const uncapped = await cacheImages(manager, ['uncapped']);
    // 256 KiB at 1 MiB/s starting from an empty bucket: about 250 ms.
    assert.ok(capped.durationMs >= 200, `capped took ${capped.durationMs} ms`);
    assert.ok(uncapped.durationMs < 150, `uncapped took ${uncapped.durationMs} ms`);
  });
});

describe("Nova's libvirt cache_image catalogue (libvirt-file backend, real files)", () => {
  let fx: Fixture;
  beforeEach(async () => {
    fx = await makeFixture();
  });
  afterEach(() => fx.cleanup());

  it('test_cache_image_uncached / _uncached_first_time: the missing cache dir is created and the image lands at <_base>/sha1(id)', async () => {
    await assert.rejects(stat(fx.baseDir), { code: 'ENOENT' });
    const report = await cacheImages(fx.manager, ['image-1']);
    assert.equal(report.images[0]?.status, 'cached');
    const file = `${fx.baseDir}/${cacheFileName('image-1')}`;
    assert.deepEqual(await readFile(file), seededBytes(2 * 1024 * 1024, 1));
    assert.equal(fx.source.openCalls('image-1'), 1);
  });

  it('test_cache_image_existing: a cached image is touched (mtime = now), not fetched again', async () => {
    await cacheImages(fx.manager, ['image-1']);
    fx.clock.advance(DAY);
    const report = await cacheImages(fx.manager, ['image-1']);
    assert.equal(report.images[0]?.status, 'existing');
    const file = `${fx.baseDir}/${cacheFileName('image-1')}`;
    assert.equal((await stat(file)).mtimeMs, fx.clock.now());
    assert.equal(fx.source.openCalls('image-1'), 1);
  });

  it('gap A closed: a pre-cache racing a spawn of the same image in another manager (another process) downloads once', async () => {
    const spawnSide = fx.make();
    const spawnOptions: CacheImageOptions = { tolerateTouchErrors: true };
    const [precache, spawn] = await Promise.all([cacheImages(fx.manager, ['image-1', 'image-2']), spawnSide.cacheImage('image-1', spawnOptions)]);
    assert.deepEqual(
      [precache.images[0]?.status, spawn.status].sort(),
      ['cached', 'existing'],
    );
    assert.equal(fx.source.openCalls('image-1'), 1);
    assert.equal(precache.images[1]?.status, 'cached');
  });

  it('a pinned pre-cached image survives a pass 2 days later and a restart, and goes once the pin expires; an unpinned one goes after 2 days', async () => {
    const pinTtlSeconds = 3 * DAY;
    const report = await cacheImages(fx.manager, ['image-1'], { pinTtlSeconds });
    await cacheImages(fx.manager, ['image-2']);
    assert.equal(report.images[0]?.pinnedUntil, fx.clock.now() + pinTtlSeconds * 1000);

    fx.clock.advance(2 * DAY);
    const restarted = fx.make();
    const pass = await restarted.update([]);
    assert.equal(pass.kept.find((entry) => entry.name === cacheFileName('image-1'))?.reason, 'pinned');
    // Nova's behaviour without a pin: unused for more than 24 h, removed.
    assert.deepEqual(pass.removed.map((entry) => entry.name), [cacheFileName('image-2')]);

    fx.clock.advance(DAY + 1);
    const later = await fx.make().update([]);
    assert.deepEqual(later.removed.map((entry) => entry.name), [cacheFileName('image-1')]);
  });
});
