/**
 * What `statfs(2)` says of a directory's file system besides its size: its type. And the walk up
 * to the nearest existing ancestor that every statfs of a directory not created yet needs.
 *
 * @module
 */
import { statfs } from 'node:fs/promises';
import path from 'node:path';

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

/** The type of a filesystem (`f_type` of `statfs(2)`, a magic number such as NFS's 0x6969). */
export type FilesystemTypeProbe = (directory: string) => Promise<number>;

/** The real type probe: `statfs(2)`'s `f_type`, as an unsigned 32-bit number. */
export const statfsTypeProbe: FilesystemTypeProbe = async (directory) => (await statfs(directory)).type >>> 0;
