/**
 * Disk image tools, for drivers that build or check disks themselves: qcow2 header parsing and
 * format detection (with qemu-img's limits), writing a qcow2 overlay over a base in-process, and
 * copying a raw disk (reflink, else a sparse copy).
 *
 * @packageDocumentation
 */
export {
  EXT_BACKING_FORMAT,
  FIRST_READ_BYTES,
  INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTENDED_L2,
  MAX_BACKING_FILE_NAME_BYTES,
  MAX_CLUSTER_BITS,
  MAX_VIRTUAL_SIZE,
  MIN_CLUSTER_BITS,
  QCOW2_MAGIC,
  parseQcow2Header,
} from './qcow2-format.js';
export type { Qcow2Header } from './qcow2-format.js';
export { detectFormat, inspectDiskImage, inspectDiskImageHead, readBackingFile, readQcow2Header, virtualSizeOf } from './qcow2-header.js';
export type { DiskFormat, DiskImageInfo, InspectDiskImageOptions } from './qcow2-header.js';
export { encodeQcow2Overlay, writeQcow2Overlay } from './qcow2-overlay.js';
export type { BackingFormat, EncodedQcow2Overlay, Qcow2Chunk, Qcow2OverlayOptions } from './qcow2-overlay.js';
export { SPARSE_COPY_BLOCK_BYTES, copyRawDisk, tryReflink } from './raw-copy.js';
export type { CopyRawDiskOptions, CopyRawDiskResult, RawCopyMethod } from './raw-copy.js';
