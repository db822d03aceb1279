// Fault injection into node:fs, for the failures a test cannot produce for real (EIO, EACCES as
// root) and for pausing a file operation at an exact point of a race. The library imports
// `node:fs/promises` by name; replacing a function on the module object and calling
// syncBuiltinESMExports() updates those named imports too, so the code under test sees the fault
// without any hook of its own.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';

/** An errno error as node:fs raises it. */
export function errnoError(code: string, syscall: string, file: string): NodeJS.ErrnoException {
  const errnos: Record<string, number> = { EIO: -5, EACCES: -13, EPERM: -1, ENOSPC: -28 };
  return Object.assign(new Error(`${code}: injected fault, ${syscall} '${file}'`), {
    code,
    errno: errnos[code],
    syscall,
    path: file,
  });
}

type PromisesApi = typeof fsp;

/**
 * Replaces `fs.promises[name]` (as imported by name anywhere) with `replacement`, which receives
 * the original. Returns the function that restores it.
 */
export function replaceFsPromise<K extends keyof PromisesApi>(
  name: K,
  replacement: (original: PromisesApi[K]) => PromisesApi[K],
): () => void {
  const target = fsp as unknown as Record<string, unknown>;
  const original = target[name] as PromisesApi[K];
  target[name] = replacement(original);
  syncBuiltinESMExports();
  return () => {
    target[name] = original;
    syncBuiltinESMExports();
  };
}

/**
 * Makes `FileHandle.prototype.write` fail with `code` for files whose path `matches`, once `after`
 * bytes have been written through it. Returns the function that restores it.
 */
export async function failFileHandleWrites(
  matches: (file: string) => boolean,
  code: string,
  after = 0,
): Promise<() => void> {
  const probe = await fsp.open(process.execPath, 'r');
  const proto = Object.getPrototypeOf(probe) as { write: FileHandle['write'] };
  await probe.close();
  const original = proto.write;
  const paths = new WeakMap<object, string>();
  const written = new WeakMap<object, number>();
  const originalOpen = fsp.open;
  const restoreOpen = replaceFsPromise('open', () => (async (file: fs.PathLike | FileHandle, ...rest: unknown[]) => {
    const handle = await (originalOpen as (...args: unknown[]) => Promise<FileHandle>)(file, ...rest);
    if (typeof file === 'string') paths.set(handle, file);
    return handle;
  }));
  proto.write = function (this: FileHandle, ...args: unknown[]) {
    const file = paths.get(this);
    if (file !== undefined && matches(file)) {
      const sofar = written.get(this) ?? 0;
      if (sofar >= after) return Promise.reject(errnoError(code, 'write', file));
      const length = (args[2] as number | undefined) ?? (args[0] as Uint8Array).length;
      written.set(this, sofar + length);
    }
    return (original as (...a: unknown[]) => ReturnType<FileHandle['write']>).apply(this, args);
  };
  return () => {
    proto.write = original;
    restoreOpen();
  };
}

/**
 * Makes the synchronous reads (`fs.readSync`) of files whose path `matches` fail with `code`, for
 * the code that reads headers synchronously. Returns the function that restores them.
 */
export function failSyncReads(matches: (file: string) => boolean, code: string): () => void {
  const originalOpen = fs.openSync;
  const originalRead = fs.readSync;
  const failing = new Map<number, string>();
  fs.openSync = ((file: fs.PathLike, ...rest: unknown[]) => {
    const fd = (originalOpen as (...a: unknown[]) => number)(file, ...rest);
    if (matches(String(file))) failing.set(fd, String(file));
    else failing.delete(fd);
    return fd;
  });
  fs.readSync = ((fd: number, ...rest: unknown[]) => {
    const file = failing.get(fd);
    if (file !== undefined) throw errnoError(code, 'read', file);
    return (originalRead as (...a: unknown[]) => number)(fd, ...rest);
  });
  syncBuiltinESMExports();
  return () => {
    fs.openSync = originalOpen;
    fs.readSync = originalRead;
    syncBuiltinESMExports();
  };
}

type FsApi = typeof fs;

/**
 * Replaces `fs[name]` (callback or sync API, as imported by name anywhere) with `replacement`,
 * which receives the original. Returns the function that restores it.
 */
