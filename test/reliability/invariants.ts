// The promises the reliability suite checks after every crash, interleaving and fault: no final
// name holds an incomplete or unverified image, no instance disk has lost its backing file,
// nothing is left behind once recovered.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { FINGERPRINT_LENGTH, cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { readBackingFile } from '../../src/disk/qcow2-header.js';
import { isStagingName } from '../../src/fetch/staging-names.js';
import { listDir } from '../helpers/tmp.js';

/** What a complete base of an image must be. */
export interface ExpectedImage {
  readonly size: number;
  readonly sha256: string;
}

/** The expected content of each image, by cache file name. */
export class ImageCatalog {
  readonly #byName = new Map<string, ExpectedImage & { imageId: string }>();

  /** Records `imageId`'s bytes. */
  add(imageId: string, data: Uint8Array): void {
    this.#byName.set(cacheFileName(imageId), { imageId, size: data.length, sha256: sha256(data) });
  }

  /** The image cached under `name`, if known. */
  byName(name: string): (ExpectedImage & { imageId: string }) | undefined {
    return this.#byName.get(name);
  }
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Problems with the final-name files of `baseDir`: an original (40-character name) that is not a
 * known image, or whose size or digest differs from the image's. Symlinks and staging files are
 * not final names.
 */
export async function unverifiedBases(baseDir: string, catalog: ImageCatalog): Promise<string[]> {
  const problems: string[] = [];
  for (const name of await listDir(baseDir)) {
    if (name.length !== FINGERPRINT_LENGTH || isStagingName(name)) continue;
    const file = path.join(baseDir, name);
    if (!(await lstat(file)).isFile()) continue;
    const expected = catalog.byName(name);
    if (expected === undefined) {
      problems.push(`${name}: not a known image`);
      continue;
    }
    const data = await readFile(file);
    if (data.length !== expected.size) problems.push(`${name} (${expected.imageId}): ${data.length} bytes, expected ${expected.size}`);
    else if (sha256(data) !== expected.sha256) problems.push(`${name} (${expected.imageId}): digest mismatch`);
  }
  return problems;
}

/** Every instance disk (`<instancesPath>/<dir>/disk*`, staging files excluded). */
export async function instanceDisks(instancesPath: string): Promise<string[]> {
  const disks: string[] = [];
  for (const dirent of await readdir(instancesPath, { withFileTypes: true })) {
    if (!dirent.isDirectory()) continue;
    const dir = path.join(instancesPath, dirent.name);
    for (const file of await readdir(dir, { withFileTypes: true })) {
      if (!file.isFile() || isStagingName(file.name)) continue;
      if (file.name === 'disk' || file.name.startsWith('disk.')) disks.push(path.join(dir, file.name));
    }
  }
  return disks.sort();
}

/** Instance disks whose backing file is missing (or whose header cannot be read at all). */
export async function disksWithoutBacking(instancesPath: string): Promise<string[]> {
  const problems: string[] = [];
  for (const disk of await instanceDisks(instancesPath)) {
    let backing: string | null;
    try {
      backing = await readBackingFile(disk);
    } catch (err) {
      problems.push(`${disk}: unreadable (${String(err)})`);
      continue;
    }
    if (backing !== null && !existsSync(path.resolve(path.dirname(disk), backing))) problems.push(`${disk}: backing file ${backing} is gone`);
  }
  return problems;
}

/** Staging files anywhere under the instances path: the base dir, instance dirs, registry temps. */
export async function stagingLeftovers(instancesPath: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    for (const dirent of await readdir(dir, { withFileTypes: true })) {
      const full = path.join(dir, dirent.name);
      if (dirent.isDirectory()) {
        if (depth < 1 && dirent.name !== 'locks') await walk(full, depth + 1);
      } else if (isStagingName(dirent.name) || dirent.name.endsWith('.tmp')) {
        found.push(path.relative(instancesPath, full));
      }
    }
  };
  await walk(instancesPath, 0);
  return found.sort();
}

/** Lock directories left in `<instancesPath>/locks`. */
export async function lockLeftovers(instancesPath: string): Promise<string[]> {
  return listDir(path.join(instancesPath, 'locks'));
}
