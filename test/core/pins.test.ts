// Pins: an image pre-cached "for N hours" is neither aged out nor evicted before then, and the pin
// outlives the process. Nova has no pins: its next pass removes a pre-cached image unused for 24 h.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { PIN_FILE } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { LockManager } from '../../src/fetch/lock-manager.js';
import { FilePinStore, MemoryPinStore } from '../../src/pins.js';
import { ManualClock } from '../../src/testing/index.js';
import { makeFixture } from '../backends/libvirt-file/fixture.js';
import type { Fixture } from '../backends/libvirt-file/fixture.js';
import { makeTempDir } from '../helpers/tmp.js';

const DAY = 86_400;

describe('pin stores', () => {
  it('a memory pin store keeps the later expiry and forgets expired pins', async () => {
    const pins = new MemoryPinStore();
    await pins.pin('a', 2000);
    await pins.pin('a', 1000);
    await pins.pin('b', 500);
    assert.deepEqual([...(await pins.active(900))], [['a', 2000]]);
    await pins.unpin('a');
    assert.equal((await pins.active(0)).size, 1);
  });

  it('a file pin store survives a restart, and concurrent writers through separate lock managers lose nothing', async () => {
    const { dir, cleanup } = await makeTempDir('vic-pins-');
    try {
      const clock = new ManualClock(1_000);
      const file = path.join(dir, 'pins.json');
      const lockDir = path.join(dir, 'locks');
      const a = new FilePinStore(file, new LockManager({ lockDir }), clock);
      const b = new FilePinStore(file, new LockManager({ lockDir }), clock);
      await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).pin(`image-${String(i)}`, 10_000 + i)));
      const restarted = new FilePinStore(file, new LockManager({ lockDir }), clock);
      assert.equal((await restarted.active(clock.now())).size, 20);
      // Expired pins are dropped from the file at the next write.
      clock.set(10_010);
      await restarted.unpin('image-19');
      const onDisk = JSON.parse(await readFile(file, 'utf8')) as Record<string, number>;
      assert.deepEqual(Object.keys(onDisk).sort(), ['image-11', 'image-12', 'image-13', 'image-14', 'image-15', 'image-16', 'image-17', 'image-18']);
    } finally {
      await cleanup();
    }
  });

  it('an unreadable pin file counts as no pins (a lost pin only shortens a delay; it never deletes what is used)', async () => {
    const { dir, cleanup } = await makeTempDir('vic-pins-');
    try {
      const file = path.join(dir, 'pins.json');
      await writeFile(file, '{"a": 5, "b": "x"');
      const pins = new FilePinStore(file, new LockManager(), new ManualClock(0));
      assert.equal((await pins.active(0)).size, 0);
      await pins.pin('c', 10);
      assert.deepEqual([...(await pins.active(0))], [['c', 10]]);
    } finally {
      await cleanup();
    }
  });
});

describe('pinned images in a pass (libvirt-file)', () => {
  let fx: Fixture;
  beforeEach(async () => {
    fx = await makeFixture();
  });
  afterEach(() => fx.cleanup());

  it('an unused original older than 24 h survives while pinned, and the pin survives a restart; it goes once the pin expires', async () => {
    const name = cacheFileName('image-1');
    await fx.base(name, 2 * DAY);
    const until = await fx.manager.pinImage('image-1', 3600);
    assert.equal(until, fx.clock.now() + 3_600_000);

    const restarted = fx.make();
    const report = await restarted.update([]);
    assert.deepEqual(report.removed, []);
    const kept = report.kept.find((entry) => entry.name === name);
    assert.equal(kept?.reason, 'pinned');
    assert.match(kept.detail ?? '', /^until /);
    const pinFile = JSON.parse(await readFile(path.join(fx.instancesPath, PIN_FILE), 'utf8')) as Record<string, number>;
    assert.equal(pinFile['image-1'], until);

    fx.clock.advance(3601);
    const after = await restarted.update([]);
    assert.deepEqual(after.removed.map((entry) => entry.name), [name]);
  });

  it('a pin never extends backwards, and unpinImage lets the image age as usual', async () => {
    const name = cacheFileName('image-2');
    await fx.base(name, 2 * DAY);
    await fx.manager.pinImage('image-2', 7200);
    assert.equal(await fx.manager.pinImage('image-2', 60), fx.clock.now() + 7_200_000);
    await fx.manager.unpinImage('image-2');
    assert.equal((await fx.manager.listPins()).size, 0);
    const report = await fx.manager.update([]);
    assert.deepEqual(report.removed.map((entry) => entry.name), [name]);
  });

  it('bad pin requests get typed errors before anything is written', async () => {
    await assert.rejects(fx.manager.pinImage('image-1', 0), { code: 'ERR_INVALID_CONFIG' });
    await assert.rejects(fx.manager.pinImage('../etc', 60), { code: 'ERR_INVALID_IMAGE_ID' });
  });
});
