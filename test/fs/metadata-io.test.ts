// The metadata seam: `metadataIo` picks synchronous calls on local file systems and the thread pool
// on network ones, the thread-pool way keeps the event loop running while a file system hangs,
// and the libvirt-file backend spawns and passes through it.
import assert from 'node:assert/strict';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { touchFile } from '../../src/backends/files.js';
import { statfsTypeProbe } from '../../src/fs/filesystem-type.js';
import { InvalidConfigError } from '../../src/errors.js';
import { NETWORK_FILESYSTEM_TYPES, chooseMetadataIo, metadataFsFor } from '../../src/fs/choose-metadata-fs.js';
import { asyncMetadataFs, syncMetadataFs } from '../../src/fs/metadata-fs.js';
import type { MetadataFs } from '../../src/fs/metadata-fs.js';
import { ManualClock, MemoryImageSource } from '../../src/testing/index.js';
import { makeFixture } from '../backends/libvirt-file/fixture.js';
import type { Fixture } from '../backends/libvirt-file/fixture.js';
import { mountFreezableFs, untilAThreadIsBlocked } from '../helpers/frozen-fs.js';
import type { FreezableFs } from '../helpers/frozen-fs.js';
import { failIfHung } from '../helpers/hang-guard.js';
import { seededBytes } from '../helpers/tmp.js';

const DAY = 86_400;
/** The safety thaw: far above what any call here takes once thawed; a held event loop fails the test. */
const SAFETY_MS = 20_000;

const typeIs = (type: number) => (): Promise<number> => Promise.resolve(type);

describe('metadataIo: auto', () => {
  const network: [string, number][] = [
    ['nfs', 0x6969],
    ['cifs', 0xff534d42],
    ['smb2', 0xfe534d42],
    ['ceph', 0x00c36400],
    ['fuse (glusterfs, sshfs)', 0x65735546],
    ['9p', 0x01021997],
    ['afs', 0x5346414f],
    ['lustre', 0x0bd00bd0],
  ];
  for (const [name, type] of network) {
    it(`takes the thread pool on ${name} (f_type 0x${type.toString(16)})`, async () => {
      assert.equal(await chooseMetadataIo('/instances', typeIs(type)), 'async');
    });
  }

  const local: [string, number][] = [
    ['ext4', 0xef53],
    ['tmpfs', 0x01021994],
    ['xfs', 0x58465342],
    ['btrfs', 0x9123683e],
    ['overlayfs', 0x794c7630],
  ];
  for (const [name, type] of local) {
    it(`makes synchronous calls on ${name} (f_type 0x${type.toString(16)})`, async () => {
      assert.equal(await chooseMetadataIo('/instances', typeIs(type)), 'sync');
    });
  }

  it('reads a negative f_type (a 32-bit signed field) as the same magic number', async () => {
    assert.equal(await chooseMetadataIo('/instances', typeIs(0xff534d42 | 0)), 'async');
  });

  it('asks about the nearest existing ancestor of a directory not created yet', async () => {
    const asked: string[] = [];
    const probe = (dir: string): Promise<number> => {
      asked.push(dir);
      if (dir !== '/srv') return Promise.reject(Object.assign(new Error('ENOENT'), { code: 'ENOENT' }));
      return Promise.resolve(0x6969);
    };
    assert.equal(await chooseMetadataIo('/srv/instances/locks', probe), 'async');
    assert.deepEqual(asked, ['/srv/instances/locks', '/srv/instances', '/srv']);
  });

  it('takes the thread pool when the file system type cannot be read', async () => {
    const refused = (): Promise<number> => Promise.reject(Object.assign(new Error('EACCES'), { code: 'EACCES' }));
    assert.equal(await chooseMetadataIo('/instances', refused), 'async');
  });

  it('the real statfs answers for the temp directory, and its choice follows the table', async () => {
    const type = await statfsTypeProbe(os.tmpdir());
    assert.equal(await chooseMetadataIo(os.tmpdir()), NETWORK_FILESYSTEM_TYPES.has(type) ? 'async' : 'sync');
  });

  it('is chosen by the first call, once, and kept; a forced mode asks nothing', async () => {
    let asked = 0;
    const probe = (): Promise<number> => {
      asked++;
      return Promise.resolve(0x6969);
    };
    const mfs = metadataFsFor(os.tmpdir(), 'auto', probe);
    assert.equal(asked, 0, 'nothing is asked when the seam is built');
    const [a, b] = await Promise.all([mfs.stat(os.tmpdir()), mfs.lstat(os.tmpdir())]);
    assert.ok(a.isDirectory() && b.isDirectory());
    assert.equal(await mfs.mode(), 'async');
    assert.equal(asked, 1);
    assert.equal(metadataFsFor(os.tmpdir(), 'sync', probe), syncMetadataFs);
    assert.equal(metadataFsFor(os.tmpdir(), 'async', probe), asyncMetadataFs);
    assert.equal(asked, 1);
  });

  it('the option is validated', () => {
    const source = new MemoryImageSource([]);
    assert.throws(
      () => new LibvirtFileImageManager({ host: 'h', instancesPath: os.tmpdir(), source, metadataIo: 'fast' as 'sync' }),
      (err: unknown) => err instanceof InvalidConfigError && /metadataIo/.test(err.message),
    );
  });
});

