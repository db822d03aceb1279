/**
 * Staging files: an image is written under a recognisable temporary name in the cache directory
 * (same filesystem, so the final rename is atomic), fsynced, then renamed into its final name.
 * A final name therefore always means a complete, verified image.
 *
 * Large images are written with `O_DIRECT` where the filesystem allows it: whole aligned blocks
 * go straight to the device, so a GiB download neither costs a GiB of page-cache copies and
 * first-touch page faults (CPU the hash needs) nor leaves a GiB of dirty pages for the final
 * fsync, and it does not push the host's VMs' pages out of the cache. The tail that is not a
 * multiple of {@link DIRECT_IO_ALIGNMENT} goes through a second, ordinary descriptor.
 *
 * @module
 */
import { constants } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { DiskFullError } from '../errors.js';
import { createLogger } from '../log.js';
import { makeDirectory, publishFile } from './durable.js';
import { stagingPathFor } from './staging-names.js';
import { findKeptStaging, removeStagingFiles } from './kept-staging.js';
import type { KeptStaging } from './kept-staging.js';
import { removeResumeFiles, writeResumeRecord } from './resume-sidecar.js';
import type { ResumeKey, ResumePoint } from './resume-sidecar.js';

// Kept importable from here, where it lived before the durable publish had a module of its own.
export { fsyncDirectory } from './durable.js';

const log = createLogger('fetch');

/** Mode of the cache files we create: readable by the hypervisor's user, writable only by us. */
export const CACHE_FILE_MODE = 0o644;

/** Where downloaded bytes go until they are published under the final name. */
export interface StagingSink {
  /** Appends bytes. The buffer may be reused by the caller once the promise settles. */
  write(chunk: Uint8Array): Promise<void>;
  /** Makes the bytes durable and publishes them under the final name. */
  commit(): Promise<void>;
  /** Drops everything written; nothing remains. Safe to call after a failed commit. */
  discard(): Promise<void>;
  /**
   * Present when the sink can keep its bytes for a later download of the same image to resume
   * (the file staging sink of a file cache); a sink without it always starts from zero.
   */
  readonly resume?: StagingResume | undefined;
}

/**
 * How a download keeps and adopts staged bytes across failures and restarts (see
 * fetch/resume.ts for the whole story).
 */
export interface StagingResume {
  /**
   * The best staging kept for this sink's image by an earlier download that fits `key`, or null;
   * the other leftovers of the image are removed. Remembers `key` for the checkpoints. Call it
   * under the image's lock, before the first write.
   */
  findKept(key: ResumeKey): Promise<KeptStaging | null>;
  /**
   * Continues `kept` (whose prefix the caller re-hashed): the sink's own empty file is dropped,
   * `kept` is cut to its verified bytes and the next write lands right after them.
   */
  adopt(kept: KeptStaging): Promise<void>;
  /** Removes `kept` (its prefix did not verify). */
  drop(kept: KeptStaging): Promise<void>;
  /**
   * Records that the first `point.bytes` bytes are written and hash to `point.prefixDigest`:
   * makes them durable, then writes the sidecar. Runs beside further writes.
   */
  checkpoint(point: ResumePoint): Promise<void>;
  /**
   * Closes the staging file but keeps it for a later download: with `point`, the sidecar records
   * it first (the bytes made durable); without, the last checkpoint stands. When no sidecar could
   * be written at all the staging is discarded instead. Resolves true when it was kept.
   */
  keep(point: ResumePoint | null): Promise<boolean>;
}

/** Maps ENOSPC/EDQUOT to {@link DiskFullError}; other errors pass through. */
export function mapWriteError(err: unknown, imageId: string | undefined, location: string, required = 0): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new DiskFullError(imageId, required, 0, location, err);
  return err;
}

/**
 * Alignment of `O_DIRECT` writes (buffer address, file offset, length): a multiple of every
 * logical block size in use (512 or 4096 bytes).
 */
export const DIRECT_IO_ALIGNMENT = 4096;

/**
 * Buffered bytes after which a staging file starts a background `fdatasync`. Only writes through
 * the page cache count: `O_DIRECT` writes leave nothing dirty.
 */
const SYNC_EVERY_BYTES = 32 * 1024 * 1024;

/** Options of {@link FileStagingSink.create}. */
export interface FileStagingSinkOptions {
  /**
   * Write whole aligned blocks with `O_DIRECT` when the platform and the filesystem allow it
   * (Linux; not, for example, ramfs); otherwise, or on `false`, every write goes through the page
   * cache. Default true.
   */
  readonly directIo?: boolean | undefined;
  /**
   * Offer {@link StagingSink.resume}: keep the staging file with a sidecar when a download is
   * interrupted, and adopt a kept one. Default false.
   */
  readonly resumable?: boolean | undefined;
}

