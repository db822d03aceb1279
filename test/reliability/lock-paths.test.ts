// Planted objects at lock paths (issue 13, class 5, the locks' part). A lock is a file holding its
// owner record (empty only when the file system was full); a non-empty regular file without a record, a symlink (to a directory, or dangling) or a FIFO at `locks/virt-imagecache-<name>.lock`
// used to fail every later acquisition with ENOTDIR (or wait forever). Now each is moved aside
// (never followed, never opened, never waited on), reported, and the lock is taken.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readFile, readdir, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { cacheFileName, isImageCacheError } from '../../src/index.js';
import { LockManager, ReadWriteLock } from '../../src/backend-kit/index.js';
import { LOCK_PREFIX } from '../../src/fetch/lock-manager.js';
import { makeFixture } from '../backends/libvirt-file/fixture.js';
import { captureLog } from '../helpers/capture-log.js';
import { errnoError, replaceFs } from '../helpers/fs-faults.js';
import { listDir, makeTempDir } from '../helpers/tmp.js';

const STALE_MS = 2000;
const OLD = (Date.now() - 86_400_000) / 1000;

interface Planted {
  readonly kind: string;
  plant(at: string, dir: string): Promise<void>;
  /** What the moved-aside object must still be. */
  check(aside: string, dir: string): Promise<void>;
}

const PLANTED: readonly Planted[] = [
  {
    kind: 'a regular file',
    plant: (at) => writeFile(at, 'not a lock'),
    check: async (aside) => {
      assert.equal(await readFile(aside, 'utf8'), 'not a lock');
    },
  },
  {
    kind: 'a symlink to a directory elsewhere, dated a day ago',
    plant: async (at, dir) => {
      const target = path.join(dir, 'elsewhere');
      await mkdir(target);
      await writeFile(path.join(target, 'precious'), 'x');
      await utimes(target, OLD, OLD);
      await symlink(target, at);
    },
    check: async (aside, dir) => {
      assert.ok((await lstat(aside)).isSymbolicLink());
      const target = path.join(dir, 'elsewhere');
      assert.deepEqual(await readdir(target), ['precious'], 'the link was followed');
      assert.equal(Math.round((await stat(target)).mtimeMs / 1000), Math.round(OLD), "the link's target was touched");
    },
  },
  {
    kind: 'a dangling symlink',
    plant: (at, dir) => symlink(path.join(dir, 'nowhere'), at),
    check: async (aside, dir) => {
      assert.ok((await lstat(aside)).isSymbolicLink());
      assert.ok(!existsSync(path.join(dir, 'nowhere')), 'the link was followed');
    },
  },
  {
    kind: 'a FIFO',
    plant: (at) => {
      execFileSync('mkfifo', [at]);
      return Promise.resolve();
    },
    check: async (aside) => {
      assert.ok((await lstat(aside)).isFIFO());
    },
  },
];

