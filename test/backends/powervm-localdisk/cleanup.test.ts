// The cleanup pass (nova-powervm's ImageManager.update, test_age_and_verify) with its gaps closed:
// only disks this library created are removed, only when unused and older than the minimum age,
// never while a spawn (in any process) holds the cache lock shared.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { FileVolumeGroup, GlanceImageSource, ImageInUseError, LocalDiskImageManager } from '../../../src/index.js';
import { DISK_OWNER, DISK_TAGS } from '../../../src/backends/powervm-localdisk/naming.js';
import { startFakeGlance } from '../../../src/testing/index.js';
import type { FakeGlance, FakeVolumeGroup } from '../../../src/testing/index.js';
import { runChild, startChild, waitForLine } from '../../helpers/child.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { GiB, MiB, TWIN_A, TWIN_B, fakeGroupFixture } from './fixture.js';
import type { LocalDiskFixture } from './fixture.js';

const DAY = 86400;
const use = (imageId: string, n = 1): { uuid: string; name: string; host: string; imageRef: string } => ({ uuid: `u${n}`, name: `inst-${n}`, host: 'host1', imageRef: imageId });

describe('localdisk cleanup pass', () => {
  let f: LocalDiskFixture<FakeVolumeGroup>;
  beforeEach(async () => {
    f = await fakeGroupFixture();
  });
  afterEach(async () => {
    await f.cleanup();
  });

  it('test_age_and_verify: the used image is kept and touched, the unused old one removed; a foreign i_* disk and boot disks are never touched', async () => {
    const old = f.clock.now() - 2 * DAY * 1000;
    await f.cachedImageDisk('i_img_1', 'img-1', MiB, { lastUsedMs: old });
    await f.cachedImageDisk('i_img_2', 'img-2', MiB, { lastUsedMs: old });
    await f.group.createDisk({ name: 'i_bf8446e4_4f52', sizeBytes: GiB, tags: {} }); // another tool's, or nova-powervm's
    await f.group.touchDisk('i_bf8446e4_4f52', old);
    await f.group.createDisk({ name: 'b_inst1', sizeBytes: GiB, tags: { [DISK_TAGS.owner]: DISK_OWNER, [DISK_TAGS.imageId]: 'img-2', [DISK_TAGS.instanceUuid]: 'u9' } });
    const report = await f.manager.update([use('img-1')]);
    assert.deepEqual(report.active, ['i_img_1']);
    assert.deepEqual(report.removed.map((r) => [r.name, r.imageId, r.reason]), [['i_img_2', 'img-2', 'unused']]);
    assert.deepEqual(f.group.names(), ['b_inst1', 'i_bf8446e4_4f52', 'i_img_1']);
    assert.equal((await f.group.listDisks()).find((d) => d.name === 'i_img_1')?.lastUsedMs, f.clock.now(), 'in use: touched');
    assert.ok(!report.kept.some((k) => k.name === 'i_bf8446e4_4f52'), 'a foreign disk is not even an entry');
  });

  it('a foreign i_* disk is never deleted, however old and unused, pass after pass', async () => {
    await f.group.createDisk({ name: 'i_3e865d14_8c1e', sizeBytes: GiB, tags: {} });
    await f.group.createDisk({ name: 'i_other', sizeBytes: GiB, tags: { [DISK_TAGS.imageId]: TWIN_A } }); // an image id, but not our owner tag
    for (let pass = 0; pass < 3; pass++) {
      f.clock.advance(30 * DAY);
      await f.manager.update([]);
    }
    assert.deepEqual(f.group.names(), ['i_3e865d14_8c1e', 'i_other']);
    assert.equal(f.group.calls('delete'), 0);
  });

  it('an unused image younger than the minimum age is kept; older, it is removed; removeUnusedBaseImages false keeps it', async () => {
    await f.manager.cacheImage('img-1');
    f.clock.advance(DAY - 1);
    assert.deepEqual((await f.manager.update([])).kept.map((k) => [k.name, k.reason]), [['i_img_1', 'too-young']]);
    f.clock.advance(2);
    assert.deepEqual((await f.make({ removeUnusedBaseImages: false }).update([])).kept.map((k) => k.reason), ['removal-disabled']);
    assert.deepEqual((await f.manager.update([])).removed.map((r) => r.name), ['i_img_1']);
    assert.deepEqual(f.group.names(), []);
  });

  it('colliding short names: each image is kept alive by its own instances only (in-use goes by the full id)', async () => {
    await f.manager.cacheImage(TWIN_A);
    await f.manager.cacheImage(TWIN_B);
    const diskA = await f.manager.imageDiskName(TWIN_A);
    const diskB = await f.manager.imageDiskName(TWIN_B);
    f.clock.advance(2 * DAY);
    const report = await f.manager.update([use(TWIN_B)]);
    assert.deepEqual(report.active, [diskB]);
    assert.deepEqual(report.removed.map((r) => [r.name, r.imageId]), [[diskA, TWIN_A]]);
  });

  it('an abandoned upload disk is removed once stale; one whose upload is alive (its lock held) is kept', async () => {
    const tags = { [DISK_TAGS.owner]: DISK_OWNER, [DISK_TAGS.imageId]: 'img-1', [DISK_TAGS.imageSize]: '10' };
    await f.group.createDisk({ name: 's_00000000000aa', sizeBytes: 10, tags });
    await f.group.createDisk({ name: 's_00000000000bb', sizeBytes: 10, tags: { ...tags, [DISK_TAGS.imageId]: 'img-2' } });
    f.clock.advance(3601);
    const locks = (f.manager as unknown as { locks: { acquire(n: string): Promise<{ release(): Promise<void> }> } }).locks;
    const uploading = await locks.acquire('i_img_2');
    const report = await f.manager.update([]);
    await uploading.release();
    assert.deepEqual(report.removed.map((r) => [r.name, r.reason]), [['s_00000000000aa', 'stale-staging']]);
    assert.deepEqual(f.group.names(), ['s_00000000000bb']);
  });

  it('getDiskUsage counts the capacity of our image and upload disks only, and is 0 when the group cannot be listed', async () => {
    await f.cachedImageDisk('i_img_1', 'img-1', 3 * MiB);
    await f.group.createDisk({ name: 's_00000000000aa', sizeBytes: MiB, tags: { [DISK_TAGS.owner]: DISK_OWNER, [DISK_TAGS.imageId]: 'img-2' } });
    await f.group.createDisk({ name: 'i_foreign', sizeBytes: GiB, tags: {} });
    await f.group.createDisk({ name: 'b_inst1', sizeBytes: GiB, tags: {} });
    assert.equal(await f.manager.getDiskUsage(), 4 * MiB);
    f.group.setFaults({ failOn: { list: [1] } });
    assert.equal(await f.manager.getDiskUsage(), 0);
  });

  it('a removal outside a pass (eviction, an operator) takes the cache lock exclusively too: busy while a spawn holds it', async () => {
    await f.manager.cacheImage('img-1');
    const [entry] = (await f.manager.scanBaseImages(f.group)).entries;
    assert.ok(entry !== undefined);
    type Remover = { removeIfStillUnused(...args: unknown[]): Promise<{ removed: unknown; kept: { reason: string } | null }> };
    const remover = f.make({ lockTimeoutMs: 200 }) as unknown as Remover;
    const spawn = await f.manager.cacheLock.acquireShared();
    const blocked = await remover.removeIfStillUnused(f.group, entry, 0, 'operator');
    assert.equal(blocked.kept?.reason, 'busy');
    assert.deepEqual(f.group.names(), ['i_img_1']);
    await spawn.release();
    const done = await remover.removeIfStillUnused(f.group, entry, 0, 'operator');
    assert.ok(done.removed !== null);
    assert.deepEqual(f.group.names(), []);
  });

  it('removeImage refuses while a spawn holds the cache lock, and removes once it is released', async () => {
    await f.manager.cacheImage('img-1');
    const spawn = await f.manager.cacheLock.acquireShared();
    await assert.rejects(f.manager.templateImageHandler.removeImage('img-1'), (err) => err instanceof ImageInUseError && err.imageId === 'img-1');
    await spawn.release();
    assert.equal(await f.manager.templateImageHandler.removeImage('img-1'), true);
    assert.equal(await f.manager.templateImageHandler.removeImage('img-1'), false);
    assert.deepEqual(f.group.names(), []);
  });
});

