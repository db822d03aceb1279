/**
 * Creates qcow2 overlays (copy-on-write disks backed by a cached base image) in-process, in a few
 * small writes, instead of spawning `qemu-img create` per instance disk. The layout mirrors what
 * `qemu-img create -f qcow2 -b BASE -F FMT` writes (qcow2 v3, 16-bit refcounts): header cluster,
 * refcount table, refcount block(s), L1 table. The base is never opened, so the cost does not
 * depend on its size.
 *
 * @module
 */
import path from 'node:path';
import { InvalidConfigError } from '../errors.js';
import { publishFile } from '../fetch/durable.js';
import { CACHE_FILE_MODE, mapWriteError } from '../fetch/staging.js';
import { stagingPathFor } from '../fetch/staging-names.js';
import { syncMetadataFs } from '../fs/metadata-fs.js';
import type { MetadataFile, MetadataFs } from '../fs/metadata-fs.js';
import { createLogger } from '../log.js';
import {
  EXT_BACKING_FORMAT,
  MAX_BACKING_FILE_NAME_BYTES,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
  QCOW2_MAGIC,
} from './qcow2-format.js';

const log = createLogger('disk');

/** Formats an overlay's backing file may have. */
export type BackingFormat = 'raw' | 'qcow2';

/** What to create. */
export interface Qcow2OverlayOptions {
  /** Absolute path of the base image. Stored as given; the base itself is not opened. */
  readonly backingFile: string;
  /** The base image's format, recorded so QEMU never probes it (probing a raw base is unsafe). */
  readonly backingFormat: BackingFormat;
  /** Size of the disk the guest sees, in bytes; a multiple of 512, as QEMU requires. */
  readonly virtualSize: number;
  /** log2 of the cluster size, 9 to 21. Default 16 (64 KiB), QEMU's default. */
  readonly clusterBits?: number;
  /** The image this disk is created from, for error messages. */
  readonly imageId?: string | undefined;
  /**
   * Publish the overlay durably (fsync it, link it, fsync its directory), so it survives a host
   * crash right after creation. Default true. `qemu-img create` does not (the guest's first flush makes the disk durable), and
   * the fsync is most of an overlay's cost: metadata and a device flush, ~1 ms on ext4.
   */
  readonly sync?: boolean | undefined;
  /**
   * The instance directory's calls (open, writes, truncate, link, unlink; see fs/metadata-fs.ts).
   * Default synchronous.
   */
  readonly metadataFs?: MetadataFs | undefined;
}

/** One write of an encoded overlay. */
export interface Qcow2Chunk {
  /** Offset in the file. */
  readonly position: number;
  /** The bytes to write there. */
  readonly bytes: Buffer;
}

/** An overlay encoded in memory: sparse chunks plus the file's length (the gaps are zeros). */
export interface EncodedQcow2Overlay {
  /** Non-overlapping writes, each ending at or before {@link EncodedQcow2Overlay.fileSize}. */
  readonly chunks: readonly Qcow2Chunk[];
  /** The file's final length; everything not covered by a chunk reads as zeros. */
  readonly fileSize: number;
  /** Offset of the L1 table (all zeros, so left as a hole). */
  readonly l1TableOffset: number;
  /** Entries in the L1 table. */
  readonly l1Size: number;
}

/** QEMU's QCOW_MAX_L1_SIZE (32 MiB of 8-byte entries). */
const MAX_L1_ENTRIES = (32 * 1024 * 1024) / 8;
const HEADER_LENGTH = 112;
/** 16-bit refcounts, QEMU's default (refcount_order 4). */
const REFCOUNT_ORDER = 4;
const REFCOUNT_BYTES = 2;
const SECTOR = 512;

/**
 * Validates `options` and lays the overlay out in memory, without touching the filesystem.
 *
 * @throws `InvalidConfigError` when an option is out of range
 */
