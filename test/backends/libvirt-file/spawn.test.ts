// The spawn flow: cacheImage + createInstanceDisk, verified with the real qemu-img.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { LibvirtFileImageManager } from '../../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../../src/backends/libvirt-file/naming.js';
import { observeFileHandleSyncs, replaceFs } from '../../helpers/fs-faults.js';
import { qemuImgCheck, qemuImgConvertToRaw, qemuImgInfo, requireQemuImg } from '../../helpers/qemu.js';
import { seededBytes } from '../../helpers/tmp.js';
import { makeFixture } from './fixture.js';
import type { Fixture } from './fixture.js';

const GiB = 1024 * 1024 * 1024;

describe('libvirt spawn flow', () => {
  let f: Fixture;
  beforeEach(async () => {
    f = await makeFixture();
  });
  afterEach(async () => {
    await f.cleanup();
  });

  it('Qcow2 test_create_image: a qcow2 overlay backed by the base passes qemu-img check, info and a read-through', async (t) => {
    if (requireQemuImg(t) === undefined) return;
    const instanceDir = path.join(f.instancesPath, 'uuid-1');
    const disk = await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir, sizeBytes: 10 * GiB });
    assert.equal(disk.created, true);
    assert.equal(disk.cacheStatus, 'cached');
    const basePath = path.join(f.baseDir, cacheFileName('image-1'));
    assert.equal(disk.basePath, basePath);
    const check = await qemuImgCheck(disk.path);
    assert.equal(check['check-errors'], 0);
    assert.ok((check.leaks ?? 0) === 0 && (check.corruptions ?? 0) === 0);
    const info = await qemuImgInfo(disk.path);
    assert.equal(info.format, 'qcow2');
    assert.equal(info['virtual-size'], 10 * GiB);
    assert.equal(info['backing-filename'], basePath);
    assert.equal(info['backing-filename-format'], 'raw');
    // Read the first bytes through the overlay and compare with the image.
    const small = await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'uuid-2') });
    const raw = path.join(f.instancesPath, 'through.raw');
    await qemuImgConvertToRaw(small.path, raw);
    assert.deepEqual(await readFile(raw), seededBytes(2 * 1024 * 1024, 1));
  });

  it('a qcow2 overlay over an 8 GiB sparse base: check clean, virtual size right, base untouched', async (t) => {
    if (requireQemuImg(t) === undefined) return;
    const base = path.join(f.baseDir, cacheFileName('image-1'));
    const { truncate } = await import('node:fs/promises');
    await f.base(cacheFileName('image-1'));
    await truncate(base, 8 * GiB);
    const disk = await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'big'), sizeBytes: 20 * GiB });
    assert.equal((await qemuImgCheck(disk.path))['check-errors'], 0);
    assert.equal((await qemuImgInfo(disk.path))['virtual-size'], 20 * GiB);
    assert.equal((await stat(base)).size, 8 * GiB);
    assert.equal(f.source.openCalls('image-1'), 0, 'a cached image is never fetched');
  });

  it('Flat test_create_image_extend: a raw copy extended to the flavor size, with the image at its start', async (t) => {
    if (requireQemuImg(t) === undefined) return;
    const disk = await f.manager.createInstanceDisk({ imageId: 'image-2', instanceDir: path.join(f.instancesPath, 'u'), sizeBytes: 4 * 1024 * 1024, format: 'raw' });
    assert.equal(disk.format, 'raw');
    assert.ok(disk.copyMethod !== null);
    const content = await readFile(disk.path);
    assert.equal(content.length, 4 * 1024 * 1024);
    assert.deepEqual(content.subarray(0, 1024 * 1024 + 512), seededBytes(1024 * 1024 + 512, 2));
    assert.ok(content.subarray(1024 * 1024 + 512).every((b) => b === 0));
    assert.equal((await qemuImgInfo(disk.path)).format, 'raw');
  });

  it('concurrent spawns of one image download it once and each get a valid overlay', async (t) => {
    if (requireQemuImg(t) === undefined) return;
    const disks = await Promise.all(
      Array.from({ length: 10 }, (_, i) => f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, `uuid-${i}`) })),
    );
    assert.equal(f.source.openCalls('image-1'), 1);
    for (const disk of disks) assert.equal((await qemuImgCheck(disk.path))['check-errors'], 0);
  });

  it('the spawn touches the base (its mtime is the clock now)', async () => {
    await f.manager.cacheImage('image-1');
    f.clock.advance(5000);
    await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'u') });
    const base = path.join(f.baseDir, cacheFileName('image-1'));
    assert.equal((await stat(base)).mtimeMs, f.clock.now());
  });

  it('race 4.7 window closed: a base removed between fetch and use is fetched again, and the spawn succeeds', async () => {
    let sabotaged = false;
    class Racing extends LibvirtFileImageManager {
      override async cacheImage(...args: Parameters<LibvirtFileImageManager['cacheImage']>): ReturnType<LibvirtFileImageManager['cacheImage']> {
        const result = await super.cacheImage(...args);
        if (!sabotaged) {
          sabotaged = true;
          // A cleanup that had already decided wins the lock right here.
          const { unlink } = await import('node:fs/promises');
          await unlink(path.join(f.baseDir, result.name));
        }
        return result;
      }
    }
    const racing = new Racing({ host: 'host1', instancesPath: f.instancesPath, source: f.source, clock: f.clock });
    const disk = await racing.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'u') });
    assert.equal(disk.created, true);
    assert.equal(f.source.openCalls('image-1'), 2);
    assert.ok(existsSync(disk.basePath));
  });

  it('syncInstanceDisks: new disks are fsynced only when asked (like qemu-img create and cp, Nova does not sync them)', async () => {
    const synced: string[] = [];
    const restoreFsync = replaceFs('fsync', (original) => ((fd: number, callback: (err: NodeJS.ErrnoException | null) => void) => {
      synced.push('overlay');
      original(fd, callback);
    }) as typeof original);
    const restoreSync = await observeFileHandleSyncs(() => synced.push('handle'));
    try {
      const durable = f.make({ syncInstanceDisks: true });
      // Fetching the base and registering the hosts fsync their files: not what is counted here.
      await f.manager.cacheImage('image-1');
      await f.manager.registerStorageUse();
      await durable.registerStorageUse();
      synced.length = 0;
      const dir = (name: string): string => path.join(f.instancesPath, name);
      await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: dir('fast-qcow2') });
      await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: dir('fast-raw'), format: 'raw' });
      assert.deepEqual(synced, [], 'no fsync by default');
      // The new instance directory's entry (the instances path), the overlay, then its directory
      // after the link: test/reliability/durability-order.test.ts checks the order by path.
      await durable.createInstanceDisk({ imageId: 'image-1', instanceDir: dir('durable-qcow2') });
      assert.deepEqual(synced, ['handle', 'overlay', 'handle']);
      synced.length = 0;
      // The same for a copy, whose fsync goes through a FileHandle.
      await durable.createInstanceDisk({ imageId: 'image-1', instanceDir: dir('durable-raw'), format: 'raw' });
      assert.deepEqual(synced, ['handle', 'handle', 'handle']);
    } finally {
      restoreFsync();
      restoreSync();
    }
    assert.throws(() => f.make({ syncInstanceDisks: 'yes' as unknown as boolean }), { code: 'ERR_INVALID_CONFIG' });
  });

  it('a base that is not a regular file fails the spawn with a typed error, not a download over it', async () => {
    await mkdir(path.join(f.baseDir, cacheFileName('image-1')), { recursive: true });
    await assert.rejects(
      f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'u') }),
      { code: 'ERR_INVALID_DISK_IMAGE' },
    );
    assert.equal(f.source.openCalls('image-1'), 0);
  });

  it('rejects bad disk names and image ids before touching anything', async () => {
    await assert.rejects(f.manager.createInstanceDisk({ imageId: '../x', instanceDir: path.join(f.instancesPath, 'u') }), { code: 'ERR_INVALID_IMAGE_ID' });
    await assert.rejects(f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'u'), diskName: '../disk' }), { code: 'ERR_INVALID_CONFIG' });
    assert.ok(!existsSync(f.baseDir));
  });
});