export function replaceFs<K extends keyof FsApi>(name: K, replacement: (original: FsApi[K]) => FsApi[K]): () => void {
  const target = fs as unknown as Record<string, unknown>;
  const original = target[name] as FsApi[K];
  target[name] = replacement(original);
  syncBuiltinESMExports();
  return () => {
    target[name] = original;
    syncBuiltinESMExports();
  };
}

/**
 * Calls `onSync` before every `FileHandle.prototype.sync` (node:fs/promises' fsync, which a
 * FileHandle method makes unreachable through the module object). Returns the function that
 * restores it.
 */
export async function observeFileHandleSyncs(onSync: () => void): Promise<() => void> {
  const probe = await fsp.open(process.execPath, 'r');
  const proto = Object.getPrototypeOf(probe) as { sync: FileHandle['sync'] };
  await probe.close();
  const original = proto.sync;
  proto.sync = function (this: FileHandle) {
    onSync();
    return original.call(this);
  };
  return () => {
    proto.sync = original;
  };
}

/** A file-system call {@link recordFsOperations} saw, in the order the calls were made. */
export interface FsOperation {
  readonly op: 'fsync' | 'fdatasync' | 'rename' | 'link' | 'unlink' | 'mkdir';
  /** The file or directory (for a descriptor, the path the kernel reports for it). */
  readonly path: string;
  /** The new name, for a rename or a link. */
  readonly to?: string;
}

/** The path behind an open descriptor, as the kernel names it (Linux). */
function descriptorPath(fd: number): string {
  try {
    return fs.readlinkSync(`/proc/self/fd/${String(fd)}`);
  } catch {
    return `fd:${String(fd)}`;
  }
}

/**
 * Records, in order, every fsync and fdatasync (FileHandle methods, callback and sync APIs on raw
 * descriptors), rename, link, unlink and mkdir (promise, callback-free sync and promise APIs),
 * whichever module calls them. Descriptors are named through `/proc/self/fd`, so this needs Linux.
 * Returns the live list and the function that restores everything.
 */
export async function recordFsOperations(): Promise<{ operations: FsOperation[]; restore: () => void }> {
  const operations: FsOperation[] = [];
  const record = (op: FsOperation['op'], file: fs.PathLike, to?: fs.PathLike): void => {
    operations.push(to === undefined ? { op, path: String(file) } : { op, path: String(file), to: String(to) });
  };
  const probe = await fsp.open(process.execPath, 'r');
  const proto = Object.getPrototypeOf(probe) as { sync: FileHandle['sync']; datasync: FileHandle['datasync'] };
  await probe.close();
  const { sync, datasync } = proto;
  proto.sync = function (this: FileHandle) {
    record('fsync', descriptorPath(this.fd));
    return sync.call(this);
  };
  proto.datasync = function (this: FileHandle) {
    record('fdatasync', descriptorPath(this.fd));
    return datasync.call(this);
  };
  type Fn = (...args: unknown[]) => unknown;
  const wrap = (op: FsOperation['op'], twoPaths: boolean) => (original: unknown) =>
    ((...args: unknown[]) => {
      record(op, args[0] as fs.PathLike, twoPaths ? (args[1] as fs.PathLike) : undefined);
      return (original as Fn)(...args);
    }) as never;
  const onDescriptor = (op: FsOperation['op']) => (original: unknown) =>
    ((fd: number, ...rest: unknown[]) => {
      record(op, descriptorPath(fd));
      return (original as Fn)(fd, ...rest);
    }) as never;
  const restorers = [
    replaceFsPromise('rename', wrap('rename', true)),
    replaceFsPromise('link', wrap('link', true)),
    replaceFsPromise('unlink', wrap('unlink', false)),
    replaceFsPromise('mkdir', wrap('mkdir', false)),
    replaceFs('renameSync', wrap('rename', true)),
    replaceFs('linkSync', wrap('link', true)),
    replaceFs('unlinkSync', wrap('unlink', false)),
    replaceFs('mkdirSync', wrap('mkdir', false)),
    replaceFs('fsync', onDescriptor('fsync')),
    replaceFs('fsyncSync', onDescriptor('fsync')),
    replaceFs('fdatasync', onDescriptor('fdatasync')),
    replaceFs('fdatasyncSync', onDescriptor('fdatasync')),
  ];
  return {
    operations,
    restore: () => {
      proto.sync = sync;
      proto.datasync = datasync;
      for (const restore of restorers.reverse()) restore();
    },
  };
}
