/**
 * Reading instance directories for a pass: the system calls only (list each directory, read the
 * first bytes of each disk, stat each staging file), on the event loop's thread or, for a large
 * host, half of them on a worker thread beside it.
 *
 * A pass over 20,000 instance directories makes ~180,000 small system calls here, one core's
 * worth of time, while the second core of a small compute host sits idle. The worker runs the
 * very same function (its source is sent as text, so it needs no module loader and no build
 * step); parsing and every decision stay on the calling thread, in one place.
 *
 * @module
 */
import type fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { createLogger } from '../../log.js';

const log = createLogger('libvirt');

/** A disk file of an instance directory: its size and its first bytes. */
export interface DiskHead {
  /** File name inside the directory. */
  readonly name: string;
  /** The file's size, bytes. */
  readonly size: number;
  /** How many bytes were read from its start (the head's length before trailing zeros were cut). */
  readonly readLength: number;
  /** Those bytes, without their trailing zeros (they stay zeros: see {@link headBytes}). */
  readonly head: Uint8Array;
}

/** What one instance directory holds that a pass looks at. */
export interface InstanceDirListing {
  /** The directory's name under the instances path. */
  readonly name: string;
  /** Its disk files (`disk`, `disk.*`, staging files excepted). */
  readonly disks: DiskHead[];
  /** Our staging files in it, with their mtimes (ms). */
  readonly staging: { readonly name: string; readonly mtimeMs: number }[];
}

/** File-name rules and sizes the reader applies; plain data, so that a worker can receive them. */
export interface ReaderRules {
  /** Disk file names (source of a RegExp). */
  readonly disk: string;
  /** Any staging file name, ours or Nova's: never a disk (source of a RegExp). */
  readonly staging: string;
  /** Our own staging file names: reported with their mtime (source of a RegExp). */
  readonly ownStaging: string;
  /** Bytes read from the start of each disk. */
  readonly headBytes: number;
}

/** Where a {@link readInstanceDirectories} run is: what it read, and the next name to read. */
export interface ReadProgress {
  /** Listings of the directories read so far, in order. */
  readonly listings: InstanceDirListing[];
  /** Index in `names` of the next directory (after a failure: the one that failed). */
  next: number;
}

/**
 * Reads the directories `names` of `instancesPath` in order, from `progress.next` up to `until`,
 * appending a listing per directory to `progress.listings`. A directory or file that vanishes
 * meanwhile is skipped; any other failure throws with `progress.next` at the directory that
 * failed.
 *
 * Symbolic links are followed, as Nova does: an instance directory that is a link to another
 * volume, and a disk that is a link (absolute or relative, through any chain), are read at their
 * target. The kernel resolves each link (at most 40 hops, then `ELOOP`), and only one level of
 * directories is read, so no link can make this loop. A link that does not resolve (dangling, or
 * a loop) is not a vanished file: its target may be a volume that is not mounted, whose disks use
 * bases. It throws an error carrying `brokenLink` (the link's path), so the pass removes nothing.
 * Staging files are ours and only ever regular files: a link at such a name is ignored.
 *
 * Self-contained on purpose: it is also run on a worker from its source text, so it may use
 * only its parameters and globals (no imports, no module constants).
 */
