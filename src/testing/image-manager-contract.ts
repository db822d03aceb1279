/**
 * The ImageManager contract suite, shipped so that a driver author's own backend runs the very
 * tests ours run: the template methods (the pass, the verified single-flight fill) are the same
 * code every backend inherits, and each backend's primitives must make them behave alike.
 *
 * @module
 */
import assert from 'node:assert/strict';
import * as nodeTest from 'node:test';
import type { RemovedEntry, PassReport } from '../cache-entry.js';
import { isImageCacheError } from '../errors.js';
import type { ImageManager } from '../manager.js';
import type { ContractBackend, ContractHarness, ContractTestFunctions } from './contract-backend.js';
import { generatedImageBytes } from './fake-glance.js';
import { ManualClock } from './manual-clock.js';
import { MemoryImageSource } from './memory-image-source.js';

const DAY = 86400;

const NODE_TEST: ContractTestFunctions = {
  describe: (name, fn) => nodeTest.describe(name, fn),
  it: (name, fn) => nodeTest.it(name, fn),
  beforeEach: (fn) => {
    nodeTest.beforeEach(fn);
  },
  afterEach: (fn) => {
    nodeTest.afterEach(fn);
  },
  // Declared skipped, not skipped from inside: node:test runs no afterEach for a test that skips
  // itself, which would leave the setup's temp dir behind.
  skip: (name, reason) => nodeTest.it(name, { skip: reason }, () => undefined),
};

type Acquire = (name: string, options?: unknown) => Promise<{ release(): Promise<void> }>;

/** The manager's per-entry lock manager (protected: the suite plays a spawn holding a lock). */
function locksOf(manager: ImageManager): { acquire: Acquire } {
  return (manager as unknown as { locks: { acquire: Acquire } }).locks;
}

/**
 * Declares the ImageManager contract suite for `backend`: one `describe` named
 * `ImageManager contract (<name>)` with a test per rule (cacheImage fills once and touches, failures
 * are typed, a pass touches what is in use and removes only old unused entries, minimum ages,
 * `removeUnusedBaseImages`, other hosts' instances, swap and ephemeral bases, `listInstances`,
 * the `pass` event, the age re-checked under the entry's lock).
 *
 * @param backend - how to set up the backend under test; see {@link ContractBackend}
 * @param test - the test functions to register with (node:test's by default)
 *
 * @example
 * ```ts
 * // test/contract.test.ts, run with `node --test`
 * import { describeImageManagerContract } from 'virt-imagecache/testing';
 *
 * describeImageManagerContract({
 *   name: 'my-backend',
 *   kinds: new Set(),
 *   startsWithoutBase: true,
 *   async setup(clock, source) {
 *     const manager = new MyImageManager({ host: 'host1', source, clock });
 *     return { manager, make: (extra) => new MyImageManager({ host: 'host1', source, clock, ...extra }), ... };
 *   },
 * });
 * ```
 */
