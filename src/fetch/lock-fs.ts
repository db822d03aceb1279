/**
 * The file-system calls proper-lockfile makes (mkdir, stat, utimes, rmdir, realpath), answered by
 * a {@link MetadataFs}: synchronous system calls on a local lock directory, the thread pool on a
 * network one.
 *
 * A lock is a few metadata operations of a few microseconds each; sent through libuv's thread
 * pool, each costs a round trip of 100 µs or more, and one lock round came to ~0.8 ms, most of a
 * cached spawn. Answering them synchronously keeps proper-lockfile's protocol (a directory whose
 * mtime the holder refreshes) and cuts that cost several times. Callbacks still run
 * asynchronously, as proper-lockfile expects.
 *
 * @module
 */
import type fs from 'node:fs';
import { exitTimeFs, syncMetadataFs } from '../fs/metadata-fs.js';
import type { MetadataFs } from '../fs/metadata-fs.js';

type Callback<T> = (err: NodeJS.ErrnoException | null, value?: T) => void;

/** Calls back on the next tick, outside the promise (a throwing callback is not a rejection). */
function callingBack<T>(done: Promise<T>, callback: Callback<T>): void {
  done.then(
    (value) => {
      process.nextTick(callback, null, value);
    },
    (err: unknown) => {
      process.nextTick(callback, err);
    },
  );
}

/** The `fs` option given to proper-lockfile, over `mfs`. */
export interface LockFs {
  /** `mkdir`. */
  mkdir(p: string, cb: Callback<void>): void;
  /** `rmdir`. */
  rmdir(p: string, cb: Callback<void>): void;
  /** `stat`. */
  stat(p: string, cb: Callback<fs.Stats>): void;
  /** `utimes`. */
  utimes(p: string, atime: Date, mtime: Date, cb: Callback<void>): void;
  /** `realpath`. */
  realpath(p: string, cb: Callback<string>): void;
  /** At process exit only (proper-lockfile's exit handler). */
  rmdirSync(p: string): void;
  /** At process exit only. */
  statSync(p: string): fs.Stats;
}

/** The `fs` option given to proper-lockfile, its calls made through `mfs`. */
export function lockFsOver(mfs: MetadataFs): LockFs {
  return {
    mkdir: (p, cb) => {
      callingBack(
        mfs.mkdir(p).then(() => undefined),
        cb,
      );
    },
    rmdir: (p, cb) => {
      callingBack(mfs.rmdir(p), cb);
    },
    stat: (p, cb) => {
      callingBack(mfs.stat(p), cb);
    },
    utimes: (p, atime, mtime, cb) => {
      callingBack(mfs.utimes(p, atime, mtime), cb);
    },
    realpath: (p, cb) => {
      callingBack(mfs.realpath(p), cb);
    },
    rmdirSync: exitTimeFs.rmdir,
    statSync: exitTimeFs.stat,
  };
}

/** The `fs` option given to proper-lockfile for a lock directory on a local file system. */
export const lockFs: LockFs = lockFsOver(syncMetadataFs);
