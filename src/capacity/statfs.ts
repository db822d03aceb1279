/**
 * How full the cache's filesystem is: an injectable probe over `fs.statfs`, so tests (and drivers
 * whose cache sits on storage `statfs` cannot see) can report usage of their own.
 *
 * @module
 */
import { statfs } from 'node:fs/promises';
import { atNearestExisting } from '../fs/filesystem-type.js';

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
 * Usage of the filesystem that holds (or will hold) `directory`: a directory that does not exist
 * yet (a fresh host's cache directory) is measured through its nearest existing ancestor, which is
 * where it will be created.
 */
export async function usageOfDirectory(probe: FilesystemProbe, directory: string): Promise<FilesystemUsage> {
  const { value: usage, at } = await atNearestExisting(directory, probe);
  return { ...usage, location: usage.location ?? at };
}

/** Percentage of the capacity in use, 0 to 100; NaN when the capacity reported is not positive. */
export function usedPercent(usage: FilesystemUsage): number {
  if (!(usage.totalBytes > 0)) return Number.NaN;
  return 100 - (Math.min(Math.max(0, usage.freeBytes), usage.totalBytes) * 100) / usage.totalBytes;
}
