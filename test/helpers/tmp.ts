import { constants } from 'node:fs';
import { access, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** A fresh temporary directory, removed by the returned cleanup. */
export async function makeTempDir(prefix = 'vic-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Names in `dir` (empty when it does not exist). */
export async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
export function seededBytes(size: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * A fresh temporary directory in memory (`/dev/shm`) when the machine has one, else in the usual
 * temp dir: for tests that run thousands of small operations, where each fsync on a real disk
 * would cost milliseconds and say nothing about what they test.
 */
export async function makeMemoryTempDir(prefix = 'vic-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  let parent = os.tmpdir();
  try {
    await access('/dev/shm', constants.W_OK);
    parent = '/dev/shm';
  } catch {
    // no writable /dev/shm: the usual temp dir
  }
  const dir = await mkdtemp(path.join(parent, prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}
