// qcow2 helpers shared by the header tests and the hostile-input suite.
import assert from 'node:assert/strict';
import type { Qcow2Header } from '../../src/disk/qcow2-format.js';
import type { EncodedQcow2Overlay } from '../../src/disk/qcow2-overlay.js';
import { InvalidDiskImageError } from '../../src/errors.js';

/** The whole file an encoded overlay describes, holes included. */
export function materialize(encoded: EncodedQcow2Overlay): Buffer {
  const file = Buffer.alloc(encoded.fileSize);
  for (const { position, bytes } of encoded.chunks) bytes.copy(file, position);
  return file;
}

/** Checks the promises every successful parse makes, whatever the input was. */
export function assertSane(header: Qcow2Header, fileSize: number): void {
  assert.ok([2, 3].includes(header.version));
  assert.ok(header.clusterBits >= 9 && header.clusterBits <= 21);
  assert.ok(Number.isSafeInteger(header.virtualSize));
  if (header.backingFile !== null) {
    assert.ok(Buffer.byteLength(header.backingFile) <= 1023);
    assert.ok(!header.backingFile.includes('\0'));
    assert.ok(header.backingFileOffset + header.backingFileSize <= Math.min(fileSize, header.clusterSize));
  }
  assert.ok(header.l1TableOffset + header.l1Size * 8 <= fileSize || header.l1Size === 0);
  assert.ok(header.refcountTableOffset + header.refcountTableClusters * header.clusterSize <= fileSize);
  assert.equal(header.incompatibleFeatures & 0b100n, 0n, 'data-file images are never accepted');
}

/** True for the typed error of a malformed disk image. */
export function isInvalidDiskImage(err: unknown): boolean {
  return err instanceof InvalidDiskImageError && err.code === 'ERR_INVALID_DISK_IMAGE';
}
