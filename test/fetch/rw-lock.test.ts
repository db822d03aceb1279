// The readers/writer lock behind nova-powervm's cache_lock (spawns read, the cleanup pass writes),
// across real processes: a SIGKILLed reader is recovered by pid liveness, a stale one once seen
// unrefreshed for staleMs.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, utimes } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { isImageCacheError } from '../../src/index.js';
import { LockManager, ReadWriteLock } from '../../src/backend-kit/index.js';
import { LOCK_PREFIX } from '../../src/fetch/lock-manager.js';
import { killAll, killAndWait, startChild, waitForLine } from '../helpers/child.js';
import { listDir, makeTempDir } from '../helpers/tmp.js';

const isTimeout = (err: unknown): boolean => isImageCacheError(err) && err.code === 'ERR_LOCK_TIMEOUT';

describe('ReadWriteLock', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let lockDir: string;
  const children: ChildProcess[] = [];
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-rwlock-'));
    lockDir = path.join(dir, 'locks');
  });
  afterEach(async () => {
    await killAll(children);
    await cleanup();
  });

  const make = (staleMs = 10_000): ReadWriteLock => new ReadWriteLock({ locks: new LockManager({ lockDir, staleMs }), name: 'cache', staleMs });
  const holder = async (mode: 'shared' | 'exclusive', staleMs = 10_000): Promise<ChildProcess> => {
    const child = startChild('rw-lock-holder.ts', { lockDir, name: 'cache', mode, staleMs });
    children.push(child);
    await waitForLine(child, 'LOCKED');
    return child;
  };
  const kill = killAndWait;

  it('readers share; a writer waits for all of them; a reader arriving while the writer waits goes after it', async () => {
    const lock = make();
    const events: string[] = [];
    const r1 = await lock.acquireShared();
    const r2 = await lock.acquireShared();
    assert.equal((await lock.readers()).length, 2);
    const writer = lock.withExclusive(async () => {
      events.push('writer in');
      await new Promise((r) => setTimeout(r, 20));
      events.push('writer out');
    });
    // Wait until the writer holds the gate (its lock directory exists), then send a reader.
    const gate = path.join(lockDir, `${LOCK_PREFIX}cache.gate.lock`);
    for (let waited = 0; !existsSync(gate); waited += 5) {
      assert.ok(waited < 10_000, 'the writer never took the gate');
      await new Promise((r) => setTimeout(r, 5));
    }
    const lateReader = lock.withShared(() => {
      events.push('late reader');
      return Promise.resolve();
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(events, [], 'the writer waits for both readers; the late reader waits behind the writer');
    await r1.release();
    await r2.release();
    await Promise.all([writer, lateReader]);
    assert.deepEqual(events, ['writer in', 'writer out', 'late reader']);
    assert.deepEqual(await listDir(lock.readersDir ?? ''), [], 'released readers leave no registration');
  });

  it('a reader in another process shares with ours but keeps our writer out', async () => {
    await holder('shared');
    const lock = make();
    await lock.withShared(() => Promise.resolve());
    await assert.rejects(lock.acquireExclusive({ timeoutMs: 300 }), isTimeout);
    const [reader] = await lock.readers();
    assert.ok(reader !== undefined && reader.pid !== process.pid, 'the other process is a live reader');
  });

  it('a SIGKILLed reader is recovered by pid liveness at once, long before its registration goes stale', async () => {
    const child = await holder('shared', 60_000);
    const lock = make(60_000);
    await assert.rejects(lock.acquireExclusive({ timeoutMs: 200 }), isTimeout);
    await kill(child);
    const started = Date.now();
    const held = await lock.acquireExclusive({ timeoutMs: 10_000 });
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
    assert.deepEqual(await listDir(lock.readersDir ?? ''), [], 'the dead registration was removed');
    await held.release();
  });

  it('a reader of another host counts while refreshed and is dropped once seen unrefreshed for staleMs, whatever its mtime says', async () => {
    const lock = make(2000);
    const registration = path.join(lock.readersDir ?? '', 'compute-2.example~4242~0badc0de.lock');
    await mkdir(registration, { recursive: true });
    // Its host's clock is a day ahead: the mtime says "fresh" for a day, and must not be believed.
    const ahead = (Date.now() + 86_400_000) / 1000;
    await utimes(registration, ahead, ahead);
    // Refreshed (each time a second further ahead), it counts however long the writer waits.
    let refreshes = 0;
    const refresher = setInterval(() => {
      refreshes += 1;
      void utimes(registration, ahead + refreshes, ahead + refreshes);
    }, 400);
    try {
      await assert.rejects(lock.acquireExclusive({ timeoutMs: 5000 }), isTimeout);
    } finally {
      clearInterval(refresher);
    }
    const held = await lock.acquireExclusive({ timeoutMs: 15_000 });
    await held.release();
    assert.deepEqual(await listDir(lock.readersDir ?? ''), []);
  });

  it('a writer in another process keeps readers out; once SIGKILLed its gate goes stale and readers enter', async () => {
    const child = await holder('exclusive', 2000);
    const lock = make(2000);
    await assert.rejects(lock.acquireShared({ timeoutMs: 300 }), isTimeout);
    await kill(child);
    const held = await lock.acquireShared({ timeoutMs: 15_000 });
    await held.release();
  });

  it('waiting can be aborted', async () => {
    const lock = make();
    const reader = await lock.acquireShared();
    const controller = new AbortController();
    const waiting = lock.acquireExclusive({ signal: controller.signal });
    setTimeout(() => {
      controller.abort();
    }, 30);
    await assert.rejects(waiting, (err) => isImageCacheError(err) && err.code === 'ERR_ABORTED');
    await reader.release();
    await lock.withExclusive(() => Promise.resolve());
  });

  it('without a lock directory it works in-process', async () => {
    const lock = new ReadWriteLock({ locks: new LockManager(), name: 'local' });
    const reader = await lock.acquireShared();
    await assert.rejects(lock.acquireExclusive({ timeoutMs: 50 }), isTimeout);
    await reader.release();
    await lock.withExclusive(() => Promise.resolve());
  });
});
