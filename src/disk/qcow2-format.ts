/**
 * The qcow2 header format: its constants, the parsed header, and the parser. Pure: bytes in, a
 * validated header out (reading the bytes is `qcow2-header.ts`'s job).
 *
 * The input is untrusted (an image from the image service, or a disk a guest wrote to), so every
 * field is checked the way QEMU checks it when it opens the image, plus bounds against the file's
 * real size: a malformed header throws {@link InvalidDiskImageError}, never reads outside the
 * bytes given and never loops unboundedly.
 *
 * @module
 */
import { InvalidDiskImageError } from '../errors.js';

/** The four bytes every qcow (v1) and qcow2 file starts with: `QFI\xfb`. */
export const QCOW2_MAGIC = 0x51_46_49_fb;

/** Longest backing file name QEMU accepts, in bytes. */
export const MAX_BACKING_FILE_NAME_BYTES = 1023;

/** Smallest `cluster_bits` QEMU accepts (512-byte clusters). */
export const MIN_CLUSTER_BITS = 9;
/** Largest `cluster_bits` QEMU accepts (2 MiB clusters). */
export const MAX_CLUSTER_BITS = 21;

/** Largest virtual size we represent: sizes must stay exact as a JavaScript number. */
export const MAX_VIRTUAL_SIZE = Number.MAX_SAFE_INTEGER;

/** Incompatible feature bit: the image was not closed cleanly (lazy refcounts). */
export const INCOMPAT_DIRTY = 1n << 0n;
/** Incompatible feature bit: QEMU found corruption and marked the image. */
export const INCOMPAT_CORRUPT = 1n << 1n;
/** Incompatible feature bit: guest data lives in an external data file. */
export const INCOMPAT_DATA_FILE = 1n << 2n;
/** Incompatible feature bit: a compression type other than zlib is recorded in the header. */
export const INCOMPAT_COMPRESSION = 1n << 3n;
/** Incompatible feature bit: L2 entries carry subcluster allocation bitmaps. */
export const INCOMPAT_EXTENDED_L2 = 1n << 4n;

/** Header extension holding the backing file's format name. */
export const EXT_BACKING_FORMAT = 0xe2_79_2a_ca;

/** A parsed, validated qcow2 header. Offsets and sizes are in bytes unless named otherwise. */
export interface Qcow2Header {
  /** 2 (`compat=0.10`) or 3 (`compat=1.1`). */
  readonly version: 2 | 3;
  /** Size of the disk the guest sees. */
  readonly virtualSize: number;
  /** log2 of the cluster size. */
  readonly clusterBits: number;
  /** Cluster size, `2 ** clusterBits`. */
  readonly clusterSize: number;
  /** The backing file name as stored (may be relative to the image's directory), or null. */
  readonly backingFile: string | null;
  /**
   * The backing file's format from the backing-format header extension; null when absent (QEMU
   * would then probe the backing file, which is unsafe for raw) or when there is no backing file.
   */
  readonly backingFormat: string | null;
  /** Where the backing file name is stored (0 when there is none). */
  readonly backingFileOffset: number;
  /** Length of the stored backing file name in bytes. */
  readonly backingFileSize: number;
  /** 0 for none, 1 for the legacy AES scheme, 2 for LUKS. */
  readonly cryptMethod: 0 | 1 | 2;
  /** Entries in the L1 table. */
  readonly l1Size: number;
  /** Offset of the L1 table. */
  readonly l1TableOffset: number;
  /** Offset of the refcount table. */
  readonly refcountTableOffset: number;
  /** Length of the refcount table in clusters. */
  readonly refcountTableClusters: number;
  /** Number of internal snapshots. */
  readonly nbSnapshots: number;
  /** Offset of the snapshot table. */
  readonly snapshotsOffset: number;
  /** Incompatible feature bits (only known, supported bits are ever returned). */
  readonly incompatibleFeatures: bigint;
  /** Compatible feature bits (bit 0: lazy refcounts). */
  readonly compatibleFeatures: bigint;
  /** Auto-clear feature bits. */
  readonly autoclearFeatures: bigint;
  /** log2 of the refcount width in bits (4 means 16-bit refcounts). */
  readonly refcountOrder: number;
  /** Length of the header proper, where the header extensions start. */
  readonly headerLength: number;
  /** Compression used for compressed clusters. */
  readonly compressionType: 'zlib' | 'zstd';
  /** The image was not closed cleanly; QEMU repairs refcounts when it next opens it read-write. */
  readonly dirty: boolean;
  /** QEMU marked the image corrupt; it only opens it read-only. */
  readonly corrupt: boolean;
  /** L2 entries are 128-bit with subcluster bitmaps. */
  readonly extendedL2: boolean;
}


