// The blueprint's "downloading" handler (Nova's only way), the default: templates come through the
// verified fetch pipeline; init() after a restart removes staging leftovers whose writer is dead,
// and keeps the ones a live download (in another process) still holds the lock of.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { LibvirtFileImageManager, isImageCacheError, resolveImageCacheOptions } from '../../src/index.js';
import { DownloadingHandler } from '../../src/handlers/downloading-handler.js';
import { MemoryImageSource } from '../../src/testing/index.js';
import { startChild, waitForLine } from '../helpers/child.js';
import { listDir, makeTempDir, seededBytes } from '../helpers/tmp.js';

describe('DownloadingHandler', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let manager: LibvirtFileImageManager;
  let source: MemoryImageSource;
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-download-handler-'));
    source = new MemoryImageSource([{ id: 'image-1', data: seededBytes(100_000, 1) }, { id: 'image-2', data: seededBytes(10, 2) }]);
    manager = new LibvirtFileImageManager({ host: 'host1', instancesPath: dir, source, lockStaleMs: 2000 });
  });
  afterEach(async () => {
    await cleanup();
  });

  it('is the default handler, and the one way images enter the cache', async () => {
    assert.ok(manager.templateImageHandler instanceof DownloadingHandler);
    assert.equal(manager.templateImageHandler.kind, 'download');
    const fetched = await manager.templateImageHandler.fetchImage('image-1');
    assert.equal(fetched.status, 'cached');
    assert.equal((await manager.cacheImage('image-1')).status, 'existing');
    assert.equal(source.openCalls('image-1'), 1);
  });

  it('init() removes staging leftovers of dead writers and keeps the one whose lock another process holds', async () => {
    await manager.cacheImage('image-2');
    const dead = `${path.basename(manager.cachePathFor('image-1'))}.999-dead.staging`;
    const live = `${path.basename(manager.cachePathFor('image-2'))}.888-live.staging`;
    await writeFile(path.join(manager.baseDir, dead), 'x');
    await writeFile(path.join(manager.baseDir, live), 'y');
    const holder = startChild('lock-holder.ts', { lockDir: manager.lockDir, name: path.basename(manager.cachePathFor('image-2')), staleMs: 10_000 });
    try {
      await waitForLine(holder, 'LOCKED');
      const report = await manager.templateImageHandler.init();
      assert.deepEqual(report.removedStaging, [dead]);
      assert.deepEqual(report.busyStaging, [live]);
      assert.deepEqual(report.failures, []);
      assert.equal(report.links, null);
      assert.ok((await listDir(manager.baseDir)).includes(live));
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it("init()'s removals are the manager's: counted in getStats() and emitted as removed", async () => {
    await manager.cacheImage('image-2');
    const dead = `${path.basename(manager.cachePathFor('image-1'))}.999-dead.staging`;
    await writeFile(path.join(manager.baseDir, dead), 'x');
    const emitted: string[] = [];
    manager.on('removed', (removed) => emitted.push(`${removed.name} ${removed.kind} ${removed.reason}`));
    const report = await manager.templateImageHandler.init();
    assert.deepEqual(report.removedStaging, [dead]);
    assert.deepEqual(emitted, [`${dead} staging stale-staging`]);
    assert.equal(manager.getStats().removals['stale-staging'].count, 1);
  });

  it('removeImage removes a template under its lock, and validates the id', async () => {
    await manager.cacheImage('image-1');
    assert.equal(await manager.templateImageHandler.removeImage('image-1'), true);
    assert.deepEqual(await listDir(manager.baseDir), []);
    await assert.rejects(manager.templateImageHandler.removeImage('../etc'), { code: 'ERR_INVALID_IMAGE_ID' });
  });
});

describe('templateImageHandler options', () => {
  it("default 'download', no store, size verification", () => {
    const options = resolveImageCacheOptions();
    assert.deepEqual(
      [options.templateImageHandler, options.templateImageStorePath, options.templateImageLinkVerification],
      ['download', null, 'size'],
    );
  });

  const bad: [Record<string, unknown>, string][] = [
    [{ templateImageHandler: 'copy' }, 'templateImageHandler'],
    [{ templateImageHandler: 'link' }, 'templateImageStorePath'],
    [{ templateImageHandler: 'link', templateImageStorePath: 'relative/store' }, 'templateImageStorePath'],
    [{ templateImageStorePath: 42 }, 'templateImageStorePath'],
    [{ templateImageLinkVerification: 'md5' }, 'templateImageLinkVerification'],
  ];
  for (const [options, option] of bad) {
    it(`rejects ${JSON.stringify(options)} naming ${option}`, () => {
      assert.throws(() => resolveImageCacheOptions(options), (err) => isImageCacheError(err) && err.code === 'ERR_INVALID_CONFIG' && (err as { option?: string }).option === option);
    });
  }

  it("'link' with an absolute store path is accepted", () => {
    assert.equal(resolveImageCacheOptions({ templateImageHandler: 'link', templateImageStorePath: '/var/lib/glance/images' }).templateImageHandler, 'link');
  });
});
