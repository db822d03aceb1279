// What a backend may leave out: a backend of only the three abstract members (getBase,
// scanBaseImages, fetchTargetFor) still runs the inherited pass, safely. The primitives it lacks
// refuse with UnsupportedError, which the pass reports as failures: nothing is ever deleted through
// a default. The hooks' defaults (disk usage, which entries an image keeps) work from the scan, and
// the base builds the locks and pins from the lock directory and pin file a backend names.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ImageManager, isImageCacheError } from '../../src/index.js';
import { fileFetchTarget } from '../../src/backend-kit/index.js';
import type { BaseImageScan, CacheEntry, FetchTarget, ImageManagerOptions, StoreFiles } from '../../src/index.js';
import { ManualClock } from '../../src/testing/index.js';
import { makeTempDir } from '../helpers/tmp.js';

const DAY = 86_400;

/** A read-only listing: one old entry per image, nothing else implemented. */
class ListingOnly extends ImageManager<readonly CacheEntry[]> {
  readonly #entries: readonly CacheEntry[];

  constructor(options: ImageManagerOptions, entries: readonly CacheEntry[], store?: StoreFiles) {
    super(options, store, 'listing-only');
    this.#entries = entries;
  }

  getBase(): Promise<readonly CacheEntry[]> {
    return Promise.resolve(this.#entries);
  }

  scanBaseImages(base: readonly CacheEntry[]): Promise<BaseImageScan> {
    return Promise.resolve({ entries: base, staging: [] });
  }

  protected fetchTargetFor(imageId: string): FetchTarget {
    return fileFetchTarget(imageId, path.join('/nonexistent', imageId));
  }
}

describe('a backend of the three abstract members only', () => {
  let clock: ManualClock;
  let entries: CacheEntry[];
  beforeEach(() => {
    clock = new ManualClock(1_700_000_000_000);
    const old = clock.now() - 3 * DAY * 1000;
    entries = [
      { name: 'a', kind: 'original', imageId: 'img-a', sizeBytes: 100, lastUsedMs: old },
      { name: 'b', kind: 'original', imageId: 'img-b', sizeBytes: 20, lastUsedMs: old },
    ];
  });

  it('reports the refused touch and removal as failures of the pass, and removes nothing', async () => {
    const manager = new ListingOnly({ host: 'h1', clock }, entries);
    const removed: string[] = [];
    manager.on('removed', (entry) => removed.push(entry.name));
    const report = await manager.update([{ uuid: 'u1', name: 'vm1', host: 'h1', imageRef: 'img-a' }]);
    // The default entryNamesForImage finds `a` by the image id the scan recorded.
    assert.deepEqual(report.active, ['a']);
    assert.deepEqual(report.removed, []);
    assert.deepEqual(removed, []);
    assert.deepEqual(
      report.failures.map((failure) => [failure.name, failure.operation, isImageCacheError(failure.error) ? failure.error.code : String(failure.error)]),
      [
        ['a', 'touch', 'ERR_UNSUPPORTED'],
        ['b', 'stat', 'ERR_UNSUPPORTED'],
      ],
    );
    assert.equal(manager.getStats().removals.unused.count, 0);
  });

  it('inherits the disk usage (the scanned sizes) and has an image cache', async () => {
    const manager = new ListingOnly({ host: 'h1', clock }, entries);
    assert.equal(await manager.getDiskUsage(), 120);
    assert.equal(manager.hasImageCache, true);
  });

  describe('with the store files it names', () => {
    let dir: string;
    let cleanup: () => Promise<void>;
    beforeEach(async () => {
      ({ dir, cleanup } = await makeTempDir('vic-store-defaults-'));
    });
    afterEach(async () => {
      await cleanup();
    });

    it('keeps its pins in the pin file, so a new manager on the same files sees them', async () => {
      const store = { lockDir: path.join(dir, 'locks'), pinFile: path.join(dir, 'pins.json') };
      const first = new ListingOnly({ host: 'h1', clock }, entries, store);
      const untilMs = await first.pinImage('img-b', 3600);
      assert.match(await readFile(store.pinFile, 'utf8'), /img-b/);
      const second = new ListingOnly({ host: 'h1', clock }, entries, store);
      assert.deepEqual(await second.listPins(), new Map([['img-b', untilMs]]));
    });

    it('rejects a missing host and bad options with their typed errors', () => {
      const store = { lockDir: path.join(dir, 'locks'), pinFile: path.join(dir, 'pins.json') };
      assert.throws(() => new ListingOnly({ host: '', clock }, entries, store), { code: 'ERR_UNSUPPORTED' });
      assert.throws(() => new ListingOnly({ host: 'h1', clock, lockStaleMs: -1 }, entries, store), { code: 'ERR_INVALID_CONFIG' });
    });
  });
});