/** Opens `file` for `O_DIRECT` writes; undefined where that is not possible here. */
async function openDirect(file: string): Promise<FileHandle | undefined> {
  const direct = (constants as { O_DIRECT?: number }).O_DIRECT;
  if (direct === undefined) return undefined;
  try {
    return await open(file, constants.O_WRONLY | direct);
  } catch (err) {
    log('no O_DIRECT for %s (%s): writing through the page cache', file, (err as NodeJS.ErrnoException).code ?? String(err));
    return undefined;
  }
}

/**
 * A staging file for `finalPath`. Created lazily in the same directory (which is created if
 * missing, as Nova's `cache()` does).
 */
export class FileStagingSink implements StagingSink {
  /** The final path the image is published under. */
  readonly finalPath: string;
  #stagingPath: string;
  readonly #imageId: string | undefined;
  readonly #options: FileStagingSinkOptions;
  /** The descriptor that created the file: unaligned writes, the syncs. */
  #handle: FileHandle | undefined;
  /** An `O_DIRECT` descriptor of the same file, while aligned writes go through it. */
  #direct: FileHandle | undefined;
  /** Where the next write goes: both descriptors write at explicit positions. */
  #position = 0;
  #done = false;
  #unsynced = 0;
  #syncing: Promise<void> | undefined;
  /** The image the staged bytes are, once a resuming download said (see {@link StagingResume.findKept}). */
  #key: ResumeKey | undefined;
  /** True once a sidecar for the current staging file exists (written or adopted). */
  #recorded = false;
  /** The sidecar writes, in order: a late one must never replace a newer one. */
  #sidecarWrites: Promise<void> = Promise.resolve();
  /** {@inheritDoc StagingSink.resume} */
  readonly resume: StagingResume | undefined;

  private constructor(finalPath: string, imageId: string | undefined, options: FileStagingSinkOptions) {
    this.finalPath = finalPath;
    this.#stagingPath = stagingPathFor(finalPath);
    this.#imageId = imageId;
    this.#options = options;
    this.resume = options.resumable === true ? this.#resumeApi() : undefined;
  }

  /** The staging path the bytes are written to first (a kept one once adopted). */
  get stagingPath(): string {
    return this.#stagingPath;
  }

  /** Creates the staging file (exclusive, mode {@link CACHE_FILE_MODE}). */
  static async create(finalPath: string, imageId?: string, options: FileStagingSinkOptions = {}): Promise<FileStagingSink> {
    const sink = new FileStagingSink(finalPath, imageId, options);
    const dir = path.dirname(finalPath);
    try {
      // A base is always durable: a new cache directory's own entry is made durable too.
      await makeDirectory(dir, true);
      sink.#handle = await open(sink.stagingPath, 'wx', CACHE_FILE_MODE);
    } catch (err) {
      throw mapWriteError(err, imageId, dir);
    }
    if (options.directIo !== false) sink.#direct = await openDirect(sink.stagingPath);
    return sink;
  }

  /**
   * True while aligned writes bypass the page cache with `O_DIRECT`; false when it was disabled or
   * the filesystem refused it (at open, or with `EINVAL` on a write). Writes that leave the file
   * at an unaligned size (an image's tail) go through the page cache either way.
   */
  get directIo(): boolean {
    return this.#direct !== undefined;
  }