describe('metadataIo: async on the libvirt-file backend', () => {
  let f: Fixture;
  beforeEach(async () => {
    f = await makeFixture({ metadataIo: 'async' });
  });
  afterEach(async () => {
    await f.cleanup();
  });

  it('a first spawn, a cached spawn and a pass work', async () => {
    const first = await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'uuid-1') });
    assert.equal(first.cacheStatus, 'cached');
    const cached = await f.manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(f.instancesPath, 'uuid-2') });
    assert.equal(cached.cacheStatus, 'existing');
    assert.equal(cached.created, true);
    assert.equal(f.source.openCalls('image-1'), 1, 'the second spawn is a cache hit');
    const unused = cacheFileName('old-image');
    await f.base(unused, 10 * DAY);
    f.clock.advance(2 * DAY * 1000);
    const report = await f.manager.update([
      { uuid: 'uuid-1', name: 'instance-1', host: 'host1', imageRef: 'image-1' },
      { uuid: 'uuid-2', name: 'instance-2', host: 'host1', imageRef: 'image-1' },
    ]);
    assert.deepEqual(report.removed.map((r) => r.name), [unused]);
    assert.deepEqual([...report.active], [cacheFileName('image-1')]);
    assert.deepEqual((await readdir(f.baseDir)).sort(), [cacheFileName('image-1')]);
  });
});

describe('a hung file system', () => {
  let frozen: FreezableFs | undefined;
  afterEach(async () => {
    await frozen?.cleanup();
    frozen = undefined;
  });

  /** Touches a file of the frozen file system through `mfs`, and sees whether the loop ran meanwhile. */
  async function touchWhileFrozen(fs: FreezableFs, mfs: MetadataFs): Promise<void> {
    const file = path.join(fs.dir, 'base');
    await writeFile(file, 'x');
    const clock = new ManualClock(1_700_000_000_000);
    await fs.freeze(SAFETY_MS);
    let touched = false;
    const touch = touchFile(file, clock, false, undefined, mfs).then(() => {
      touched = true;
    });
    await untilAThreadIsBlocked(fs);
    assert.equal(touched, false, 'the touch waits for the file system');
    await fs.thaw();
    await failIfHung(touch, 'the touch after the thaw', SAFETY_MS);
    assert.equal((await stat(file)).mtimeMs, clock.now());
  }

  it('a metadata call through the thread pool waits on a pool thread while the event loop runs', async (t) => {
    frozen = await mountFreezableFs(t);
    if (frozen === undefined) return;
    await touchWhileFrozen(frozen, asyncMetadataFs);
  });

  it('a cached spawn with metadataIo async waits on the frozen instances path without holding the event loop', async (t) => {
    frozen = await mountFreezableFs(t);
    if (frozen === undefined) return;
    const fs = frozen;
    const instancesPath = path.join(fs.dir, 'instances');
    await mkdir(instancesPath);
    const clock = new ManualClock(1_700_000_000_000);
    const source = new MemoryImageSource([{ id: 'image-1', data: seededBytes(64 * 1024, 1) }]);
    const manager = new LibvirtFileImageManager({ host: 'host1', instancesPath, source, clock, lockStaleMs: 2000, metadataIo: 'async' });
    await manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(instancesPath, 'uuid-1') });
    await fs.freeze(SAFETY_MS);
    let done = false;
    const spawn = manager.createInstanceDisk({ imageId: 'image-1', instanceDir: path.join(instancesPath, 'uuid-2') }).finally(() => {
      done = true;
    });
    await untilAThreadIsBlocked(fs);
    assert.equal(done, false, 'the spawn waits for the file system');
    await fs.thaw();
    const disk = await failIfHung(spawn, 'the spawn after the thaw', SAFETY_MS);
    assert.equal(disk.cacheStatus, 'existing');
    assert.equal(disk.created, true);
    assert.equal(fs.thawedBySafety(), false);
  });
});
