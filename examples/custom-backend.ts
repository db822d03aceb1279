// Writing a custom backend: a cache a driver author would write for their own hypervisor, then
// used the way a driver uses it:
//   node --import tsx examples/custom-backend.ts
// The backend keeps each image as `<dir>/<imageId>.img` (the id readable in the name, unlike
// libvirt's sha1 names), last use as the file's mtime, locks in `<dir>/.locks`. It implements the
// three abstract members of `ImageManager` (getBase, scanBaseImages, fetchTargetFor) and the four
// primitives of a cache holding files (touch, stat, remove an entry, remove a staging file); the
// periodic pass, the verified single-flight download, pins, capacity (size cap, watermarks),
// `list`/`remove`/`prune`, the stats, the disk usage and which entries an image keeps alive (by the
// image id the scan records) are inherited.
import { copyFile, lstat, mkdir, mkdtemp, readdir, rm, stat, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GlanceImageSource, ImageManager } from 'virt-imagecache';
import {
  assertValidImageId,
  fileFetchTarget,
  isRegularFile,
  isStagingName,
  mtimeOf,
  stagingFinalName,
  statfsProbe,
  touchFile,
  useCachedImage,
  usageOfDirectory,
} from 'virt-imagecache/backend-kit';
import { formatBytes } from 'virt-imagecache/cli';
import type {
  BaseImageScan,
  CacheEntry,
  FetchTarget,
  FilesystemUsage,
  ImageManagerOptions,
  InstanceRecord,
  StagingEntry,
} from 'virt-imagecache';
import { ManualClock, startFakeGlance } from 'virt-imagecache/testing';

/** Options of {@link FlatDirectoryImageManager}. */
interface FlatDirectoryImageManagerOptions extends ImageManagerOptions {
  /** The cache directory (absolute). Created by the first download. */
  readonly dir: string;
}

const SUFFIX = '.img';

/** An image cache as a flat directory of `<imageId>.img` files. */
class FlatDirectoryImageManager extends ImageManager<string> {
  readonly dir: string;

  constructor(options: FlatDirectoryImageManagerOptions) {
    const { dir, ...rest } = options;
    // The lock directory makes every lock cross-process: two services (or a CLI `prune`) on the
    // same directory exclude each other. It sits inside the cache, and the scan below only lists
    // regular files, so it is never mistaken for an entry. Pins go in a file beside the images: a
    // pre-cache pin outlives a restart of the service; its name does not end in `.img`, so it is
    // never an entry either. The base builds both once it has validated the options.
    super(rest, { lockDir: path.join(dir, '.locks'), pinFile: path.join(dir, '.pins.json') }, 'flat-directory');
    this.dir = dir;
  }

  /** The file of `imageId`: the id itself is the name (ids are validated: no `/`, no `..`). */
  pathFor(imageId: string): string {
    assertValidImageId(imageId);
    return path.join(this.dir, `${imageId}${SUFFIX}`);
  }

  /**
   * The spawn path: runs `use` on the image's file under the image's lock, downloading it first on
   * a miss. Under the lock, a pass cannot remove the file between the check and its use (removal
   * takes the same lock and re-checks the age the touch just reset).
   */
  async withImage<T>(imageId: string, use: (file: string) => Promise<T>): Promise<{ value: T; cacheStatus: 'cached' | 'existing' }> {
    const file = this.pathFor(imageId);
    const name = path.basename(file);
    return useCachedImage({
      imageId,
      log: this.log,
      tryUse: () =>
        this.locks.withLock(
          name,
          async () => {
            if (!(await isRegularFile(file))) return null;
            // Tolerant on the spawn path: a base another user owns (NFS) still serves the spawn.
            await touchFile(file, this.clock, true, this.log);
            return use(file);
          },
          { imageId },
        ),
      cache: () => this.cacheImage(imageId, { tolerateTouchErrors: true }),
      // A hit that no download counted: tell the stats.
      onHit: () => this.recordCacheHit(name),
    });
  }

  // ---- The contract ----

