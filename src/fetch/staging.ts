/**
 * Staging files: an image is written under a recognisable temporary name in the cache directory
 * (same filesystem, so the final rename is atomic), fsynced, then renamed into its final name.
 * A final name therefore always means a complete, verified image.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { DiskFullError } from '../errors.js';

/** Suffix of this library's staging files. */
export const STAGING_SUFFIX = '.staging';

/** Mode of the cache files we create: readable by the hypervisor's user, writable only by us. */
export const CACHE_FILE_MODE = 0o644;

/**
 * True for names of staging files: ours (`*.staging`) and Nova's leftovers (`*.part`,
 * `*.converted`), which Nova itself never cleans (gap D).
 */
export function isStagingName(name: string): boolean {
  return STAGING_NAME.test(name);
}

/** Names {@link isStagingName} accepts. */
export const STAGING_NAME = /(\.staging|\.part|\.converted)$/;

/** Names {@link isOwnStagingName} accepts. */
export const OWN_STAGING_NAME = /\.\d+-[0-9a-f]{8}\.staging$/;

/**
 * The name a staging file would be published as: `<final>` for our `<final>.<pid>-<random>.staging`
 * and for Nova's `<final>.part` / `<final>.converted`; null for any other name.
 */
export function stagingFinalName(name: string): string | null {
  const ours = /^(.+)\.\d+-[^.]+\.staging$/.exec(name);
  if (ours !== null) return ours[1] ?? null;
  for (const suffix of ['.part', '.converted']) {
    if (name.endsWith(suffix) && name.length > suffix.length) return name.slice(0, -suffix.length);
  }
  return null;
}

/** A fresh staging path beside `finalPath`: `<final>.<pid>-<random>.staging`. */
export function stagingPathFor(finalPath: string): string {
  return `${finalPath}.${process.pid}-${randomBytes(4).toString('hex')}${STAGING_SUFFIX}`;
}

/** True for names {@link stagingPathFor} makes (and only those: not Nova's `.part` files). */
export function isOwnStagingName(name: string): boolean {
  return OWN_STAGING_NAME.test(name);
}

/** Where downloaded bytes go until they are published under the final name. */
export interface StagingSink {
  /** Appends bytes. The buffer may be reused by the caller once the promise settles. */
  write(chunk: Uint8Array): Promise<void>;
  /** Makes the bytes durable and publishes them under the final name. */
  commit(): Promise<void>;
  /** Drops everything written; nothing remains. Safe to call after a failed commit. */
  discard(): Promise<void>;
}

/** Maps ENOSPC/EDQUOT to {@link DiskFullError}; other errors pass through. */
export function mapWriteError(err: unknown, imageId: string | undefined, location: string, required = 0): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new DiskFullError(imageId, required, 0, location, err);
  return err;
}

/** fsyncs a directory so a rename in it survives a power loss. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Written bytes after which a staging file starts a background `fdatasync`. */
const SYNC_EVERY_BYTES = 32 * 1024 * 1024;

/**
 * A staging file for `finalPath`. Created lazily in the same directory (which is created if
 * missing, as Nova's `cache()` does).
 */
export class FileStagingSink implements StagingSink {
  /** The final path the image is published under. */
  readonly finalPath: string;
  /** The staging path the bytes are written to first. */
  readonly stagingPath: string;
  readonly #imageId: string | undefined;
  #handle: FileHandle | undefined;
  #done = false;
  #unsynced = 0;
  #syncing: Promise<void> | undefined;

  private constructor(finalPath: string, imageId: string | undefined) {
    this.finalPath = finalPath;
    this.stagingPath = stagingPathFor(finalPath);
    this.#imageId = imageId;
  }

  /** Creates the staging file (exclusive, mode {@link CACHE_FILE_MODE}). */
  static async create(finalPath: string, imageId?: string): Promise<FileStagingSink> {
    const sink = new FileStagingSink(finalPath, imageId);
    const dir = path.dirname(finalPath);
    try {
      await mkdir(dir, { recursive: true });
      sink.#handle = await open(sink.stagingPath, 'wx', CACHE_FILE_MODE);
    } catch (err) {
      throw mapWriteError(err, imageId, dir);
    }
    return sink;
  }

  /** {@inheritDoc StagingSink.write} */
  async write(chunk: Uint8Array): Promise<void> {
    const handle = this.#requireHandle();
    let offset = 0;
    try {
      while (offset < chunk.length) {
        const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
        offset += bytesWritten;
      }
      this.#unsynced += chunk.length;
      if (this.#unsynced >= SYNC_EVERY_BYTES && this.#syncing === undefined) {
        // Flush what is written so far on another thread-pool thread while the download goes on:
        // the kernel would otherwise hold up to dirty_background_ratio of RAM (GiBs) and write it
        // all in the final fsync, after the last byte arrived.
        this.#unsynced = 0;
        const syncing = handle.datasync().finally(() => {
          this.#syncing = undefined;
        });
        syncing.catch(() => undefined);
        this.#syncing = syncing;
      }
    } catch (err) {
      throw mapWriteError(err, this.#imageId, path.dirname(this.finalPath), chunk.length);
    }
  }

  /** {@inheritDoc StagingSink.commit} */
  async commit(): Promise<void> {
    const handle = this.#requireHandle();
    try {
      await this.#syncing;
      await handle.sync();
      await handle.close();
      this.#handle = undefined;
      await rename(this.stagingPath, this.finalPath);
      this.#done = true;
      await fsyncDirectory(path.dirname(this.finalPath));
    } catch (err) {
      throw mapWriteError(err, this.#imageId, path.dirname(this.finalPath));
    }
  }

  /** {@inheritDoc StagingSink.discard} */
  async discard(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    await this.#syncing?.catch(() => undefined);
    await handle?.close().catch(() => undefined);
    if (this.#done) return;
    await unlink(this.stagingPath).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    });
  }

  #requireHandle(): FileHandle {
    if (this.#handle === undefined) throw new Error(`staging file ${this.stagingPath} is closed`);
    return this.#handle;
  }
}