  /** {@inheritDoc StagingSink.write} */
  async write(chunk: Uint8Array): Promise<void> {
    const handle = this.#requireHandle();
    let offset = 0;
    try {
      if (this.#direct !== undefined && this.#position % DIRECT_IO_ALIGNMENT === 0) {
        offset = await this.#writeDirect(chunk, chunk.length - (chunk.length % DIRECT_IO_ALIGNMENT));
      }
      while (offset < chunk.length) {
        const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset, this.#position);
        offset += bytesWritten;
        this.#position += bytesWritten;
        this.#unsynced += bytesWritten;
      }
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

  /**
   * Writes `chunk[0, length)` with `O_DIRECT` at the current position; returns how much of it was
   * written. Stops using `O_DIRECT` for good when the filesystem refuses this write (EINVAL: an
   * alignment it does not accept) or the kernel wrote an unaligned part of it; the caller writes
   * the rest through the page cache.
   */
  async #writeDirect(chunk: Uint8Array, length: number): Promise<number> {
    let offset = 0;
    while (offset < length && this.#direct !== undefined) {
      let written: number;
      try {
        ({ bytesWritten: written } = await this.#direct.write(chunk, offset, length - offset, this.#position));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        await this.#stopDirect('EINVAL');
        break;
      }
      offset += written;
      this.#position += written;
      if (written % DIRECT_IO_ALIGNMENT !== 0) await this.#stopDirect(`a short write of ${written} bytes`);
    }
    return offset;
  }

  async #stopDirect(why: string): Promise<void> {
    const direct = this.#direct;
    this.#direct = undefined;
    log('O_DIRECT writes to %s stopped (%s): writing through the page cache', this.stagingPath, why);
    await direct?.close();
  }

  /** {@inheritDoc StagingSink.commit} */
  async commit(): Promise<void> {
    const handle = this.#requireHandle();
    try {
      await this.#sidecarWrites;
      await this.#syncing;
      await this.#closeDirect();
      // fsync is per file, whichever descriptor: it covers the O_DIRECT blocks' metadata too.
      await publishFile(this.stagingPath, this.finalPath, { sync: true, file: handle });
      this.#done = true;
      this.#handle = undefined;
    } catch (err) {
      throw mapWriteError(err, this.#imageId, path.dirname(this.finalPath));
    }
    // The image is published and durable: a failing close changes nothing about it.
    await handle.close().catch((err: unknown) => {
      log('closing %s after publishing it failed: %O', this.stagingPath, err);
    });
    // The staging name is gone: its sidecar would only be an orphan (removed later if this fails).
    if (this.#recorded) await removeResumeFiles(this.stagingPath);
  }

  /** {@inheritDoc StagingSink.discard} */
  async discard(): Promise<void> {
    await this.#close();
    if (this.#done) return;
    // With its resume files, if any (a sink that never resumes has none: those unlinks find nothing).
    await removeStagingFiles(this.stagingPath);
  }

  /** Closes both descriptors once what runs on them settled; errors are dropped (the bytes go or stay as they are). */
  async #close(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    await this.#sidecarWrites;
    await this.#syncing?.catch(() => undefined);
    await this.#closeDirect().catch(() => undefined);
    await handle?.close().catch(() => undefined);
  }

  #resumeApi(): StagingResume {
    return {
      findKept: (key) => {
        this.#key = key;
        return findKeptStaging(this.finalPath, key, this.stagingPath);
      },
      adopt: (kept) => this.#adopt(kept),
      drop: (kept) => removeStagingFiles(kept.path),
      checkpoint: (point) => this.#record(point),
      keep: (point) => this.#keep(point),
    };
  }

  async #adopt(kept: KeptStaging): Promise<void> {
    const own = this.stagingPath;
    await this.#close();
    await unlink(own).catch(() => undefined);
    this.#stagingPath = kept.path;
    this.#recorded = true;
    try {
      const handle = await open(kept.path, constants.O_RDWR | constants.O_NOFOLLOW);
      this.#handle = handle;
      // Checked again on the descriptor: the name may have been swapped since it was looked at.
      const stats = await handle.stat();
      if (!stats.isFile() || stats.nlink !== 1) throw new Error(`${kept.path} is no longer a regular file of its own`);
      // Bytes past the verified prefix are unverified: cut them off.
      await handle.truncate(kept.bytes);
      this.#position = kept.bytes;
      this.#unsynced = 0;
    } catch (err) {
      throw mapWriteError(err, this.#imageId, path.dirname(this.finalPath));
    }
    if (this.#options.directIo !== false) this.#direct = await openDirect(kept.path);
    log('adopted %s: %d bytes kept', kept.path, kept.bytes);
  }

  /** Makes the first `point.bytes` durable, then records them in the sidecar (in order with other records). */
  #record(point: ResumePoint): Promise<void> {
    const key = this.#key;
    const handle = this.#handle;
    if (key === undefined || handle === undefined) return Promise.resolve();
    const write = this.#sidecarWrites.then(async () => {
      const started = performance.now();
      // fdatasync covers the O_DIRECT blocks' allocation too: the counted bytes are on disk.
      await handle.datasync();
      const synced = performance.now();
      await writeResumeRecord(this.stagingPath, { ...key, ...point });
      this.#recorded = true;
      log('checkpoint of %s: %d bytes (fdatasync %d ms, sidecar %d ms)', this.stagingPath, point.bytes, Math.round(synced - started), Math.round(performance.now() - synced));
    });
    // A failed record keeps the previous one, still true of a shorter prefix.
    this.#sidecarWrites = write.catch((err: unknown) => {
      log('could not record %d bytes of %s for resume: %O', point.bytes, this.stagingPath, err);
    });
    return this.#sidecarWrites;
  }

  async #keep(point: ResumePoint | null): Promise<boolean> {
    if (point !== null) await this.#record(point);
    await this.#close();
    if (!this.#recorded) {
      await removeStagingFiles(this.stagingPath);
      return false;
    }
    log('kept %s for resume', this.stagingPath);
    return true;
  }

  async #closeDirect(): Promise<void> {
    const direct = this.#direct;
    this.#direct = undefined;
    await direct?.close();
  }

  #requireHandle(): FileHandle {
    if (this.#handle === undefined) throw new Error(`staging file ${this.stagingPath} is closed`);
    return this.#handle;
  }
}
