// Shared storage: three hosts share one instances path (so one base dir, one lock dir and one
// `compute_nodes` registry), each with its own manager and a common injected clock. One host stops
// for two days (down, or its passes disabled: Nova's "Disappearing Images" and gap I) while the
// other two run a pass every hour with both minimum ages forced to 0.
//
// THE RULE (also in README.md "Shared storage" and in storage-registry.ts):
//   A host's instance records protect every base they reference (image, kernel, ramdisk, swap,
//   ephemeral) for as long as the host is registered: for `storageUsersWindowSeconds` (default
//   86400, Nova's 24 h) after it last registered, at a pass, at a spawn (at most every quarter of
//   the window) or through `registerStorageUse()`. Whatever the registry says, a base that backs
//   an existing disk anywhere under the instances path is never removed. So when a host stops,
//   the bases its overlays are built on stay as long as the overlays exist, and the bases only its
//   records reference (kernels, ramdisks, bases of raw copies) stay while it is registered.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import type { InstanceRecord } from '../../src/instances.js';
import { makeFixture } from '../backends/libvirt-file/fixture.js';
import type { Fixture } from '../backends/libvirt-file/fixture.js';
import { seededBytes } from '../helpers/tmp.js';

const HOUR = 3600;
const DAY = 86400;

interface Cluster {
  hosts: Record<'h1' | 'h2' | 'h3', LibvirtFileImageManager>;
  /** Nova's instances table: every non-deleted instance of every host. */
  db: InstanceRecord[];
  /** Base names each host's instances reference, by how they reference them. */
  overlayBases: Record<string, string[]>;
  recordOnlyBases: Record<string, string[]>;
}

