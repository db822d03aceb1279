/**
 * The one seam for the metadata calls this library makes on directories that may be shared
 * between hosts: the lock directory (`<instancesPath>/locks`), the cache directory and the
 * instance directories. Stats, links, renames, time stamps and reads or writes of a few hundred
 * bytes: nothing that waits for a disk.
 *
 * Two implementations answer the same interface:
 * - {@link syncMetadataFs}: synchronous system calls behind promises. On a local file system each
 *   call is a few microseconds of page-cache work, while a trip through libuv's thread pool costs
 *   100 µs or more; a cached spawn is a handful of such calls, so this is most of its time saved.
 *   A hung server would freeze the event loop (timers, abort signals, the host agent), so it is
 *   for local file systems only.
 * - {@link asyncMetadataFs}: the same calls on libuv's thread pool. A hung network file system
 *   then stalls a pool thread, never the event loop.
 *
 * Which one a directory gets is chosen by `metadataIo` (see `fs/choose-metadata-fs.ts`): `auto`
 * looks at the file system type.
 *
 * @module
 */
import fs from 'node:fs';
import type { BigIntStats, Dirent, Stats } from 'node:fs';
import fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';

/** How the calls of a {@link MetadataFs} are made. */
export type MetadataIoMode = 'sync' | 'async';

/** The `metadataIo` option: `auto` (by file system type, see `fs/choose-metadata-fs.ts`), or one mode for every directory. */
export type MetadataIo = 'auto' | MetadataIoMode;

/** A file opened through a {@link MetadataFs}; the caller closes it. */
export interface MetadataFile {
  /** The descriptor (for an fsync outside the seam). */
  readonly fd: number;
  /** `fstat`. */
  stat(): Promise<Stats>;
  /** `fstat` with nanosecond times. */
  statBigInt(): Promise<BigIntStats>;
  /** Reads up to `length` bytes at `position` into the start of `buffer`, stopping early only at the end of the file; the count read. */
  readFully(buffer: Uint8Array, length: number, position: number): Promise<number>;
  /** Writes all of `bytes` at `position`. */
  writeFully(bytes: Uint8Array, position: number): Promise<void>;
  /** Writes a short text (a record of a few hundred bytes) at the current position, in one call. */
  writeText(text: string): Promise<void>;
  /** The whole file from its start, as UTF-8. */
  readText(): Promise<string>;
  /** `ftruncate`. */
  truncate(length: number): Promise<void>;
  /** Closes the descriptor. */
  close(): Promise<void>;
}

/** The metadata calls, each answered by a promise (a failure is a rejection with the errno error). */
export interface MetadataFs {
  /** How the calls are made; an `auto` choice is made by the first call. */
  mode(): Promise<MetadataIoMode>;
  /** `stat`. */
  stat(p: string): Promise<Stats>;
  /** `lstat`. */
  lstat(p: string): Promise<Stats>;
  /** `lstat` with nanosecond times. */
  lstatBigInt(p: string): Promise<BigIntStats>;
  /** `stat`, or undefined when nothing is there (ENOENT; no error is made for it when the call is synchronous). */
  statIfAny(p: string): Promise<Stats | undefined>;
  /** `lstat`, or undefined when nothing is there (ENOENT), as {@link MetadataFs.statIfAny}. */
  lstatIfAny(p: string): Promise<Stats | undefined>;
  /** The entries of a directory, with their types. */
  readdir(p: string): Promise<Dirent[]>;
  /** `open(2)` with numeric or string flags. */
  open(p: string, flags: number | string, mode?: number): Promise<MetadataFile>;
  /** `mkdir`; with `recursive`, the outermost directory created (undefined when none was). */
  mkdir(p: string, recursive?: boolean): Promise<string | undefined>;
  /** `rmdir`. */
  rmdir(p: string): Promise<void>;
  /** `unlink`. */
  unlink(p: string): Promise<void>;
  /** `link`. */
  link(from: string, to: string): Promise<void>;
  /** `rename`. */
  rename(from: string, to: string): Promise<void>;
  /** `utimes` (follows a link). */
  utimes(p: string, atime: Date | number, mtime: Date | number): Promise<void>;
  /** `lutimes` (never follows a link). */
  lutimes(p: string, atime: Date | number, mtime: Date | number): Promise<void>;
  /** `realpath`. */
  realpath(p: string): Promise<string>;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** A synchronous call as a promise: its throw becomes the rejection. */
function settled<T>(run: () => T): Promise<T> {
  try {
    return Promise.resolve(run());
  } catch (err) {
    return Promise.reject(asError(err));
  }
}

/** A descriptor's calls made synchronously (a class: one object per open, no closures). */
class SyncFile implements MetadataFile {
  readonly fd: number;

  constructor(fd: number) {
    this.fd = fd;
  }

  stat(): Promise<Stats> {
    return settled(() => fs.fstatSync(this.fd));
  }

  statBigInt(): Promise<BigIntStats> {
    return settled(() => fs.fstatSync(this.fd, { bigint: true }));
  }

  readFully(buffer: Uint8Array, length: number, position: number): Promise<number> {
    return settled(() => {
      let filled = 0;
      while (filled < length) {
        const n = fs.readSync(this.fd, buffer, filled, length - filled, position + filled);
        if (n === 0) break;
        filled += n;
      }
      return filled;
    });
  }

  writeFully(bytes: Uint8Array, position: number): Promise<void> {
    return settled(() => {
      let done = 0;
      while (done < bytes.length) done += fs.writeSync(this.fd, bytes, done, bytes.length - done, position + done);
    });
  }

  writeText(text: string): Promise<void> {
    return settled(() => {
      fs.writeSync(this.fd, text);
    });
  }

