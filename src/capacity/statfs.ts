/**
 * How full the cache's filesystem is: an injectable probe over `fs.statfs`, so tests (and drivers
 * whose cache sits on storage `statfs` cannot see) can report usage of their own.
 *
 * @module
 */
import { statfs } from 'node:fs/promises';
import path from 'node:path';

/** Size and free space of the storage holding a cache. */
export interface FilesystemUsage {
  /** Capacity, bytes. */
  readonly totalBytes: number;
  /** Bytes this process may still write (`f_bavail`: blocks reserved for root are not counted). */
  readonly freeBytes: number;
  /** What was measured (a directory, a volume group), for messages. */
  readonly location?: string | undefined;
}

/** Measures the filesystem holding `directory`; rejects like `fs.statfs` (ENOENT, EACCES, ...). */
export type FilesystemProbe = (directory: string) => Promise<FilesystemUsage>;

/** The real probe: `statfs(2)`. */
export const statfsProbe: FilesystemProbe = async (directory) => {
  const stats = await statfs(directory);
  return { totalBytes: stats.blocks * stats.bsize, freeBytes: stats.bavail * stats.bsize, location: directory };
};

/**
 * `probe` of `directory`, or of its nearest existing ancestor when it does not exist yet (a fresh
 * host's cache directory): where it will be created, so on the same filesystem.
 */
export async function atNearestExisting<T>(directory: string, probe: (directory: string) => Promise<T>): Promise<{ value: T; at: string }> {
  let current = path.resolve(directory);
  for (;;) {
    try {
      return { value: await probe(current), at: current };
    } catch (err) {
      const parent = path.dirname(current);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || parent === current) throw err;
      current = parent;
    }
  }
}

/** Usage of the filesystem that holds (or will hold) `directory` ({@link atNearestExisting}). */
export async function usageOfDirectory(probe: FilesystemProbe, directory: string): Promise<FilesystemUsage> {
  const { value: usage, at } = await atNearestExisting(directory, probe);
  return { ...usage, location: usage.location ?? at };
}

/** The type of a filesystem (`f_type` of `statfs(2)`, a magic number such as NFS's 0x6969). */
export type FilesystemTypeProbe = (directory: string) => Promise<number>;

/** The real type probe: `statfs(2)`'s `f_type`, as an unsigned 32-bit number. */
export const statfsTypeProbe: FilesystemTypeProbe = async (directory) => (await statfs(directory)).type >>> 0;

/** Percentage of the capacity in use, 0 to 100; NaN when the capacity reported is not positive. */
export function usedPercent(usage: FilesystemUsage): number {
  if (!(usage.totalBytes > 0)) return Number.NaN;
  return 100 - (Math.min(Math.max(0, usage.freeBytes), usage.totalBytes) * 100) / usage.totalBytes;
}
