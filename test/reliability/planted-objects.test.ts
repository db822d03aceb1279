// Issue 13, class 5: objects planted where the library keeps its own files. Only regular files
// (opened O_NOFOLLOW|O_NONBLOCK, re-checked with fstat) are cache entries, registries or pin files;
// anything else is refused with a typed error or moved aside, never followed, never waited on:
//   - at a base's final name (a link to a file elsewhere, a dangling link, a FIFO, a socket, a
//     directory): spawns and cacheImage fail with ERR_INVALID_DISK_IMAGE, nothing is downloaded
//     over it, no disk is built from it, and no touch reaches a link's target;
//   - at `compute_nodes` and at the pin file (a FIFO, a link, a directory, a socket): the pass ends
//     (a FIFO used to hang it, with the registry lock), the object is moved aside unread, and the
//     registry counts as unreadable for that pass, so nothing is removed;
//   - the cache directory `_base` as a dangling link, a FIFO or a file: ERR_UNUSABLE_PATH instead
//     of a raw ENOENT; as a link to a real directory elsewhere it just works;
//   - the PowerVM FileVolumeGroup: a FIFO at a disk's meta.json no longer hangs the listing, a link
//     at a disk's data file is not a disk and a touch does not follow it.
// (A regular file at a lock path is pinned with the lock manager's tests.)
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { closeSync, constants, existsSync, lstatSync, openSync } from 'node:fs';
import { mkdir, readFile, readdir, readlink, stat, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { touchFile } from '../../src/backends/files.js';
import { LibvirtFileImageManager, PIN_FILE } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { STORAGE_REGISTRY_FILE } from '../../src/backends/libvirt-file/storage-registry.js';
import { FileVolumeGroup } from '../../src/backends/powervm-localdisk/file-volume-group.js';
import { isImageCacheError } from '../../src/errors.js';
import { ManualClock, MemoryImageSource } from '../../src/testing/index.js';
import { failIfHung } from '../helpers/hang-guard.js';
import { makeTempDir, seededBytes } from '../helpers/tmp.js';

const DAY_MS = 86_400_000;
/** Hang guard: far above what any call here takes; firing fails the test. */
const HANG_MS = 10_000;
const NOW = 1_700_000_000_000;
/** An old mtime for link targets: a touch through a link would move it to NOW. */
const TARGET_MTIME_S = 1_600_000_000;

function figures(t: { diagnostic: (message: string) => void }, what: string, values: Record<string, unknown>): void {
  const line = JSON.stringify(values);
  t.diagnostic(`${what}: ${line}`);
  console.log(`[reliability] planted-objects ${what} ${line}`);
}

const guard = <T>(promise: Promise<T>, what: string): Promise<T> => failIfHung(promise, what, HANG_MS);

/**
 * Releases a reader blocked on the FIFO at `fifo` (open for writing, then close: the reader sees
 * end of file), so that a test that caught a hang does not keep the process alive.
 */
function releaseFifo(fifo: string): void {
  try {
    closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
  } catch {
    // no reader waiting (ENXIO), or no FIFO there any more: nothing to release
  }
}

const mkfifo = (file: string): Promise<unknown> => promisify(execFile)('mkfifo', [file]);

/** Kinds of object planted where a regular file belongs; each returns a cleanup. */
type Planter = (at: string, outside: string) => Promise<() => Promise<void>>;
const noop = (): Promise<void> => Promise.resolve();

describe('planted objects (issue 13, class 5)', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let next = 0;

  before(async () => {
    ({ dir: root, cleanup } = await makeTempDir('vic-planted-'));
  });
  after(async () => {
    await cleanup();
  });

  async function world(): Promise<{ instancesPath: string; outside: string; baseDir: string; source: MemoryImageSource; clock: ManualClock; manager: LibvirtFileImageManager }> {
    const n = ++next;
    const instancesPath = path.join(root, `instances-${n}`);
    const outside = path.join(root, `outside-${n}`);
    await mkdir(instancesPath, { recursive: true });
    await mkdir(outside, { recursive: true });
    const clock = new ManualClock(NOW);
    const source = new MemoryImageSource([{ id: 'img-1', data: seededBytes(256 * 1024, 3) }]);
    const manager = new LibvirtFileImageManager({
      host: 'h1',
      instancesPath,
      clock,
      source,
      lockStaleMs: 2000,
      removeUnusedOriginalMinimumAgeSeconds: 0,
      removeUnusedResizedMinimumAgeSeconds: 0,
    });
    return { instancesPath, outside, baseDir: path.join(instancesPath, '_base'), source, clock, manager };
  }

  /** A file outside the instances path with an old mtime: what a planted link points to. */
  async function target(outside: string, contents: string | Uint8Array): Promise<string> {
    const file = path.join(outside, `target-${++next}`);
    await writeFile(file, contents);
    await utimes(file, TARGET_MTIME_S, TARGET_MTIME_S);
    return file;
  }

  const planters: Record<string, Planter> = {
    'a link to a file elsewhere': async (at, outside) => {
      // A real raw image's bytes: the spawn would happily build on them.
      await symlink(await target(outside, seededBytes(256 * 1024, 3)), at);
      return noop;
    },
    'a relative link to a file elsewhere': async (at, outside) => {
      await symlink(path.relative(path.dirname(at), await target(outside, seededBytes(256 * 1024, 3))), at);
      return noop;
    },
    'a dangling link': async (at, outside) => {
      await symlink(path.join(outside, 'nothing-here'), at);
      return noop;
    },
    'a FIFO': async (at) => {
      await mkfifo(at);
      return () => {
        releaseFifo(at);
        return Promise.resolve();
      };
    },
    'a socket': async (at) => {
      const server = net.createServer();
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(at, resolve));
      return () =>
        new Promise<void>((resolve) => {
          server.close(() => {
            resolve();
          });
        });
    },
    'a directory': async (at) => {
      await mkdir(at);
      await writeFile(path.join(at, 'inside'), 'x');
      return noop;
    },
  };

  /** The link target's mtime and contents, when `at` is a link to an existing file. */
  async function linkTarget(at: string): Promise<{ file: string; mtimeS: number; contents: Buffer } | null> {
    if (!lstatSync(at).isSymbolicLink()) return null;
    try {
      const file = path.resolve(path.dirname(at), await readlink(at));
      return { file, mtimeS: (await stat(file)).mtimeMs / 1000, contents: await readFile(file) };
    } catch {
      return null;
    }
  }

  describe("at a base's final name", () => {
    let refused = 0;
    for (const [kind, plant] of Object.entries(planters)) {
      it(`${kind}: spawn and cacheImage fail with ERR_INVALID_DISK_IMAGE; nothing downloaded, built or touched through it`, async () => {
        const w = await world();
        await mkdir(w.baseDir, { recursive: true });
        const at = path.join(w.baseDir, cacheFileName('img-1'));
        const release = await plant(at, w.outside);
        try {
          const before = await linkTarget(at);
          const instanceDir = path.join(w.instancesPath, 'inst');
          const isRefused = (err: unknown): boolean => {
            assert.ok(isImageCacheError(err), String(err));
            assert.equal(err.code, 'ERR_INVALID_DISK_IMAGE', err.message);
            assert.ok(err.message.includes('not a regular file'), err.message);
            return true;
          };
          w.clock.advance(DAY_MS);
          await assert.rejects(guard(w.manager.createInstanceDisk({ imageId: 'img-1', instanceDir }), 'the spawn'), isRefused);
          await assert.rejects(guard(w.manager.cacheImage('img-1'), 'cacheImage'), isRefused);
          refused += 2;
          assert.ok(!existsSync(path.join(instanceDir, 'disk')), 'no instance disk built from unverified bytes');
          assert.equal(w.source.openCalls('img-1'), 0, 'nothing downloaded over it');
          assert.ok(lstatSync(at, { throwIfNoEntry: false }) !== undefined, 'the planted object is left for the operator');
          if (before !== null) {
            const afterward = await linkTarget(at);
            assert.ok(afterward !== null);
            assert.equal(afterward.mtimeS, before.mtimeS, "the link's target was touched");
            assert.deepEqual(afterward.contents, before.contents);
          }
          // A pass neither follows nor removes it.
          w.clock.advance(100 * DAY_MS);
          await guard(w.manager.update([]), 'the pass');
          assert.ok(lstatSync(at, { throwIfNoEntry: false }) !== undefined);
          if (before !== null) assert.equal((await linkTarget(at))?.mtimeS, before.mtimeS);
        } finally {
          await release();
        }
      });
    }
    after(() => {
      console.log(`[reliability] planted-objects base-name ${JSON.stringify({ kinds: Object.keys(planters).length, callsRefused: refused })}`);
    });

    it('a touch never follows a link (lutimes): the target keeps its mtime', async () => {
      const w = await world();
      const file = await target(w.outside, 'precious');
      const link = path.join(w.instancesPath, 'link');
      await symlink(file, link);
      await touchFile(link, w.clock, false);
      assert.equal((await stat(file)).mtimeMs / 1000, TARGET_MTIME_S);
    });
  });

  /** What the pass must do with an object planted at `name` under the instances path. */
  const stateFiles = [STORAGE_REGISTRY_FILE, PIN_FILE] as const;
  const stateKinds = ['a FIFO', 'a link to a file elsewhere', 'a dangling link', 'a directory', 'a socket'] as const;

  describe('at the registry and the pin file', () => {
    let held = 0;
    for (const name of stateFiles) {
      for (const kind of stateKinds) {
        it(`${kind} at ${name}: the pass ends, the object is moved aside unread, nothing is removed that pass`, async (t) => {
          const w = await world();
          const at = path.join(w.instancesPath, name);
          const plant = planters[kind] as Planter;
          // A planted registry or pin file that would be believed: no other host, and a pin.
          const release =
            kind === 'a link to a file elsewhere'
              ? await (async () => {
                  await symlink(await target(w.outside, name === PIN_FILE ? '{"img-1": 9e15}' : '{}'), at);
                  return noop;
                })()
              : await plant(at, w.outside);
          try {
            await w.manager.cacheImage('img-1');
            const base = path.join(w.baseDir, cacheFileName('img-1'));
            const before = await linkTarget(at);
            w.clock.advance(100 * DAY_MS);
            const report = await guard(w.manager.update([]), 'the pass');
            if (name === STORAGE_REGISTRY_FILE) {
              // The users are unknown for this pass: the old, unused base stays.
              assert.ok(existsSync(base), 'a base was removed while the registry was unreadable');
              assert.ok(report.hosts.includes('h1'));
              assert.ok(lstatSync(at).isFile(), 'the registry was written anew as a regular file');
              assert.ok(JSON.parse(await readFile(at, 'utf8')) !== null);
              // The registry lock was released: a FIFO used to hold it for good.
              await guard(w.manager.registerStorageUse(), 'registering after the pass');
            } else {
              // No pins (a planted pin is not believed); the pass itself ends normally.
              assert.ok(!existsSync(base), 'a pin read through a planted object was believed');
              await guard(w.manager.pinImage('img-1', 3600), 'pinImage');
              assert.ok(lstatSync(at).isFile(), 'the pin file was written anew as a regular file');
              assert.ok((await w.manager.listPins()).has('img-1'));
            }
            const aside = (await readdir(w.instancesPath)).filter((n) => n.startsWith(`${name}.refused-`));
            assert.equal(aside.length, 1, `moved aside: ${aside.join(', ')}`);
            if (before !== null) {
              const moved = await linkTarget(path.join(w.instancesPath, aside[0] as string));
              assert.ok(moved !== null);
              assert.equal(moved.mtimeS, before.mtimeS);
              assert.deepEqual(moved.contents, before.contents, "the link's target was changed");
            }
            held++;
            t.diagnostic(`${kind} at ${name}: moved aside as ${aside[0]}`);
          } finally {
            await release();
          }
        });
      }
    }
    after(() => {
      console.log(`[reliability] planted-objects state-files ${JSON.stringify({ cases: stateFiles.length * stateKinds.length, held })}`);
    });
  });

  describe('the cache directory itself', () => {
    const unusable: Record<string, (baseDir: string, outside: string) => Promise<() => Promise<void>>> = {
      'a dangling link': async (baseDir, outside) => {
        await symlink(path.join(outside, 'unmounted', '_base'), baseDir);
        return noop;
      },
      'a link to a file': async (baseDir, outside) => {
        await symlink(await target(outside, 'x'), baseDir);
        return noop;
      },
      'a regular file': async (baseDir) => {
        await writeFile(baseDir, 'x');
        return noop;
      },
      'a FIFO': async (baseDir) => {
        await mkfifo(baseDir);
        return () => {
          releaseFifo(baseDir);
          return Promise.resolve();
        };
      },
    };
    for (const [kind, plant] of Object.entries(unusable)) {
      it(`${kind}: spawn and cacheImage fail with ERR_UNUSABLE_PATH naming it, not a raw errno`, async () => {
        const w = await world();
        const release = await plant(w.baseDir, w.outside);
        try {
          const isUnusable = (err: unknown): boolean => {
            assert.ok(isImageCacheError(err), String(err));
            assert.equal(err.code, 'ERR_UNUSABLE_PATH', err.message);
            assert.ok(err.message.includes(w.baseDir), err.message);
            return true;
          };
          await assert.rejects(guard(w.manager.createInstanceDisk({ imageId: 'img-1', instanceDir: path.join(w.instancesPath, 'inst') }), 'the spawn'), isUnusable);
          await assert.rejects(guard(w.manager.cacheImage('img-1'), 'cacheImage'), isUnusable);
          const report = await guard(w.manager.update([]), 'the pass');
          assert.equal(report.skipped, 'no-base');
        } finally {
          await release();
        }
      });
    }

    it('a link to a real directory elsewhere (the cache moved to a bigger volume) just works', async () => {
      const w = await world();
      await mkdir(path.join(w.outside, 'big-volume', '_base'), { recursive: true });
      await symlink(path.join(w.outside, 'big-volume', '_base'), w.baseDir);
      const disk = await w.manager.createInstanceDisk({ imageId: 'img-1', instanceDir: path.join(w.instancesPath, 'inst') });
      assert.equal(disk.created, true);
      assert.ok(existsSync(path.join(w.outside, 'big-volume', '_base', cacheFileName('img-1'))));
    });
  });

  describe('PowerVM FileVolumeGroup', () => {
    it("a FIFO at a disk's meta.json does not hang the listing; a link at a data file is no disk and is not touched through", async (t) => {
      const w = await world();
      const directory = path.join(w.instancesPath, 'vg');
      const group = new FileVolumeGroup({ directory });
      await group.createDisk({ name: 'fifo_meta', sizeBytes: 4096, tags: { a: 'b' } });
      await group.createDisk({ name: 'linked', sizeBytes: 4096, tags: { a: 'b' } });
      const meta = path.join(directory, 'fifo_meta', 'meta.json');
      await unlink(meta);
      await mkfifo(meta);
      const data = path.join(directory, 'linked', 'disk');
      await unlink(data);
      const outsideFile = await target(w.outside, 'precious');
      await symlink(outsideFile, data);
      try {
        const disks = await guard(group.listDisks(), 'listDisks');
        const names = disks.map((d) => d.name);
        assert.ok(names.includes('fifo_meta'), 'the disk is listed, without tags');
        assert.deepEqual(disks.find((d) => d.name === 'fifo_meta')?.tags, {});
        assert.ok(!names.includes('linked'), 'a link is not a disk');
        await group.touchDisk('linked', NOW).catch(() => undefined);
        assert.equal((await stat(outsideFile)).mtimeMs / 1000, TARGET_MTIME_S, "the link's target was touched");
        figures(t, 'volume-group', { cases: 3, held: 3 });
      } finally {
        releaseFifo(meta);
      }
    });
  });
});