/**
 * Bytes read first from an image: enough for the header, its usual extensions and the backing
 * file name.
 */
export const FIRST_READ_BYTES = 4096;
const V2_HEADER_LENGTH = 72;
const V3_MIN_HEADER_LENGTH = 104;
/** QEMU's QCOW_MAX_L1_SIZE (32 MiB of 8-byte entries). */
const MAX_L1_ENTRIES = (32 * 1024 * 1024) / 8;
/** QEMU's QCOW_MAX_REFTABLE_SIZE (8 MiB). */
const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
/** QEMU's QCOW_MAX_SNAPSHOTS. */
const MAX_SNAPSHOTS = 65536;
/** QEMU stores the backing format in a 16-byte buffer, NUL included. */
const MAX_BACKING_FORMAT_BYTES = 15;
/** Far above any real image; only stops a crafted file from making us walk 262,144 tiny extensions. */
const MAX_EXTENSIONS = 1024;
const KNOWN_INCOMPATIBLE =
  INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTENDED_L2;
const FORMAT_NAME = /^[A-Za-z0-9_.+-]+$/;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Parses a qcow2 header from the first bytes of a file.
 *
 * `bytes` must start at offset 0 of the file; every structure the header points to inside the
 * first cluster (extensions, backing file name) must be within it, so pass at least
 * `min(clusterSize, fileSize)` bytes to be sure. Structures outside the first cluster (tables) are
 * only checked against `fileSize`.
 *
 * @param bytes - the file's first bytes
 * @param fileSize - the file's real size; defaults to `bytes.length`
 * @param name - the file's name, for error messages
 * @param imageId - the image, for error messages
 * @returns the header, or null when the bytes do not start with the qcow2 magic (a raw image)
 * @throws `InvalidDiskImageError` when the header is malformed, unsupported or truncated
 */
export function parseQcow2Header(
  bytes: Uint8Array,
  fileSize: number = bytes.length,
  name = '(buffer)',
  imageId?: string,
): Qcow2Header | null {
  const parsed = parseQcow2Prefix(bytes, fileSize, name, imageId);
  if (typeof parsed === 'number') {
    throw new InvalidDiskImageError(name, 'its qcow2 header points past the bytes given', imageId);
  }
  return parsed;
}

/**
 * The header, null for a non-qcow2 file, or, when `bytes` ends before data the header points to,
 * how many bytes from the start of the file are needed (always the whole first cluster, capped at
 * the file size).
 *
 * @throws `InvalidDiskImageError` when the header is malformed, unsupported or truncated
 */