describe('planted objects at lock paths are moved aside, never followed nor waited on', () => {
  let dir: string;
  let lockDir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-lockpath-'));
    lockDir = path.join(dir, 'locks');
    await mkdir(lockDir);
  });
  afterEach(async () => {
    await cleanup();
  });

  for (const planted of PLANTED) {
    it(`${planted.kind} at a lock path: the lock is taken, the object moved aside and reported`, async () => {
      const at = path.join(lockDir, `${LOCK_PREFIX}image.lock`);
      await planted.plant(at, dir);
      const log = captureLog('virt-imagecache:lock');
      try {
        const locks = new LockManager({ lockDir, staleMs: STALE_MS });
        // Not the first time only: every later acquisition works too.
        for (let round = 0; round < 3; round++) await locks.withLock('image', () => Promise.resolve(), { timeoutMs: 10 * STALE_MS });
      } finally {
        log.restore();
      }
      const left = await listDir(lockDir);
      assert.equal(left.length, 1, `left: ${left.join(', ')}`);
      const aside = left[0] ?? '';
      assert.ok(aside.startsWith(`${LOCK_PREFIX}image.lock.planted-`), aside);
      await planted.check(path.join(lockDir, aside), dir);
      assert.ok(log.lines.some((line) => line.includes('moved aside') && line.includes(aside)), 'not reported');
    });
  }

  it('a planted object in the readers directory of a readers/writer lock is no reader', async () => {
    const lock = new ReadWriteLock({ locks: new LockManager({ lockDir, staleMs: STALE_MS }), name: 'cache', staleMs: STALE_MS });
    const readersDir = lock.readersDir ?? '';
    await mkdir(readersDir, { recursive: true });
    await writeFile(path.join(readersDir, 'compute-2~4242~0badc0de.lock'), 'x');
    execFileSync('mkfifo', [path.join(readersDir, 'compute-3~4343~0badc0de.lock')]);
    await lock.withExclusive(() => Promise.resolve(), { timeoutMs: 10 * STALE_MS });
    assert.deepEqual(await listDir(readersDir), []);
  });

  it("a regular file at an image's lock path fails no cacheImage and no pass", async () => {
    const f = await makeFixture();
    try {
      const locks = path.join(f.instancesPath, 'locks');
      await mkdir(locks, { recursive: true });
      await writeFile(path.join(locks, `${LOCK_PREFIX}${cacheFileName('image-1')}.lock`), 'junk');
      const manager = f.make();
      for (let round = 0; round < 2; round++) {
        await manager.cacheImage('image-1');
        assert.deepEqual((await manager.update([])).failures, []);
      }
    } finally {
      await f.cleanup();
    }
  });

  it('a dangling link at the lock directory itself fails no cacheImage and no pass, then or later: moved aside where passes do not read instance directories', async () => {
    const f = await makeFixture();
    try {
      await symlink(path.join(f.instancesPath, 'gone'), path.join(f.instancesPath, 'locks'));
      const manager = f.make();
      await manager.cacheImage('image-2');
      for (let round = 0; round < 2; round++) assert.deepEqual((await manager.update([])).failures, []);
      assert.ok((await stat(path.join(f.instancesPath, 'locks'))).isDirectory());
    } finally {
      await f.cleanup();
    }
  });

  it('a regular file at the lock directory itself fails no cacheImage and no pass: it is moved aside and the directory made', async () => {
    const f = await makeFixture();
    try {
      await writeFile(path.join(f.instancesPath, 'locks'), 'junk');
      const manager = f.make();
      await manager.cacheImage('image-2');
      assert.deepEqual((await manager.update([])).failures, []);
      assert.ok((await stat(path.join(f.instancesPath, 'locks'))).isDirectory());
    } finally {
      await f.cleanup();
    }
  });

  it('on a full file system a lock is taken all the same: empty (no owner record), held against another manager while refreshed, never moved aside as planted', async () => {
    // ENOSPC for the owner record only: the open (an inode) succeeds, the write (a block) does not,
    // as on a full tmpfs or ext4. A pass that frees space must be able to lock.
    const restore = replaceFs('writeSync', (original) => ((fd: number, data: string | NodeJS.ArrayBufferView, ...rest: unknown[]) => {
      if (typeof data === 'string' && data.startsWith('{"host"')) throw errnoError('ENOSPC', 'write', String(fd));
      return (original as (...args: unknown[]) => number)(fd, data, ...rest);
    }));
    const holder = new LockManager({ lockDir, staleMs: STALE_MS });
    let held;
    try {
      held = await holder.acquire('image');
    } finally {
      restore();
    }
    const at = path.join(lockDir, `${LOCK_PREFIX}image.lock`);
    assert.equal((await lstat(at)).size, 0);
    const waiter = new LockManager({ lockDir, staleMs: STALE_MS });
    await assert.rejects(waiter.acquire('image', { timeoutMs: 2 * STALE_MS }), (err) => isImageCacheError(err) && err.code === 'ERR_LOCK_TIMEOUT');
    assert.deepEqual(await listDir(lockDir), [`${LOCK_PREFIX}image.lock`]);
    await held.release();
    await waiter.withLock('image', () => Promise.resolve(), { timeoutMs: 1000 });
  });
});
