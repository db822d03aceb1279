/**
 * A qcow2 header reader that parses the file in-process instead of running `qemu-img info`: one
 * small read (plus one more, at most a cluster, for unusual layouts) per image, so scanning a
 * cache of thousands of disks costs no process per disk.
 *
 * The reads go through a {@link MetadataFs}. By default they are synchronous positional syscalls
 * behind an async API: one header costs a few tens of microseconds that way, against 100-250 µs on
 * a loaded host for the four thread-pool round trips of `fs/promises` (open, fstat, read, close),
 * and the event loop is held for one 4 KiB read of metadata that is nearly always in the page
 * cache. On a network file system the caller passes the thread-pool one, so that a hung server
 * stalls a pool thread instead of the event loop.
 *
 * The format and its validation are in `qcow2-format.ts`.
 *
 * @module
 */
import type { Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { InvalidDiskImageError } from '../errors.js';
import { fileOfHandle, syncMetadataFs } from '../fs/metadata-fs.js';
import type { MetadataFile, MetadataFs } from '../fs/metadata-fs.js';
import { isNotRegularFile, openRegularFile } from '../regular-file.js';
import { FIRST_READ_BYTES, parseQcow2Prefix } from './qcow2-format.js';
import type { Qcow2Header } from './qcow2-format.js';


/** What an image file is, as far as this library cares. */
export type DiskFormat = 'qcow2' | 'raw';

/** The result of {@link inspectDiskImage}. */
export interface DiskImageInfo {
  /** `qcow2` when the file has the qcow2 magic (and a valid header), else `raw`. */
  readonly format: DiskFormat;
  /** Size of the file itself. */
  readonly fileSize: number;
  /** Size of the disk the guest sees: the header's size for qcow2, the file size for raw. */
  readonly virtualSize: number;
  /** The header, for qcow2 files. */
  readonly header: Qcow2Header | null;
}

/** Options of {@link inspectDiskImage}. */
export interface InspectDiskImageOptions {
  /**
   * Read through a symbolic link at the path. Default false: a base is ours and only ever a
   * regular file, so a link there is refused, never followed. Instance disks (Nova follows their
   * links) are read with true.
   */
  readonly followSymlinks?: boolean | undefined;
  /** The calls' way (see fs/metadata-fs.ts). Default synchronous. */
  readonly metadataFs?: MetadataFs | undefined;
}

/**
 * Reads and validates the qcow2 header of `file`.
 *
 * @param file - a path, or an open handle (left open; it is read with positional reads only)
 * @param imageId - the image, for error messages
 * @throws `InvalidDiskImageError` when the file is not qcow2 or its header is invalid
 */
export async function readQcow2Header(file: string | FileHandle, imageId?: string): Promise<Qcow2Header> {
  const info = await inspectDiskImage(file, imageId);
  if (info.header === null) {
    throw new InvalidDiskImageError(nameOf(file), 'it is not a qcow2 image (no qcow2 magic)', imageId);
  }
  return info.header;
}

/**
 * Says whether `file` is qcow2 or raw, with its sizes and (for qcow2) its validated header.
 * A file that does not start with the qcow2 magic is raw; one that does but whose header is
 * invalid or truncated is an error, never silently raw.
 *
 * @param file - a path, or an open handle (left open)
 * @param imageId - the image, for error messages
 * @param options - whether a symbolic link at the path is followed (default: refused)
 * @throws `InvalidDiskImageError` when the file has the qcow2 magic but an invalid header, or is
 *   not a regular file
 */
export async function inspectDiskImage(file: string | FileHandle, imageId?: string, options: InspectDiskImageOptions = {}): Promise<DiskImageInfo> {
  const mfs = options.metadataFs ?? syncMetadataFs;
  if (typeof file !== 'string') {
    const adopted = fileOfHandle(file, await mfs.mode());
    return inspectFile(adopted, await adopted.stat(), nameOf(file), imageId);
  }
  let opened: MetadataFile;
  let stats: Stats;
  try {
    ({ file: opened, stats } = await openRegularFile(file, options));
  } catch (err) {
    // A link, FIFO, socket or directory where an image should be: refused, never followed.
    if (isNotRegularFile(err)) throw new InvalidDiskImageError(file, `it is a ${err.kind}, not a regular file`, imageId);
    throw err;
  }
  try {
    return await inspectFile(opened, stats, file, imageId);
  } finally {
    await opened.close();
  }
}

/**
 * {@link inspectDiskImage} over the first `min(FIRST_READ_BYTES, fileSize)` bytes of a file, read
 * already (by a batch reader). Null when the header points past them: inspect the file instead.
 *
 * @throws `InvalidDiskImageError` when the bytes have the qcow2 magic but an invalid header
 */
export function inspectDiskImageHead(head: Uint8Array, fileSize: number, name: string, imageId?: string): DiskImageInfo | null {
  const parsed = parseQcow2Prefix(head, fileSize, name, imageId);
  return typeof parsed === 'number' ? null : infoOf(parsed, fileSize);
}

function infoOf(header: Qcow2Header | null, fileSize: number): DiskImageInfo {
  if (header === null) return { format: 'raw', fileSize, virtualSize: fileSize, header: null };
  return { format: 'qcow2', fileSize, virtualSize: header.virtualSize, header };
}

/**
 * The backing file name recorded in a qcow2 image, as stored (possibly relative). Null for qcow2
 * images without one and for anything that is not qcow2. A symbolic link at `path` is followed:
 * this reads instance disks, which may be links to another volume (Nova follows them too).
 *
 * @param metadataFs - the calls' way (see fs/metadata-fs.ts); default synchronous
 * @throws `InvalidDiskImageError` when the file has the qcow2 magic but an invalid header
 */
export async function readBackingFile(path: string, imageId?: string, metadataFs?: MetadataFs): Promise<string | null> {
  return (await inspectDiskImage(path, imageId, { followSymlinks: true, metadataFs })).header?.backingFile ?? null;
}

/**
 * `qcow2` or `raw`.
 *
 * @throws `InvalidDiskImageError` when the file has the qcow2 magic but an invalid header
 */
export async function detectFormat(path: string, imageId?: string): Promise<DiskFormat> {
  return (await inspectDiskImage(path, imageId)).format;
}

/**
 * The size of the disk a guest would see: the qcow2 header's size, else the file size.
 *
 * @throws `InvalidDiskImageError` when the file has the qcow2 magic but an invalid header
 */
export async function virtualSizeOf(path: string, imageId?: string): Promise<number> {
  return (await inspectDiskImage(path, imageId)).virtualSize;
}

/** Inspects the open `file`, whose `fstat` is `stats`. */
async function inspectFile(file: MetadataFile, stats: Stats, name: string, imageId: string | undefined): Promise<DiskImageInfo> {
  if (!stats.isFile()) throw new InvalidDiskImageError(name, 'it is not a regular file', imageId);
  const fileSize = stats.size;
  let parsed = parseQcow2Prefix(await readStart(file, FIRST_READ_BYTES), fileSize, name, imageId);
  if (typeof parsed === 'number') {
    // Everything the header may point to inside the file lies in cluster 0, which is at most
    // 2 MiB, so this second read is bounded no matter what the header says.
    parsed = parseQcow2Prefix(await readStart(file, parsed), fileSize, name, imageId);
    if (typeof parsed === 'number') {
      throw new InvalidDiskImageError(name, 'the file changed while it was read', imageId);
    }
  }
  return infoOf(parsed, fileSize);
}

/** Reads up to `length` bytes from the start of the file, stopping early only at end of file. */
async function readStart(file: MetadataFile, length: number): Promise<Uint8Array> {
  const buffer = Buffer.allocUnsafe(length);
  return buffer.subarray(0, await file.readFully(buffer, length, 0));
}

function nameOf(file: string | FileHandle): string {
  return typeof file === 'string' ? file : `(file descriptor ${file.fd})`;
}
