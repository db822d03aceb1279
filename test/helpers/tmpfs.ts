/**
 * A real, small filesystem for disk-full tests: a tmpfs mounted on a fresh temp directory. Needs
 * root (CI runs as root). Without root, outside CI, the test is skipped with a clear message; on
 * CI (`CI=true`) a tmpfs that cannot be mounted fails the test instead of skipping it, so the real
 * disk-full paths are always exercised there.
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rmdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A mounted tmpfs; `cleanup` unmounts it and removes the mount point. */
export interface Tmpfs {
  /** The mount point. */
  readonly dir: string;
  /** Unmounts (lazily if still busy) and removes the mount point. */
  cleanup(): Promise<void>;
}

/**
 * Mounts a tmpfs of `sizeBytes`. Returns undefined when the test was skipped (the caller must then
 * return).
 */
export async function mountTmpfs(t: TestContext, sizeBytes: number): Promise<Tmpfs | undefined> {
  return mountMemoryFilesystem(t, 'tmpfs', `size=${sizeBytes},mode=0755`, 'a real full disk');
}

/**
 * Mounts a ramfs: a real filesystem that refuses `O_DIRECT` (tmpfs accepts it since Linux 6.6).
 * Same root and CI rules as {@link mountTmpfs}.
 */
export async function mountRamfs(t: TestContext): Promise<Tmpfs | undefined> {
  return mountMemoryFilesystem(t, 'ramfs', 'mode=0755', 'a filesystem without O_DIRECT');
}

async function mountMemoryFilesystem(t: TestContext, type: string, options: string, purpose: string): Promise<Tmpfs | undefined> {
  const ci = process.env.CI === 'true';
  const root = process.getuid?.() === 0;
  if (!root && !ci) {
    t.skip(`mounting a ${type} needs root: run as root (CI does) to exercise ${purpose}`);
    return undefined;
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), `vic-${type}-`));
  try {
    await run('mount', ['-t', type, '-o', options, type, dir]);
  } catch (err) {
    await rmdir(dir);
    const message = `cannot mount a ${type} (${(err as Error).message.trim()})`;
    if (ci) throw new Error(`${message}: CI must run these tests as root`, { cause: err });
    t.skip(`${message}; run as root with mount rights to exercise ${purpose}`);
    return undefined;
  }
  return {
    dir,
    async cleanup() {
      try {
        await run('umount', [dir]);
      } catch {
        await run('umount', ['-l', dir]);
      }
      await rmdir(dir);
    },
  };
}
