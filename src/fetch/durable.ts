/**
 * Durable publishing: the one order in which every file this library publishes (a base, the pins,
 * the shared-storage registry, an instance disk, a volume-group disk) gets its final name, so that
 * when durability is asked for a power loss at any point leaves either no final name or the whole
 * file under it:
 *
 * write, fsync the file, rename() or link() it to its final name (then unlink the staging name),
 * fsync the directory holding the final name; a directory created on the way has its own entry
 * fsynced in its parent.
 *
 * A rename or link is only a change to a directory: without the directory's fsync it can be lost
 * (or, on a filesystem without a journal, half-written) while the file it names is durable; without
 * the file's fsync the name can survive a crash and point at an empty or partial file.
 *
 * Without durability (instance disks by default, as Nova and `qemu-img create` do) nothing is
 * fsynced at all: not the file, not a directory.
 *
 * @module
 */
import { fsync } from 'node:fs';
import { mkdir, open, rename } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { syncMetadataFs } from '../fs/metadata-fs.js';
import type { MetadataFs } from '../fs/metadata-fs.js';
import { createLogger } from '../log.js';

const log = createLogger('fetch');

/** `fsync` of a raw descriptor on libuv's thread pool (a disk flush must not block the event loop). */
function fsyncDescriptor(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fsync(fd, (err) => {
      if (err === null) resolve();
      else reject(err);
    });
  });
}

/** fsyncs the file or directory at `target` through a descriptor of its own. */
async function fsyncPath(target: string): Promise<void> {
  const handle = await open(target, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** fsyncs a directory so a rename, link or unlink in it survives a power loss. */
export function fsyncDirectory(dir: string): Promise<void> {
  return fsyncPath(dir);
}

/**
 * Makes the directories from `first` down to `dir` durable, `first` being the outermost one just
 * created (what `mkdir(dir, { recursive: true })` returns): each one's entry lives in its parent,
 * so every parent from `dir`'s up to `first`'s is fsynced. `dir` itself is fsynced by the publish
 * of the file put in it.
 */
export async function syncNewDirectories(dir: string, first: string): Promise<void> {
  const outermost = path.resolve(first);
  for (let created = path.resolve(dir); ; created = path.dirname(created)) {
    const parent = path.dirname(created);
    await fsyncDirectory(parent);
    if (created === outermost || parent === created) return;
  }
}

/**
 * Creates `dir` (and missing parents) when it does not exist; with `sync`, the entries of the
 * directories it created are fsynced ({@link syncNewDirectories}), so a file published in it
 * cannot lose its directory in a power loss.
 */
export async function makeDirectory(dir: string, sync: boolean): Promise<void> {
  const first = await mkdir(dir, { recursive: true });
  if (sync && first !== undefined) await syncNewDirectories(dir, first);
}

/** Options of {@link publishFile}. */
export interface PublishOptions {
  /**
   * Make the publish durable: fsync the staged file before it gets its name and the final name's
   * directory after. False: no fsync at all.
   */
  readonly sync: boolean;
  /**
   * Publish with `link()` and then unlink the staging name, so an existing final name is never
   * replaced (`EEXIST`); default false: `rename()`, which replaces it atomically.
   */
  readonly exclusive?: boolean | undefined;
  /**
   * An open descriptor of the staged file to fsync (it stays open); without it the staged file is
   * opened by name for the fsync.
   */
  readonly file?: FileHandle | number | undefined;
  /** How the exclusive publish's link and unlink are made (see fs/metadata-fs.ts). Default synchronous. */
  readonly metadataFs?: MetadataFs | undefined;
}

/**
 * Publishes the complete file (or directory built in full) at `staging` under `finalPath`, in the
 * durable order of this module when `options.sync` is set. On failure before the name changed the
 * staging file is left for the caller to remove.
 *
 * The exclusive publish runs `link()` and `unlink()` through `options.metadataFs`, by default
 * synchronously: it is the instance disk's path, where these two page-cache metadata calls take
 * microseconds that a thread-pool round trip each would multiply.
 */
export async function publishFile(staging: string, finalPath: string, options: PublishOptions): Promise<void> {
  const { sync, file } = options;
  if (sync) {
    if (typeof file === 'number') await fsyncDescriptor(file);
    else if (file !== undefined) await file.sync();
    else await fsyncPath(staging);
  }
  if (options.exclusive === true) {
    const mfs = options.metadataFs ?? syncMetadataFs;
    await mfs.link(staging, finalPath);
    try {
      await mfs.unlink(staging);
    } catch (err) {
      // The file is published; a leftover staging name is only clutter, not worth failing for.
      log('could not remove staging name %s of %s: %O', staging, finalPath, err);
    }
  } else {
    await rename(staging, finalPath);
  }
  // One fsync of the directory covers the new name and the removed staging name.
  if (sync) await fsyncDirectory(path.dirname(finalPath));
}
