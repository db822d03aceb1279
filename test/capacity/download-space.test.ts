// Room before a download (Ironic's statvfs check and reclaim, which Nova lacks): the free space is
// checked for the image plus the reserve, unused entries are reclaimed by the same policy, and an
// image that still does not fit fails with DiskFullError before a byte is written. A write that
// hits ENOSPC anyway (another process filled the disk) fails the same way, and in every case
// nothing is left behind: no staging file, no final file (Ironic 8c93d7df8: a stale `.part` after
// a full disk blocked later deployments). Real HTTP (startFakeGlance), a real 16 MiB tmpfs.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import type { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { statfsProbe } from '../../src/capacity/statfs.js';
import type { FilesystemProbe } from '../../src/capacity/statfs.js';
import { DiskFullError, isImageCacheError } from '../../src/errors.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import { startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';
import { mountTmpfs } from '../helpers/tmpfs.js';
import type { Tmpfs } from '../helpers/tmpfs.js';
import { DAY, MiB, collectEvictions, fixtures, fp, makeCapacityFixture, sourceOf, virtualDisk } from './fixture.js';
import type { CapacityFixture } from './fixture.js';

function isDiskFull(err: unknown): err is DiskFullError {
  return isImageCacheError(err) && err.code === 'ERR_DISK_FULL' && err instanceof DiskFullError;
}

describe('room before a download, on a real 16 MiB tmpfs', () => {
  let glance: FakeGlance;
  let mount: Tmpfs | undefined;
  let f: CapacityFixture | undefined;
  beforeEach(async () => {
    glance = await startFakeGlance({
      images: [
        { id: 'img-a', content: { size: 4 * MiB, seed: 1 } },
        { id: 'img-b', content: { size: 4 * MiB, seed: 2 } },
        { id: 'img-c', content: { size: 4 * MiB, seed: 3 } },
        { id: 'img-d', content: { size: 5 * MiB, seed: 4 } },
        { id: 'img-huge', content: { size: 20 * MiB, seed: 5 } },
        { id: 'img-overflow', content: { size: 24 * MiB, seed: 6 } },
      ],
    });
  });
  afterEach(async () => {
    await f?.cleanup();
    await mount?.cleanup();
    await glance.close();
    f = mount = undefined;
  });

  async function setUp(t: TestContext): Promise<CapacityFixture | undefined> {
    mount = await mountTmpfs(t, 16 * MiB);
    if (mount === undefined) return undefined;
    f = await makeCapacityFixture(new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1, retries: 1 }), {
      instancesPath: mount.dir,
      defaults: { removeUnusedOriginalMinimumAgeSeconds: 3600 },
    });
    return f;
  }

  /** The tmpfs cache with img-a, img-b, img-c (4 MiB each, last used 3, 2 and 1 h ago): 4 MiB left. */
  async function filledCache(t: TestContext): Promise<{ fx: CapacityFixture; manager: LibvirtFileImageManager } | undefined> {
    const fx = await setUp(t);
    if (fx === undefined) return undefined;
    const manager = fx.make();
    await fx.cacheAt(manager, 'img-a', 3 * 3600);
    await fx.cacheAt(manager, 'img-b', 2 * 3600);
    await fx.cacheAt(manager, 'img-c', 1 * 3600);
    return { fx, manager };
  }

  it('reclaims the LRU unused entry for an image that does not fit, keeping the in-use and pinned ones', async (t) => {
    const filled = await filledCache(t);
    if (filled === undefined) return;
    const { fx, manager } = filled;
    fx.use('img-b');
    await manager.pinImage('img-c', DAY);
    const evicted = collectEvictions(manager);
    const result = await manager.cacheImage('img-d');
    assert.equal(result.status, 'cached');
    assert.deepEqual(evicted.map((e) => [e.name, e.reason, e.trigger]), [[fp('img-a'), 'reclaim', 'download']]);
    assert.match(evicted[0]?.detail ?? '', /image img-d needs \d+ bytes free/);
    assert.deepEqual(await fx.files(), [fp('img-b'), fp('img-c'), fp('img-d')].sort());
    assert.equal(glance.requests('img-d').file, 1);
  });

  it('DiskFullError before a byte is written when reclaiming cannot help; nothing is left behind', async (t) => {
    const filled = await filledCache(t);
    if (filled === undefined) return;
    const { fx, manager } = filled;
    fx.use('img-a');
    fx.use('img-b');
    fx.use('img-c');
    const error = await manager.cacheImage('img-d').then(
      () => assert.fail('img-d cannot fit'),
      (err: unknown) => err,
    );
    assert.ok(isDiskFull(error), String(error));
    assert.equal(error.imageId, 'img-d');
    assert.equal(error.required, 5 * MiB);
    assert.ok(error.available < 5 * MiB);
    assert.match(error.message, /img-d/);
    assert.equal(glance.requests('img-d').file, 0, 'the image data was never requested');
    assert.deepEqual(await fx.files(), [fp('img-a'), fp('img-b'), fp('img-c')].sort(), 'no staging file, no final file, nothing evicted');
    assert.equal(manager.getStats().diskFullFailures, 1);
  });

  it('an image larger than the whole disk fails up front (no listInstances needed), with nothing written', async (t) => {
    const fx = await setUp(t);
    if (fx === undefined) return;
    const manager = fx.make({ withLister: false });
    await assert.rejects(manager.cacheImage('img-huge'), isDiskFull);
    assert.equal(glance.requests('img-huge').file, 0);
    assert.deepEqual(await fx.files(), []);
  });

  it('a real ENOSPC mid-download (the free-space check lied to) gives DiskFullError and leaves nothing behind', async (t) => {
    const fx = await setUp(t);
    if (fx === undefined) return;
    const lyingProbe: FilesystemProbe = () => Promise.resolve({ totalBytes: 1024 * 1024 * MiB, freeBytes: 1024 * 1024 * MiB });
    const manager = fx.make({ filesystemProbe: lyingProbe });
    const error = await manager.cacheImage('img-overflow').then(
      () => assert.fail('24 MiB cannot fit in 16 MiB'),
      (err: unknown) => err,
    );
    assert.ok(isDiskFull(error), String(error));
    assert.equal((error.cause as NodeJS.ErrnoException | undefined)?.code, 'ENOSPC', 'the write really hit ENOSPC');
    assert.equal(error.imageId, 'img-overflow');
    assert.ok(glance.bytesServed('img-overflow') > 8 * MiB, 'bytes really were written before the disk filled');
    assert.deepEqual(await fx.files(), [], 'no staging file, no final file');
    const free = await statfsProbe(fx.instancesPath);
    assert.ok(free.freeBytes > 15 * MiB, `the space was given back (${free.freeBytes} bytes free)`);
    // The cache works again at once.
    assert.equal((await manager.cacheImage('img-a')).status, 'cached');
  });
});