export function encodeQcow2Overlay(options: Qcow2OverlayOptions): EncodedQcow2Overlay {
  const { backingFile, backingFormat, virtualSize } = options;
  const clusterBits = options.clusterBits ?? 16;
  if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new InvalidConfigError('clusterBits', `an integer from ${MIN_CLUSTER_BITS} to ${MAX_CLUSTER_BITS}`, clusterBits);
  }
  // Checked at run time too: JavaScript callers and config files bypass the type.
  const format: unknown = backingFormat;
  if (format !== 'raw' && format !== 'qcow2') {
    throw new InvalidConfigError('backingFormat', "'raw' or 'qcow2'", backingFormat);
  }
  if (!Number.isSafeInteger(virtualSize) || virtualSize < 0 || virtualSize % SECTOR !== 0) {
    throw new InvalidConfigError('virtualSize', 'a non-negative safe integer multiple of 512', virtualSize);
  }
  if (typeof backingFile !== 'string' || !path.isAbsolute(backingFile) || backingFile.includes('\0')) {
    throw new InvalidConfigError('backingFile', 'an absolute path without NUL bytes', backingFile);
  }
  const nameBytes = Buffer.from(backingFile, 'utf8');
  if (nameBytes.length > MAX_BACKING_FILE_NAME_BYTES) {
    throw new InvalidConfigError('backingFile', `a path of at most ${MAX_BACKING_FILE_NAME_BYTES} bytes`, backingFile);
  }

  const clusterSize = 2 ** clusterBits;
  const l2Entries = clusterSize / 8;
  const l1Size = Math.ceil(virtualSize / (clusterSize * l2Entries));
  if (l1Size > MAX_L1_ENTRIES) {
    throw new InvalidConfigError('virtualSize', 'a size whose L1 table fits QEMU\'s 32 MiB limit (use larger clusters)', virtualSize);
  }

  // Header extensions: backing format, then the end marker; the backing file name follows them,
  // as qemu-img places it.
  const formatBytes = Buffer.from(backingFormat, 'ascii');
  const formatPadded = Math.ceil(formatBytes.length / 8) * 8;
  const backingFileOffset = HEADER_LENGTH + 8 + formatPadded + 8;
  const headerBytes = backingFileOffset + nameBytes.length;
  if (headerBytes > clusterSize) {
    throw new InvalidConfigError('backingFile', `a path short enough to fit a ${clusterSize}-byte cluster`, backingFile);
  }

  // Cluster 0 header, then T refcount table clusters, R refcount blocks and the L1 table. The
  // refcounts must cover every one of those clusters, so T and R are found by a fixed point
  // (one iteration for any realistic size; more only for tiny clusters and huge disks).
  const l1Clusters = Math.ceil((l1Size * 8) / clusterSize);
  const refcountsPerBlock = clusterSize / REFCOUNT_BYTES;
  let tableClusters = 1;
  let blocks = 1;
  for (;;) {
    const total = 1 + tableClusters + blocks + l1Clusters;
    const neededBlocks = Math.ceil(total / refcountsPerBlock);
    const neededTable = Math.ceil((neededBlocks * 8) / clusterSize);
    if (neededBlocks === blocks && neededTable === tableClusters) break;
    blocks = Math.max(blocks, neededBlocks);
    tableClusters = Math.max(tableClusters, neededTable);
  }
  const refcountTableOffset = clusterSize;
  const firstBlockOffset = refcountTableOffset + tableClusters * clusterSize;
  const l1TableOffset = firstBlockOffset + blocks * clusterSize;
  const usedClusters = 1 + tableClusters + blocks + l1Clusters;

  const header = Buffer.alloc(headerBytes);
  header.writeUInt32BE(QCOW2_MAGIC, 0);
  header.writeUInt32BE(3, 4);
  header.writeBigUInt64BE(BigInt(backingFileOffset), 8);
  header.writeUInt32BE(nameBytes.length, 16);
  header.writeUInt32BE(clusterBits, 20);
  header.writeBigUInt64BE(BigInt(virtualSize), 24);
  // crypt_method (32) stays 0.
  header.writeUInt32BE(l1Size, 36);
  header.writeBigUInt64BE(BigInt(l1TableOffset), 40);
  header.writeBigUInt64BE(BigInt(refcountTableOffset), 48);
  header.writeUInt32BE(tableClusters, 56);
  // nb_snapshots, snapshots_offset and the three feature masks stay 0.
  header.writeUInt32BE(REFCOUNT_ORDER, 96);
  header.writeUInt32BE(HEADER_LENGTH, 100);
  // compression_type (104) stays 0: zlib, like qemu-img's default.
  header.writeUInt32BE(EXT_BACKING_FORMAT, HEADER_LENGTH);
  header.writeUInt32BE(formatBytes.length, HEADER_LENGTH + 4);
  formatBytes.copy(header, HEADER_LENGTH + 8);
  // The end-of-extensions marker is 8 zero bytes, already there.
  nameBytes.copy(header, backingFileOffset);

  const table = Buffer.alloc(blocks * 8);
  for (let i = 0; i < blocks; i++) table.writeBigUInt64BE(BigInt(firstBlockOffset + i * clusterSize), i * 8);

  // Blocks are consecutive, so their used entries form one contiguous run from the first block.
  const refcounts = Buffer.alloc(usedClusters * REFCOUNT_BYTES);
  for (let i = 0; i < usedClusters; i++) refcounts.writeUInt16BE(1, i * REFCOUNT_BYTES);

  return {
    chunks: [
      { position: 0, bytes: header },
      { position: refcountTableOffset, bytes: table },
      { position: firstBlockOffset, bytes: refcounts },
    ],
    fileSize: l1TableOffset + l1Size * 8,
    l1TableOffset,
    l1Size,
  };
}

