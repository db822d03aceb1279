// Clock skew between hosts sharing storage (issue 13, class 4). A lock is a file whose mtime
// its holder refreshes, written by the holder's clock; hosts do not agree on the time. Holders run
// in real child processes whose wall clock is skewed (every mtime they write is off by as much)
// and which claim another host (so their pid cannot be checked). Whatever the skew:
//   - a live holder keeps its lock (a waiter ahead of it does not steal it);
//   - a dead holder's lock is taken over once seen unrefreshed for staleMs of the waiter's time,
//     even with a mtime a day in the future; a dead holder of this host at once, by its pid;
//   - a pass clears a future-dated dead lock, and never a live one;
//   - remove() and a pass never delete a base while another host holds its lock to build on it;
//   - of several waiters that judge one dead lock stale together, one holds it at a time; a waiter
//     killed mid-takeover blocks nothing.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readFile, readdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { cacheFileName, isImageCacheError } from '../../src/index.js';
import { LockManager } from '../../src/backend-kit/index.js';
import { LOCK_PREFIX } from '../../src/fetch/lock-manager.js';
import type { HeldLock } from '../../src/index.js';
import { makeFixture } from '../backends/libvirt-file/fixture.js';
import type { Fixture } from '../backends/libvirt-file/fixture.js';
import { killAll, killAndWait, runChild, startChild, waitForLine } from '../helpers/child.js';
import { listDir, makeTempDir } from '../helpers/tmp.js';

