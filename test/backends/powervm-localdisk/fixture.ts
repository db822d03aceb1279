// A localdisk manager over a FakeVolumeGroup (in memory) or a FileVolumeGroup (a temp dir), with a
// manual clock, an in-memory image source and a lock directory in the temp dir.
import path from 'node:path';
import { FileVolumeGroup, LocalDiskImageManager } from '../../../src/index.js';
import { DISK_OWNER, DISK_TAGS } from '../../../src/backends/powervm-localdisk/naming.js';
import type { LocalDiskImageManagerOptions, VolumeGroup } from '../../../src/index.js';
import { FakeVolumeGroup, ManualClock, MemoryImageSource } from '../../../src/testing/index.js';
import type { MemoryImage } from '../../../src/testing/index.js';
import { makeTempDir, seededBytes } from '../../helpers/tmp.js';

export const NOW = 1_700_000_000_000;
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** Two Glance-style UUIDs whose first 13 characters agree: nova-powervm names both `i_3e865d14_8c1e`. */
export const TWIN_A = '3e865d14-8c1e-4615-a4d5-1f2e3d4c5b6a';
export const TWIN_B = '3e865d14-8c1e-4fff-9c0d-aaaaaaaaaaaa';

export interface LocalDiskFixture<G extends VolumeGroup> {
  readonly dir: string;
  readonly lockDir: string;
  readonly clock: ManualClock;
  readonly source: MemoryImageSource;
  readonly group: G;
  readonly manager: LocalDiskImageManager;
  make(options?: Partial<LocalDiskImageManagerOptions>): LocalDiskImageManager;
  /** Puts a published image disk of ours in the group, as an earlier upload would have left it. */
  cachedImageDisk(name: string, imageId: string, sizeBytes: number, options?: { lastUsedMs?: number; capacityBytes?: number }): Promise<void>;
  cleanup(): Promise<void>;
}

export const IMAGES: readonly MemoryImage[] = [
  { id: 'img-1', data: seededBytes(2 * MiB, 1) },
  { id: 'img-2', data: seededBytes(MiB + 512, 2) },
  { id: TWIN_A, data: seededBytes(MiB, 3) },
  { id: TWIN_B, data: seededBytes(MiB + 4096, 4) },
];

async function make<G extends VolumeGroup>(
  group: (dir: string, clock: ManualClock) => G,
  options: Partial<LocalDiskImageManagerOptions>,
): Promise<LocalDiskFixture<G>> {
  const { dir, cleanup } = await makeTempDir('vic-localdisk-');
  const clock = new ManualClock(NOW);
  const source = new MemoryImageSource(IMAGES);
  const lockDir = path.join(dir, 'locks');
  const vg = group(dir, clock);
  const build = (extra: Partial<LocalDiskImageManagerOptions> = {}): LocalDiskImageManager =>
    new LocalDiskImageManager({
      host: 'host1',
      volumeGroup: vg,
      lockDir,
      source,
      clock,
      lockStaleMs: 2000,
      diskRetryDelayMs: { baseMs: 5, maxMs: 20 },
      ...options,
      ...extra,
    });
  return {
    dir,
    lockDir,
    clock,
    source,
    group: vg,
    manager: build(),
    make: build,
    async cachedImageDisk(name, imageId, sizeBytes, { lastUsedMs = clock.now(), capacityBytes = sizeBytes } = {}) {
      const tags = { [DISK_TAGS.owner]: DISK_OWNER, [DISK_TAGS.imageId]: imageId, [DISK_TAGS.imageSize]: String(sizeBytes) };
      await vg.createDisk({ name, sizeBytes: capacityBytes, tags });
      await vg.touchDisk(name, lastUsedMs);
    },
    cleanup,
  };
}

/** A fixture over an in-memory volume group. */
export function fakeGroupFixture(
  options: Partial<LocalDiskImageManagerOptions> = {},
  capacityBytes?: number,
): Promise<LocalDiskFixture<FakeVolumeGroup>> {
  return make((_dir, clock) => new FakeVolumeGroup({ clock, capacityBytes }), options);
}

/** A fixture over a directory volume group. */
export function fileGroupFixture(options: Partial<LocalDiskImageManagerOptions> = {}): Promise<LocalDiskFixture<FileVolumeGroup>> {
  return make((dir, clock) => new FileVolumeGroup({ directory: path.join(dir, 'vg'), clock }), options);
}
