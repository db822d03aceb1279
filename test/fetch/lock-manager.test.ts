import assert from 'node:assert/strict';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { isImageCacheError } from '../../src/index.js';
import { LockManager } from '../../src/backend-kit/index.js';
import { startChild, waitForLine } from '../helpers/child.js';
import { listDir, makeTempDir } from '../helpers/tmp.js';

describe('LockManager', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir());
  });
  afterEach(async () => {
    await cleanup();
  });

  it('serialises holders of one name in this process, in arrival order', async () => {
    const locks = new LockManager({ lockDir: path.join(dir, 'locks') });
    const order: string[] = [];
    let inside = 0;
    let peak = 0;
    await Promise.all(
      ['a', 'b', 'c', 'd'].map((who) =>
        locks.withLock('image', async () => {
          inside += 1;
          peak = Math.max(peak, inside);
          order.push(who);
          await new Promise((r) => setTimeout(r, 5));
          inside -= 1;
        }),
      ),
    );
    assert.equal(peak, 1);
    assert.deepEqual(order, ['a', 'b', 'c', 'd']);
    assert.deepEqual(await listDir(path.join(dir, 'locks')), [], 'released locks leave no files');
  });

  it('different names do not block each other', async () => {
    const locks = new LockManager();
    const a = await locks.acquire('a');
    const b = await locks.acquire('b');
    await a.release();
    await b.release();
  });

  it('a waiter can abort; the queue keeps going', async () => {
    const locks = new LockManager();
    const held = await locks.acquire('x');
    const controller = new AbortController();
    const waiting = locks.acquire('x', { signal: controller.signal });
    controller.abort();
    await assert.rejects(waiting, (err) => isImageCacheError(err) && err.code === 'ERR_ABORTED');
    await held.release();
    const next = await locks.acquire('x');
    await next.release();
  });

  it('gives up with ERR_LOCK_TIMEOUT after timeoutMs', async () => {
    const locks = new LockManager();
    const held = await locks.acquire('x');
    await assert.rejects(locks.acquire('x', { timeoutMs: 50 }), (err) => isImageCacheError(err) && err.code === 'ERR_LOCK_TIMEOUT');
    await held.release();
  });

  it('excludes another process, and takes over the lock of a process killed with SIGKILL', async () => {
    const lockDir = path.join(dir, 'locks');
    const child = startChild('lock-holder.ts', { lockDir, name: 'shared', staleMs: 2000 });
    await waitForLine(child, 'LOCKED');
    const locks = new LockManager({ lockDir, staleMs: 2000 });
    await assert.rejects(locks.acquire('shared', { timeoutMs: 300 }), (err) => isImageCacheError(err) && err.code === 'ERR_LOCK_TIMEOUT');
    const exited = new Promise((resolve) => child.on('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    const started = Date.now();
    const taken = await locks.acquire('shared', { timeoutMs: 15_000 });
    assert.ok(Date.now() - started < 15_000);
    await taken.release();
  });
});
