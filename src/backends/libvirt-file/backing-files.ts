/**
 * Cache entries in use as backing files of instance disks (Nova's `_list_backing_images`), read
 * from the qcow2 headers directly: no process per disk.
 *
 * Divergence from Nova, on purpose (gap B): every `disk*` file of an instance directory counts
 * (`disk`, `disk.local`, `disk.eph0`, `disk.swap`, `disk.rescue`, ...), not only `disk`.
 *
 * @module
 */
import { readdirSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { readBackingFile } from '../../disk/qcow2-header.js';

/** Instance directories read between two yields to the event loop. */
const YIELD_EVERY = 64;

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Maps each base file name that backs a disk of a recognised instance directory to a description
 * of its user. Only directories named in `instanceNames` are read (Nova ignores the others).
 * Disks that vanish meanwhile are skipped (Nova bug 1261442); a disk that exists but cannot be
 * read fails the whole pass, since nothing can then be proven unused.
 *
 * Like Nova, only the backing file's base name is kept: the base is looked up in our cache
 * directory whatever directory the header names.
 */
export async function collectBackingFiles(
  instancesPath: string,
  instanceNames: ReadonlySet<string>,
): Promise<Map<string, string>> {
  const used = new Map<string, string>();
  const dirents = await readdir(instancesPath, { withFileTypes: true });
  let sinceYield = 0;
  for (const dirent of dirents) {
    if (!dirent.isDirectory() || !instanceNames.has(dirent.name)) continue;
    // Synchronous reads in small batches: a thread-pool round trip per call costs more than the
    // call itself on a big host, and yielding keeps the event loop responsive meanwhile.
    if (++sinceYield >= YIELD_EVERY) {
      sinceYield = 0;
      await new Promise((resolve) => setImmediate(resolve));
    }
    const dir = path.join(instancesPath, dirent.name);
    let files;
    try {
      files = readdirSync(dir, { withFileTypes: true });
    } catch (err) {
      if (isMissing(err)) continue;
      throw err;
    }
    for (const file of files) {
      if (!file.isFile() || !(file.name === 'disk' || file.name.startsWith('disk.'))) continue;
      let backing: string | null;
      try {
        backing = await readBackingFile(path.join(dir, file.name));
      } catch (err) {
        if (isMissing(err)) continue;
        throw err;
      }
      if (backing !== null) used.set(path.basename(backing), `backing file of ${dirent.name}/${file.name}`);
    }
  }
  return used;
}
