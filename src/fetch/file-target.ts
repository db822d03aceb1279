/**
 * A {@link FetchTarget} publishing an image as a file: the fetch target of every file backend.
 *
 * @module
 */
import { lstat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { InvalidDiskImageError } from '../errors.js';
import { syncMetadataFs } from '../fs/metadata-fs.js';
import type { MetadataFs } from '../fs/metadata-fs.js';
import { fileKindOf, isNothingThere, unusableDirectory } from '../regular-file.js';
import type { FetchTarget } from './image-fetcher.js';
import { FileStagingSink } from './staging.js';

/**
 * True when `file` exists and is a regular file. Through `mfs` (default synchronous): on a local
 * file system a synchronous stat is microseconds of metadata work that a thread-pool round trip
 * would multiply (it sits on the cached-spawn path).
 */
export async function isRegularFile(file: string, mfs: MetadataFs = syncMetadataFs): Promise<boolean> {
  return (await mfs.statIfAny(file))?.isFile() ?? false;
}

/** Options of {@link fileFetchTarget}. */
export interface FileFetchTargetOptions {
  /** Keep interrupted downloads' staging files and resume them. Default true. */
  readonly resume?: boolean | undefined;
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
 *
 * The existence check (on the cached-spawn path) goes through `mfs`, the cache directory's
 * {@link MetadataFs} (default synchronous).
 *
 * With `resume` (default true) an interrupted download keeps its staging file for the next one to
 * resume (see fetch/resume.ts).
 */
export function fileFetchTarget(
  imageId: string,
  finalPath: string,
  mfs: MetadataFs = syncMetadataFs,
  options: FileFetchTargetOptions = {},
): FetchTarget {
  return {
    name: path.basename(finalPath),
    exists: async () => {
      let stats;
      try {
        stats = await mfs.lstatIfAny(finalPath);
      } catch (err) {
        if (isNothingThere(err)) return false;
        throw err;
      }
      if (stats === undefined) return false;
      const kind = fileKindOf(stats);
      if (kind !== 'regular file') throw new InvalidDiskImageError(finalPath, `it is a ${kind}, not a regular file`, imageId);
      return true;
    },
    createSink: async () => {
      try {
        return await FileStagingSink.create(finalPath, imageId, { resumable: options.resume ?? true });
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
