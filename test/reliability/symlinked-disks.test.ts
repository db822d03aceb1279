// Issue 13, class 3: symlinked instance disks keep their bases.
//   - an instance directory that is a link to another volume (absolute, relative, through a chain
//     of links), a disk that is a link (absolute, relative, a chain), or both: the pass reads the
//     disk at its target and keeps its base, the original `<sha1>` and the resized `<sha1>_<N>`;
//     the overlays (written in-process, checked with the real qemu-img) still open afterwards;
//   - links that cannot be a disk (to a directory, to a FIFO, to the instances path itself) are
//     passed over without a hang;
//   - a link that does not resolve (dangling: an unmounted volume; or a loop: to itself, a cycle,
//     a directory linked to itself) is a disk whose bases are unknown: the pass fails with
//     ERR_UNUSABLE_PATH and removes nothing, however old and unused the bases are;
//   - the same with half the directories read on the worker thread.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { collectBackingFiles } from '../../src/backends/libvirt-file/backing-files.js';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { writeQcow2Overlay } from '../../src/disk/qcow2-overlay.js';
import { isImageCacheError } from '../../src/errors.js';
import { ManualClock, MemoryImageSource } from '../../src/testing/index.js';
import { qemuImgCheck, qemuImgInfo, requireQemuImg } from '../helpers/qemu.js';
import { failIfHung } from '../helpers/hang-guard.js';
import { makeTempDir } from '../helpers/tmp.js';

const DAY_MS = 86_400_000;
/** Hang guard: far above what a pass over a dozen directories takes; firing fails the test. */
const HANG_MS = 20_000;
const RESIZED_SUFFIX = '_10737418240';

function figures(t: { diagnostic: (message: string) => void }, what: string, values: Record<string, unknown>): void {
  const line = JSON.stringify(values);
  t.diagnostic(`${what}: ${line}`);
  console.log(`[reliability] symlinked-disks ${what} ${line}`);
}

const guard = <T>(promise: Promise<T>, what: string): Promise<T> => failIfHung(promise, what, HANG_MS);

