// Nova's known gaps and bugs (docs/nova-parity.md: gap A to gap I, bug 1 and bug 3), closed. Each
// test describes what Nova does and fails under Nova's behaviour.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { cacheFileName } from '../../../src/backends/libvirt-file/naming.js';
import { LockManager } from '../../../src/backend-kit/index.js';
import { listDir } from '../../helpers/tmp.js';
import { makeFixture } from './fixture.js';
import type { Fixture } from './fixture.js';

const DAY = 86400;
const fp = cacheFileName('1');

describe('Nova gaps closed', () => {
  let f: Fixture;
  beforeEach(async () => {
    f = await makeFixture();
  });
  afterEach(async () => {
    await f.cleanup();
  });

  it('gap A: pre-caching takes the per-image lock (Nova downloads beside a spawn holding it)', async () => {
    const held = await new LockManager({ lockDir: path.join(f.instancesPath, 'locks'), staleMs: 2000 }).acquire(cacheFileName('image-1'));
    try {
      await assert.rejects(f.manager.cacheImage('image-1', { signal: AbortSignal.timeout(300) }), { code: 'ERR_ABORTED' });
      assert.equal(f.source.openCalls('image-1'), 0, 'nothing was downloaded while another holder had the lock');
      assert.deepEqual(await listDir(f.baseDir), []);
    } finally {
      await held.release();
    }
    assert.equal((await f.manager.cacheImage('image-1')).status, 'cached');
  });

  it('gap B: bases backing disk.eph0 / disk.rescue count, and every swap and ephemeral device (Nova: root disk and first device only)', async () => {
    await f.base(`${fp}_sm`, 10 * DAY);
    await f.base('ephemeral_2_0706d66', 10 * DAY);
    await f.base('swap_2048', 10 * DAY);
    await f.base('unrelated_rescue_base_xxxxxxxxxxxxxxxxxxxx', 10 * DAY);
    const rescueBase = cacheFileName('rescue-image');
    await f.base(rescueBase, 10 * DAY);
    await f.instanceDisk('uuid-1', `${fp}_sm`, 'disk.eph0');
    await f.instanceDisk('uuid-1', rescueBase, 'disk.rescue');
    const report = await f.manager.update([
      {
        uuid: 'uuid-1', name: 'instance-1', host: 'host1', imageRef: 'other',
        blockDevices: [{ kind: 'ephemeral', sizeGiB: 1 }, { kind: 'ephemeral', sizeGiB: 2 }, { kind: 'swap', sizeMiB: 1024 }, { kind: 'swap', sizeMiB: 2048 }],
      },
    ]);
    assert.deepEqual([...report.active].sort(), [`${fp}_sm`, rescueBase, 'ephemeral_2_0706d66', 'swap_2048'].sort());
  });

  it('gap C: three resized variants all backing disks are all kept (Nova skips the element after each match)', async () => {
    const variants = [`${fp}_10737418240`, `${fp}_21474836480`, `${fp}_5368709120`];
    for (const v of variants) await f.base(v, 10 * DAY);
    for (const [i, v] of variants.entries()) await f.instanceDisk(`uuid-${i}`, v);
    const instances = variants.map((_, i) => ({ uuid: `uuid-${i}`, name: `instance-${i}`, host: 'host1', imageRef: '1' }));
    const report = await f.manager.update(instances);
    assert.deepEqual([...report.active].sort(), [...variants].sort());
    assert.deepEqual(report.removed, []);
  });

  it('gap D: stale .part, .converted, .staging and .info leftovers are removed; fresh ones are kept (Nova never removes them)', async () => {
    for (const name of [`${fp}.part`, `${fp}.converted`, `${fp}.123-abcd.staging`, `${fp}_5368709120.info`]) await f.base(name, 2 * 3600);
    await f.base(`${cacheFileName('2')}.456-beef.staging`, 60);
    const report = await f.manager.update([]);
    assert.deepEqual(report.removed.filter((r) => r.reason === 'stale-staging').map((r) => r.name).sort(), [`${fp}.123-abcd.staging`, `${fp}.converted`, `${fp}.part`, `${fp}_5368709120.info`].sort());
    assert.deepEqual(await listDir(f.baseDir), [`${cacheFileName('2')}.456-beef.staging`]);
  });

  it('gap E / bug 1256306: locks never pile up and are never unlinked while held', async () => {
    for (let i = 0; i < 5; i++) await f.base(cacheFileName(String(100 + i)), 2 * DAY);
    await f.manager.cacheImage('image-1');
    await f.manager.update([]);
    assert.deepEqual(await listDir(path.join(f.instancesPath, 'locks')), []);
  });

  it('gap I: a host with cleanup disabled still registers as a storage user, and so do spawning hosts', async () => {
    const quiet = f.make({ host: 'quiet-host', removeUnusedBaseImages: false });
    await f.base(fp, 10 * DAY);
    await quiet.update([]);
    const spawner = f.make({ host: 'spawn-only-host' });
    await spawner.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'u') });
    const users = await f.manager.registry.users();
    assert.deepEqual(users.hosts, ['quiet-host', 'spawn-only-host']);
  });

  it('gap I: a spawn-only host stays registered under a short window (re-registers every quarter window)', async () => {
    const spawner = f.make({ host: 'spawn-only-host', storageUsersWindowSeconds: 1000 });
    await spawner.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'a') });
    f.clock.advance(900);
    await spawner.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'b') });
    f.clock.advance(200);
    assert.deepEqual((await spawner.registry.users()).hosts, ['spawn-only-host']);
  });

  it('bug 1 (Disappearing Images): a host down for two days still protects its bases when the window allows', async () => {
    const window = 3 * DAY;
    const downHost = f.make({ host: 'down-host', storageUsersWindowSeconds: window });
    await downHost.registerStorageUse();
    f.clock.advance(2 * DAY);
    await f.base(fp, 10 * DAY);
    const asked: string[][] = [];
    const runner = f.make({
      storageUsersWindowSeconds: window,
      listInstances: (hosts) => {
        asked.push([...hosts]);
        return hosts.includes('down-host') ? [{ uuid: 'u', name: 'i', host: 'down-host', imageRef: '1' }] : [];
      },
    });
    const report = await runner.update();
    assert.deepEqual(asked, [['down-host', 'host1']]);
    assert.deepEqual(report.active, [fp]);
    assert.ok(existsSync(path.join(f.baseDir, fp)));
  });

  it('bug 3: an unreadable registry suspends removals (Nova reads it as empty and may delete other hosts\' bases)', async () => {
    await f.base(fp, 10 * DAY);
    await writeFile(path.join(f.instancesPath, 'compute_nodes'), '{"host2": 17000');
    const report = await f.manager.update([]);
    assert.deepEqual(report.removed, []);
    assert.equal(report.kept[0]?.reason, 'removal-disabled');
    assert.ok(existsSync(path.join(f.baseDir, fp)));
    // The registry is rewritten whole by the pass's registration, so the next pass proceeds.
    JSON.parse(await readFile(path.join(f.instancesPath, 'compute_nodes'), 'utf8'));
    assert.deepEqual((await f.manager.update([])).removed.map((r) => r.name), [fp]);
  });

  it('a symlink planted in the base dir is never followed: its target survives any pass', async () => {
    const outside = await mkdtemp(path.join(os.tmpdir(), 'vic-outside-'));
    try {
      const victim = path.join(outside, 'precious');
      await writeFile(victim, 'do not delete');
      await mkdir(f.baseDir, { recursive: true });
      await symlink(victim, path.join(f.baseDir, fp));
      f.clock.advance(100 * DAY);
      const report = await f.manager.update([]);
      assert.deepEqual(report.removed, []);
      assert.equal(await readFile(victim, 'utf8'), 'do not delete');
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it('removeUnusedBaseImages false removes nothing, not even old unexplained files', async () => {
    const keeper = f.make({ removeUnusedBaseImages: false });
    await f.base(fp, 100 * DAY);
    await f.base('swap_1', 100 * DAY);
    const report = await keeper.update([]);
    assert.deepEqual(report.removed, []);
    assert.deepEqual(await listDir(f.baseDir), [fp, 'swap_1']);
  });
});
