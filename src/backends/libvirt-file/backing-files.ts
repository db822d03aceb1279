/**
 * Cache entries in use as backing files of instance disks (Nova's `_list_backing_images`), read
 * from the qcow2 headers directly: no process per disk.
 *
 * Divergences from Nova, on purpose:
 * - every `disk*` file of an instance directory counts (`disk`, `disk.local`, `disk.eph0`,
 *   `disk.swap`, `disk.rescue`, ...), not only `disk` (gap B);
 * - every directory of the instances path is read, not only those of the listed instances. A disk
 *   that exists is in use whatever the instance list says: Nova's list can lag (a replica that has
 *   not seen an instance being spawned, gap H) or miss hosts (one that dropped out of the
 *   shared-storage registry, the "Disappearing Images"), and deleting the base of an existing
 *   overlay corrupts it. A leftover directory of a deleted instance keeps its base alive until the
 *   directory is removed, which is the safe side.
 *
 * @module
 */
import { lstatSync, readdirSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { readBackingFile } from '../../disk/qcow2-header.js';
import { isOwnStagingName, isStagingName } from '../../fetch/staging.js';

/** Instance directories read between two yields to the event loop. */
const YIELD_EVERY = 64;

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** A staging file found in an instance directory: a disk whose writer died before publishing it. */
export interface InstanceStagingFile {
  /** Its path. */
  readonly path: string;
  /** When it was last written, ms. */
  readonly lastModifiedMs: number;
}

/** What {@link collectBackingFiles} found. */
export interface InstanceDisksScan {
  /** Base file name → the disk it backs. */
  readonly backing: Map<string, string>;
  /** Our staging files in instance directories (see `stagingPathFor`). */
  readonly staging: InstanceStagingFile[];
}

/**
 * Maps each base file name that backs a disk in a directory of `instancesPath` to a description
 * of its user, and lists the staging files left there. Every directory is read except those
 * named in `skipDirs` (the cache and lock directories). Staging files (a disk being written, or
 * left by a crash) are not disks. Disks that vanish meanwhile are skipped (Nova bug 1261442); a
 * disk that exists but cannot be read fails the whole pass, since nothing can then be proven
 * unused.
 *
 * Like Nova, only the backing file's base name is kept: the base is looked up in our cache
 * directory whatever directory the header names.
 */
export async function collectBackingFiles(
  instancesPath: string,
  skipDirs: ReadonlySet<string>,
): Promise<InstanceDisksScan> {
  const backing = new Map<string, string>();
  const staging: InstanceStagingFile[] = [];
  const dirents = await readdir(instancesPath, { withFileTypes: true });
  let sinceYield = 0;
  for (const dirent of dirents) {
    if (!dirent.isDirectory() || skipDirs.has(dirent.name)) continue;
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
      if (!file.isFile()) continue;
      const filePath = path.join(dir, file.name);
      if (isOwnStagingName(file.name)) {
        const mtime = mtimeOrNull(filePath);
        if (mtime !== null) staging.push({ path: filePath, lastModifiedMs: mtime });
        continue;
      }
      if (!(file.name === 'disk' || file.name.startsWith('disk.')) || isStagingName(file.name)) continue;
      let backingFile: string | null;
      try {
        backingFile = await readBackingFile(filePath);
      } catch (err) {
        if (isMissing(err)) continue;
        throw err;
      }
      if (backingFile !== null) backing.set(path.basename(backingFile), `backing file of ${dirent.name}/${file.name}`);
    }
  }
  return { backing, staging };
}

function mtimeOrNull(file: string): number | null {
  try {
    return lstatSync(file).mtimeMs;
  } catch (err) {
    if (isMissing(err)) return null;
    throw err;
  }
}
