// A real instances path in a temp dir, a libvirt-file manager over it, and builders for bases
// and instance disks.
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { LibvirtFileImageManager } from '../../../src/backends/libvirt-file/libvirt-file-manager.js';
import type { LibvirtFileImageManagerOptions } from '../../../src/backends/libvirt-file/libvirt-file-manager.js';
import { writeQcow2Overlay } from '../../../src/disk/qcow2-overlay.js';
import { ManualClock, MemoryImageSource } from '../../../src/testing/index.js';
import { makeTempDir, seededBytes } from '../../helpers/tmp.js';

export const NOW = 1_700_000_000_000;

export interface Fixture {
  instancesPath: string;
  baseDir: string;
  clock: ManualClock;
  source: MemoryImageSource;
  manager: LibvirtFileImageManager;
  make(options?: Partial<LibvirtFileImageManagerOptions>): LibvirtFileImageManager;
  /** Writes a base file named `name` whose mtime is `ageSeconds` before the clock's now. */
  base(name: string, ageSeconds?: number, data?: Uint8Array): Promise<string>;
  /** Creates `<instancesPath>/<dir>/<disk>` as a qcow2 overlay backed by base `baseName`. */
  instanceDisk(dir: string, baseName: string, disk?: string): Promise<string>;
  cleanup(): Promise<void>;
}

export async function makeFixture(options: Partial<LibvirtFileImageManagerOptions> = {}): Promise<Fixture> {
  const { dir: instancesPath, cleanup } = await makeTempDir('vic-libvirt-');
  const baseDir = path.join(instancesPath, '_base');
  const clock = new ManualClock(NOW);
  const source = new MemoryImageSource([
    { id: 'image-1', data: seededBytes(2 * 1024 * 1024, 1) },
    { id: 'image-2', data: seededBytes(1024 * 1024 + 512, 2) },
  ]);
  const make = (extra: Partial<LibvirtFileImageManagerOptions> = {}): LibvirtFileImageManager =>
    new LibvirtFileImageManager({ host: 'host1', instancesPath, source, clock, lockStaleMs: 2000, ...options, ...extra });
  return {
    instancesPath,
    baseDir,
    clock,
    source,
    manager: make(),
    make,
    async base(name, ageSeconds = 0, data = Buffer.from('data')) {
      await mkdir(baseDir, { recursive: true });
      const file = path.join(baseDir, name);
      await writeFile(file, data);
      const t = (clock.now() - ageSeconds * 1000) / 1000;
      await utimes(file, t, t);
      return file;
    },
    async instanceDisk(dir, baseName, disk = 'disk') {
      const instanceDir = path.join(instancesPath, dir);
      await mkdir(instanceDir, { recursive: true });
      const file = path.join(instanceDir, disk);
      await writeQcow2Overlay(file, { backingFile: path.join(baseDir, baseName), backingFormat: 'raw', virtualSize: 1024 * 1024 });
      return file;
    },
    cleanup,
  };
}
