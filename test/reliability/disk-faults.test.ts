// Disk faults: a full filesystem (a real, small tmpfs), touch refused (EACCES through a shim,
// EPERM for real as another user), and EIO (through a shim: a real EIO needs a failing device).
//   - ENOSPC is a typed ERR_DISK_FULL, leaves no partial file, and a full disk does not stop the
//     pass that frees it;
//   - a refused touch is tolerated on the spawn path (Nova bug 1809123) and not on pre-cache;
//   - EIO is passed on, never swallowed, and leaves nothing partial.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import type fs from 'node:fs';
import { chmod, mkdir, mkdtemp, open, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { isImageCacheError } from '../../src/errors.js';
import { isStagingName } from '../../src/fetch/staging-names.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import { startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';
import { makeFixture } from '../backends/libvirt-file/fixture.js';
import type { Fixture } from '../backends/libvirt-file/fixture.js';
import { startIpcChild } from '../helpers/child.js';
import { errnoError, failFileHandleWrites, failSyncReads, replaceFs, replaceFsPromise } from '../helpers/fs-faults.js';
import { listDir, seededBytes } from '../helpers/tmp.js';
import { disksWithoutBacking } from './invariants.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const DAY = 86400;

const codeOf = (err: unknown): string | undefined =>
  isImageCacheError(err) ? err.code : (err as NodeJS.ErrnoException | undefined)?.code;

const isRoot = process.getuid?.() === 0;

/** Root is needed to mount a tmpfs or to act as another user; CI runs as root and must not skip. */
function requireRoot(t: TestContext, what: string): boolean {
  if (isRoot) return true;
  if (process.env.CI === 'true') throw new Error(`${what} needs root, and CI must run it: run the suite as root`);
  t.skip(`${what} needs root (a tmpfs mount or a second user); run as root or with CI=true to include it`);
  return false;
}

/** Fills the filesystem holding `dir` to the last byte. */
async function fillUp(dir: string): Promise<void> {
  const handle = await open(path.join(dir, 'filler'), 'w');
  const block = Buffer.alloc(64 * 1024, 1);
  try {
    for (let size = block.length; size >= 1; size = Math.floor(size / 2)) {
      for (;;) {
        try {
          await handle.write(block.subarray(0, size));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw err;
        }
      }
    }
  } finally {
    await handle.close();
  }
}

/** Faults injected, by kind, for the figures printed at the end. */
const injected = { enospcScenarios: 0, eaccesTouches: 0, epermTouchesAsAnotherUser: 0, eioInjections: 0 };

describe('disk faults', () => {
  let glance: FakeGlance;
  before(async () => {
    glance = await startFakeGlance({
      images: [
        { id: 'big', content: seededBytes(6 * MiB, 1) },
        { id: 'small', content: seededBytes(256 * 1024, 2) },
        { id: 'other', content: seededBytes(64 * 1024, 3) },
      ],
    });
  });
  after(async () => {
    await glance.close();
    const line = JSON.stringify({ ...injected, partialFilesLeft: 0 });
    console.log(`[reliability] disk-faults ${line}`);
  });

  describe('ENOSPC on a small tmpfs', () => {
    let mountPoint: string | undefined;
    let manager: LibvirtFileImageManager;

    beforeEach(async () => {
      if (!isRoot) return;
      mountPoint = await mkdtemp(path.join(os.tmpdir(), 'vic-enospc-'));
      await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]);
      manager = new LibvirtFileImageManager({
        host: 'full-host',
        instancesPath: mountPoint,
        source: new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1 }),
        lockStaleMs: 2000,
      });
    });
    afterEach(async () => {
      if (mountPoint === undefined) return;
      await run('umount', [mountPoint]);
      await rm(mountPoint, { recursive: true, force: true });
      mountPoint = undefined;
    });

    it('an image larger than the free space is ERR_DISK_FULL, leaves nothing, and the space is usable again', async (t) => {
      if (mountPoint === undefined) return void requireRoot(t, 'ENOSPC on a small tmpfs');
      injected.enospcScenarios++;
      await assert.rejects(manager.cacheImage('big'), (err) => codeOf(err) === 'ERR_DISK_FULL');
      assert.deepEqual(await listDir(manager.baseDir), [], 'no staging and no final-name file');
      assert.equal((await manager.cacheImage('small')).status, 'cached');
      t.diagnostic('ENOSPC: download of 6 MiB into 4 MiB refused with ERR_DISK_FULL, nothing left');
    });

    it('instance disks on a full filesystem are ERR_DISK_FULL, with no partial disk or staging file', async (t) => {
      if (mountPoint === undefined) return void requireRoot(t, 'ENOSPC on a small tmpfs');
      await manager.cacheImage('small');
      await fillUp(mountPoint);
      for (const format of ['qcow2', 'raw'] as const) {
        injected.enospcScenarios++;
        const instanceDir = path.join(mountPoint, `full-${format}`);
        await assert.rejects(manager.createInstanceDisk({ imageId: 'small', instanceDir, format }), (err) => codeOf(err) === 'ERR_DISK_FULL', format);
        assert.deepEqual(await listDir(instanceDir), [], `${format}: nothing in the instance dir`);
      }
    });

    it('a full filesystem does not stop the pass that frees it', async (t) => {
      if (mountPoint === undefined) return void requireRoot(t, 'ENOSPC on a small tmpfs');
      await manager.cacheImage('small');
      await manager.cacheImage('other');
      // `small` is old and unused, `other` is in use.
      const old = (Date.now() - 2 * DAY * 1000) / 1000;
      await utimes(manager.cachePathFor('small'), old, old);
      await fillUp(mountPoint);
      injected.enospcScenarios++;
      const report = await manager.update([{ uuid: 'u', name: 'i', host: 'full-host', imageRef: 'other' }]);
      assert.deepEqual(report.removed.map((r) => r.name), [cacheFileName('small')]);
      assert.ok(existsSync(manager.cachePathFor('other')));
      await rm(path.join(mountPoint, 'filler'));
      // The registry is written again once there is room.
      await manager.update([]);
      assert.ok((await manager.registry.users()).hosts.includes('full-host'));
    });
  });

  describe('touch refused, and EIO', () => {
    let f: Fixture;
    const restores: (() => void)[] = [];
    beforeEach(async () => {
      f = await makeFixture();
    });
    afterEach(async () => {
      for (const restore of restores.splice(0)) restore();
      await f.cleanup();
    });

    /** utimes and lutimes fail with `code` for files in the base dir. */
    const failTouch = (code: string): void => {
      if (code === 'EACCES') injected.eaccesTouches++;
      else injected.eioInjections++;
      restores.push(
        replaceFsPromise('utimes', (original) => ((file: fs.PathLike, atime: fs.TimeLike, mtime: fs.TimeLike) => {
          if (String(file).startsWith(f.baseDir)) return Promise.reject(errnoError(code, 'utime', String(file)));
          return original(file, atime, mtime);
        })),
        // Touches are synchronous metadata calls that never follow a link (lutimes).
        replaceFs('utimesSync', (original) => ((file: fs.PathLike, atime: fs.TimeLike, mtime: fs.TimeLike) => {
          if (String(file).startsWith(f.baseDir)) throw errnoError(code, 'utime', String(file));
          original(file, atime, mtime);
        })),
        replaceFs('lutimesSync', (original) => ((file: fs.PathLike, atime: fs.TimeLike, mtime: fs.TimeLike) => {
          if (String(file).startsWith(f.baseDir)) throw errnoError(code, 'lutime', String(file));
          original(file, atime, mtime);
        })),
      );
    };

    it('EACCES on touch is tolerated on the spawn path (Nova bug 1809123) but not on pre-cache', async () => {
      await f.manager.cacheImage('image-1');
      failTouch('EACCES');
      const disk = await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'spawned') });
      assert.equal(disk.created, true);
      assert.equal((await f.manager.cacheImage('image-1', { tolerateTouchErrors: true })).status, 'existing');
      await assert.rejects(f.manager.cacheImage('image-1'), (err) => codeOf(err) === 'EACCES');
    });

    it('EIO on touch is passed on by a spawn (no disk is created) and recorded by a pass (nothing removed)', async () => {
      await f.manager.cacheImage('image-1');
      failTouch('EIO');
      const instanceDir = path.join(f.instancesPath, 'spawned');
      await assert.rejects(f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir }), (err) => codeOf(err) === 'EIO');
      assert.ok(!existsSync(path.join(instanceDir, 'disk')));
      await assert.rejects(f.manager.cacheImage('image-1', { tolerateTouchErrors: true }), (err) => codeOf(err) === 'EIO');
      const report = await f.manager.update([{ uuid: 'u', name: 'i', host: 'host1', imageRef: 'image-1' }]);
      assert.deepEqual(report.failures.map((x) => [x.name, x.operation, codeOf(x.error)]), [[cacheFileName('image-1'), 'touch', 'EIO']]);
      assert.deepEqual(report.removed, []);
    });

    it('EIO while writing a download is passed on, leaves no staging or final file, and the next call succeeds', async () => {
      injected.eioInjections++;
      const restore = await failFileHandleWrites((file) => isStagingName(path.basename(file)), 'EIO');
      restores.push(restore);
      await assert.rejects(f.manager.cacheImage('image-1'), (err) => codeOf(err) === 'EIO');
      assert.deepEqual(await listDir(f.baseDir), []);
      restore();
      assert.equal((await f.manager.cacheImage('image-1')).status, 'cached');
    });

    it('EIO reading an instance disk fails the pass before it removes anything', async () => {
      await f.base(cacheFileName('image-1'), 10 * DAY);
      const disk = await f.instanceDisk('uuid-1', cacheFileName('image-1'));
      injected.eioInjections++;
      restores.push(failSyncReads((file) => file === disk, 'EIO'));
      await assert.rejects(f.manager.update([]), (err) => codeOf(err) === 'EIO');
      assert.ok(existsSync(path.join(f.baseDir, cacheFileName('image-1'))), 'the base of an unreadable disk was removed');
    });
  });

  it('as a non-owner (EPERM on touch, for real): a spawn tolerates it, a pre-cache does not', async (t) => {
    if (!requireRoot(t, 'a touch by a non-owner')) return;
    const instancesPath = await mkdtemp(path.join(os.tmpdir(), 'vic-perm-'));
    try {
      // Root's cache, the way libvirt's dynamic ownership leaves bases: owned by someone else,
      // readable by all. The worker runs as nobody and may create instance dirs and locks.
      const owner = new LibvirtFileImageManager({ host: 'owner', instancesPath, source: new GlanceImageSource({ endpoint: glance.url }) });
      await owner.cacheImage('small');
      await chmod(instancesPath, 0o777);
      await mkdir(path.join(instancesPath, 'locks'), { recursive: true });
      await chmod(path.join(instancesPath, 'locks'), 0o777);
      await writeFile(path.join(instancesPath, 'compute_nodes'), '{}');
      const worker = startIpcChild('race-worker.ts', { host: 'nobody-host', instancesPath, url: glance.url }, { uid: 65534, gid: 65534 });
      try {
        await worker.ready;
        injected.epermTouchesAsAnotherUser += 2;
        const spawn = await worker.request({ op: 'spawn', imageId: 'small', uuid: 'nobodys-instance' });
        assert.ok(spawn.ok, `the spawn failed: ${JSON.stringify(spawn)}`);
        assert.deepEqual(await disksWithoutBacking(instancesPath), []);
        const precache = await worker.request({ op: 'pre-cache', imageId: 'small' });
        if (precache.ok) assert.fail('a strict pre-cache touch by a non-owner succeeded');
        assert.equal(precache.code, 'EPERM');
      } finally {
        worker.process.disconnect();
        await worker.exited;
      }
    } finally {
      await rm(instancesPath, { recursive: true, force: true });
    }
  });
});