  readText(): Promise<string> {
    return settled(() => fs.readFileSync(this.fd, 'utf8'));
  }

  truncate(length: number): Promise<void> {
    return settled(() => {
      fs.ftruncateSync(this.fd, length);
    });
  }

  close(): Promise<void> {
    return settled(() => {
      fs.closeSync(this.fd);
    });
  }
}

/** Synchronous system calls: for local file systems (see the module's comment). */
export const syncMetadataFs: MetadataFs = Object.freeze({
  mode: () => Promise.resolve<MetadataIoMode>('sync'),
  stat: (p: string) => settled(() => fs.statSync(p)),
  lstat: (p: string) => settled(() => fs.lstatSync(p)),
  lstatBigInt: (p: string) => settled(() => fs.lstatSync(p, { bigint: true })),
  statIfAny: (p: string) => settled(() => fs.statSync(p, { throwIfNoEntry: false })),
  lstatIfAny: (p: string) => settled(() => fs.lstatSync(p, { throwIfNoEntry: false })),
  readdir: (p: string) => settled(() => fs.readdirSync(p, { withFileTypes: true })),
  open: (p: string, flags: number | string, mode?: number) => settled(() => new SyncFile(fs.openSync(p, flags, mode))),
  mkdir: (p: string, recursive = false) => settled(() => fs.mkdirSync(p, { recursive })),
  rmdir: (p: string) => settled(() => { fs.rmdirSync(p); }),
  unlink: (p: string) => settled(() => { fs.unlinkSync(p); }),
  link: (from: string, to: string) => settled(() => { fs.linkSync(from, to); }),
  rename: (from: string, to: string) => settled(() => { fs.renameSync(from, to); }),
  utimes: (p: string, atime: Date | number, mtime: Date | number) => settled(() => { fs.utimesSync(p, atime, mtime); }),
  lutimes: (p: string, atime: Date | number, mtime: Date | number) => settled(() => { fs.lutimesSync(p, atime, mtime); }),
  realpath: (p: string) => settled(() => fs.realpathSync(p)),
});

function undefinedIfMissing(err: unknown): undefined {
  if ((err as NodeJS.ErrnoException | null)?.code === 'ENOENT') return undefined;
  throw asError(err);
}

function asyncFile(handle: FileHandle): MetadataFile {
  return {
    fd: handle.fd,
    stat: () => handle.stat(),
    statBigInt: () => handle.stat({ bigint: true }),
    readFully: async (buffer, length, position) => {
      let filled = 0;
      while (filled < length) {
        const { bytesRead } = await handle.read(buffer, filled, length - filled, position + filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      return filled;
    },
    writeFully: async (bytes, position) => {
      let done = 0;
      while (done < bytes.length) done += (await handle.write(bytes, done, bytes.length - done, position + done)).bytesWritten;
    },
    writeText: async (text) => {
      await handle.write(text);
    },
    readText: () => handle.readFile('utf8'),
    truncate: (length) => handle.truncate(length),
    close: () => handle.close(),
  };
}

/** The same calls on libuv's thread pool: for network file systems (see the module's comment). */
export const asyncMetadataFs: MetadataFs = Object.freeze({
  mode: () => Promise.resolve<MetadataIoMode>('async'),
  stat: (p: string) => fsp.stat(p),
  lstat: (p: string) => fsp.lstat(p),
  lstatBigInt: (p: string) => fsp.lstat(p, { bigint: true }),
  statIfAny: (p: string) => fsp.stat(p).catch(undefinedIfMissing),
  lstatIfAny: (p: string) => fsp.lstat(p).catch(undefinedIfMissing),
  readdir: (p: string) => fsp.readdir(p, { withFileTypes: true }),
  open: async (p: string, flags: number | string, mode?: number) => asyncFile(await fsp.open(p, flags, mode)),
  mkdir: (p: string, recursive = false) => fsp.mkdir(p, { recursive }),
  rmdir: (p: string) => fsp.rmdir(p),
  unlink: (p: string) => fsp.unlink(p),
  link: (from: string, to: string) => fsp.link(from, to),
  rename: (from: string, to: string) => fsp.rename(from, to),
  utimes: (p: string, atime: Date | number, mtime: Date | number) => fsp.utimes(p, atime, mtime),
  lutimes: (p: string, atime: Date | number, mtime: Date | number) => fsp.lutimes(p, atime, mtime),
  realpath: (p: string) => fsp.realpath(p),
});

/**
 * An already open handle, read this `mode`'s way (positional calls on its descriptor, or its own
 * thread-pool methods); closing it stays its owner's job.
 */
export function fileOfHandle(handle: FileHandle, mode: MetadataIoMode): MetadataFile {
  return mode === 'sync' ? new SyncFile(handle.fd) : asyncFile(handle);
}

/** The implementation of `mode`. */
export function metadataFsOf(mode: MetadataIoMode): MetadataFs {
  return mode === 'sync' ? syncMetadataFs : asyncMetadataFs;
}

/**
 * The calls made in a process `exit` handler (removing the locks still held), where nothing
 * asynchronous runs any more: synchronous whatever the file system, the only ones so.
 */
export const exitTimeFs = Object.freeze({
  /** `lstat` with nanosecond times. */
  lstatBigInt: (p: string): BigIntStats => fs.lstatSync(p, { bigint: true }),
  /** `stat`. */
  stat: (p: string): Stats => fs.statSync(p),
  /** `unlink`. */
  unlink: (p: string): void => {
    fs.unlinkSync(p);
  },
  /** `rmdir`. */
  rmdir: (p: string): void => {
    fs.rmdirSync(p);
  },
});
