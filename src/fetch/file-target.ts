/**
 * A {@link FetchTarget} publishing an image as a file: the fetch target of every file backend.
 *
 * @module
 */
import { statSync } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { FetchTarget } from './image-fetcher.js';
import { FileStagingSink } from './staging.js';

/**
 * True when `file` exists and is a regular file. A synchronous stat: microseconds of metadata work
 * that a thread-pool round trip would multiply (it sits on the cached-spawn path).
 */
export function isRegularFile(file: string): Promise<boolean> {
  try {
    return Promise.resolve(statSync(file).isFile());
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return Promise.resolve(false);
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

/**
 * The target publishing `imageId` at `finalPath`; its name (and lock name) is the file's base
 * name, as Nova's lock `nova-<basename>` is.
 */
export function fileFetchTarget(imageId: string, finalPath: string): FetchTarget {
  return {
    name: path.basename(finalPath),
    exists: () => isRegularFile(finalPath),
    createSink: () => FileStagingSink.create(finalPath, imageId),
    filePath: finalPath,
    remove: async () => {
      // Only a regular file is ever unlinked: a symlink planted under the name is left alone.
      try {
        if (!(await lstat(finalPath)).isFile()) return false;
        await unlink(finalPath);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
        throw err;
      }
    },
  };
}
