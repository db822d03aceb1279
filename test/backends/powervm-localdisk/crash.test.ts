// nova-powervm's crash hole (docs/nova-parity.md, powervm crash): it names the disk i_<uuid> before
// uploading, so a process killed mid-upload leaves a named, half-written disk that later spawns
// take for a hit. Here a SIGKILL mid-upload leaves only an s_ upload disk; the next spawn uploads
// again and succeeds, and the leftover is swept once its lock is free.
import assert from 'node:assert/strict';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { FileVolumeGroup, GlanceImageSource, LocalDiskImageManager } from '../../../src/index.js';
import { generatedImageBytes, startFakeGlance } from '../../../src/testing/index.js';
import type { FakeGlance } from '../../../src/testing/index.js';
import { startChild, waitForLine } from '../../helpers/child.js';
import { makeTempDir } from '../../helpers/tmp.js';

const MiB = 1024 * 1024;
const IMAGE = '7f3c1a2b-9d8e-4c5b-a6f7-0123456789ab';
const CONTENT = { size: 12 * MiB, seed: 7 };

describe('localdisk: SIGKILL mid-upload', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let glance: FakeGlance;
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-localdisk-crash-'));
    glance = await startFakeGlance({ images: [{ id: IMAGE, content: CONTENT, faults: { throttleBytesPerSecond: 2 * MiB } }] });
  });
  afterEach(async () => {
    await glance.close();
    await cleanup();
  });

  it('leaves no disk under the image name; the next spawn succeeds and the upload leftover is swept', async () => {
    const vgDir = path.join(dir, 'vg');
    const lockDir = path.join(dir, 'locks');
    const child = startChild('localdisk-worker.ts', { url: glance.url, vgDir, lockDir, imageId: IMAGE, instance: { uuid: 'aaaa1111-0000', name: 'victim' } });
    await waitForLine(child, 'UPLOADING');
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;

    const group = new FileVolumeGroup({ directory: vgDir });
    const afterCrash = (await group.listDisks()).map((d) => d.name);
    assert.ok(!afterCrash.some((name) => name.startsWith('i_')), `no i_ disk after the crash: ${afterCrash.join(', ')}`);
    assert.equal(afterCrash.filter((name) => name.startsWith('s_')).length, 1, 'the half-written upload disk is an s_ disk');

    glance.setFaults(IMAGE, {});
    const manager = new LocalDiskImageManager({ host: 'host1', volumeGroup: group, lockDir, source: new GlanceImageSource({ endpoint: glance.url }), lockStaleMs: 2000 });
    // The dead process's image lock goes stale after lockStaleMs; the spawn then takes it over.
    const spawned = await manager.createInstanceDisk({ imageId: IMAGE, instance: { uuid: 'bbbb2222-0000', name: 'survivor' } });
    assert.equal(spawned.cacheStatus, 'cached', 'the half-written upload was never taken for a hit');
    const { open } = await import('node:fs/promises');
    const handle = await open(group.dataPath(spawned.diskName), 'r');
    const head = Buffer.alloc(CONTENT.size);
    await handle.read(head, 0, CONTENT.size, 0);
    await handle.close();
    assert.ok(head.equals(generatedImageBytes(CONTENT)), 'the instance disk holds the whole image');

    const init = await manager.templateImageHandler.init();
    assert.equal(init.removedStaging.length, 1, 'init() after the restart removes the dead upload');
    assert.deepEqual((await group.listDisks()).map((d) => d.name), [spawned.diskName, spawned.imageDiskName].sort());
  });
});
