/**
 * Copies a raw disk image (a cached base) to an instance disk, as cheaply as the filesystem
 * allows: a reflink (instant, shares extents) where supported, otherwise a copy that keeps holes
 * when the source is sparse, otherwise the kernel's own full-file copy. The copy is published
 * under `dst` only once complete (and fsynced, by default), so `dst` never holds a partial disk.
 *
 * @module
 */
import { constants } from 'node:fs';
import { copyFile, open, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { throwIfAborted } from '../abort.js';
import { FlavorDiskSmallerThanImageError, InvalidConfigError, InvalidDiskImageError } from '../errors.js';
import { publishFile } from '../fetch/durable.js';
import { mapWriteError } from '../fetch/staging.js';
import { stagingPathFor } from '../fetch/staging-names.js';
import { createLogger } from '../log.js';

const log = createLogger('disk');

/** How a disk was copied. */
export type RawCopyMethod = 'reflink' | 'sparse-copy' | 'copy';

/** Options of {@link copyRawDisk}. */
export interface CopyRawDiskOptions {
  /**
   * Size the copy must have, in bytes (the flavor's disk). A larger size extends the copy with a
   * hole; a smaller one than the source is refused. Default: the source's size.
   */
  readonly sizeBytes?: number | undefined;
  /** Cancels the copy; checked between blocks (a reflink or kernel copy runs to its end first). */
  readonly signal?: AbortSignal | undefined;
  /** The image being copied, for error messages. */
  readonly imageId?: string | undefined;
  /**
   * fsync the copy (and its directory) before and after publishing it, so it survives a host
   * crash right after the copy. Default true; `cp` and `qemu-img convert` do not.
   */
  readonly sync?: boolean | undefined;
}

/** What {@link copyRawDisk} did. */
export interface CopyRawDiskResult {
  /** The method that produced the copy. */
  readonly method: RawCopyMethod;
}

/** Block size of the sparse copy: each all-zero block is skipped and stays a hole. */
export const SPARSE_COPY_BLOCK_BYTES = 1024 * 1024;

/** Errors meaning "this filesystem pair cannot reflink", after which a plain copy is tried. */
const NO_REFLINK = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY', 'EPERM']);

const ZEROS = Buffer.alloc(SPARSE_COPY_BLOCK_BYTES);

/**
 * Copies the raw disk `src` to `dst`, extended to `options.sizeBytes`. The bytes go to a staging
 * file beside `dst` that is fsynced (unless `options.sync` is false) and renamed over `dst` only
 * on success (an existing `dst` is replaced atomically); on any failure or abort the staging file
 * is removed.
 *
 * @throws `FlavorDiskSmallerThanImageError` when `sizeBytes` is below the source's size
 * @throws `AbortedError` when `signal` aborts
 * @throws `DiskFullError` when the filesystem is full
 * @throws `InvalidConfigError` when `sizeBytes` is not a non-negative safe integer
 */
export async function copyRawDisk(
  src: string,
  dst: string,
  options: CopyRawDiskOptions = {},
): Promise<CopyRawDiskResult> {
  const { signal, imageId, sizeBytes } = options;
  const sync = options.sync ?? true;
  const what = 'Copying the disk';
  throwIfAborted(signal, what, imageId);
  if (sizeBytes !== undefined && (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0)) {
    throw new InvalidConfigError('sizeBytes', 'a non-negative safe integer', sizeBytes);
  }
  const source = await stat(src);
  const targetSize = sizeBytes ?? source.size;
  if (targetSize < source.size) {
    // Shrinking would cut the guest's filesystem; Nova refuses it the same way.
    throw new FlavorDiskSmallerThanImageError(imageId ?? path.basename(src), targetSize, source.size);
  }

  const staging = stagingPathFor(dst);
  const location = path.dirname(dst);
  try {
    let method: RawCopyMethod;
    if (await tryReflink(src, staging)) {
      method = 'reflink';
    } else if (source.blocks * 512 < source.size) {
      method = 'sparse-copy';
      await sparseCopy(src, staging, source.size, source.mode & 0o777, signal, imageId);
    } else {
      method = 'copy';
      await copyFile(src, staging, constants.COPYFILE_EXCL);
    }
    throwIfAborted(signal, what, imageId);
    const handle = await open(staging, 'r+');
    try {
      const copied = (await handle.stat()).size;
      if (copied !== source.size) {
        throw new InvalidDiskImageError(src, `it changed size while it was copied (${source.size} to ${copied} bytes)`, imageId);
      }
      if (targetSize > copied) await handle.truncate(targetSize);
      throwIfAborted(signal, what, imageId);
      await publishFile(staging, dst, { sync, file: handle });
    } finally {
      await handle.close();
    }
    log('copied %s to %s by %s (%d bytes, disk %d bytes)', src, dst, method, source.size, targetSize);
    return { method };
  } catch (err) {
    await unlink(staging).catch(() => undefined);
    throw mapWriteError(err, imageId, location, targetSize);
  }
}

/**
 * Clones `src` to the new file `staging` (FICLONE: shared extents, copy-on-write); false when the
 * filesystems cannot share extents (another device, a filesystem without reflink).
 */
export async function tryReflink(src: string, staging: string): Promise<boolean> {
  try {
    await copyFile(src, staging, constants.COPYFILE_FICLONE_FORCE | constants.COPYFILE_EXCL);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === undefined || !NO_REFLINK.has(code)) throw err;
    log('no reflink from %s to %s (%s); copying instead', src, staging, code);
    // A failed clone can leave an empty file behind, which would make the fallback's EXCL fail.
    await unlink(staging).catch(() => undefined);
    return false;
  }
}

/** Copies `size` bytes block by block, leaving all-zero blocks as holes. */
async function sparseCopy(
  src: string,
  staging: string,
  size: number,
  mode: number,
  signal: AbortSignal | undefined,
  imageId: string | undefined,
): Promise<void> {
  const input = await open(src, 'r');
  try {
    const output = await open(staging, 'wx', mode);
    try {
      const buffer = Buffer.allocUnsafe(SPARSE_COPY_BLOCK_BYTES);
      for (let position = 0; position < size; position += SPARSE_COPY_BLOCK_BYTES) {
        throwIfAborted(signal, 'Copying the disk', imageId);
        const length = Math.min(SPARSE_COPY_BLOCK_BYTES, size - position);
        const block = buffer.subarray(0, length);
        const read = await readFully(input, block, position);
        if (read < length) {
          throw new InvalidDiskImageError(src, `it shrank to ${position + read} bytes while it was copied`, imageId);
        }
        if (!block.equals(ZEROS.subarray(0, length))) await writeFully(output, block, position);
      }
      // Trailing zero blocks were skipped, so the length must be set explicitly.
      await output.truncate(size);
    } finally {
      await output.close();
    }
  } finally {
    await input.close();
  }
}

async function readFully(handle: FileHandle, buffer: Buffer, position: number): Promise<number> {
  let filled = 0;
  while (filled < buffer.length) {
    const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled;
}

async function writeFully(handle: FileHandle, buffer: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buffer.length) {
    const { bytesWritten } = await handle.write(buffer, done, buffer.length - done, position + done);
    done += bytesWritten;
  }
}
