/**
 * The lease protocol's file-system calls ({@link LockOps}, over a {@link MetadataFs}) and what a
 * lock path holds as seen through them ({@link observeLock}); the protocol itself is `lease.ts`.
 *
 * @module
 */
import type fs from 'node:fs';
import { constants } from 'node:fs';
import { asyncMetadataFs, syncMetadataFs } from '../fs/metadata-fs.js';
import type { MetadataFs } from '../fs/metadata-fs.js';

/** Largest owner record read. */
const MAX_RECORD = 512;
const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const FILE_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** Who holds a lock, as its owner record says. */
export interface LockOwner {
  /** The holder's host. */
  readonly host: string;
  /** The holder's process id on that host. */
  readonly pid: number;
  /** Where that pid means something: the kernel's boot id and pid namespace ('' when unknown). */
  readonly pids: string;
}

/** What a lock path holds, as observed. */
export interface LockObservation {
  /** Inode, mtime and ctime in ns: changes on every refresh, and when the lock is replaced. */
  readonly identity: string;
  /** A regular file (this version's lock), a directory (an older version's, or a registration), or anything else. */
  readonly kind: 'file' | 'directory' | 'other';
  /** The owner record of a regular file; null when it holds none. */
  readonly owner: LockOwner | null;
  /** A regular file of no bytes: a lock created on a full file system, without its record. */
  readonly empty: boolean;
  /** Its mtime, ms since the epoch by whichever clock wrote it: shown, never compared with a clock. */
  readonly mtimeMs: number;
}

/** What one open of a lock path sees: its attributes (fresh on NFS: close-to-open) and its first bytes. */
interface Opened {
  readonly stats: fs.BigIntStats;
  readonly text: string;
}

/** The file-system calls of the protocol: synchronous (a spawn's lock) or on the thread pool. */
export interface LockOps {
  lstat(p: string): Promise<fs.BigIntStats>;
  /** Opens without following a link or waiting (a FIFO), stats, reads the first bytes of a file. */
  openStat(p: string, directory: boolean): Promise<Opened>;
  /** Creates `p` (never over anything) holding `data`; false when the file system was full: `p` is then empty. */
  writeNew(p: string, data: string): Promise<boolean>;
  link(from: string, to: string): Promise<void>;
  unlink(p: string): Promise<void>;
  mkdir(p: string): Promise<void>;
  rmdir(p: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  touch(p: string): Promise<void>;
}

/**
 * The protocol's calls over one {@link MetadataFs}: synchronous for a lock directory on a local
 * file system, on the thread pool for one on a network file system or for batch work.
 */
export function lockOpsOver(mfs: MetadataFs): LockOps {
  return {
    lstat: (p) => mfs.lstatBigInt(p),
    openStat: async (p, directory) => {
      const file = await mfs.open(p, directory ? DIR_FLAGS : FILE_FLAGS);
      try {
        const stats = await file.statBigInt();
        if (!stats.isFile()) return { stats, text: '' };
        const buf = Buffer.alloc(MAX_RECORD);
        return { stats, text: buf.toString('utf8', 0, await file.readFully(buf, MAX_RECORD, 0)) };
      } finally {
        await file.close();
      }
    },
    writeNew: async (p, data) => {
      const file = await mfs.open(p, 'wx');
      try {
        await file.writeText(data);
        return true;
      } catch (err) {
        if (isFull(err)) {
          await file.truncate(0);
          return false;
        }
        await mfs.unlink(p);
        throw err;
      } finally {
        await file.close();
      }
    },
    link: (from, to) => mfs.link(from, to),
    unlink: (p) => mfs.unlink(p),
    mkdir: async (p) => {
      await mfs.mkdir(p);
    },
    rmdir: (p) => mfs.rmdir(p),
    rename: (from, to) => mfs.rename(from, to),
    touch: (p) => {
      const now = new Date();
      return mfs.utimes(p, now, now);
    },
  };
}

/** Synchronous system calls: a few microseconds each, no thread-pool round trip (see fs/metadata-fs.ts). */
export const syncLockOps: LockOps = lockOpsOver(syncMetadataFs);

/** The same calls on libuv's thread pool, for batch work holding many locks. */
export const threadLockOps: LockOps = lockOpsOver(asyncMetadataFs);

/** The errno code of a failure, if any. */
export function codeOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

function isFull(err: unknown): boolean {
  const code = codeOf(err);
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** Inode, mtime and ctime in ns: what changes on every refresh of a lock, and when it is replaced. */
export function identityOf(st: fs.BigIntStats): string {
  return `${st.ino}-${st.mtimeNs}-${st.ctimeNs}`;
}

function parseOwner(text: string): LockOwner | null {
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== 'object' || value === null) return null;
    const { host, pid, pids } = value as Record<string, unknown>;
    if (typeof host !== 'string' || typeof pid !== 'number') return null;
    return { host, pid, pids: typeof pids === 'string' ? pids : '' };
  } catch {
    return null;
  }
}

/**
 * What is at `p`, never following a link and opening only a regular file or a directory (with
 * `O_NONBLOCK`: a FIFO swapped in meanwhile is not waited on); null when nothing. The open makes an
 * NFS client revalidate the attributes (close-to-open): a cached mtime must not make a live lock
 * look silent.
 */
export async function observeLock(p: string, ops: LockOps = syncLockOps): Promise<LockObservation | null> {
  let st: fs.BigIntStats;
  try {
    st = await ops.lstat(p);
  } catch (err) {
    if (codeOf(err) === 'ENOENT') return null;
    throw err;
  }
  let text = '';
  if (st.isFile() || st.isDirectory()) {
    try {
      const opened = await ops.openStat(p, st.isDirectory());
      // Replaced between the lstat and the open: what the open found stands (judged as it is now).
      st = opened.stats;
      text = opened.text;
    } catch (err) {
      const code = codeOf(err);
      if (code === 'ENOENT') return null;
      // No read permission, or swapped for a link (ELOOP) or a non-directory: the lstat stands.
      if (code !== 'EACCES' && code !== 'EPERM' && code !== 'ELOOP' && code !== 'ENOTDIR') throw err;
    }
  }
  const kind = st.isFile() ? 'file' : st.isDirectory() ? 'directory' : 'other';
  const empty = kind === 'file' && st.size === 0n;
  return { identity: identityOf(st), kind, owner: kind === 'file' ? parseOwner(text) : null, empty, mtimeMs: Number(st.mtimeMs) };
}