describe('localdisk cleanup vs a spawn in another process', () => {
  const IMAGE = 'c0ffee00-1234-4abc-8def-0123456789ab';
  let dir: string;
  let cleanup: () => Promise<void>;
  let glance: FakeGlance;
  let vgDir: string;
  let lockDir: string;
  let manager: LocalDiskImageManager;
  let group: FileVolumeGroup;
  const children: ChildProcess[] = [];
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-localdisk-rw-'));
    glance = await startFakeGlance({ images: [{ id: IMAGE, content: { size: MiB, seed: 5 } }] });
    vgDir = path.join(dir, 'vg');
    lockDir = path.join(dir, 'locks');
    group = new FileVolumeGroup({ directory: vgDir });
    // Minimum age 0: only the spawn's shared lock stands between the image disk and its removal.
    manager = new LocalDiskImageManager({
      host: 'host1',
      volumeGroup: group,
      lockDir,
      source: new GlanceImageSource({ endpoint: glance.url }),
      removeUnusedOriginalMinimumAgeSeconds: 0,
      lockTimeoutMs: 800,
      lockStaleMs: 2000,
    });
    await manager.cacheImage(IMAGE);
  });
  afterEach(async () => {
    for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await glance.close();
    await cleanup();
  });

  /** A spawn in another process that starts its clone only once `go` exists. */
  const spawnChild = (goFile: string): ChildProcess => {
    const child = startChild('localdisk-worker.ts', { url: glance.url, vgDir, lockDir, imageId: IMAGE, instance: { uuid: 'dddd0000-1', name: 'held' }, goFile });
    children.push(child);
    return child;
  };

  it('cleanup never removes a disk a spawn holds: the pass waits for the shared lock, removes nothing, and the spawn completes', async () => {
    const imageDisk = await manager.imageDiskName(IMAGE);
    const go = path.join(dir, 'go');
    const child = spawnChild(go);
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await waitForLine(child, 'CLONING');
    const during = await manager.update([]);
    await writeFile(go, '');
    assert.deepEqual(during.removed, []);
    assert.deepEqual(during.kept.map((k) => [k.name, k.reason]), [[imageDisk, 'removal-disabled']]);
    assert.match(during.kept[0]?.detail ?? '', /spawns held the cache lock/);
    assert.equal(await exited, 0, 'the spawn cloned from a disk that was still there');
    assert.ok((await group.listDisks()).some((d) => d.name === 'b_held_dddd'));
    const after = await manager.update([]);
    assert.deepEqual(after.removed.map((r) => r.name), [imageDisk], 'with the spawn done, the unused image goes');
    assert.deepEqual((await group.listDisks()).map((d) => d.name), ['b_held_dddd'], 'the instance disk is never touched');
  });

  it('a spawn SIGKILLed while holding the shared lock does not block cleanup: its registration is recovered at once', async () => {
    const child = spawnChild(path.join(dir, 'never'));
    await waitForLine(child, 'CLONING');
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    const report = await manager.update([]);
    assert.equal(report.removed.length, 1);
    assert.deepEqual(await group.listDisks(), []);
  });

  it('a spawn in another process finds the image this process cached (a hit across processes)', async () => {
    const result = await runChild<{ cacheStatus: string; imageDiskName: string }>('localdisk-worker.ts', {
      url: glance.url,
      vgDir,
      lockDir,
      imageId: IMAGE,
      instance: { uuid: 'eeee0000-1', name: 'other' },
    });
    assert.equal(result.cacheStatus, 'existing');
    assert.equal(result.imageDiskName, await manager.imageDiskName(IMAGE));
    assert.equal(glance.requests(IMAGE).file, 1);
  });
});
