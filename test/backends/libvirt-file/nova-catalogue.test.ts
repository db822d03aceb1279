// Nova's libvirt image-cache test catalogue (docs/nova-parity.md, catalogue), ported: each test is
// named after the Nova test whose behaviour it reproduces, on real files instead of mocks.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { LibvirtFileImageManager } from '../../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName, classifyBaseFileName, isEphemeralName, isSwapName } from '../../../src/backends/libvirt-file/naming.js';
import { mtimeOf, reservedDiskGb } from '../../../src/backends/files.js';
import { isImageCacheError } from '../../../src/index.js';
import { LockManager } from '../../../src/backend-kit/index.js';
import type { CacheEntry, InstanceRecord } from '../../../src/index.js';
import { listDir } from '../../helpers/tmp.js';
import { makeFixture } from './fixture.js';
import type { Fixture } from './fixture.js';

const sha1 = cacheFileName;
const hashed1 = '356a192b7913b04c54574d18c28d46e6395428ab';
const hashed21 = '472b07b9fcf2c2451e8781e944bf5f77cd8457c8';
const hashed22 = '12c6fc06c99a462375eeb3f43dfd832b08ca9e17';
const hashed42 = '92cfceb39d57d914ed8b14d0e37643de0797ae56';
const DAY = 86400;

function codeOf(err: unknown): string | undefined {
  return isImageCacheError(err) ? err.code : undefined;
}

