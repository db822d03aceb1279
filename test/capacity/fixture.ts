// A libvirt-file cache for capacity tests: a real instances path (a temp dir, or a tmpfs mount
// point given by the test), a manual clock, a source, and a mutable instance list behind
// `listInstances`, so tests decide what is in use and whether eviction may know it.
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterEach } from 'node:test';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import type { LibvirtFileImageManagerOptions } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import type { EvictionEvent } from '../../src/capacity/controller.js';
import type { FilesystemProbe } from '../../src/capacity/statfs.js';
import type { InstanceRecord } from '../../src/instances.js';
import type { ImageSource } from '../../src/source/image-source.js';
import { ManualClock, MemoryImageSource } from '../../src/testing/index.js';
import { makeTempDir, seededBytes } from '../helpers/tmp.js';

export const NOW = 1_700_000_000_000;
export const MiB = 1024 * 1024;
export const DAY = 86400;

export interface CapacityFixture {
  readonly instancesPath: string;
  readonly baseDir: string;
  readonly clock: ManualClock;
  /** What `listInstances` returns (when a manager is made with it). */
  readonly instances: InstanceRecord[];
  /** A manager; `withLister: false` gives one without `listInstances`. */
  make(options?: Partial<LibvirtFileImageManagerOptions> & { withLister?: boolean }): LibvirtFileImageManager;
  /** Caches `imageId` with the clock `secondsAgo` in the past, so its last use is then. */
  cacheAt(manager: LibvirtFileImageManager, imageId: string, secondsAgo: number): Promise<void>;
  /** An instance using `imageId`. */
  use(imageId: string, name?: string): void;
  /** Names in the cache directory (everything: entries, staging files, leftovers). */
  files(): Promise<string[]>;
  cleanup(): Promise<void>;
}

/** The cache file name of `imageId`. */
export const fp = (imageId: string): string => cacheFileName(imageId);

/** A memory source with `count` images `img-1`.. of `sizeBytes` each. */
export function sourceOf(count: number, sizeBytes: number): MemoryImageSource {
  return new MemoryImageSource(Array.from({ length: count }, (_, i) => ({ id: `img-${i + 1}`, data: seededBytes(sizeBytes, i + 1) })));
}

/** Collects `evicted` events. */
export function collectEvictions(manager: LibvirtFileImageManager): EvictionEvent[] {
  const events: EvictionEvent[] = [];
  manager.on('evicted', (event) => events.push(event));
  return events;
}

/**
 * An injected statfs for a virtual disk of `totalBytes` holding `other.bytes` of instance data plus
 * whatever the cache directory holds right now (staging files included), so evictions and
 * downloads show in it as they would in a real statfs.
 */
export function virtualDisk(fixture: CapacityFixture, totalBytes: number, other: { bytes: number }): FilesystemProbe {
  return async () => {
    let cache = 0;
    for (const name of await fixture.files()) {
      cache += await stat(path.join(fixture.baseDir, name)).then((st) => st.size, () => 0);
    }
    return { totalBytes, freeBytes: totalBytes - other.bytes - cache, location: 'virtual-disk' };
  };
}

export async function makeCapacityFixture(
  source: ImageSource,
  options: { instancesPath?: string; defaults?: Partial<LibvirtFileImageManagerOptions> } = {},
): Promise<CapacityFixture> {
  const temp = options.instancesPath === undefined ? await makeTempDir('vic-capacity-') : undefined;
  const instancesPath = options.instancesPath ?? temp?.dir ?? '';
  const baseDir = path.join(instancesPath, '_base');
  const clock = new ManualClock(NOW);
  const instances: InstanceRecord[] = [];
  return {
    instancesPath,
    baseDir,
    clock,
    instances,
    make({ withLister = true, ...extra } = {}) {
      return new LibvirtFileImageManager({
        host: 'host1',
        instancesPath,
        source,
        clock,
        lockStaleMs: 2000,
        listInstances: withLister ? () => instances : undefined,
        ...options.defaults,
        ...extra,
      });
    },
    async cacheAt(manager, imageId, secondsAgo) {
      const now = clock.now();
      clock.set(now - secondsAgo * 1000);
      try {
        await manager.cacheImage(imageId);
      } finally {
        clock.set(now);
      }
    },
    use(imageId, name = `inst-${imageId}`) {
      instances.push({ uuid: `uuid-${name}`, name, host: 'host1', imageRef: imageId });
    },
    async files() {
      try {
        return (await readdir(baseDir)).sort();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw err;
      }
    },
    cleanup: () => temp?.cleanup() ?? Promise.resolve(),
  };
}

/** A fixture maker for one `describe`: every fixture it makes is cleaned up after its test. */
export function fixtures(): typeof makeCapacityFixture {
  const made: CapacityFixture[] = [];
  afterEach(async () => {
    for (const fixture of made.splice(0)) await fixture.cleanup();
  });
  return async (source, options) => {
    const fixture = await makeCapacityFixture(source, options);
    made.push(fixture);
    return fixture;
  };
}
