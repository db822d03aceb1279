// Our backends, each behind the contract suite's small harness (ContractBackend in
// src/testing/contract-backend.ts): how to name an image's entry, read an entry back, age it, and
// plant derived entries.
import { readFile, stat, utimes, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { FileVolumeGroup, LibvirtFileImageManager, LocalDiskImageManager, cacheFileName } from '../../src/index.js';
import { novaImageDiskName } from '../../src/backends/powervm-localdisk/naming.js';
import type { ImageManagerOptions, VolumeGroup } from '../../src/index.js';
import { FakeVolumeGroup, MemoryImageManager } from '../../src/testing/index.js';
import type { ContractBackend, ManualClock } from '../../src/testing/index.js';
import { makeTempDir } from '../helpers/tmp.js';

/** The in-memory backend's harness over managers `create` makes (a subclass, to prove the suite fails). */
export function memoryContractBackend(
  name: string,
  create: (options: ConstructorParameters<typeof MemoryImageManager>[0]) => MemoryImageManager,
): ContractBackend {
  return {
    name,
    kinds: new Set(['resized', 'swap', 'ephemeral']),
    startsWithoutBase: true,
    setup(clock, source) {
      const make = (extra: Partial<ImageManagerOptions> = {}): MemoryImageManager => create({ host: 'host1', source, clock, ...extra });
      const manager = make();
      return Promise.resolve({
        manager,
        make,
        entryName: (imageId) => imageId,
        lockName: (imageId) => imageId,
        names: () => Promise.resolve(manager.names()),
        read: (name, length) => Promise.resolve(Buffer.from(manager.get(name)?.data ?? []).subarray(0, length)),
        lastUsed: (name) => Promise.resolve(manager.get(name)?.lastUsedMs),
        setLastUsed: (name, ms) => {
          const entry = manager.get(name);
          if (entry !== undefined) entry.lastUsedMs = ms;
          return Promise.resolve();
        },
        plant: (kind, name, imageId) => {
          const planted = kind === 'resized' ? `${imageId}_resized` : name;
          manager.put(planted, Buffer.alloc(10), { kind, imageId: null });
          return Promise.resolve(planted);
        },
        cleanup: () => Promise.resolve(),
      });
    },
  };
}

const memory = memoryContractBackend('in-memory', (options) => new MemoryImageManager(options));

const libvirtFile: ContractBackend = {
  name: 'libvirt-file',
  kinds: new Set(['resized', 'swap', 'ephemeral']),
  startsWithoutBase: true,
  async setup(clock, source) {
    const { dir, cleanup } = await makeTempDir('vic-contract-libvirt-');
    const make = (extra: Partial<ImageManagerOptions> = {}): LibvirtFileImageManager =>
      new LibvirtFileImageManager({ host: 'host1', instancesPath: dir, source, clock, lockStaleMs: 2000, ...metadataIoFromEnv(), ...extra });
    const manager = make();
    const file = (name: string): string => path.join(manager.baseDir, name);
    const { listDir } = await import('../helpers/tmp.js');
    return {
      manager,
      make,
      entryName: (imageId) => cacheFileName(imageId),
      lockName: (imageId) => cacheFileName(imageId),
      names: () => listDir(manager.baseDir),
      read: async (name, length) => (await readFile(file(name))).subarray(0, length),
      lastUsed: async (name) => (await stat(file(name))).mtimeMs,
      setLastUsed: (name, ms) => utimes(file(name), ms / 1000, ms / 1000),
      plant: async (kind, name, imageId) => {
        const planted = kind === 'resized' ? `${cacheFileName(imageId)}_10` : name;
        await mkdir(manager.baseDir, { recursive: true });
        await writeFile(file(planted), Buffer.alloc(10));
        await utimes(file(planted), clock.now() / 1000, clock.now() / 1000);
        return planted;
      },
      cleanup,
    };
  },
};

/** `VIC_METADATA_IO=async` (or `sync`) runs the file backends' contract with that `metadataIo`. */
function metadataIoFromEnv(): Partial<ImageManagerOptions> {
  const io = process.env.VIC_METADATA_IO;
  return io === undefined ? {} : { metadataIo: io as 'auto' | 'sync' | 'async' };
}

function localdisk(groupName: string, makeGroup: (dir: string, clock: ManualClock) => VolumeGroup): ContractBackend {
  return {
    name: `powervm-localdisk over ${groupName}`,
    kinds: new Set(),
    startsWithoutBase: false,
    async setup(clock, source) {
      const { dir, cleanup } = await makeTempDir('vic-contract-localdisk-');
      const group = makeGroup(dir, clock);
      const make = (extra: Partial<ImageManagerOptions> = {}): LocalDiskImageManager =>
        new LocalDiskImageManager({ host: 'host1', volumeGroup: group, lockDir: path.join(dir, 'locks'), source, clock, lockStaleMs: 2000, ...metadataIoFromEnv(), ...extra });
      const manager = make();
      const find = async (name: string): Promise<{ lastUsedMs: number } | undefined> => (await group.listDisks()).find((d) => d.name === name);
      return {
        manager,
        make,
        entryName: (imageId) => novaImageDiskName(imageId),
        lockName: (imageId) => novaImageDiskName(imageId),
        names: async () => (await group.listDisks()).map((d) => d.name),
        read: async (name, length) => {
          if (group instanceof FakeVolumeGroup) return (group.read(name) ?? Buffer.alloc(0)).subarray(0, length);
          if (group instanceof FileVolumeGroup) return (await readFile(group.dataPath(name))).subarray(0, length);
          throw new Error(`cannot read disks of ${group.description}`);
        },
        lastUsed: async (name) => (await find(name))?.lastUsedMs,
        setLastUsed: (name, ms) => group.touchDisk(name, ms),
        plant: () => Promise.reject(new Error('a volume group keeps only original images')),
        cleanup,
      };
    },
  };
}

/** Every backend with an image cache; the contract suite runs once per entry. */
export const CONTRACT_BACKENDS: readonly ContractBackend[] = [
  memory,
  libvirtFile,
  localdisk('FakeVolumeGroup', (_dir, clock) => new FakeVolumeGroup({ clock })),
  localdisk('FileVolumeGroup', (dir, clock) => new FileVolumeGroup({ directory: path.join(dir, 'vg'), clock })),
];