  /** Null until the first download creates the directory: a pass then has nothing to do. */
  async getBase(): Promise<string | null> {
    try {
      return (await stat(this.dir)).isDirectory() ? this.dir : null;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
  }

  /**
   * Regular files only (lstat: a symlink planted here is never an entry, so never touched or
   * deleted through). `*.img` files are entries; staging files (interrupted downloads) are
   * reported with the lock of the entry they would become, so a pass never removes one a live
   * download is writing; anything else is not ours and is left alone.
   */
  async scanBaseImages(base: string): Promise<BaseImageScan> {
    const entries: CacheEntry[] = [];
    const staging: StagingEntry[] = [];
    for (const name of (await readdir(base)).sort()) {
      let st;
      try {
        st = await lstat(path.join(base, name));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed meanwhile
        throw error;
      }
      if (!st.isFile()) continue;
      if (isStagingName(name)) {
        staging.push({ name, lastModifiedMs: st.mtimeMs, lockName: stagingFinalName(name) ?? undefined });
      } else if (name.endsWith(SUFFIX) && name.length > SUFFIX.length) {
        // The id is in the name: list(), eviction events and removal reports can name the image.
        const imageId = name.slice(0, -SUFFIX.length);
        // Allocated blocks, not the apparent size: a sparse image costs what it occupies.
        entries.push({ name, kind: 'original', imageId, sizeBytes: st.blocks * 512, lastUsedMs: st.mtimeMs });
      }
    }
    return { entries, staging };
  }

  /**
   * The shared file target: downloads go to `<name>.<pid>-<random>.staging` beside the final
   * file, are verified, fsynced and renamed into place, so a final name is always a whole image.
   * Its name (`<imageId>.img`) is also the lock name the fetch takes.
   */
  protected fetchTargetFor(imageId: string): FetchTarget {
    return fileFetchTarget(imageId, this.pathFor(imageId));
  }

  // ---- The primitives of a cache that holds entries ----

  /** mtime is the last use: set it from the manager's clock (so a test clock ages the cache). */
  protected override touchEntry(name: string, tolerateEacces: boolean): Promise<void> {
    return touchFile(path.join(this.dir, name), this.clock, tolerateEacces, this.log);
  }

  /**
   * The same number the scan put in `lastUsedMs` (lstat mtime, ms): the pass compares the two
   * under the lock, and any difference means "used since the scan", so the entry is kept.
   */
  protected override statEntry(base: string, entry: CacheEntry): Promise<number | null> {
    return mtimeOf(path.join(base, entry.name));
  }

  /** Called under the entry's lock. lstat again: only a regular file is ever unlinked, never a link's target. */
  protected override async removeEntry(base: string, entry: CacheEntry): Promise<void> {
    const file = path.join(base, entry.name);
    try {
      if ((await lstat(file)).isFile()) await unlink(file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }

  /** A stale staging file: the pass calls this under the staging file's lock, with no live writer. */
  protected override async removeStaging(base: string, name: string): Promise<void> {
    try {
      await unlink(path.join(base, name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }

  /** Optional: measuring the filesystem turns on the disk watermarks and the free-space check before downloads. */
  protected override cacheFilesystemUsage(base: string | null): Promise<FilesystemUsage | null> {
    return usageOfDirectory(statfsProbe, base ?? path.dirname(this.dir));
  }
}

// ---- A driver using it ----

const IMAGE = '9e1d6c2a-4b3f-4a5e-8d7c-6b5a4c3d2e1f';
const say = (line: string): void => {
  console.log(line);
};

const root = await mkdtemp(path.join(os.tmpdir(), 'vic-example-custom-'));
await using glance = await startFakeGlance({ images: [{ id: IMAGE, name: 'alpine', content: { size: 8 * 1024 * 1024, seed: 3 } }] });
try {
  const clock = new ManualClock(); // a real driver omits it; here it ages the cache in a second
  const cache = new FlatDirectoryImageManager({
    host: 'hv-1',
    dir: path.join(root, 'images'),
    source: new GlanceImageSource({ endpoint: glance.url }),
    clock,
    maxCacheBytes: 1024 ** 3, // inherited: a size cap, enforced after downloads and by passes
  });

  say(`cache directory ${cache.dir}`);
  for (const attempt of ['first', 'second']) {
    const result = await cache.cacheImage(IMAGE);
    const how = result.status === 'cached' ? `${formatBytes(result.bytes)} downloaded, ${result.algorithm ?? 'no'} digest verified` : 'already there, touched';
    say(`cacheImage (${attempt}): ${result.status} ${result.name}, ${how}`);
  }

  // A spawn: the hypervisor gets its own copy of the image, made under the image's lock.
  const instanceDir = path.join(root, 'instances', 'vm-1');
  await mkdir(instanceDir, { recursive: true });
  const spawned = await cache.withImage(IMAGE, async (file) => {
    await copyFile(file, path.join(instanceDir, 'disk.img'));
    return path.join(instanceDir, 'disk.img');
  });
  say(`spawn vm-1: ${spawned.value} from the cache [${spawned.cacheStatus}]`);
  const instances: InstanceRecord[] = [{ uuid: '0b6f2a8e-1c3d-4e5f-8a9b-0c1d2e3f4a5b', name: 'vm-1', host: 'hv-1', imageRef: IMAGE }];

  const inUse = await cache.update(instances);
  say(`pass with vm-1 running: kept ${inUse.kept.map((k) => `${k.name} (${k.reason})`).join(', ')}`);
  for (const entry of await cache.list({ instances })) {
    say(`list: ${entry.name} image ${entry.imageId ?? '?'} ${formatBytes(entry.sizeBytes)}, in use: ${String(entry.inUse)} (${entry.usedBy ?? 'nobody'})`);
  }

  // vm-1 is deleted; a day later the image is unused for longer than the minimum age.
  await rm(instanceDir, { recursive: true });
  clock.advance(86_400 + 1);
  const dryRun = await cache.prune({ instances: [], dryRun: true });
  say(`prune --dry-run a day later: would remove ${dryRun.removed.map((r) => `${r.name} (${r.reason})`).join(', ') || 'nothing'}`);
  const cleaned = await cache.update([]);
  say(`pass a day after vm-1 was deleted: removed ${cleaned.removed.map((r) => `${r.name} (${r.reason}, ${formatBytes(r.bytes)})`).join(', ') || 'nothing'}`);
  say(`left in ${path.basename(cache.dir)}/: [${(await readdir(cache.dir)).join(', ')}]`);

  const stats = cache.getStats();
  say(
    `stats: ${String(stats.hits)} hits, ${String(stats.misses)} misses, ${String(stats.downloads)} downloads ` +
      `(${formatBytes(stats.bytesDownloaded)}), ${formatBytes(stats.bytesServedFromCache)} served from the cache, ` +
      `${String(stats.removals.unused.count)} removed unused`,
  );
} finally {
  await rm(root, { recursive: true, force: true });
}
