// An image id is checked once per call, at the public entry point the caller used: a spawn checks
// its id once whether the image was cached or had to be downloaded (through the real Glance client
// against the fake Glance), and every entry point it passes through on the way still checks an id
// a user hands it directly. The checks are counted on the diagnostics channel they are published on.
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { vouchFor } from '../../src/image-id.js';
import type { ImageId } from '../../src/image-id.js';
import { GlanceImageSource, LibvirtFileImageManager, LocalDiskImageManager, isImageCacheError } from '../../src/index.js';
import type { LibvirtFileImageManagerOptions } from '../../src/index.js';
import { FakeVolumeGroup, startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { makeTempDir, seededBytes } from '../helpers/tmp.js';

const IMAGE = 'aa11bb22-cc33-4d44-8e55-ff6677889900';
const DATA = seededBytes(2 * 1024 * 1024 + 5, 3);
const CHANNEL = 'virt-imagecache:image-id-check';

/** Counts the checks of `imageId` while `run` runs. */
async function checksDuring(imageId: string, run: () => Promise<unknown>): Promise<number> {
  let count = 0;
  const onCheck = (message: unknown): void => {
    if ((message as { imageId: unknown }).imageId === imageId) count += 1;
  };
  subscribe(CHANNEL, onCheck);
  try {
    await run();
  } finally {
    unsubscribe(CHANNEL, onCheck);
  }
  return count;
}

const isInvalidId = (err: unknown): boolean => isImageCacheError(err) && err.code === 'ERR_INVALID_IMAGE_ID';

describe('image id checks: once per call, at the entry point', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let glance: FakeGlance;
  let instancesPath: string;
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-id-checks-'));
    instancesPath = path.join(dir, 'instances');
    glance = await startFakeGlance({ images: [{ id: IMAGE, content: DATA }] });
  });
  afterEach(() => Promise.all([glance.close(), cleanup()]));

  const libvirt = (extra: Partial<LibvirtFileImageManagerOptions> = {}): LibvirtFileImageManager =>
    new LibvirtFileImageManager({ host: 'host1', instancesPath, source: new GlanceImageSource({ endpoint: glance.url }), ...extra });
  const spawn = (manager: LibvirtFileImageManager, name: string) => () =>
    manager.createInstanceDisk({ imageId: IMAGE, instanceDir: path.join(instancesPath, name) });

  it('a spawn that downloads its image checks the id once; a spawn on the cached image, once', async () => {
    const manager = libvirt();
    assert.equal(await checksDuring(IMAGE, spawn(manager, 'u1')), 1, 'uncached spawn');
    assert.equal(glance.requests(IMAGE).file, 1, 'the image was downloaded');
    assert.equal(await checksDuring(IMAGE, spawn(manager, 'u2')), 1, 'cached spawn');
  });

  it('a spawn whose image is linked from the image store checks the id once', async () => {
    const store = path.join(dir, 'store');
    await mkdir(store);
    await writeFile(path.join(store, IMAGE), DATA);
    const manager = libvirt({ templateImageHandler: 'link', templateImageStorePath: store });
    assert.equal(await checksDuring(IMAGE, spawn(manager, 'u1')), 1);
    assert.equal(glance.requests(IMAGE).file, 0, 'linked, not downloaded');
  });

  it('a volume-group spawn checks the id once, uncached and cached', async () => {
    const manager = new LocalDiskImageManager({ host: 'host1', volumeGroup: new FakeVolumeGroup(), source: new GlanceImageSource({ endpoint: glance.url }) });
    const spawnVm = (uuid: string) => () => manager.createInstanceDisk({ imageId: IMAGE, instance: { uuid, name: `vm-${uuid}` } });
    assert.equal(await checksDuring(IMAGE, spawnVm('u1')), 1, 'uncached spawn');
    assert.equal(glance.requests(IMAGE).file, 1, 'the image was downloaded');
    assert.equal(await checksDuring(IMAGE, spawnVm('u2')), 1, 'cached spawn');
  });

  it('caching an image checks the id once', async () => {
    const manager = libvirt();
    assert.equal(await checksDuring(IMAGE, () => manager.cacheImage(IMAGE)), 1);
  });

  it('every entry point a spawn passes through still refuses a bad id handed to it directly', async () => {
    const manager = libvirt();
    const source = new GlanceImageSource({ endpoint: glance.url });
    for (const bad of ['../escape', 'a/b', '']) {
      await assert.rejects(() => manager.createInstanceDisk({ imageId: bad, instanceDir: path.join(instancesPath, 'x') }), isInvalidId);
      await assert.rejects(() => manager.cacheImage(bad), isInvalidId);
      assert.throws(() => manager.cachePathFor(bad), isInvalidId);
      // Throws before it returns a promise, as it always did: wrapped so either way counts.
      await assert.rejects(async () => manager.templateImageHandler.fetchImage(bad), isInvalidId);
      await assert.rejects(() => source.describe(bad), isInvalidId);
      await assert.rejects(() => source.openReader(bad), isInvalidId);
    }
    assert.deepEqual(glance.requests('../escape'), { metadata: 0, file: 0 });
  });

  it('options vouched for one id do not let another id through', async () => {
    const source = new GlanceImageSource({ endpoint: glance.url });
    const options = vouchFor(IMAGE as ImageId, {});
    await assert.rejects(source.describe('../escape', options), isInvalidId);
    assert.equal(await checksDuring(IMAGE, () => source.describe(IMAGE, options)), 0, 'the vouched id itself is not checked again');
  });
});
