// Nova's `_list_backing_images`, read in two halves on a large host: a worker thread reads the
// first half of the instance directories while the event loop's thread reads the second. The
// result must be exactly what one thread reads.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { mkdir, open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { collectBackingFiles } from '../../../src/backends/libvirt-file/backing-files.js';
import {
  readInstanceDirectories,
  readInstanceDirectoriesOnWorker,
} from '../../../src/backends/libvirt-file/instance-dir-reader.js';
import type { ReadProgress, ReaderRules } from '../../../src/backends/libvirt-file/instance-dir-reader.js';
import { encodeQcow2Overlay, writeQcow2Overlay } from '../../../src/disk/qcow2-overlay.js';
import { OWN_STAGING_NAME, STAGING_NAME } from '../../../src/fetch/staging-names.js';
import { makeTempDir } from '../../helpers/tmp.js';

const MiB = 1024 * 1024;
const SKIP = new Set(['_base', 'locks']);
const RULES: ReaderRules = { disk: /^disk($|\.)/.source, staging: STAGING_NAME.source, ownStaging: OWN_STAGING_NAME.source, headBytes: 4096 };

describe('collectBackingFiles on a worker thread and this one', () => {
  let instancesPath: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir: instancesPath, cleanup } = await makeTempDir('vic-backing-'));
  });
  afterEach(async () => {
    await cleanup();
  });

  const overlay = async (dir: string, disk: string, base: string): Promise<void> => {
    await mkdir(path.join(instancesPath, dir), { recursive: true });
    await writeQcow2Overlay(path.join(instancesPath, dir, disk), {
      backingFile: path.join(instancesPath, '_base', base),
      backingFormat: 'raw',
      virtualSize: MiB,
      sync: false,
    });
  };

  /** 24 instance directories with every kind of file a pass meets. */
  const buildHost = async (): Promise<void> => {
    await mkdir(path.join(instancesPath, '_base'));
    await mkdir(path.join(instancesPath, 'locks'));
    for (let i = 0; i < 24; i++) {
      const dir = `instance-${String(i).padStart(2, '0')}`;
      await overlay(dir, 'disk', `base-${i % 5}`);
      if (i % 3 === 0) await overlay(dir, 'disk.local', `ephemeral-${i}`);
      if (i % 4 === 0) await writeFile(path.join(instancesPath, dir, 'disk.config'), 'raw config drive');
      if (i % 7 === 0) await writeFile(path.join(instancesPath, dir, 'disk.1234-0123abcd.staging'), 'half an overlay');
      if (i % 5 === 0) await writeFile(path.join(instancesPath, dir, 'disk.part'), 'a Nova leftover');
      await writeFile(path.join(instancesPath, dir, 'console.log'), 'not a disk');
    }
  };

  it('both threads together read exactly what one thread reads: the same bases, descriptions and staging files', async () => {
    await buildHost();
    const oneThread = await collectBackingFiles(instancesPath, SKIP, { workerMinDirectories: Number.POSITIVE_INFINITY });
    const twoThreads = await collectBackingFiles(instancesPath, SKIP, { workerMinDirectories: 2 });
    assert.deepEqual([...twoThreads.backing], [...oneThread.backing]);
    assert.deepEqual(twoThreads.staging, oneThread.staging);
    // 5 shared bases plus the 8 ephemeral ones; the config drive is raw; staging files are no disks.
    assert.equal(oneThread.backing.size, 13);
    assert.deepEqual(
      oneThread.staging.map((s) => path.relative(instancesPath, s.path)),
      ['instance-00/disk.1234-0123abcd.staging', 'instance-07/disk.1234-0123abcd.staging', 'instance-14/disk.1234-0123abcd.staging', 'instance-21/disk.1234-0123abcd.staging'],
    );
  });

  it('the worker runs the very reader this thread runs (its source is sent as text)', async () => {
    await buildHost();
    const names = fs.readdirSync(instancesPath).filter((n) => !SKIP.has(n)).sort();
    const here: ReadProgress = { listings: [], next: 0 };
    readInstanceDirectories(fs, instancesPath, names, RULES, here);
    const there = await readInstanceDirectoriesOnWorker(instancesPath, names, RULES);
    assert.equal(there.failedAt, undefined);
    assert.deepEqual(
      there.listings.map((l) => ({ ...l, disks: l.disks.map((d) => ({ ...d, head: Buffer.from(d.head) })) })),
      here.listings.map((l) => ({ ...l, disks: l.disks.map((d) => ({ ...d, head: Buffer.from(d.head) })) })),
    );
    // Heads travel without their trailing zeros: a few hundred bytes per disk, not 4 KiB.
    const disk = here.listings[0]?.disks.find((d) => d.name === 'disk');
    assert.ok(disk !== undefined && disk.readLength === 4096 && disk.head.length < 512);
  });

  it('a worker that fails on a directory says where, and that directory is read again on this thread', async () => {
    await buildHost();
    // A NUL byte is refused before any system call: a failure the worker cannot skip as vanished.
    const names = ['instance-00', 'instance-01', 'bad\0name', 'instance-02'];
    const there = await readInstanceDirectoriesOnWorker(instancesPath, names, RULES);
    assert.equal(there.failedAt, 2);
    assert.deepEqual(there.listings.map((l) => l.name), ['instance-00', 'instance-01']);
    const here: ReadProgress = { listings: [], next: 0 };
    assert.throws(() => {
      readInstanceDirectories(fs, instancesPath, names, RULES, here);
    }, { code: 'ERR_INVALID_ARG_VALUE' });
    assert.equal(here.next, 2);
  });

  it('a corrupt disk in the worker\u2019s half fails the pass with InvalidDiskImageError naming it (nothing is proven unused)', async () => {
    await buildHost();
    const corrupt = path.join(instancesPath, 'instance-01', 'disk.eph0');
    const bytes = Buffer.alloc(512);
    bytes.writeUInt32BE(0x514649fb, 0);
    bytes.writeUInt32BE(9, 4);
    await writeFile(corrupt, bytes);
    await assert.rejects(collectBackingFiles(instancesPath, SKIP, { workerMinDirectories: 2 }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_INVALID_DISK_IMAGE');
      assert.match(err.message, /instance-01\/disk\.eph0/);
      return true;
    });
  });

  it('a backing file name past the first 4 KiB read is found by reading the whole header', async () => {
    await mkdir(path.join(instancesPath, 'far'));
    const backingFile = path.join(instancesPath, '_base', 'far-away-base');
    const encoded = encodeQcow2Overlay({ backingFile, backingFormat: 'raw', virtualSize: MiB });
    const header = Buffer.from(encoded.chunks[0]?.bytes ?? Buffer.alloc(0));
    // Move the name from right after the header extensions to 8 KiB into the first (64 KiB) cluster.
    const nameOffset = Number(header.readBigUInt64BE(8));
    const nameLength = header.readUInt32BE(16);
    const name = Buffer.from(header.subarray(nameOffset, nameOffset + nameLength));
    header.fill(0, nameOffset, nameOffset + nameLength);
    header.writeBigUInt64BE(8192n, 8);
    const handle = await open(path.join(instancesPath, 'far', 'disk'), 'wx');
    try {
      for (const { position, bytes } of encoded.chunks) await handle.write(position === 0 ? header : bytes, 0, (position === 0 ? header : bytes).length, position);
      await handle.write(name, 0, name.length, 8192);
      await handle.truncate(encoded.fileSize);
    } finally {
      await handle.close();
    }
    for (const workerMinDirectories of [Number.POSITIVE_INFINITY, 1]) {
      const found = await collectBackingFiles(instancesPath, SKIP, { workerMinDirectories });
      assert.deepEqual([...found.backing], [['far-away-base', 'backing file of far/disk']]);
    }
  });
});