export function parseQcow2Prefix(
  bytes: Uint8Array,
  fileSize: number,
  name: string,
  imageId: string | undefined,
): Qcow2Header | null | number {
  if (bytes.length < 4) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0) !== QCOW2_MAGIC) return null;

  // Annotated so that calls narrow like `throw` does.
  const fail: (reason: string) => never = (reason) => {
    throw new InvalidDiskImageError(name, reason, imageId);
  };
  const u64 = (offset: number, field: string): number => {
    const value = view.getBigUint64(offset);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${field} ${value} is out of range`);
    return Number(value);
  };

  if (bytes.length < 8) fail('it is truncated inside the qcow2 header');
  const version = view.getUint32(4);
  if (version !== 2 && version !== 3) fail(`qcow version ${version} is not supported (only 2 and 3)`);
  const minLength = version === 2 ? V2_HEADER_LENGTH : V3_MIN_HEADER_LENGTH;
  if (fileSize < minLength || bytes.length < minLength) fail('it is truncated inside the qcow2 header');

  const clusterBits = view.getUint32(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    fail(`cluster_bits ${clusterBits} is outside ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`);
  }
  const clusterSize = 2 ** clusterBits;
  const needMore = Math.min(clusterSize, fileSize);

  let incompatibleFeatures = 0n;
  let compatibleFeatures = 0n;
  let autoclearFeatures = 0n;
  let refcountOrder = 4;
  let headerLength = V2_HEADER_LENGTH;
  let compressionType: 'zlib' | 'zstd' = 'zlib';
  if (version === 3) {
    incompatibleFeatures = view.getBigUint64(72);
    compatibleFeatures = view.getBigUint64(80);
    autoclearFeatures = view.getBigUint64(88);
    refcountOrder = view.getUint32(96);
    headerLength = view.getUint32(100);
    if (headerLength < V3_MIN_HEADER_LENGTH) fail(`header_length ${headerLength} is too short`);
    if (headerLength > clusterSize) fail(`header_length ${headerLength} exceeds the cluster size`);
    if (headerLength > fileSize) fail('it is truncated inside the qcow2 header');
    if (headerLength > bytes.length) return needMore;
    if (refcountOrder > 6) fail(`refcount_order ${refcountOrder} is above 6`);
    const unknown = incompatibleFeatures & ~KNOWN_INCOMPATIBLE;
    if (unknown !== 0n) fail(`it uses unknown incompatible features 0x${unknown.toString(16)}`);
    // Nova refuses data-file images: the header would make QEMU open an arbitrary host file.
    if ((incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n) fail('it uses an external data file');
    const typeByte = headerLength > 104 ? (bytes[104] ?? 0) : 0;
    if (typeByte > 1) fail(`compression type ${typeByte} is unknown`);
    const flagged = (incompatibleFeatures & INCOMPAT_COMPRESSION) !== 0n;
    if (flagged !== (typeByte !== 0)) fail('its compression type and compression feature bit disagree');
    compressionType = typeByte === 1 ? 'zstd' : 'zlib';
  }
  const extendedL2 = (incompatibleFeatures & INCOMPAT_EXTENDED_L2) !== 0n;
  if (extendedL2 && clusterBits < 14) fail('extended L2 entries need clusters of at least 16 KiB');

  const virtualSize = u64(24, 'the virtual size');
  const cryptMethod = view.getUint32(32);
  if (cryptMethod !== 0 && cryptMethod !== 1 && cryptMethod !== 2) fail(`encryption method ${cryptMethod} is unknown`);

  const l1Size = view.getUint32(36);
  const l1TableOffset = u64(40, 'l1_table_offset');
  if (l1Size > MAX_L1_ENTRIES) fail(`l1_size ${l1Size} is above QEMU's limit of ${MAX_L1_ENTRIES}`);
  const bytesPerL1Entry = clusterSize * (clusterSize / (extendedL2 ? 16 : 8));
  if (l1Size < Math.ceil(virtualSize / bytesPerL1Entry)) fail('the L1 table is too small for the virtual size');
  checkTable(l1TableOffset, l1Size * 8, 'the L1 table', l1Size > 0);

  const refcountTableOffset = u64(48, 'refcount_table_offset');
  const refcountTableClusters = view.getUint32(56);
  if (refcountTableClusters === 0) fail('it has no refcount table');
  if (refcountTableClusters > MAX_REFTABLE_BYTES / clusterSize) {
    fail(`refcount_table_clusters ${refcountTableClusters} is above QEMU's limit`);
  }
  checkTable(refcountTableOffset, refcountTableClusters * clusterSize, 'the refcount table', true);

  const nbSnapshots = view.getUint32(60);
  const snapshotsOffset = u64(64, 'snapshots_offset');
  if (nbSnapshots > MAX_SNAPSHOTS) fail(`it claims ${nbSnapshots} snapshots, above QEMU's limit`);
  // Snapshot entries vary in size, so only their start can be checked without reading them.
  checkTable(snapshotsOffset, Math.min(1, nbSnapshots), 'the snapshot table', nbSnapshots > 0);

  const backingFileOffset = u64(8, 'backing_file_offset');
  const backingFileSize = view.getUint32(16);
  let backingFile: string | null = null;
  if (backingFileOffset !== 0) {
    if (backingFileOffset < headerLength) fail('the backing file name overlaps the header');
    if (backingFileOffset > clusterSize) fail('the backing file name is outside the first cluster');
    if (backingFileSize > MAX_BACKING_FILE_NAME_BYTES) {
      fail(`the backing file name is ${backingFileSize} bytes, above ${MAX_BACKING_FILE_NAME_BYTES}`);
    }
    const end = backingFileOffset + backingFileSize;
    if (end > clusterSize) fail('the backing file name crosses the end of the first cluster');
    if (end > fileSize) fail('the backing file name is past the end of the file');
    if (end > bytes.length) return needMore;
    if (backingFileSize > 0) {
      backingFile = decode(bytes.subarray(backingFileOffset, end), 'the backing file name', fail);
      if (backingFile.includes('\0')) fail('the backing file name contains a NUL byte');
    }
  }

  // QEMU's rule: extensions run from the header's end to the backing file name, or to the end of
  // the first cluster when there is none.
  const extensionsEnd = Math.min(backingFileOffset !== 0 ? backingFileOffset : clusterSize, fileSize);
  let backingFormat: string | null = null;
  let offset = headerLength;
  for (let count = 0; offset < extensionsEnd; count++) {
    if (count >= MAX_EXTENSIONS) fail(`it has more than ${MAX_EXTENSIONS} header extensions`);
    if (extensionsEnd - offset < 8) fail('a header extension crosses the end of the extension area');
    if (offset + 8 > bytes.length) return needMore;
    const type = view.getUint32(offset);
    const length = view.getUint32(offset + 4);
    offset += 8;
    if (type === 0) break;
    if (length > extensionsEnd - offset) fail(`header extension 0x${type.toString(16)} is longer than its area`);
    if (offset + length > bytes.length) return needMore;
    if (type === EXT_BACKING_FORMAT) {
      if (backingFormat !== null) fail('it has two backing format extensions');
      if (length === 0 || length > MAX_BACKING_FORMAT_BYTES) fail(`the backing format is ${length} bytes long`);
      backingFormat = decode(bytes.subarray(offset, offset + length), 'the backing format', fail);
      if (!FORMAT_NAME.test(backingFormat)) fail('the backing format name has invalid characters');
    }
    offset += Math.ceil(length / 8) * 8;
  }

  return {
    version,
    virtualSize,
    clusterBits,
    clusterSize,
    backingFile,
    // QEMU ignores a backing format without a backing file; so do we.
    backingFormat: backingFile === null ? null : backingFormat,
    backingFileOffset,
    backingFileSize,
    cryptMethod,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    nbSnapshots,
    snapshotsOffset,
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    compressionType,
    dirty: (incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
    corrupt: (incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n,
    extendedL2,
  };

  /**
   * A metadata table must be cluster-aligned, outside the header cluster, and wholly inside the
   * file: a table past the end means a truncated image (QEMU would read zeros there).
   */
  function checkTable(tableOffset: number, length: number, what: string, present: boolean): void {
    if (tableOffset % clusterSize !== 0) fail(`${what} offset ${tableOffset} is not cluster-aligned`);
    if (!present) return;
    if (tableOffset < clusterSize) fail(`${what} overlaps the header cluster`);
    if (tableOffset + length > fileSize) fail(`${what} extends past the end of the file`);
  }
}

function decode(bytes: Uint8Array, what: string, fail: (reason: string) => never): string {
  try {
    return utf8.decode(bytes);
  } catch {
    return fail(`${what} is not valid UTF-8`);
  }
}