export function readInstanceDirectories(
  fsApi: typeof fs,
  instancesPath: string,
  names: readonly string[],
  rules: ReaderRules,
  progress: ReadProgress,
  until: number = names.length,
): void {
  const disk = new RegExp(rules.disk);
  const staging = new RegExp(rules.staging);
  const ownStaging = new RegExp(rules.ownStaging);
  const buffer = Buffer.allocUnsafe(rules.headBytes);
  const missing = (err: unknown): boolean => {
    const code = (err as { code?: string } | null)?.code;
    return code === 'ENOENT' || code === 'ENOTDIR';
  };
  // Whether a failed open or listing of `target` may be skipped: it vanished, or (ENOTDIR) it is
  // not a directory. A link still there whose target is missing, or links that loop, throw.
  const skippable = (err: unknown, target: string): boolean => {
    const code = (err as { code?: string } | null)?.code;
    if (code === 'ENOTDIR') return true;
    if (code === 'ENOENT') {
      try {
        if (!fsApi.lstatSync(target).isSymbolicLink()) return true;
      } catch (lstatErr) {
        if (missing(lstatErr)) return true;
        throw lstatErr;
      }
    } else if (code !== 'ELOOP') {
      return false;
    }
    throw Object.assign(new Error(`${target} is a symbolic link that does not resolve (${code})`), { code, brokenLink: target, cause: err });
  };
  for (; progress.next < until; progress.next++) {
    const name = names[progress.next] as string;
    const dir = `${instancesPath}/${name}`;
    let files;
    try {
      files = fsApi.readdirSync(dir, { withFileTypes: true });
    } catch (err) {
      if (skippable(err, dir)) continue;
      throw err;
    }
    const listing: InstanceDirListing = { name, disks: [], staging: [] };
    for (const file of files) {
      const filePath = `${dir}/${file.name}`;
      if (ownStaging.test(file.name)) {
        if (!file.isFile()) continue;
        try {
          listing.staging.push({ name: file.name, mtimeMs: fsApi.lstatSync(filePath).mtimeMs });
        } catch (err) {
          if (!missing(err)) throw err;
        }
        continue;
      }
      if (!(file.isFile() || file.isSymbolicLink()) || !disk.test(file.name) || staging.test(file.name)) continue;
      let fd;
      try {
        // Through links (Nova follows them); non-blocking, so that a FIFO planted where a disk
        // should be cannot hang the open.
        fd = fsApi.openSync(filePath, fsApi.constants.O_RDONLY | fsApi.constants.O_NONBLOCK);
      } catch (err) {
        if (skippable(err, filePath)) continue;
        throw err;
      }
      try {
        const stats = fsApi.fstatSync(fd);
        if (!stats.isFile()) continue;
        let filled = 0;
        while (filled < buffer.length) {
          const n = fsApi.readSync(fd, buffer, filled, buffer.length - filled, filled);
          if (n === 0) break;
          filled += n;
        }
        // Trailing zeros are cut (a qcow2 head is a few hundred bytes, then zeros), so that a
        // worker posts a few hundred bytes per disk instead of the whole read.
        let end = filled;
        while (end > 0 && buffer[end - 1] === 0) end--;
        listing.disks.push({ name: file.name, size: stats.size, readLength: filled, head: Buffer.from(buffer.subarray(0, end)) });
      } finally {
        fsApi.closeSync(fd);
      }
    }
    progress.listings.push(listing);
  }
}

/**
 * The bytes a disk's head was read as: its trimmed bytes followed by the cut zeros, written into
 * `scratch` (at least `readLength` bytes; reused from disk to disk, so nothing is allocated).
 */
export function headBytes(disk: DiskHead, scratch: Uint8Array): Uint8Array {
  if (disk.head.length === disk.readLength) return disk.head;
  const bytes = scratch.subarray(0, disk.readLength);
  bytes.set(disk.head);
  bytes.fill(0, disk.head.length);
  return bytes;
}

/** What {@link readInstanceDirectoriesOnWorker} read. */
export interface WorkerReadResult {
  /** Listings of the directories read, in order. */
  readonly listings: InstanceDirListing[];
  /** Set when the worker stopped early: the index of the first directory it did not read. */
  readonly failedAt?: number;
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
// Some TypeScript runners wrap functions with a name-keeping helper; it is not needed here.
var __name = (fn) => fn;
const read = ${readInstanceDirectories.toString()};
const { instancesPath, names, rules } = workerData;
const progress = { listings: [], next: 0 };
let reply;
try {
  read(fs, instancesPath, names, rules, progress);
  reply = { listings: progress.listings };
} catch {
  reply = { listings: progress.listings, failedAt: progress.next };
}
parentPort.postMessage(reply);
`;

/**
 * {@link readInstanceDirectories} on a worker thread. Resolves with what the worker read and, when
 * it failed on a directory, where: the caller reads the rest itself, so a real error surfaces
 * from the calling thread with its own stack. Resolves with nothing read (failedAt 0) when the
 * worker cannot run at all.
 */
export function readInstanceDirectoriesOnWorker(
  instancesPath: string,
  names: readonly string[],
  rules: ReaderRules,
): Promise<WorkerReadResult> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (reply: WorkerReadResult): void => {
      if (settled) return;
      settled = true;
      resolve(reply);
    };
    let worker: Worker;
    try {
      worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { instancesPath, names, rules } });
    } catch (err) {
      log('no worker for the instance directories (%O); reading them on this thread', err);
      settle({ listings: [], failedAt: 0 });
      return;
    }
    worker.once('message', (reply: WorkerReadResult) => {
      settle(reply);
      void worker.terminate();
    });
    worker.once('error', (err) => {
      log('the instance directory worker failed (%O); reading its share on this thread', err);
      settle({ listings: [], failedAt: 0 });
    });
    worker.once('exit', () => {
      settle({ listings: [], failedAt: 0 });
    });
  });
}