/**
 * Creates a qcow2 v3 overlay at `file` backed by `options.backingFile`. The file is created
 * exclusively (an existing file is never overwritten), fsynced unless `options.sync` is false, and
 * removed again if anything fails, so `file` either holds a complete overlay or does not exist
 * (unless it existed before).
 *
 * The open, the three small writes and the truncate only touch the page cache: through the default
 * {@link MetadataFs} they are synchronous syscalls (a few microseconds each, far less than a
 * thread-pool round trip each), through `options.metadataFs` they may be thread-pool calls (an
 * instance directory on a network file system). The fsyncs (the overlay's and its directory's,
 * with `sync`), which wait for the disk, always run on the thread pool.
 *
 * @throws `InvalidConfigError` when an option is out of range
 * @throws `DiskFullError` when the filesystem is full
 * @throws the `EEXIST` error from the filesystem when `file` already exists
 */
export async function writeQcow2Overlay(file: string, options: Qcow2OverlayOptions): Promise<void> {
  const encoded = encodeQcow2Overlay(options);
  // Written under a staging name and published with link(), which is atomic and, unlike
  // rename(), refuses to replace an existing disk: a crash never leaves a partial overlay under
  // the disk's name, and an existing disk is never clobbered.
  const staging = stagingPathFor(file);
  const mfs = options.metadataFs ?? syncMetadataFs;
  let created: MetadataFile;
  try {
    // No existence check first: link() below refuses an existing `file` with EEXIST anyway.
    created = await mfs.open(staging, 'wx', CACHE_FILE_MODE);
  } catch (err) {
    throw mapWriteError(err, options.imageId, path.dirname(file), encoded.fileSize);
  }
  try {
    try {
      for (const { position, bytes } of encoded.chunks) await created.writeFully(bytes, position);
      // The L1 table is all zeros: extending the file leaves it a hole instead of writing it.
      await created.truncate(encoded.fileSize);
      await publishFile(staging, file, { sync: options.sync ?? true, exclusive: true, file: created.fd, metadataFs: mfs });
    } finally {
      await created.close();
    }
  } catch (err) {
    try {
      await mfs.unlink(staging);
    } catch (unlinkErr) {
      if ((unlinkErr as NodeJS.ErrnoException).code !== 'ENOENT') log('could not remove overlay staging file %s: %O', staging, unlinkErr);
    }
    throw mapWriteError(err, options.imageId, path.dirname(file), encoded.fileSize);
  }
  log('created overlay %s on %s (%s, %d bytes)', file, options.backingFile, options.backingFormat, options.virtualSize);
}
