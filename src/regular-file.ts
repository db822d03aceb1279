/**
 * The one way this library opens the files it owns by name (cache entries, the shared-storage
 * registry, the pin file, volume-group metadata, qcow2 headers of bases): a regular file or
 * nothing. Anyone who can write under the instances path can plant something else at those names
 * (a symbolic link to a file elsewhere, a FIFO, a socket, a directory); the rule is that such an
 * object is never followed, never waited on, and is refused with {@link NotRegularFileError},
 * which each caller turns into its own typed error or a move aside ({@link moveAside}).
 *
 * The open is `O_NOFOLLOW | O_NONBLOCK` and the type is re-checked with `fstat` on the
 * descriptor: an lstat first would leave a window in which the name is swapped, and a blocking
 * open of a FIFO never returns. Instance disks are the exception (Nova follows their links); their
 * reader (libvirt-file/instance-dir-reader.ts) runs on a worker too and keeps its own copy of the
 * non-blocking open and fstat check.
 *
 * The open, stat and read go through a {@link MetadataFs} (default synchronous: a few microseconds
 * of metadata work each, which a thread-pool round trip would multiply); the open never waits on
 * a FIFO either way.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { constants, lstatSync, renameSync, statSync } from 'node:fs';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { UnusablePathError } from './errors.js';
import { syncMetadataFs } from './fs/metadata-fs.js';
import type { MetadataFile, MetadataFs } from './fs/metadata-fs.js';

/** What is found at a name, in words for messages. */
export type FileKind =
  | 'regular file'
  | 'directory'
  | 'symbolic link'
  | 'FIFO'
  | 'socket'
  | 'character device'
  | 'block device'
  | 'file of unknown type';

/** The kind of file `stats` describes. */
export function fileKindOf(stats: Stats): FileKind {
  if (stats.isFile()) return 'regular file';
  if (stats.isDirectory()) return 'directory';
  if (stats.isSymbolicLink()) return 'symbolic link';
  if (stats.isFIFO()) return 'FIFO';
  if (stats.isSocket()) return 'socket';
  if (stats.isCharacterDevice()) return 'character device';
  if (stats.isBlockDevice()) return 'block device';
  return 'file of unknown type';
}

/**
 * Something other than a regular file is at a name where only a regular file may be. Internal:
 * callers map it to their typed error (or move the object aside); its `code` is `ENOTREG`, so
 * code that branches on errno codes never mistakes it for a missing file.
 */
export class NotRegularFileError extends Error {
  /** Always `ENOTREG`. */
  readonly code = 'ENOTREG';
  /** The name. */
  readonly path: string;
  /** What is there instead. */
  readonly kind: FileKind;

  /**
   * @param file - the name
   * @param kind - what is there
   */
  constructor(file: string, kind: FileKind) {
    super(`${file} is a ${kind}, not a regular file`);
    this.path = file;
    this.kind = kind;
  }
}

/** True for a {@link NotRegularFileError}. */
export function isNotRegularFile(err: unknown): err is NotRegularFileError {
  return err instanceof NotRegularFileError;
}

/** Options of {@link openRegularFile} and {@link readRegularFile}. */
export interface OpenRegularFileOptions {
  /**
   * Follow a symbolic link at the name (its target must then be a regular file). Default false:
   * only instance disks, which Nova follows, are opened through links.
   */
  readonly followSymlinks?: boolean | undefined;
  /** The calls' way (see fs/metadata-fs.ts). Default synchronous. */
  readonly metadataFs?: MetadataFs | undefined;
}

/** An open regular file (the caller closes it) and its stats. */
export interface OpenRegularFile {
  /** The file, opened read-only. */
  readonly file: MetadataFile;
  /** `fstat` of the descriptor. */
  readonly stats: Stats;
}

/**
 * Opens `file` read-only if it is a regular file. A missing file throws ENOENT as usual.
 *
 * @throws {@link NotRegularFileError} when something else is there (a symbolic link unless
 *   `followSymlinks`, a FIFO, a socket, a directory, a device), without following or waiting on it
 */
export async function openRegularFile(file: string, options: OpenRegularFileOptions = {}): Promise<OpenRegularFile> {
  const follow = options.followSymlinks === true;
  const mfs = options.metadataFs ?? syncMetadataFs;
  let opened: MetadataFile;
  try {
    opened = await mfs.open(file, constants.O_RDONLY | constants.O_NONBLOCK | (follow ? 0 : constants.O_NOFOLLOW));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ELOOP: a link under O_NOFOLLOW (or a loop); ENXIO: a socket (or a FIFO opened for writing).
    if (code === 'ELOOP' || code === 'ENXIO') {
      let kind: FileKind | null;
      try {
        kind = fileKindOf(await (follow ? mfs.stat(file) : mfs.lstat(file)));
      } catch (statErr) {
        if (!isNothingThere(statErr)) throw statErr;
        kind = null;
      }
      if (kind !== null && kind !== 'regular file') throw new NotRegularFileError(file, kind);
    }
    throw err;
  }
  try {
    const stats = await opened.stat();
    if (!stats.isFile()) throw new NotRegularFileError(file, fileKindOf(stats));
    return { file: opened, stats };
  } catch (err) {
    await opened.close();
    throw err;
  }
}

/**
 * The contents of `file` as UTF-8, or null when it does not exist.
 *
 * @throws {@link NotRegularFileError} as {@link openRegularFile}
 */
export async function readRegularFile(file: string, options: OpenRegularFileOptions = {}): Promise<string | null> {
  let opened: OpenRegularFile;
  try {
    opened = await openRegularFile(file, options);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    return await opened.file.readText();
  } finally {
    await opened.file.close();
  }
}

/** Whether a failed stat of a name means nothing is there (missing, or a path that cannot lead to it). */
export function isNothingThere(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP';
}

const MOVED_ASIDE = /\.refused-[0-9a-f]{8}$/;

/** True for a name {@link moveAside} gave. */
export function isMovedAside(name: string): boolean {
  return MOVED_ASIDE.test(name);
}

/**
 * Renames whatever is at `file` to `<file>.refused-<random>` beside it, without following it, and
 * returns the new name: a planted object is kept for the operator to inspect, out of the way of
 * the name this library publishes. The new name matches no cache-entry, staging or temp pattern,
 * so no pass ever reads, touches or removes it.
 */
export function moveAside(file: string): string {
  const aside = path.join(path.dirname(file), `${path.basename(file)}.refused-${randomBytes(4).toString('hex')}`);
  renameSync(file, aside);
  return aside;
}

/**
 * Explains why a file could not be created in `dir` when `dir` is not a usable directory: a
 * symbolic link that does not resolve (dangling, or a loop) or something other than a directory.
 * Returns null when `dir` looks fine (the caller then reports the original error).
 */
export function unusableDirectory(dir: string, what: string, cause: unknown): UnusablePathError | null {
  let kind: FileKind;
  try {
    kind = fileKindOf(lstatSync(dir));
  } catch {
    return null;
  }
  if (kind === 'directory') return null;
  if (kind !== 'symbolic link') return new UnusablePathError(dir, `${what} is a ${kind}, not a directory`, cause);
  let target: FileKind | null;
  try {
    target = fileKindOf(statSync(dir));
  } catch {
    target = null;
  }
  if (target === 'directory') return null;
  return new UnusablePathError(
    dir,
    target === null
      ? `${what} is a symbolic link that does not resolve (its target is missing, or the links loop)`
      : `${what} is a symbolic link to a ${target}, not to a directory`,
    cause,
  );
}
