/**
 * Cache entries in use as backing files of instance disks (Nova's `_list_backing_images`), read
 * from the qcow2 headers directly: no process per disk.
 *
 * Divergences from Nova, on purpose:
 * - every `disk*` file of an instance directory counts (`disk`, `disk.local`, `disk.eph0`,
 *   `disk.swap`, `disk.rescue`, ...), not only `disk` (docs/nova-parity.md, gap B);
 * - every directory of the instances path is read (links to directories elsewhere included), not
 *   only those of the listed instances. A disk that exists is in use whatever the instance list
 *   says: Nova's list can lag (a replica that has not seen an instance being spawned:
 *   docs/nova-parity.md, gap H) or miss hosts (one that dropped out of the shared-storage
 *   registry: docs/nova-parity.md, bug 1), and deleting the base of an existing overlay corrupts
 *   it. A leftover directory of a deleted
 *   instance keeps its base alive until the directory is removed, which is the safe side.
 *
 * @module
 */
import fs from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { FIRST_READ_BYTES } from '../../disk/qcow2-format.js';
import { inspectDiskImageHead, readBackingFile } from '../../disk/qcow2-header.js';
import { UnusablePathError } from '../../errors.js';
import { OWN_STAGING_NAME, STAGING_NAME } from '../../fetch/staging-names.js';
import type { MetadataFs } from '../../fs/metadata-fs.js';
import { isMovedAside } from '../../regular-file.js';
import { headBytes, readInstanceDirectories, readInstanceDirectoriesOnWorker } from './instance-dir-reader.js';
import type { InstanceDirListing, ReadProgress, ReaderRules } from './instance-dir-reader.js';

/** Instance directories read between two yields to the event loop. */
const YIELD_EVERY = 64;

/**
 * From this many instance directories on, a worker thread reads half of them: below it, the
 * worker's start-up (~20 ms) costs more than it saves.
 */
export const WORKER_MIN_DIRECTORIES = 2048;

const RULES: ReaderRules = {
  disk: /^disk($|\.)/.source,
  staging: STAGING_NAME.source,
  ownStaging: OWN_STAGING_NAME.source,
  headBytes: FIRST_READ_BYTES,
};

/** A staging file found in an instance directory: a disk whose writer died before publishing it. */
export interface InstanceStagingFile {
  /** Its path. */
  readonly path: string;
  /** When it was last written, ms. */
  readonly lastModifiedMs: number;
}

/** What {@link collectBackingFiles} found. */
export interface InstanceDisksScan {
  /** Base file name → the disk it backs. */
  readonly backing: Map<string, string>;
  /** Our staging files in instance directories (see `stagingPathFor`). */
  readonly staging: InstanceStagingFile[];
}

/** Options of {@link collectBackingFiles}. */
export interface CollectBackingFilesOptions {
  /** Directories from which a worker thread reads half of them. Default {@link WORKER_MIN_DIRECTORIES}. */
  readonly workerMinDirectories?: number | undefined;
  /**
   * The instances path's calls (see fs/metadata-fs.ts). Default synchronous. When they are on the
   * thread pool (a network file system), every instance directory is read on the worker thread,
   * whatever their number, so that a hung server never holds this thread.
   */
  readonly metadataFs?: MetadataFs | undefined;
}

/**
 * Maps each base file name that backs a disk in a directory of `instancesPath` to a description
 * of its user, and lists the staging files left there. Every directory is read except those
 * named in `skipDirs` (the cache and lock directories, our own files) and objects moved aside.
 * Staging files (a disk being written, or left by a crash) are not disks. Disks that vanish
 * meanwhile are skipped (Nova bug 1261442: docs/nova-parity.md, bug 5); a disk that exists but
 * cannot be read fails the whole pass, since nothing can then be proven unused. Instance
 * directories and disks that are symbolic links are read at their targets (as Nova does); a link
 * that does not resolve (dangling, or a loop) fails the pass the same way.
 *
 * Like Nova, only the backing file's base name is kept: the base is looked up in our cache
 * directory whatever directory the header names.
 *
 * @throws `UnusablePathError` for an instance directory or disk whose link does not resolve
 */
