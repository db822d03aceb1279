// Testing a virt driver with virt-imagecache's fakes: a real loopback Glance with fault knobs, an
// in-memory cache manager and a manual clock. Run it as a test file:
//   node --import tsx --test examples/testing-a-driver.ts
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { GlanceImageSource, isImageCacheError } from 'virt-imagecache';
import type { ImageManager } from 'virt-imagecache';
import { ManualClock, MemoryImageManager, startFakeGlance } from 'virt-imagecache/testing';
import type { FakeGlance } from 'virt-imagecache/testing';

// The code under test: a (very) small driver whose spawn caches the image first and maps cache
// errors to instance states, as a real driver maps them to Nova's instance faults.
class TinyDriver {
  readonly states = new Map<string, string>();
  constructor(private readonly images: ImageManager) {}

  async spawn(uuid: string, imageId: string): Promise<void> {
    try {
      await this.images.cacheImage(imageId, { tolerateTouchErrors: true });
      this.states.set(uuid, 'active');
    } catch (error) {
      if (!isImageCacheError(error)) throw error;
      this.states.set(uuid, `error:${error.code}`);
    }
  }
}

const IMAGE = '0f4e8a2c-6b1d-4e3f-9a7c-5d2b8e1f4a6c';

describe('TinyDriver.spawn', () => {
  let glance: FakeGlance;
  let clock: ManualClock;
  let images: MemoryImageManager;

  before(async () => {
    glance = await startFakeGlance({ images: [{ id: IMAGE, content: new Uint8Array(4096).fill(7) }] });
    clock = new ManualClock();
    images = new MemoryImageManager({ host: 'test-host', source: new GlanceImageSource({ endpoint: glance.url, retries: 1 }), clock });
  });
  after(() => glance.close());

  it('downloads an image once for any number of spawns', async () => {
    await Promise.all(['a', 'b', 'c'].map((uuid) => new TinyDriver(images).spawn(uuid, IMAGE)));
    assert.equal(glance.requests(IMAGE).file, 1);
  });

  it('puts the instance in error when Glance serves a corrupt image, and caches nothing', async () => {
    const BAD = '9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b';
    glance.addImage({ id: BAD, content: new Uint8Array(4096), faults: { wrongChecksum: true } });
    const driver = new TinyDriver(images);
    await driver.spawn('d', BAD);
    assert.equal(driver.states.get('d'), 'error:ERR_CHECKSUM_MISMATCH');
    assert.deepEqual(images.names(), [IMAGE]);
  });

  it('lets the cache pass remove the image a day after its last instance is gone (manual clock, no sleeping)', async () => {
    clock.advance(86_400 + 1);
    const report = await images.update([]);
    assert.equal(report.removed.length, 1);
  });
});
