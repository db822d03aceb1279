// The no-op backend (nova-powervm's SSP adapter, rbd): no image cache (has_imagecache False), a pass
// that does nothing, pre-caching answered `unsupported`, and instance disks made by a storage-level
// linked clone when the hook can, else streamed and verified into the disk the driver opens.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { GlanceImageSource, NoopImageManager, UnsupportedError, isImageCacheError } from '../../src/index.js';
import { FileStagingSink } from '../../src/fetch/staging.js';
import type { StagingSink } from '../../src/index.js';
import { startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { listDir, makeTempDir, seededBytes } from '../helpers/tmp.js';

const IMAGE = '5a1e0000-0000-4000-8000-000000000001';
const DATA = seededBytes(300_000, 11);

describe('NoopImageManager', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let glance: FakeGlance;
  let source: GlanceImageSource;
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-noop-'));
    glance = await startFakeGlance({ images: [{ id: IMAGE, name: 'rhel', content: DATA }] });
    source = new GlanceImageSource({ endpoint: glance.url });
  });
  afterEach(async () => {
    await glance.close();
    await cleanup();
  });

  it('test_capabilities (SSP): has_imagecache is false, nothing is cached, disk usage is 0', async () => {
    const manager = new NoopImageManager({ host: 'host1', source });
    assert.equal(manager.hasImageCache, false);
    assert.deepEqual(await manager.scanBaseImages(), { entries: [], staging: [] });
    assert.equal(await manager.getDiskUsage(), 0);
  });

  it('update() does nothing and reports it: no instances are listed, nothing removed', async () => {
    let listed = 0;
    const manager = new NoopImageManager({
      host: 'host1',
      source,
      listInstances: () => {
        listed += 1;
        return [];
      },
    });
    const report = await manager.update();
    assert.equal(report.skipped, 'no-base');
    assert.deepEqual([report.active, report.removed, report.kept, report.failures], [[], [], [], []]);
    assert.equal(listed, 0);
  });

  it('cacheImage rejects with the typed UnsupportedError (ERR_UNSUPPORTED): Nova\u2019s pre-caching reports `unsupported`', async () => {
    const manager = new NoopImageManager({ host: 'host1', source });
    await assert.rejects(manager.cacheImage(IMAGE), (err) => err instanceof UnsupportedError && err.code === 'ERR_UNSUPPORTED' && err.imageId === IMAGE);
    await assert.rejects(manager.cacheImage('../x'), { code: 'ERR_INVALID_IMAGE_ID' });
    assert.equal(glance.requests(IMAGE).file, 0);
  });

  it('SSP test_create_disk_from_image: the linked clone hook fills the image LU once, then every disk is a clone of it', async () => {
    const imageLus = new Map<string, Buffer>();
    const clones: string[] = [];
    const manager = new NoopImageManager({
      host: 'host1',
      source,
      linkedClone: async ({ info, instanceUuid, download }) => {
        // pypowervm's get_or_upload_image_lu: the LU is named after the image name and checksum.
        const lu = `image_${info.name ?? ''}_${info.checksum ?? ''}`;
        if (!imageLus.has(lu)) {
          const parts: Buffer[] = [];
          const sink: StagingSink = {
            write: (chunk) => {
              parts.push(Buffer.from(chunk));
              return Promise.resolve();
            },
            commit: () => {
              imageLus.set(lu, Buffer.concat(parts));
              return Promise.resolve();
            },
            discard: () => Promise.resolve(),
          };
          await download(sink);
        }
        clones.push(`boot_${instanceUuid}`);
        return `boot_${instanceUuid}`;
      },
    });
    const first = await manager.createInstanceDisk({ imageId: IMAGE, instanceUuid: 'u1' });
    const second = await manager.createInstanceDisk({ imageId: IMAGE, instanceUuid: 'u2' });
    assert.deepEqual([first.method, first.disk, second.disk], ['linked-clone', 'boot_u1', 'boot_u2']);
    assert.equal(glance.requests(IMAGE).file, 1, 'the image was read once, into the image LU');
    assert.deepEqual([...imageLus.values()], [DATA]);
  });

  it('when the hook declines (or there is none), the image is streamed, verified, into the disk the driver opens', async () => {
    const opened: string[] = [];
    const manager = new NoopImageManager({
      host: 'host1',
      source,
      linkedClone: () => Promise.resolve(null),
      openInstanceDisk: (request) => {
        opened.push(request.instanceUuid);
        return FileStagingSink.create(path.join(dir, `${request.instanceUuid}.disk`), request.imageId);
      },
    });
    const result = await manager.createInstanceDisk({ imageId: IMAGE, instanceUuid: 'u1' });
    assert.equal(result.method, 'copy');
    assert.equal(result.bytes, DATA.length);
    assert.ok(result.digest !== null, 'verified against the published digest');
    assert.deepEqual(await readFile(path.join(dir, 'u1.disk')), DATA);
    assert.deepEqual(opened, ['u1']);
  });

  it('a copy that fails verification leaves no disk; with neither hook nor disk opener the answer is typed', async () => {
    glance.setFaults(IMAGE, { wrongChecksum: true });
    const manager = new NoopImageManager({
      host: 'host1',
      source,
      openInstanceDisk: (request) => FileStagingSink.create(path.join(dir, 'bad.disk'), request.imageId),
    });
    await assert.rejects(manager.createInstanceDisk({ imageId: IMAGE, instanceUuid: 'u1' }), { code: 'ERR_CHECKSUM_MISMATCH' });
    assert.deepEqual(await listDir(dir), [], 'no disk, no staging file');
    const bare = new NoopImageManager({ host: 'host1', source });
    glance.setFaults(IMAGE, {});
    await assert.rejects(bare.createInstanceDisk({ imageId: IMAGE, instanceUuid: 'u1' }), (err) => isImageCacheError(err) && err.code === 'ERR_UNSUPPORTED');
  });
});