export function describeImageManagerContract(backend: ContractBackend, test: ContractTestFunctions = NODE_TEST): void {
  const { describe, it, beforeEach, afterEach } = test;
  /** A test that applies only when `applies`; otherwise skipped (or left out) with `reason`. */
  const itIf = (applies: boolean, reason: string, name: string, fn: () => Promise<void>): void => {
    if (applies) it(name, fn);
    else test.skip?.(name, reason);
  };

  describe(`ImageManager contract (${backend.name})`, () => {
    let clock: ManualClock;
    let source: MemoryImageSource;
    let h: ContractHarness;
    let img1: string;
    let img2: string;

    beforeEach(async () => {
      clock = new ManualClock(1_700_000_000_000);
      source = new MemoryImageSource([
        { id: 'img-1', data: generatedImageBytes({ size: 100_000, seed: 1 }) },
        { id: 'img-2', data: generatedImageBytes({ size: 50_000, seed: 2 }) },
      ]);
      h = await backend.setup(clock, source);
      img1 = h.entryName('img-1');
      img2 = h.entryName('img-2');
    });
    afterEach(async () => {
      await h.cleanup();
    });

    it('has an image cache', () => {
      assert.equal(h.manager.hasImageCache, true);
    });

    it('cacheImage downloads once (cached), then finds it (existing) and touches it', async () => {
      const first = await h.manager.cacheImage('img-1');
      assert.equal(first.status, 'cached');
      assert.equal(first.bytes, 100_000);
      assert.equal(first.name, img1);
      assert.deepEqual(await h.read(img1, 100_000), generatedImageBytes({ size: 100_000, seed: 1 }));
      clock.advance(3600);
      const second = await h.manager.cacheImage('img-1');
      assert.equal(second.status, 'existing');
      assert.equal(await h.lastUsed(img1), clock.now(), 'touched');
      assert.equal(source.openCalls('img-1'), 1);
    });

    it('cacheImage failures are typed: unknown image, bad id', async () => {
      await assert.rejects(h.manager.cacheImage('nope'), (err) => isImageCacheError(err) && err.code === 'ERR_IMAGE_NOT_FOUND');
      await assert.rejects(h.manager.cacheImage('../x'), (err) => isImageCacheError(err) && err.code === 'ERR_INVALID_IMAGE_ID');
      assert.deepEqual(await h.names(), []);
    });

    it('test_verify_base_images_no_base: a pass with no cache yet does nothing', async () => {
      const report = await h.manager.update([]);
      assert.equal(report.skipped, backend.startsWithoutBase ? 'no-base' : null);
      assert.deepEqual(report.removed, []);
    });

    it('a pass touches entries in use, keeps young unused ones and removes old unused ones', async () => {
      await h.manager.cacheImage('img-1');
      await h.manager.cacheImage('img-2');
      clock.advance(DAY + 1);
      const removed: RemovedEntry[] = [];
      h.manager.on('removed', (entry) => removed.push(entry));
      const report = await h.manager.update([{ uuid: 'u1', name: 'inst-1', host: 'host1', imageRef: 'img-1' }]);
      assert.deepEqual(report.active, [img1]);
      assert.equal(await h.lastUsed(img1), clock.now(), 'in-use entry touched');
      assert.deepEqual(report.removed.map((r) => [r.name, r.reason]), [[img2, 'unused']]);
      assert.deepEqual(removed.map((r) => r.name), [img2]);
      assert.deepEqual(await h.names(), [img1]);
    });

    it('an unused original younger than removeUnusedOriginalMinimumAgeSeconds is kept', async () => {
      await h.manager.cacheImage('img-1');
      clock.advance(DAY - 1);
      const report = await h.manager.update([]);
      assert.deepEqual(report.kept.map((k) => [k.name, k.reason]), [[img1, 'too-young']]);
      assert.deepEqual(await h.names(), [img1]);
    });

    itIf(backend.kinds.has('resized'), `${backend.name} keeps no resized entries`, 'resized entries age out after removeUnusedResizedMinimumAgeSeconds', async () => {
      const resized = await h.plant('resized', '', 'img-1');
      clock.advance(3601);
      const report = await h.manager.update([]);
      assert.deepEqual(report.removed.map((r) => r.name), [resized]);
    });

    it('removeUnusedBaseImages: false removes nothing', async () => {
      const keeper = h.make({ removeUnusedBaseImages: false });
      await keeper.cacheImage('img-1');
      clock.advance(10 * DAY);
      const report = await keeper.update([]);
      assert.deepEqual(report.removed, []);
      assert.deepEqual(report.kept.map((k) => k.reason), ['removal-disabled']);
    });

    it('instances on other hosts sharing the cache protect their images too', async () => {
      await h.manager.cacheImage('img-2');
      clock.advance(10 * DAY);
      const report = await h.manager.update([{ uuid: 'u9', name: 'inst-9', host: 'host2', imageRef: 'img-2' }]);
      assert.deepEqual(report.active, [img2]);
      assert.match(report.kept[0]?.detail ?? '', /inst-9/);
    });

    itIf(backend.kinds.has('swap'), `${backend.name} keeps no swap or ephemeral bases`, 'swap and ephemeral bases follow the original threshold; missing used ones are reported', async () => {
      await h.plant('swap', 'swap_512', '');
      await h.plant('ephemeral', 'ephemeral_1_0706d66', '');
      await h.plant('swap', 'swap_1024', '');
      clock.advance(DAY + 1);
      const report = await h.manager.update([
        { uuid: 'u', name: 'n', host: 'host1', blockDevices: [{ kind: 'swap', sizeMiB: 512 }, { kind: 'swap', sizeMiB: 2048 }] },
      ]);
      assert.deepEqual(report.active, ['swap_512']);
      assert.deepEqual(report.removed.map((r) => r.name).sort(), ['ephemeral_1_0706d66', 'swap_1024']);
      assert.deepEqual(report.missing, ['swap_2048']);
    });

    it('update() without instances asks listInstances for the storage users', async () => {
      const asked: string[][] = [];
      const listed = h.make({
        listInstances: (hosts) => {
          asked.push([...hosts]);
          return [{ uuid: 'u', name: 'n', host: 'host1', imageRef: 'img-1' }];
        },
      });
      await listed.cacheImage('img-1');
      clock.advance(10 * DAY);
      const report = await listed.update();
      assert.deepEqual(asked, [['host1']]);
      assert.deepEqual(report.active, [img1]);
    });

    it('update() without instances and without listInstances is a typed error', async () => {
      await h.manager.cacheImage('img-1');
      await assert.rejects(h.manager.update(), (err) => isImageCacheError(err) && err.code === 'ERR_UNSUPPORTED');
    });

    it('emits a pass event with the report', async () => {
      const reports: PassReport[] = [];
      h.manager.on('pass', (r) => reports.push(r));
      await h.manager.cacheImage('img-1');
      const report = await h.manager.update([]);
      assert.deepEqual(reports, [report]);
      assert.equal(report.host, 'host1');
      assert.equal(report.startedAt, clock.now());
    });

    it('an entry touched while the pass waited for its lock is kept (age re-checked inside the lock)', async () => {
      await h.manager.cacheImage('img-1');
      clock.advance(DAY + 1);
      // Hold the entry's lock as a spawn would; once the pass asks for it, touch the entry, then let
      // the pass in.
      const locks = locksOf(h.manager);
      const spawnLock = await locks.acquire(h.lockName('img-1'));
      const acquire = locks.acquire.bind(locks);
      const passWaits = new Promise<void>((resolve) => {
        locks.acquire = (name, options) => {
          if (name === h.lockName('img-1')) resolve();
          return acquire(name, options);
        };
      });
      const pass = h.manager.update([]);
      await passWaits;
      await h.setLastUsed(img1, clock.now());
      await spawnLock.release();
      const report = await pass;
      assert.deepEqual(report.removed, []);
      assert.deepEqual(report.kept.map((k) => [k.name, k.reason]), [[img1, 'touched-meanwhile']]);
      assert.deepEqual(await h.names(), [img1]);
    });
  });
}