describe('room before a download, through an injected statfs', () => {
  const fixture = fixtures();

  /** A disk with `free` bytes free. */
  function diskWithFree(free: number): FilesystemProbe {
    return () => Promise.resolve({ totalBytes: 100 * MiB, freeBytes: free, location: 'test-disk' });
  }

  it('downloadReserveBytes: the image must fit with the reserve left over', async () => {
    const source = sourceOf(1, 6 * MiB);
    const f = await fixture(source);
    const tight = f.make({ filesystemProbe: diskWithFree(10 * MiB), downloadReserveBytes: 5 * MiB });
    await assert.rejects(tight.cacheImage('img-1'), (err: unknown) => isDiskFull(err) && err.required === 11 * MiB && err.location === 'test-disk');
    assert.equal(source.openCalls('img-1'), 0);
    const roomy = f.make({ filesystemProbe: diskWithFree(10 * MiB), downloadReserveBytes: 4 * MiB });
    assert.equal((await roomy.cacheImage('img-1')).status, 'cached');
  });

  it('without listInstances nothing can be proven unused: no reclaim, DiskFullError, and the old entry stays', async () => {
    const source = sourceOf(2, 4 * MiB);
    const f = await fixture(source);
    await f.cacheAt(f.make(), 'img-1', 10 * DAY);
    const manager = f.make({ withLister: false, filesystemProbe: diskWithFree(3 * MiB) });
    await assert.rejects(manager.cacheImage('img-2'), isDiskFull);
    assert.deepEqual(await f.files(), [fp('img-1')]);
    assert.equal(source.openCalls('img-2'), 0);
  });

  it('two concurrent downloads that each fit but not together: one is refused before it writes a byte', async () => {
    const source = sourceOf(2, 6 * MiB);
    const f = await fixture(source);
    const manager = f.make({ withLister: false, filesystemProbe: virtualDisk(f, 20 * MiB, { bytes: 10 * MiB }) });
    const results = await Promise.allSettled([manager.cacheImage('img-1'), manager.cacheImage('img-2')]);
    const refused = results.flatMap((r, i) => (r.status === 'rejected' ? [i + 1] : []));
    assert.equal(refused.length, 1, 'exactly one is refused');
    const loser = `img-${refused[0] ?? 0}`;
    assert.ok(results.some((r) => r.status === 'rejected' && isDiskFull(r.reason)));
    assert.equal(source.openCalls(loser), 0, 'the refused download never started');
    assert.deepEqual(await f.files(), [fp(refused[0] === 1 ? 'img-2' : 'img-1')]);
  });
});