describe("Nova's libvirt image cache catalogue", () => {
  let f: Fixture;
  beforeEach(async () => {
    f = await makeFixture();
  });
  afterEach(async () => {
    await f.cleanup();
  });

  it('GetCacheFnameTestCase.test_get_cache_fname: a known id gives a known SHA-1', () => {
    assert.equal(f.manager.cacheFileName('fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0'), '0d5e6b61602d758984b3bf038267614d6016eb2a');
    assert.equal(sha1('1'), hashed1);
  });

  it('test_get_age_of_file / _not_exists: age is now minus mtime; a missing file has none', async () => {
    const file = await f.base('aaa', 1_000_000);
    assert.equal(f.clock.now() - ((await mtimeOf(file)) ?? 0), 1_000_000_000);
    assert.equal(await mtimeOf(path.join(f.baseDir, 'missing')), null);
  });

  it('test_list_base_images: the scan classifies originals, resized, _sm, swap and ignores the rest', async () => {
    const images = [
      'e97222e91fc4241f49a7f520d1dcf446751129b3_sm',
      'e09c675c2d1cfac32dae3c2d83689c8c94bc693b_sm',
      'e97222e91fc4241f49a7f520d1dcf446751129b3',
      '17d1b00b81642842e514494a78e804e9a511637c',
      '17d1b00b81642842e514494a78e804e9a511637c_5368709120',
      '17d1b00b81642842e514494a78e804e9a511637c_10737418240',
    ];
    for (const name of ['00000001', 'ephemeral_0_20_None', '17d1b00b81642842e514494a78e804e9a511637c_5368709120.info', '00000004', 'swap_1000', ...images]) {
      await f.base(name);
    }
    const scan = await f.manager.scanBaseImages(f.baseDir);
    const byKind = (kind: CacheEntry['kind']): string[] => scan.entries.filter((e) => e.kind === kind).map((e) => e.name);
    assert.deepEqual([...byKind('original'), ...byKind('resized')].sort(), [...images].sort());
    assert.equal(byKind('original').length, 2);
    assert.deepEqual(byKind('swap'), ['swap_1000']);
    assert.deepEqual(byKind('ephemeral'), []);
    assert.ok(!scan.entries.some((e) => e.name === '00000004'));
  });

  it('scan edge cases: <sha1>_5 (42 chars) is invisible, <sha1>_10 and directories as Nova says', () => {
    assert.equal(classifyBaseFileName(`${hashed1}_5`), null);
    assert.equal(classifyBaseFileName(`${hashed1}_10`), 'resized');
    assert.equal(classifyBaseFileName(`${hashed1}_sm`), 'resized');
    assert.equal(classifyBaseFileName(`${hashed1}.part`), null);
    // Python's len counts code points and isdigit takes any decimal digit.
    assert.equal(classifyBaseFileName(`${hashed1.slice(0, 38)}😀`), null);
    assert.equal(classifyBaseFileName(`${hashed1.slice(0, 39)}😀`), 'original');
    assert.equal(classifyBaseFileName('swap_١٢'), 'swap');
    assert.equal(classifyBaseFileName('ephemeral_2_abcde😀f'), 'ephemeral');
  });

  for (const [test, backing, dir] of [
    ['test_list_backing_images_small', 'e97222e91fc4241f49a7f520d1dcf446751129b3_sm', 'instance-00000001'],
    ['test_list_backing_images_resized', 'e97222e91fc4241f49a7f520d1dcf446751129b3_10737418240', 'instance-00000001'],
    ['test_list_backing_images_instancename', 'e97222e91fc4241f49a7f520d1dcf446751129b3_sm', 'banana-42-hamster'],
  ] as const) {
    it(`${test}: a base backing a listed instance's disk is in use`, async () => {
      await f.base(backing, 10 * DAY);
      await f.instanceDisk(dir, backing);
      const report = await f.manager.update([{ uuid: 'not-a-dir', name: dir, host: 'host1', imageRef: 'other' }]);
      assert.deepEqual(report.active, [backing]);
      assert.match(report.kept[0]?.detail ?? '', new RegExp(`backing file of ${dir}/disk`));
      assert.ok(existsSync(path.join(f.baseDir, backing)));
    });
  }

  it('test_list_backing_images_disk_notexist: an unreadable existing disk fails the pass, and nothing is removed', async () => {
    await f.base(hashed42, 10 * DAY);
    await mkdir(path.join(f.instancesPath, 'banana-42-hamster'));
    const bad = Buffer.alloc(512);
    bad.write('QFI\xfb', 0, 'latin1');
    bad.writeUInt32BE(3, 4);
    await writeFile(path.join(f.instancesPath, 'banana-42-hamster', 'disk'), bad);
    await assert.rejects(f.manager.update([{ uuid: 'u', name: 'banana-42-hamster', host: 'host1' }]), (err) => codeOf(err) === 'ERR_INVALID_DISK_IMAGE');
    assert.ok(existsSync(path.join(f.baseDir, hashed42)));
  });

  it('test_find_base_file_nothing / _small / _resized / _all: an image keeps its original, _sm and resized variants', async () => {
    await f.base(hashed1, 10 * DAY);
    await f.base(`${hashed1}_sm`, 10 * DAY);
    await f.base(`${hashed1}_10737418240`, 10 * DAY);
    await f.base(`${hashed1}_5`, 10 * DAY);
    await f.base(`${hashed42}_10737418240`, 10 * DAY);
    const report = await f.manager.update([{ uuid: 'u', name: 'i', host: 'host1', imageRef: '1' }]);
    assert.deepEqual(report.active, [hashed1, `${hashed1}_10737418240`, `${hashed1}_sm`]);
    assert.deepEqual(report.removed.map((r) => r.name), [`${hashed42}_10737418240`]);
  });

  it('test_remove_base_file: a fresh non-original stays; at 3601 s it goes, and leaves no lock file', async () => {
    const name = `${hashed1}_10737418240`;
    await f.base(name, 0);
    assert.deepEqual((await f.manager.update([])).removed, []);
    f.clock.advance(3601);
    const report = await f.manager.update([]);
    assert.deepEqual(report.removed.map((r) => [r.name, r.kind, r.reason]), [[name, 'resized', 'unused']]);
    assert.ok(!existsSync(path.join(f.baseDir, name)));
    assert.deepEqual(await listDir(path.join(f.instancesPath, 'locks')), []);
  });

  it('test_remove_base_file_original: an original survives 3601 s and goes at 25 h', async () => {
    await f.base(hashed1, 3601);
    assert.deepEqual((await f.manager.update([])).removed, []);
    f.clock.advance(25 * 3600 - 3601);
    assert.deepEqual((await f.manager.update([])).removed.map((r) => r.name), [hashed1]);
  });

  it('test_remove_base_file_dne: an entry that vanished before removal is no error', async () => {
    class Probe extends LibvirtFileImageManager {
      removeUnlessTouched(entry: CacheEntry): ReturnType<LibvirtFileImageManager['removeIfStillUnused']> {
        return this.removeIfStillUnused(f.baseDir, entry, 0, 'unused');
      }
    }
    const probe = new Probe({ host: 'host1', instancesPath: f.instancesPath, clock: f.clock });
    await mkdir(f.baseDir, { recursive: true });
    const outcome = await probe.removeUnlessTouched({ name: 'aaa', kind: 'original', imageId: null, sizeBytes: 0, lastUsedMs: 0 });
    assert.deepEqual(outcome, { removed: null, kept: null, failure: null });
  });

  it('test_remove_base_file_oserror: a removal error is reported, not raised, and the file stays', async () => {
    class Stubborn extends LibvirtFileImageManager {
      protected override removeEntry(): Promise<void> {
        return Promise.reject(Object.assign(new Error('EPERM'), { code: 'EPERM' }));
      }
    }
    await f.base(hashed42, 2 * DAY);
    const stubborn = new Stubborn({ host: 'host1', instancesPath: f.instancesPath, clock: f.clock });
    const report = await stubborn.update([]);
    assert.deepEqual(report.failures.map((x) => [x.name, x.operation]), [[hashed42, 'remove']]);
    assert.ok(existsSync(path.join(f.baseDir, hashed42)));
  });

  it('test_mark_in_use / test_handle_base_image_used(_remotely): in-use bases are touched, never removable', async () => {
    const file = await f.base(hashed1, 10 * DAY);
    const report = await f.manager.update([{ uuid: 'u', name: 'banana-42', host: 'elsewhere', imageRef: '1' }]);
    assert.deepEqual(report.active, [hashed1]);
    assert.equal(await mtimeOf(file), f.clock.now());
  });

  it('test_verify_base_images: the full pass over Nova\'s fixture', async () => {
    for (const name of ['00000001', 'ephemeral_0_20_None', 'e97222e91fc4241f49a7f520d1dcf446751129b3_sm', 'e09c675c2d1cfac32dae3c2d83689c8c94bc693b_sm', hashed42, hashed1, hashed21, hashed22, `${hashed1}_5368709120`, `${hashed1}_10737418240`, '00000004']) {
      await f.base(name, 20 * DAY);
    }
    for (const dir of ['instance-1', 'instance-2', 'instance-3']) await f.instanceDisk(dir, `${hashed1}_5368709120`);
    const instances: InstanceRecord[] = [
      { uuid: 'uuid-1', name: 'instance-1', host: 'host1', imageRef: '1', vmState: '', taskState: '' },
      { uuid: 'uuid-2', name: 'instance-2', host: 'host1', imageRef: '1', kernelId: '21', ramdiskId: '22', vmState: '', taskState: '' },
    ];
    const report = await f.manager.update(instances);
    // Nova's test also sees `${hashed1}_10737418240` removed, only because its list walk skips the
    // variant after `_5368709120` (gap C): image 1 is in use, so both variants stay here.
    assert.deepEqual([...report.active].sort(), [hashed1, `${hashed1}_5368709120`, `${hashed1}_10737418240`, hashed21, hashed22].sort());
    assert.deepEqual(
      report.removed.map((r) => r.name).sort(),
      ['e97222e91fc4241f49a7f520d1dcf446751129b3_sm', 'e09c675c2d1cfac32dae3c2d83689c8c94bc693b_sm', hashed42].sort(),
    );
    assert.ok(existsSync(path.join(f.baseDir, '00000001')), 'non-image names are ignored');
  });

  it('test_verify_base_images_no_base: a missing base dir makes the pass a no-op', async () => {
    const report = await f.manager.update([]);
    assert.equal(report.skipped, 'no-base');
    assert.ok(!existsSync(f.baseDir));
  });

  it('test_run_image_cache_manager_pass: a pass asks for the instances of every registered host', async () => {
    const asked: string[][] = [];
    const other = f.make({ host: 'host2' });
    await other.registerStorageUse();
    const manager = f.make({
      listInstances: (hosts) => {
        asked.push([...hosts]);
        return [];
      },
    });
    await f.base(hashed1);
    await manager.update();
    assert.deepEqual(asked, [['host1', 'host2']]);
  });

  it('test_store_swap_image / test_store_ephemeral_image: strict name parsing', () => {
    assert.deepEqual(['swap_', 'swap_123', 'swap_456', 'swap_abc', '123_swap', 'swap_129_'].filter(isSwapName), ['swap_123', 'swap_456']);
    assert.deepEqual(
      ['ephemeral_', 'ephemeral_123', 'ephemeral_0_20_None', 'ephemeral_4_0706d66', 'ephemeral_a_0706d66', 'ephemeral_4_0706d6'].filter(isEphemeralName),
      ['ephemeral_4_0706d66'],
    );
  });

  it('test_age_and_verify_swap_images / _ephemeral_images: used ones kept and touched, unused old ones removed', async () => {
    await f.base('swap_128', 2 * DAY);
    await f.base('swap_256', 2 * DAY);
    await f.base('ephemeral_4_0706d66', 2 * DAY);
    await f.base('ephemeral_8_0706d66', 2 * DAY);
    const report = await f.manager.update([
      { uuid: 'u', name: 'i', host: 'host1', blockDevices: [{ kind: 'swap', sizeMiB: 128 }, { kind: 'ephemeral', sizeGiB: 4 }] },
    ]);
    assert.deepEqual([...report.active].sort(), ['ephemeral_4_0706d66', 'swap_128']);
    assert.deepEqual(report.removed.map((r) => r.name).sort(), ['ephemeral_8_0706d66', 'swap_256']);
    assert.equal(await mtimeOf(path.join(f.baseDir, 'swap_128')), f.clock.now());
  });

  it('test_lock_acquired_on_removing_old_enough_files: removal takes the per-image lock', async () => {
    await f.base(hashed42, 2 * DAY);
    const other = new LockManager({ lockDir: path.join(f.instancesPath, 'locks'), staleMs: 2000 });
    const held = await other.acquire(hashed42);
    try {
      const report = await f.manager.update([]);
      assert.deepEqual(report.kept.map((k) => [k.name, k.reason]), [[hashed42, 'busy']]);
      assert.ok(existsSync(path.join(f.baseDir, hashed42)));
    } finally {
      await held.release();
    }
    assert.deepEqual((await f.manager.update([])).removed.map((r) => r.name), [hashed42]);
  });

  describe('get_disk_usage', () => {
    it('test_get_disk_usage_cache_dir_missing / _empty: 0', async () => {
      assert.equal(await f.manager.getDiskUsage(), 0);
      await mkdir(f.baseDir);
      assert.equal(await f.manager.getDiskUsage(), 0);
    });

    it('test_get_disk_usage: allocated blocks of regular files, directories skipped', async () => {
      const a = await f.base('a', 0, Buffer.alloc(10 * 512, 1));
      const b = await f.base('b', 0, Buffer.alloc(20 * 512, 2));
      await mkdir(path.join(f.baseDir, 'subdir'));
      const expected = (await stat(a)).blocks * 512 + (await stat(b)).blocks * 512;
      assert.ok(expected >= 30 * 512);
      assert.equal(await f.manager.getDiskUsage(), expected);
    });

    it('test_get_disk_usage_cache_is_on_different_disk: 0', async (t) => {
      const shm = await mkdtemp(path.join('/dev/shm', 'vic-')).catch(() => null);
      if (shm === null) {
        t.skip('/dev/shm is not available');
        return;
      }
      try {
        if ((await stat(shm)).dev === (await stat(f.instancesPath)).dev) {
          t.skip('/dev/shm is on the same device here');
          return;
        }
        await writeFile(path.join(shm, 'x'), Buffer.alloc(4096, 1));
        await symlink(shm, f.baseDir);
        assert.equal(await f.manager.getDiskUsage(), 0);
      } finally {
        await rm(shm, { recursive: true, force: true });
      }
    });

    it('test_get_disk_usage_io_error_while_reading: any error gives 0', async () => {
      await writeFile(f.baseDir, 'not a directory');
      assert.equal(await f.manager.getDiskUsage(), 0);
    });

    it('test_image_cache_disk_reservation: each term rounded up on its own', () => {
      assert.equal(reservedDiskGb({ reservedHostDiskMb: 1024, cacheUsageBytes: 1000, reserveForImageCache: false }), 1);
      assert.equal(reservedDiskGb({ reservedHostDiskMb: 1024, cacheUsageBytes: 1000, reserveForImageCache: true }), 2);
      assert.equal(reservedDiskGb({ reservedHostDiskMb: 0, cacheUsageBytes: 0, reserveForImageCache: true }), 0);
    });
  });

  describe('fill path (test_imagebackend, driver cache_image)', () => {
    it('test_cache_image_uncached(_first_time): downloads into _base/<sha1>, creating the dir', async () => {
      const result = await f.manager.cacheImage('image-1');
      assert.equal(result.status, 'cached');
      assert.equal(result.name, sha1('image-1'));
      assert.deepEqual(await readFile(path.join(f.baseDir, sha1('image-1'))), (await f.source.describe('image-1')).size === 2 * 1024 * 1024 ? await readAll(f, 'image-1') : Buffer.alloc(0));
    });

    it('test_cache_image_existing: touches once, no fetch', async () => {
      await f.manager.cacheImage('image-1');
      f.clock.advance(100);
      const again = await f.manager.cacheImage('image-1');
      assert.equal(again.status, 'existing');
      assert.equal(f.source.openCalls('image-1'), 1);
      assert.equal(await mtimeOf(path.join(f.baseDir, sha1('image-1'))), f.clock.now());
    });

    it('test_cache_template_exists: base present, disk missing → disk created without fetching', async () => {
      await f.manager.cacheImage('image-1');
      const disk = await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'uuid-1') });
      assert.equal(disk.created, true);
      assert.equal(disk.cacheStatus, 'existing');
      assert.equal(f.source.openCalls('image-1'), 1);
    });

    it('test_cache_image_exists: disk and base present → nothing fetched or created', async () => {
      const instanceDir = path.join(f.instancesPath, 'uuid-1');
      await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir });
      const again = await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir });
      assert.equal(again.created, false);
      assert.equal(f.source.openCalls('image-1'), 1);
    });

    it('Qcow2 test_create_image_too_small: FlavorDiskSmallerThanImage, nothing created', async () => {
      const instanceDir = path.join(f.instancesPath, 'uuid-1');
      await assert.rejects(
        f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir, sizeBytes: 1024 * 1024 }),
        (err) => codeOf(err) === 'ERR_FLAVOR_DISK_SMALLER_THAN_IMAGE',
      );
      assert.ok(!existsSync(path.join(instanceDir, 'disk')));
    });

    it('Qcow2 test_qcow2_exists_and_fails_safety_check: a base with a bad header is refused', async () => {
      const bad = Buffer.alloc(4096);
      bad.write('QFI\xfb', 0, 'latin1');
      bad.writeUInt32BE(3, 4);
      bad.writeUInt32BE(99, 20); // cluster_bits out of range
      await f.base(sha1('image-1'), 0, bad);
      await assert.rejects(
        f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'uuid-1') }),
        (err) => codeOf(err) === 'ERR_INVALID_DISK_IMAGE',
      );
    });

    it('size 0 means the image size (Nova: root_gb 0)', async () => {
      const disk = await f.manager.createInstanceDisk({ imageId: 'image-2', instanceDir: path.join(f.instancesPath, 'u'), sizeBytes: 0 });
      assert.equal(disk.virtualSize, 1024 * 1024 + 512);
    });
  });
});

async function readAll(f: Fixture, id: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await f.source.open(id)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
