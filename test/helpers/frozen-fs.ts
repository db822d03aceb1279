/**
 * A file system whose writes hang, for real: a small ext4 image mounted through a loop device and
 * frozen with `fsfreeze`. While it is frozen every call that changes it (mkdir, link, unlink,
 * rename, utimes, open with O_CREAT) waits in the kernel, uninterruptibly, until it is thawed: what
 * a hard-mounted NFS share does when its server stops answering. Reads and stats still answer.
 *
 * Needs root (CI runs as root); without it the test is skipped, and on CI (`CI=true`) a failed
 * mount fails the test, as for the tmpfs helper.
 *
 * A frozen file system is thawed by a separate process after `safetyMs` whatever this process
 * does: a test whose event loop is held by a synchronous call blocked on it ends (and fails)
 * instead of hanging for ever. That process leaves `thawedBySafety` behind, so the test can tell.
 *
 * @module
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A mounted, freezable file system. */
export interface FreezableFs {
  /** The mount point (empty ext4, `lost+found` aside). */
  readonly dir: string;
  /** Freezes it; a separate process thaws it after `safetyMs` if {@link thaw} was not called. */
  freeze(safetyMs: number): Promise<void>;
  /** Thaws it (a no-op when it is not frozen). */
  thaw(): Promise<void>;
  /** Whether the safety process had to thaw it (so this process was stuck until then). */
  thawedBySafety(): boolean;
  /** Thaws, unmounts and removes everything. */
  cleanup(): Promise<void>;
}

/** Mounts a 16 MiB ext4 image; undefined when the test was skipped (the caller then returns). */
export async function mountFreezableFs(t: TestContext): Promise<FreezableFs | undefined> {
  const ci = process.env.CI === 'true';
  if (process.getuid?.() !== 0 && !ci) {
    t.skip('freezing a file system needs root: run as root (CI does) to exercise a hung file system');
    return undefined;
  }
  const work = await mkdtemp(path.join(os.tmpdir(), 'vic-frozen-'));
  const image = path.join(work, 'ext4.img');
  const dir = path.join(work, 'mnt');
  const marker = path.join(work, 'thawed-by-safety');
  await mkdir(dir);
  try {
    await run('truncate', ['-s', '16M', image]);
    await run('mkfs.ext4', ['-q', '-F', image]);
    await run('mount', ['-o', 'loop', image, dir]);
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    const message = `cannot mount a loop ext4 image (${(err as Error).message.trim()})`;
    if (ci) throw new Error(`${message}: CI must run these tests as root`, { cause: err });
    t.skip(`${message}; run as root with loop devices to exercise a hung file system`);
    return undefined;
  }
  let safety: ChildProcess | undefined;
  const thaw = async (): Promise<void> => {
    if (safety?.pid !== undefined && safety.exitCode === null) safety.kill();
    safety = undefined;
    await run('fsfreeze', ['-u', dir]).catch(() => undefined);
  };
  return {
    dir,
    async freeze(safetyMs) {
      await run('fsfreeze', ['-f', dir]);
      const seconds = (safetyMs / 1000).toFixed(1);
      safety = spawn('sh', ['-c', `sleep ${seconds}; : > "$1"; fsfreeze -u "$2"`, 'sh', marker, dir], { stdio: 'ignore', detached: true });
      safety.unref();
    },
    thaw,
    thawedBySafety: () => existsSync(marker),
    async cleanup() {
      await thaw();
      await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
      await rm(work, { recursive: true, force: true });
    },
  };
}

/**
 * Resolves once a thread of this process waits uninterruptibly in the kernel (state `D`): a
 * thread-pool call blocked on the frozen file system. Polling needs the event loop, so this
 * resolving at all says the loop ran while the call was blocked. Rejects when `fs` was thawed by
 * its safety process first: the event loop was held until then.
 */
export async function untilAThreadIsBlocked(fs: FreezableFs): Promise<void> {
  for (;;) {
    if (fs.thawedBySafety()) throw new Error('the event loop was held until the file system was thawed');
    for (const tid of readdirSync('/proc/self/task')) {
      let stat: string;
      try {
        stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      } catch {
        continue;
      }
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('D')) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