const STALE_MS = 2000;
const DAY_MS = 86_400_000;
const isTimeout = (err: unknown): boolean => isImageCacheError(err) && err.code === 'ERR_LOCK_TIMEOUT';
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('clock skew: staleness is judged by observed silence, never by comparing clocks', () => {
  let dir: string;
  let lockDir: string;
  let cleanup: () => Promise<void>;
  const children: ChildProcess[] = [];
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-skew-'));
    lockDir = path.join(dir, 'locks');
  });
  afterEach(async () => {
    await killAll(children);
    await cleanup();
  });

  /** A holder in another process with its clock `skewMs` off, claiming host `hostname` (null: this one). */
  const holder = async (name: string, skewMs: number, hostname: string | null = 'other-host', where = lockDir): Promise<ChildProcess> => {
    const child = startChild('lock-holder.ts', { lockDir: where, name, staleMs: STALE_MS, skewMs, hostname: hostname ?? undefined });
    children.push(child);
    await waitForLine(child, 'LOCKED');
    return child;
  };
  const kill = killAndWait;
  const lockPath = (name: string, where = lockDir): string => path.join(where, `${LOCK_PREFIX}${name}.lock`);

  it('a live holder whose clock is 30 s behind (the waiter 30 s ahead), 30 s ahead or a day behind keeps its lock for three times staleMs', async () => {
    await Promise.all(
      [-30_000, 30_000, -DAY_MS].map(async (skewMs) => {
        const name = `image${skewMs}`;
        const child = await holder(name, skewMs);
        const waiter = new LockManager({ lockDir, staleMs: STALE_MS });
        await assert.rejects(waiter.acquire(name, { timeoutMs: 3 * STALE_MS }), isTimeout, `the waiter took a live lock ${skewMs} ms off`);
        assert.equal(child.exitCode, null);
        assert.ok(existsSync(lockPath(name)));
        await kill(child);
      }),
    );
  });

  for (const [label, skewMs] of [
    ['a day ahead', DAY_MS],
    ['a day behind', -DAY_MS],
  ] as const) {
    it(`a dead holder of another host whose clock was ${label} is taken over after staleMs of observed silence`, async () => {
      const child = await holder('image', skewMs);
      await kill(child);
      const waiter = new LockManager({ lockDir, staleMs: STALE_MS });
      const started = performance.now();
      const held = await waiter.acquire('image', { timeoutMs: 10 * STALE_MS });
      // Not before staleMs of silence seen by the waiter: it cannot tell dead from live sooner.
      assert.ok(performance.now() - started >= STALE_MS, `taken after ${Math.round(performance.now() - started)} ms`);
      await held.release();
      assert.deepEqual(await listDir(lockDir), [], 'the dead lock and every takeover token are gone');
    });
  }

  it('a dead holder of this host whose clock was a day ahead is taken over at once, by its pid', async () => {
    const child = await holder('image', DAY_MS, null);
    await kill(child);
    // Silence alone would take a minute here: only the pid check can be this quick.
    const waiter = new LockManager({ lockDir, staleMs: 60_000 });
    const held = await waiter.acquire('image', { timeoutMs: 30_000 });
    await held.release();
  });

  it('a pass clears a future-dated dead lock once it has seen it unrefreshed for staleMs, and leaves a live future-dated one', async () => {
    const f: Fixture = await makeFixture();
    try {
      const locks = path.join(f.instancesPath, 'locks');
      const live = await holder('live-image', DAY_MS, 'other-host', locks);
      // A lock a dead host (or an older version) left, dated by a clock a day ahead, no owner record.
      await mkdir(lockPath('dead-image', locks), { recursive: true });
      const ahead = (Date.now() + DAY_MS) / 1000;
      await utimes(lockPath('dead-image', locks), ahead, ahead);
      await f.base(cacheFileName('image-1'));
      const manager = f.make();
      let passes = 0;
      // Hang guard: the lock must go within a few passes staleMs apart.
      while (existsSync(lockPath('dead-image', locks))) {
        assert.ok(passes < 10, 'the dead lock was never cleared');
        const report = await manager.update([]);
        assert.deepEqual(report.failures, []);
        passes += 1;
        if (existsSync(lockPath('dead-image', locks))) await sleep(STALE_MS / 2);
      }
      assert.ok(passes >= 2, 'cleared before it could have been seen silent for staleMs');
      assert.ok(existsSync(lockPath('live-image', locks)), 'a pass removed a live lock');
      assert.equal(live.exitCode, null);
      assert.deepEqual(await listDir(locks), [path.basename(lockPath('live-image', locks))]);
    } finally {
      await f.cleanup();
    }
  });

  it('remove() and a pass never delete a base another host holds the lock of (to build on it), with its clock 30 s behind', async () => {
    const f: Fixture = await makeFixture({ removeUnusedOriginalMinimumAgeSeconds: 0, removeUnusedResizedMinimumAgeSeconds: 0 });
    try {
      const name = cacheFileName('image-1');
      const basePath = await f.base(name, 3600);
      // The other host's spawn holds the base's lock while it writes the overlay.
      const building = await holder(name, -30_000, 'other-host', path.join(f.instancesPath, 'locks'));
      const manager = f.make();
      await assert.rejects(manager.remove('image-1', { instances: [] }), (err) => isImageCacheError(err) && err.code === 'ERR_IMAGE_IN_USE');
      assert.ok(existsSync(basePath), 'remove() deleted a base being built on');
      for (let pass = 0; pass < 3; pass++) {
        const report = await manager.update([]);
        assert.deepEqual(report.removed, []);
        assert.deepEqual(report.kept.map((k) => k.reason), ['busy']);
        assert.ok(existsSync(basePath), 'a pass deleted a base being built on');
      }
      await kill(building);
    } finally {
      await f.cleanup();
    }
  });

  it('a waiter killed in the middle of a takeover blocks nothing, and a pass sweeps what crashes left beside the locks', async () => {
    const lock = lockPath('image');
    await mkdir(lock, { recursive: true });
    const t = (Date.now() + DAY_MS) / 1000;
    await utimes(lock, t, t);
    // The token a dead waiter created for exactly this lock's identity, a lock a dead process was
    // creating (not linked yet), and a taken-over lock its taker died before removing.
    const st = await lstat(lock, { bigint: true });
    await mkdir(`${lock}.takeover-${st.ino}-${st.mtimeNs}-${st.ctimeNs}-0`);
    await writeFile(`${lock}.new-4242-0badc0de`, '{}');
    await writeFile(`${lockPath('other')}.stale-0badc0de`, '{}');
    const waiter = new LockManager({ lockDir, staleMs: STALE_MS });
    // A pass sees them first (all left alone: nothing yet says their writers are dead) ...
    await waiter.removeStaleLocks();
    const held = await waiter.acquire('image', { timeoutMs: 10 * STALE_MS });
    await held.release();
    // ... and, staleMs later (the takeover waited that long), removes them.
    await waiter.removeStaleLocks();
    assert.deepEqual(await listDir(lockDir), []);
  });

  it('three processes that start waiting together for a dead, future-dated lock take it one at a time', async () => {
    await mkdir(lockPath('image'), { recursive: true });
    const t = (Date.now() + DAY_MS) / 1000;
    await utimes(lockPath('image'), t, t);
    const journal = path.join(dir, 'journal');
    await writeFile(journal, '');
    // Same start, same polling schedule: their verdicts fall within milliseconds of each other.
    const goAt = Date.now() + 3000;
    const results = await Promise.all(
      [0, 1, 2].map(() => runChild<{ rounds: number }>('lock-contender.ts', { lockDir, name: 'image', staleMs: STALE_MS, journal, goAt, rounds: 3, holdMs: 50 })),
    );
    assert.deepEqual(results, [{ rounds: 3 }, { rounds: 3 }, { rounds: 3 }]);
    const lines = (await readFile(journal, 'utf8')).trim().split('\n');
    assert.equal(lines.length, 18);
    for (let i = 0; i < lines.length; i += 2) {
      const [enter, leave] = [lines[i] ?? '', lines[i + 1] ?? ''];
      assert.ok(enter.startsWith('IN ') && leave === `OUT ${enter.slice(3)}`, `two holders at once: ${lines.slice(i, i + 2).join(' / ')}`);
    }
    assert.deepEqual(await listDir(lockDir), []);
  });

  for (const [label, offsetMs] of [
    ['a day in the future', DAY_MS],
    ['a day in the past', -DAY_MS],
  ] as const) {
    it(`of four waiters that judge a dead lock dated ${label} stale together, exactly one holds it at a time`, async () => {
      await mkdir(lockPath('image'), { recursive: true });
      const t = (Date.now() + offsetMs) / 1000;
      await utimes(lockPath('image'), t, t);
      const waiters = Array.from({ length: 4 }, () => new LockManager({ lockDir, staleMs: STALE_MS }));
      // Each sees the dead lock once, then all judge it again together, staleMs later.
      for (const waiter of waiters) await assert.rejects(waiter.acquire('image', { timeoutMs: 0 }), isTimeout);
      await sleep(STALE_MS);
      const holders: number[] = [];
      let inside = 0;
      let overlaps = 0;
      await Promise.all(
        waiters.map(async (waiter, i) => {
          const held: HeldLock = await waiter.acquire('image', { timeoutMs: 30_000 });
          inside += 1;
          if (inside > 1) overlaps += 1;
          holders.push(i);
          await sleep(200);
          inside -= 1;
          await held.release();
        }),
      );
      assert.equal(overlaps, 0, 'two waiters held the lock at once');
      assert.equal(holders.length, 4);
      assert.deepEqual(await readdir(lockDir), [], 'tokens or the dead lock left behind');
    });
  }
});