describe('symlinked instance disks (issue 13, class 3)', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let next = 0;

  before(async () => {
    ({ dir: root, cleanup } = await makeTempDir('vic-symlinked-'));
  });
  after(async () => {
    await cleanup();
  });

  /** A fresh instances path and, beside it, an "other volume" the links point into. */
  async function world(): Promise<{ instancesPath: string; other: string; baseDir: string; manager: LibvirtFileImageManager; clock: ManualClock }> {
    const n = ++next;
    const instancesPath = path.join(root, `instances-${n}`);
    const other = path.join(root, `volume-${n}`);
    await mkdir(path.join(instancesPath, '_base'), { recursive: true });
    await mkdir(other, { recursive: true });
    const clock = new ManualClock(1_700_000_000_000);
    const manager = new LibvirtFileImageManager({
      host: 'h1',
      instancesPath,
      clock,
      source: new MemoryImageSource([]),
      lockStaleMs: 2000,
      removeUnusedOriginalMinimumAgeSeconds: 0,
      removeUnusedResizedMinimumAgeSeconds: 0,
    });
    return { instancesPath, other, baseDir: path.join(instancesPath, '_base'), manager, clock };
  }

  /** The original and resized bases of `image`, plain raw files. */
  async function bases(baseDir: string, image: string): Promise<string[]> {
    const fp = cacheFileName(image);
    const files = [path.join(baseDir, fp), path.join(baseDir, `${fp}${RESIZED_SUFFIX}`)];
    for (const file of files) await writeFile(file, Buffer.alloc(64 * 1024, 7));
    return files;
  }

  /** A qcow2 overlay at `file` backed by `backing` (written by the library itself). */
  async function overlay(file: string, backing: string): Promise<void> {
    await mkdir(path.dirname(file), { recursive: true });
    await writeQcow2Overlay(file, { backingFile: backing, backingFormat: 'raw', virtualSize: 1024 * 1024 });
  }

  /**
   * Layouts in which an instance's disks are reached through links. Each builds `disk` (backed by
   * the original) and `disk.local` (backed by the resized base) of its own image, and returns the
   * paths the disks are seen at under the instances path.
   */
  const layouts: Record<string, (w: { instancesPath: string; other: string }, original: string, resized: string) => Promise<string[]>> = {
    'instance directory: absolute link to another volume': async ({ instancesPath, other }, original, resized) => {
      const target = path.join(other, 'vol', 'inst-abs');
      await overlay(path.join(target, 'disk'), original);
      await overlay(path.join(target, 'disk.local'), resized);
      await symlink(target, path.join(instancesPath, 'inst-abs'));
      return [path.join(instancesPath, 'inst-abs', 'disk'), path.join(instancesPath, 'inst-abs', 'disk.local')];
    },
    'instance directory: relative link': async ({ instancesPath, other }, original, resized) => {
      const target = path.join(other, 'vol', 'inst-rel');
      await overlay(path.join(target, 'disk'), original);
      await overlay(path.join(target, 'disk.local'), resized);
      await symlink(path.relative(instancesPath, target), path.join(instancesPath, 'inst-rel'));
      return [path.join(instancesPath, 'inst-rel', 'disk'), path.join(instancesPath, 'inst-rel', 'disk.local')];
    },
    'instance directory: chain of two links': async ({ instancesPath, other }, original, resized) => {
      const target = path.join(other, 'vol', 'inst-chain');
      await overlay(path.join(target, 'disk'), original);
      await overlay(path.join(target, 'disk.local'), resized);
      await symlink(target, path.join(other, 'alias-inst-chain'));
      await symlink(path.join(other, 'alias-inst-chain'), path.join(instancesPath, 'inst-dirchain'));
      return [path.join(instancesPath, 'inst-dirchain', 'disk'), path.join(instancesPath, 'inst-dirchain', 'disk.local')];
    },
    'disk: absolute links': async ({ instancesPath, other }, original, resized) => {
      const dir = path.join(instancesPath, 'inst-diskabs');
      await mkdir(dir);
      await overlay(path.join(other, 'disks', 'a-root.qcow2'), original);
      await overlay(path.join(other, 'disks', 'a-local.qcow2'), resized);
      await symlink(path.join(other, 'disks', 'a-root.qcow2'), path.join(dir, 'disk'));
      await symlink(path.join(other, 'disks', 'a-local.qcow2'), path.join(dir, 'disk.local'));
      return [path.join(dir, 'disk'), path.join(dir, 'disk.local')];
    },
    'disk: relative links': async ({ instancesPath, other }, original, resized) => {
      const dir = path.join(instancesPath, 'inst-diskrel');
      await mkdir(dir);
      await overlay(path.join(other, 'disks', 'r-root.qcow2'), original);
      await overlay(path.join(other, 'disks', 'r-local.qcow2'), resized);
      await symlink(path.relative(dir, path.join(other, 'disks', 'r-root.qcow2')), path.join(dir, 'disk'));
      await symlink(path.relative(dir, path.join(other, 'disks', 'r-local.qcow2')), path.join(dir, 'disk.local'));
      return [path.join(dir, 'disk'), path.join(dir, 'disk.local')];
    },
    'disk: chain of three links, mixed absolute and relative': async ({ instancesPath, other }, original, resized) => {
      const dir = path.join(instancesPath, 'inst-diskchain');
      await mkdir(dir);
      await overlay(path.join(other, 'disks', 'c-root.qcow2'), original);
      await overlay(path.join(other, 'disks', 'c-local.qcow2'), resized);
      for (const [disk, real] of [['disk', 'c-root.qcow2'], ['disk.local', 'c-local.qcow2']] as const) {
        await symlink(real, path.join(other, 'disks', `${real}.hop2`));
        await symlink(path.join(other, 'disks', `${real}.hop2`), path.join(other, `${real}.hop1`));
        await symlink(path.relative(dir, path.join(other, `${real}.hop1`)), path.join(dir, disk));
      }
      return [path.join(dir, 'disk'), path.join(dir, 'disk.local')];
    },
    'both: a linked directory whose disks are relative links': async ({ instancesPath, other }, original, resized) => {
      const target = path.join(other, 'vol', 'inst-both');
      await overlay(path.join(other, 'disks', 'b-root.qcow2'), original);
      await overlay(path.join(other, 'disks', 'b-local.qcow2'), resized);
      await mkdir(target, { recursive: true });
      await symlink('../../disks/b-root.qcow2', path.join(target, 'disk'));
      await symlink('../../disks/b-local.qcow2', path.join(target, 'disk.local'));
      await symlink(target, path.join(instancesPath, 'inst-both'));
      return [path.join(instancesPath, 'inst-both', 'disk'), path.join(instancesPath, 'inst-both', 'disk.local')];
    },
  };

  /** Links that cannot be disks, beside the layouts: passed over, never a hang. */
  async function harmlessLinks(instancesPath: string, other: string): Promise<number> {
    await symlink('.', path.join(instancesPath, 'loop-to-instances-path'));
    await symlink(instancesPath, path.join(instancesPath, 'abs-loop-to-instances-path'));
    const dir = path.join(instancesPath, 'inst-odd');
    await mkdir(dir);
    await mkdir(path.join(other, 'a-directory'));
    await symlink(path.join(other, 'a-directory'), path.join(dir, 'disk'));
    await symlink('.', path.join(dir, 'disk.eph0'));
    await promisify(execFile)('mkfifo', [path.join(other, 'a-fifo')]);
    await symlink(path.join(other, 'a-fifo'), path.join(dir, 'disk.swap'));
    await writeFile(path.join(other, 'a-file'), 'not an instance');
    await symlink(path.join(other, 'a-file'), path.join(instancesPath, 'link-to-a-file'));
    return 6;
  }

  it('a pass keeps the original and resized bases of disks reached through links, and the overlays still open', async (t) => {
    const w = await world();
    const kept: string[] = [];
    const disks: string[] = [];
    let image = 0;
    for (const build of Object.values(layouts)) {
      const [original, resized] = await bases(w.baseDir, `linked-${++image}`);
      kept.push(original as string, resized as string);
      disks.push(...(await build(w, original as string, resized as string)));
    }
    const harmless = await harmlessLinks(w.instancesPath, w.other);
    const unused = (await bases(w.baseDir, 'nobody-uses-this'))[0] as string;
    w.clock.advance(100 * DAY_MS);
    const report = await guard(w.manager.update([]), 'the pass');
    for (const file of kept) assert.ok(existsSync(file), `${path.basename(file)} was removed while a linked disk uses it`);
    const keptInUse = new Set(report.kept.filter((k) => k.reason === 'in-use').map((k) => k.name));
    for (const file of kept) assert.ok(keptInUse.has(path.basename(file)), `${path.basename(file)} kept as in use`);
    assert.ok(!existsSync(unused), 'an unused base still goes: the links did not stop the pass');
    if (requireQemuImg(t) !== undefined) {
      for (const disk of disks) {
        assert.equal((await qemuImgCheck(disk))['check-errors'], 0, disk);
        assert.ok(kept.includes((await qemuImgInfo(disk))['backing-filename'] ?? ''), disk);
      }
    }
    figures(t, 'kept', { layouts: Object.keys(layouts).length, basesKept: kept.length, basesLost: 0, harmlessLinks: harmless });
  });

  /** Links that do not resolve: each alone in an instances path with an old, unused base. */
  const unresolvable: Record<string, (instancesPath: string, other: string) => Promise<string>> = {
    'disk linked to itself': async (instancesPath) => {
      await mkdir(path.join(instancesPath, 'inst'));
      await symlink('disk', path.join(instancesPath, 'inst', 'disk'));
      return path.join(instancesPath, 'inst', 'disk');
    },
    'two disks linked to each other': async (instancesPath) => {
      await mkdir(path.join(instancesPath, 'inst'));
      await symlink('disk.local', path.join(instancesPath, 'inst', 'disk'));
      await symlink(path.join(instancesPath, 'inst', 'disk'), path.join(instancesPath, 'inst', 'disk.local'));
      return path.join(instancesPath, 'inst', 'disk');
    },
    'instance directory linked to itself': async (instancesPath) => {
      await symlink('inst', path.join(instancesPath, 'inst'));
      return path.join(instancesPath, 'inst');
    },
    'disk linked (absolute) into a volume that is not mounted': async (instancesPath, other) => {
      await mkdir(path.join(instancesPath, 'inst'));
      await symlink(path.join(other, 'unmounted', 'disk'), path.join(instancesPath, 'inst', 'disk'));
      return path.join(instancesPath, 'inst', 'disk');
    },
    'disk linked (relative) to a missing file': async (instancesPath) => {
      await mkdir(path.join(instancesPath, 'inst'));
      await symlink('../../gone/disk', path.join(instancesPath, 'inst', 'disk.eph0'));
      return path.join(instancesPath, 'inst', 'disk.eph0');
    },
    'instance directory linked into a volume that is not mounted': async (instancesPath, other) => {
      await symlink(path.join(other, 'unmounted', 'inst'), path.join(instancesPath, 'inst'));
      return path.join(instancesPath, 'inst');
    },
  };

  for (const [name, build] of Object.entries(unresolvable)) {
    it(`${name}: the pass fails with ERR_UNUSABLE_PATH and removes nothing`, async () => {
      const w = await world();
      const link = await build(w.instancesPath, w.other);
      const old = await bases(w.baseDir, 'old-and-unused');
      w.clock.advance(100 * DAY_MS);
      await assert.rejects(guard(w.manager.update([]), 'the pass'), (err: unknown) => {
        assert.ok(isImageCacheError(err), String(err));
        assert.equal(err.code, 'ERR_UNUSABLE_PATH');
        assert.ok(err.message.includes(link), err.message);
        return true;
      });
      for (const file of old) assert.ok(existsSync(file), `${path.basename(file)} removed although a disk could not be read`);
    });
  }

  it('the worker thread reads linked directories and disks the same way, and refuses the same loops', async (t) => {
    const w = await world();
    const expected = new Set<string>();
    let image = 0;
    for (const build of Object.values(layouts)) {
      const [original, resized] = await bases(w.baseDir, `worker-${++image}`);
      expected.add(path.basename(original as string)).add(path.basename(resized as string));
      await build(w, original as string, resized as string);
    }
    await harmlessLinks(w.instancesPath, w.other);
    const skip = new Set(['_base', 'locks']);
    // From 1 directory on, the worker reads the first half.
    const found = await guard(collectBackingFiles(w.instancesPath, skip, { workerMinDirectories: 1 }), 'the worker read');
    assert.deepEqual(new Set(found.backing.keys()), expected);
    await unresolvable['disk linked to itself']?.(w.instancesPath, w.other);
    await assert.rejects(guard(collectBackingFiles(w.instancesPath, skip, { workerMinDirectories: 1 }), 'the worker read'), { code: 'ERR_UNUSABLE_PATH' });
    figures(t, 'worker', { directories: (await readdir(w.instancesPath)).length, basesFound: expected.size, loopsRefused: 1 });
  });
});
