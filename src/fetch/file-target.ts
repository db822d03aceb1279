/**
 * A {@link FetchTarget} publishing an image as a file: the fetch target of every file backend.
 *
 * @module
 */
import { statSync } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { InvalidDiskImageError } from '../errors.js';
import { lstatKind, unusableDirectory } from '../regular-file.js';
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
 *
 * Only a regular file at `finalPath` is the image. Anything else there (a symbolic link, a FIFO,
 * a socket, a directory) was planted: it is refused with `InvalidDiskImageError` rather than
 * followed (a link would make a spawn build on unverified bytes and a touch change a file
 * elsewhere) or downloaded over; the operator removes it. A cache directory that is a dangling
 * link (or not a directory) fails the download with `UnusablePathError`.
 */
export function fileFetchTarget(imageId: string, finalPath: string): FetchTarget {
  return {
    name: path.basename(finalPath),
    exists: () => {
      try {
        const kind = lstatKind(finalPath);
        if (kind === null) return Promise.resolve(false);
        if (kind !== 'regular file') throw new InvalidDiskImageError(finalPath, `it is a ${kind}, not a regular file`, imageId);
        return Promise.resolve(true);
      } catch (err) {
        return Promise.reject(err instanceof Error ? err : new Error(String(err)));
      }
    },
    createSink: async () => {
      try {
        return await FileStagingSink.create(finalPath, imageId);
      } catch (err) {
        throw unusableDirectory(path.dirname(finalPath), 'the cache directory', err) ?? err;
      }
    },
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