describe('shared storage: three hosts, one base dir', () => {
  let f: Fixture;
  beforeEach(async () => {
    f = await makeFixture();
    for (const id of ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'kernel-k', 'ramdisk-r', 'unused-u']) {
      f.source.add({ id, data: seededBytes(4096 + id.length, id.charCodeAt(0)) });
    }
  });
  afterEach(async () => {
    await f.cleanup();
  });

  async function buildCluster(windowSeconds: number | undefined): Promise<Cluster> {
    const db: InstanceRecord[] = [];
    const options = {
      removeUnusedOriginalMinimumAgeSeconds: 0,
      removeUnusedResizedMinimumAgeSeconds: 0,
      storageUsersWindowSeconds: windowSeconds,
      // Nova's pass: the instances of every registered host, from the database.
      listInstances: (hosts: readonly string[]) => db.filter((i) => hosts.includes(i.host)),
    };
    const hosts = {
      h1: f.make({ host: 'h1', ...options }),
      h2: f.make({ host: 'h2', ...options }),
      h3: f.make({ host: 'h3', ...options }),
    };
    const overlayBases: Record<string, string[]> = { h1: [], h2: [], h3: [] };
    const recordOnlyBases: Record<string, string[]> = { h1: [], h2: [], h3: [] };
    const spawn = async (host: 'h1' | 'h2' | 'h3', uuid: string, imageRef: string, extra: Partial<InstanceRecord> = {}): Promise<void> => {
      db.push({ uuid, name: `instance-${uuid}`, host, imageRef, ...extra });
      await hosts[host].createInstanceDisk({ imageId: imageRef, instanceDir: path.join(f.instancesPath, uuid) });
      overlayBases[host]?.push(cacheFileName(imageRef));
    };
    await spawn('h1', 'u-h1-1', 'a');
    await spawn('h1', 'u-h1-2', 'b');
    await spawn('h2', 'u-h2-1', 'c');
    await spawn('h2', 'u-h2-2', 'd');
    await spawn('h3', 'u-h3-1', 'e');
    // h3's third instance boots a kernel and ramdisk, and its root disk is a raw copy of g: those
    // three bases are referenced by its record only, no disk is backed by them.
    await spawn('h3', 'u-h3-2', 'f', { kernelId: 'kernel-k', ramdiskId: 'ramdisk-r' });
    db.push({ uuid: 'u-h3-3', name: 'instance-u-h3-3', host: 'h3', imageRef: 'g' });
    await hosts.h3.createInstanceDisk({ imageId: 'g', instanceDir: path.join(f.instancesPath, 'u-h3-3'), format: 'raw' });
    for (const id of ['kernel-k', 'ramdisk-r', 'unused-u']) await hosts.h3.cacheImage(id);
    recordOnlyBases.h3 = ['g', 'kernel-k', 'ramdisk-r'].map((id) => cacheFileName(id));
    return { hosts, db, overlayBases, recordOnlyBases };
  }

  const exists = (name: string): boolean => existsSync(path.join(f.baseDir, name));

  it('a host stopped for two days keeps every base of its instances while it is registered (24 h window)', async (t) => {
    const cluster = await buildCluster(undefined);
    const { h1, h2, h3 } = cluster.hosts;
    let passes = 0;
    let hoursRegistered = 0;
    let firstPassWithoutH3: number | null = null;
    const removedByHour: string[] = [];
    // h3 stops here: no pass, no spawn, for 48 hours. h1 and h2 take turns running the hourly pass.
    for (let hour = 1; hour <= 48; hour++) {
      f.clock.advance(HOUR);
      const runner = hour % 2 === 0 ? h1 : h2;
      const report = await runner.update();
      passes++;
      assert.deepEqual(report.failures, []);
      removedByHour.push(...report.removed.map((r) => `${hour}:${r.name}`));
      const registered = (await h1.registry.users()).hosts.includes('h3');
      // The rule, part 1: while h3 is registered, every base its instances reference survives.
      if (registered) {
        hoursRegistered++;
        assert.ok(report.hosts.includes('h3'), `hour ${hour}: h3 is registered, so its instances are listed`);
        for (const name of [...(cluster.overlayBases.h3 ?? []), ...(cluster.recordOnlyBases.h3 ?? [])]) {
          assert.ok(exists(name), `hour ${hour}: base ${name} of registered host h3 was removed`);
        }
      } else {
        firstPassWithoutH3 ??= hour;
      }
      // The rule, part 2: a base backing an existing disk is never removed, registered or not.
      for (const host of ['h1', 'h2', 'h3']) {
        for (const name of cluster.overlayBases[host] ?? []) assert.ok(exists(name), `hour ${hour}: overlay base ${name} of ${host} was removed`);
      }
    }
    // h3 registered at its last spawn (hour 0): a user for 86399 s, gone from hour 24 on.
    assert.equal(hoursRegistered, 23);
    assert.equal(firstPassWithoutH3, 24);
    // Part 3, the boundary: once h3 is no longer registered, the bases only its records referenced
    // go at the next pass (ages are 0); the pre-cached image nobody used went at the first pass.
    assert.deepEqual(
      removedByHour.filter((r) => !r.startsWith('1:')).map((r) => r.split(':')[1]).sort(),
      [...(cluster.recordOnlyBases.h3 ?? [])].sort(),
    );
    assert.ok(removedByHour.includes(`1:${cacheFileName('unused-u')}`), 'the passes do remove what nothing uses');
    assert.ok(removedByHour.every((r) => r.startsWith('1:') || r.startsWith('24:')));
    // h3 comes back: it registers and its instances are listed again.
    await h3.registerStorageUse();
    assert.ok((await h1.update()).hosts.includes('h3'));
    const figures = { hosts: 3, hoursSimulated: 48, passes, hoursH3Registered: hoursRegistered, basesOfRegisteredHostRemoved: 0, losses: 0 };
    t.diagnostic(`shared storage: ${JSON.stringify(figures)}`);
    console.log(`[reliability] shared-storage ${JSON.stringify(figures)}`);
  });

  it('with a window longer than the outage, nothing of the stopped host goes in two days', async (t) => {
    const cluster = await buildCluster(3 * DAY);
    const { h1, h2 } = cluster.hosts;
    for (let hour = 1; hour <= 48; hour++) {
      f.clock.advance(HOUR);
      const report = await (hour % 2 === 0 ? h1 : h2).update();
      assert.ok(report.hosts.includes('h3'), `hour ${hour}`);
      assert.deepEqual(report.removed.filter((r) => r.name !== cacheFileName('unused-u')), [], `hour ${hour}`);
    }
    for (const name of [...(cluster.overlayBases.h3 ?? []), ...(cluster.recordOnlyBases.h3 ?? [])]) assert.ok(exists(name), name);
    t.diagnostic('shared storage (3-day window): 48 hourly passes, 0 bases of the stopped host removed');
  });
});
