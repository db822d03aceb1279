/**
 * The file-system calls proper-lockfile makes, answered with synchronous system calls.
 *
 * A lock is a few metadata operations (mkdir, stat, utimes, rmdir) of a few microseconds each;
 * sent through libuv's thread pool, each costs a round trip of 100 µs or more, and one lock round
 * came to ~0.8 ms, most of a cached spawn. Answering them synchronously keeps proper-lockfile's
 * protocol (a directory whose mtime the holder refreshes) and cuts that cost several times.
 * Callbacks still run asynchronously, as proper-lockfile expects.
 *
 * @module
 */
import fs from 'node:fs';

type Callback<T> = (err: NodeJS.ErrnoException | null, value?: T) => void;

function deferred<T>(callback: Callback<T>, run: () => T): void {
  let value: T;
  try {
    value = run();
  } catch (err) {
    process.nextTick(callback, err);
    return;
  }
  process.nextTick(callback, null, value);
}

/** The `fs` option given to proper-lockfile. */
export const lockFs = {
  mkdir: (p: string, cb: Callback<undefined>): void => {
    deferred(cb, () => {
      fs.mkdirSync(p);
      return undefined;
    });
  },
  rmdir: (p: string, cb: Callback<undefined>): void => {
    deferred(cb, () => {
      fs.rmdirSync(p);
      return undefined;
    });
  },
  stat: (p: string, cb: Callback<fs.Stats>): void => {
    deferred(cb, () => fs.statSync(p));
  },
  utimes: (p: string, atime: Date, mtime: Date, cb: Callback<undefined>): void => {
    deferred(cb, () => {
      fs.utimesSync(p, atime, mtime);
      return undefined;
    });
  },
  realpath: (p: string, cb: Callback<string>): void => {
    deferred(cb, () => fs.realpathSync(p));
  },
  rmdirSync: (p: string): void => {
    fs.rmdirSync(p);
  },
  statSync: (p: string): fs.Stats => fs.statSync(p),
};