export async function collectBackingFiles(
  instancesPath: string,
  skipDirs: ReadonlySet<string>,
  options: CollectBackingFilesOptions = {},
): Promise<InstanceDisksScan> {
  // Links too: an instance directory may be a link to another volume (Nova follows it).
  const names = (await readdir(instancesPath, { withFileTypes: true }))
    .filter((dirent) => (dirent.isDirectory() || dirent.isSymbolicLink()) && !skipDirs.has(dirent.name) && !isMovedAside(dirent.name))
    .map((dirent) => dirent.name);
  try {
    return await collect(instancesPath, names, options);
  } catch (err) {
    const link = (err as { brokenLink?: unknown } | null)?.brokenLink;
    if (typeof link !== 'string') throw err;
    throw new UnusablePathError(
      link,
      'an instance directory or disk is a symbolic link that does not resolve (its target is missing, or the links loop), so the bases it may use are unknown and this pass removes nothing',
      err,
    );
  }
}

async function collect(instancesPath: string, names: readonly string[], options: CollectBackingFilesOptions): Promise<InstanceDisksScan> {
  const workerMin = options.workerMinDirectories ?? WORKER_MIN_DIRECTORIES;
  const offThread = options.metadataFs !== undefined && (await options.metadataFs.mode()) === 'async';
  // The worker reads the first half while this thread reads the second (or, off this thread, all
  // of them): the results are merged in directory order, exactly as one thread would have
  // produced them.
  const offloaded = offThread ? names.length : names.length >= workerMin ? Math.floor(names.length / 2) : 0;
  const fromWorker = offloaded > 0 ? readInstanceDirectoriesOnWorker(instancesPath, names.slice(0, offloaded), RULES) : null;
  const mine = await readHere(instancesPath, names.slice(offloaded));
  let listings = mine;
  if (fromWorker !== null) {
    const worker = await fromWorker;
    // Whatever the worker did not get to (it failed, or could not start) is read here, so a real
    // error is raised on this thread (with synchronous calls even off-thread: a failure path).
    const rest = worker.failedAt === undefined ? [] : await readHere(instancesPath, names.slice(worker.failedAt, offloaded));
    listings = [...worker.listings, ...rest, ...mine];
  }
  return interpret(instancesPath, listings, options.metadataFs);
}

/**
 * Reads `names` on this thread: synchronous calls in small batches (a thread-pool round trip per
 * call costs more than the call itself on a big host), yielding to the event loop between them.
 */
async function readHere(instancesPath: string, names: readonly string[]): Promise<InstanceDirListing[]> {
  const progress: ReadProgress = { listings: [], next: 0 };
  while (progress.next < names.length) {
    if (progress.next > 0) await new Promise((resolve) => setImmediate(resolve));
    readInstanceDirectories(fs, instancesPath, names, RULES, progress, Math.min(progress.next + YIELD_EVERY, names.length));
  }
  return progress.listings;
}

async function interpret(instancesPath: string, listings: readonly InstanceDirListing[], metadataFs: MetadataFs | undefined): Promise<InstanceDisksScan> {
  const backing = new Map<string, string>();
  const staging: InstanceStagingFile[] = [];
  const scratch = new Uint8Array(RULES.headBytes);
  for (const listing of listings) {
    const dir = path.join(instancesPath, listing.name);
    for (const file of listing.staging) staging.push({ path: path.join(dir, file.name), lastModifiedMs: file.mtimeMs });
    for (const disk of listing.disks) {
      const filePath = path.join(dir, disk.name);
      const info = inspectDiskImageHead(headBytes(disk, scratch), disk.size, filePath);
      let backingFile: string | null;
      if (info !== null) {
        backingFile = info.header?.backingFile ?? null;
      } else {
        // The header points past the first bytes read (large clusters, long names): read it all.
        try {
          backingFile = await readBackingFile(filePath, undefined, metadataFs);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT' || code === 'ENOTDIR') continue;
          throw err;
        }
      }
      if (backingFile !== null) backing.set(path.basename(backingFile), `backing file of ${listing.name}/${disk.name}`);
    }
  }
  return { backing, staging };
}
