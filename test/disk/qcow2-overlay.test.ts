import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { readQcow2Header } from '../../src/disk/qcow2-header.js';
import { encodeQcow2Overlay, writeQcow2Overlay } from '../../src/disk/qcow2-overlay.js';
import { DiskFullError, InvalidConfigError } from '../../src/errors.js';
import { qemuImgCheck, qemuImgConvertToRaw, qemuImgInfo, requireQemuImg, runQemuImg } from '../helpers/qemu.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const exec = promisify(execFile);

/** Reads `length` bytes at `position` of `file`. */
async function readRange(file: string, position: number, length: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, position);
    return buffer;
  } finally {
    await handle.close();
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

describe('writeQcow2Overlay', () => {
  let dir: string;

  // Per-test directories live under one root removed in `after`: Node 20 runs no afterEach hook
  // for a test that calls t.skip(), so afterEach alone would leak the skipped tests' directories.
  let root: string;
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'vic-qcow2-overlay-'));
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  beforeEach(async () => {
    dir = await mkdtemp(path.join(root, 'case-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Creates a raw base of `size` random bytes. */
  async function randomBase(size: number, name = 'base.raw'): Promise<{ file: string; bytes: Buffer }> {
    const file = path.join(dir, name);
    const bytes = randomBytes(size);
    await writeFile(file, bytes);
    return { file, bytes };
  }

  /** Asserts qemu-img sees a clean overlay of `virtualSize` on `base` whose content is `expected`. */
  async function assertOverlay(
    overlay: string,
    base: string,
    format: 'raw' | 'qcow2',
    virtualSize: number,
    expected: Buffer,
  ): Promise<void> {
    const check = await qemuImgCheck(overlay);
    assert.equal(check['check-errors'], 0);
    assert.equal(check.leaks ?? 0, 0);
    const info = await qemuImgInfo(overlay);
    assert.equal(info.format, 'qcow2');
    assert.equal(info['virtual-size'], virtualSize);
    assert.equal(info['backing-filename'], base);
    assert.equal(info['backing-filename-format'], format);
    assert.equal(info['format-specific']?.data.compat, '1.1');
    const out = path.join(dir, `${path.basename(overlay)}.out.raw`);
    await qemuImgConvertToRaw(overlay, out);
    const content = await readFile(out);
    assert.equal(content.length, virtualSize);
    const zeroExtended = Buffer.concat([expected.subarray(0, virtualSize), Buffer.alloc(Math.max(0, virtualSize - expected.length))]);
    assert.ok(content.equals(zeroExtended), 'the overlay must read as the base, zero-extended');
  }

  it('makes a clean overlay of a 3 MiB random raw base', async (t) => {
    if (requireQemuImg(t) === undefined) return;
    const base = await randomBase(3 * MiB);
    const overlay = path.join(dir, 'disk');
    await writeQcow2Overlay(overlay, { backingFile: base.file, backingFormat: 'raw', virtualSize: 3 * MiB });
    await assertOverlay(overlay, base.file, 'raw', 3 * MiB, base.bytes);
  });

  for (const virtualSize of [3 * MiB + 512, 5 * MiB + 4096, 64 * MiB - 512, 1 * GiB + 512]) {
    it(`handles a virtual size of ${virtualSize} bytes (not a cluster multiple)`, async (t) => {
      if (requireQemuImg(t) === undefined) return;
      const base = await randomBase(3 * MiB + 512);
      const overlay = path.join(dir, 'disk');
      await writeQcow2Overlay(overlay, { backingFile: base.file, backingFormat: 'raw', virtualSize });
      if (virtualSize <= 64 * MiB) {
        await assertOverlay(overlay, base.file, 'raw', virtualSize, base.bytes);
      } else {
        await qemuImgCheck(overlay);
        assert.equal((await qemuImgInfo(overlay))['virtual-size'], virtualSize);
        await runQemuImg(['compare', '-f', 'raw', '-F', 'qcow2', base.file, overlay]);
      }
    });
  }

  for (const clusterBits of [9, 12, 21]) {
    it(`makes a clean overlay with ${2 ** clusterBits}-byte clusters`, async (t) => {
      if (requireQemuImg(t) === undefined) return;
      const base = await randomBase(2 * MiB);
      const overlay = path.join(dir, 'disk');
      const virtualSize = clusterBits === 9 ? 2 * GiB : 4 * MiB;
      await writeQcow2Overlay(overlay, { backingFile: base.file, backingFormat: 'raw', virtualSize, clusterBits });
      assert.equal((await qemuImgInfo(overlay))['cluster-size'], 2 ** clusterBits);
      if (clusterBits === 9) {
        // 512-byte clusters need several refcount blocks for this size: the case the layout's
        // fixed point exists for.
        await qemuImgCheck(overlay);
        await runQemuImg(['compare', '-f', 'raw', '-F', 'qcow2', base.file, overlay]);
      } else {
        await assertOverlay(overlay, base.file, 'raw', virtualSize, base.bytes);
      }
    });
  }

  it('makes a clean 10 GiB overlay of a sparse 8 GiB base', async (t) => {
    if (requireQemuImg(t) === undefined) return;
    const base = path.join(dir, 'sparse.raw');
    await writeFile(base, '');
    await truncate(base, 8 * GiB);
    const head = randomBytes(MiB);
    const tail = randomBytes(MiB);
    const handle = await open(base, 'r+');
    await handle.write(head, 0, MiB, 0);
    await handle.write(tail, 0, MiB, 8 * GiB - MiB);
    await handle.close();

    const overlay = path.join(dir, 'disk');
    await writeQcow2Overlay(overlay, { backingFile: base, backingFormat: 'raw', virtualSize: 10 * GiB });
    assert.ok((await stat(overlay)).blocks * 512 <= 64 * 1024, 'the overlay is metadata only');
    await qemuImgCheck(overlay);
    const info = await qemuImgInfo(overlay);
    assert.equal(info['virtual-size'], 10 * GiB);
    assert.equal(info['backing-filename'], base);
    assert.equal(info['backing-filename-format'], 'raw');
    // Same content up to the base's end, zeros after (qemu-img compare treats the rest as zeros).
    await runQemuImg(['compare', '-f', 'raw', '-F', 'qcow2', base, overlay]);
    // And the first and last MiB of the base, read through the overlay.
    for (const [mib, expected] of [[0, head], [8 * 1024 - 1, tail]] as const) {
      const out = path.join(dir, `mib-${mib}.raw`);
      // qemu-img dd counts `count` from the start of the input, skipped blocks included.
      const args = [`if=${overlay}`, `of=${out}`, 'bs=1M', `skip=${mib}`, `count=${mib + 1}`];
      await runQemuImg(['dd', '-f', 'qcow2', '-O', 'raw', ...args]);
      assert.equal(sha256(await readFile(out)), sha256(expected), `MiB ${mib}`);
    }
    assert.equal(sha256(await readRange(base, 8 * GiB - MiB, MiB)), sha256(tail), 'the base itself is intact');
  });

  it('makes a clean overlay of a qcow2 base', async (t) => {
    if (requireQemuImg(t) === undefined) return;
    const raw = await randomBase(3 * MiB, 'content.raw');
    const base = path.join(dir, 'base.qcow2');
    await runQemuImg(['convert', '-f', 'raw', '-O', 'qcow2', raw.file, base]);
    const overlay = path.join(dir, 'disk');
    await writeQcow2Overlay(overlay, { backingFile: base, backingFormat: 'qcow2', virtualSize: 4 * MiB });
    await assertOverlay(overlay, base, 'qcow2', 4 * MiB, raw.bytes);
  });

  it('mirrors the layout of qemu-img create', async (t) => {
    if (requireQemuImg(t) === undefined) return;
    const base = await randomBase(MiB);
    const theirs = path.join(dir, 'theirs.qcow2');
    const ours = path.join(dir, 'ours.qcow2');
    await runQemuImg(['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', base.file, theirs, '10G']);
    await writeQcow2Overlay(ours, { backingFile: base.file, backingFormat: 'raw', virtualSize: 10 * GiB });
    const [a, b] = await Promise.all([readQcow2Header(theirs), readQcow2Header(ours)]);
    for (const key of ['version', 'virtualSize', 'clusterBits', 'l1Size', 'l1TableOffset', 'refcountTableOffset', 'refcountTableClusters', 'refcountOrder', 'headerLength', 'backingFile', 'backingFormat'] as const) {
      assert.equal(b[key], a[key], key);
    }
    assert.equal((await stat(ours)).size, (await stat(theirs)).size);
    const [checkTheirs, checkOurs] = await Promise.all([qemuImgCheck(theirs), qemuImgCheck(ours)]);
    assert.equal(checkOurs['image-end-offset'], checkTheirs['image-end-offset']);
  });

  it('works for a virtual size of 0', async (t) => {
    if (requireQemuImg(t) === undefined) return;
    const base = await randomBase(0);
    const overlay = path.join(dir, 'disk');
    await writeQcow2Overlay(overlay, { backingFile: base.file, backingFormat: 'raw', virtualSize: 0 });
    await qemuImgCheck(overlay);
    assert.equal((await qemuImgInfo(overlay))['virtual-size'], 0);
  });

  it('refuses to overwrite an existing file and leaves it intact', async () => {
    const existing = path.join(dir, 'disk');
    await writeFile(existing, 'precious instance data');
    await assert.rejects(
      writeQcow2Overlay(existing, { backingFile: '/base', backingFormat: 'raw', virtualSize: GiB }),
      { code: 'EEXIST' },
    );
    assert.equal(await readFile(existing, 'utf8'), 'precious instance data');
  });

  it('rejects bad options before creating anything', async () => {
    const overlay = path.join(dir, 'disk');
    const cases: [string, object][] = [
      ['relative backing file', { backingFile: 'base.raw', backingFormat: 'raw', virtualSize: GiB }],
      ['NUL in backing file', { backingFile: '/a\0b', backingFormat: 'raw', virtualSize: GiB }],
      ['backing file too long', { backingFile: `/${'a'.repeat(1023)}`, backingFormat: 'raw', virtualSize: GiB }],
      ['unknown format', { backingFile: '/base', backingFormat: 'vmdk', virtualSize: GiB }],
      ['size not a multiple of 512', { backingFile: '/base', backingFormat: 'raw', virtualSize: GiB + 1 }],
      ['negative size', { backingFile: '/base', backingFormat: 'raw', virtualSize: -512 }],
      ['unsafe size', { backingFile: '/base', backingFormat: 'raw', virtualSize: 2 ** 60 }],
      ['cluster bits 8', { backingFile: '/base', backingFormat: 'raw', virtualSize: GiB, clusterBits: 8 }],
      ['cluster bits 22', { backingFile: '/base', backingFormat: 'raw', virtualSize: GiB, clusterBits: 22 }],
      ['name does not fit a 512-byte cluster', { backingFile: `/${'a'.repeat(600)}`, backingFormat: 'raw', virtualSize: GiB, clusterBits: 9 }],
      ['L1 above QEMU limit', { backingFile: '/base', backingFormat: 'raw', virtualSize: 2 ** 52, clusterBits: 9 }],
    ];
    for (const [why, options] of cases) {
      await assert.rejects(
        writeQcow2Overlay(overlay, options as Parameters<typeof writeQcow2Overlay>[1]),
        InvalidConfigError,
        why,
      );
    }
    assert.deepEqual(await readdir(dir), []);
  });

  it('encodes in memory with three small chunks and a hole for the L1 table', () => {
    const encoded = encodeQcow2Overlay({ backingFile: '/base', backingFormat: 'raw', virtualSize: 10 * GiB });
    assert.equal(encoded.chunks.length, 3);
    assert.ok(encoded.chunks.every((c) => c.bytes.length <= 4096 && c.position + c.bytes.length <= encoded.fileSize));
    assert.equal(encoded.l1TableOffset, 3 * 65536);
    assert.equal(encoded.fileSize, 3 * 65536 + 20 * 8);
  });

  it('maps ENOSPC to DiskFullError and removes the partial file', async (t) => {
    if (process.getuid?.() !== 0) {
      t.skip('needs root to mount a tiny tmpfs');
      return;
    }
    const mnt = path.join(dir, 'mnt');
    await mkdir(mnt);
    try {
      await exec('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]);
    } catch {
      t.skip('mount is not permitted here');
      return;
    }
    try {
      // Fill the filesystem so the open succeeds but the writes cannot allocate.
      await writeFile(path.join(mnt, 'filler'), Buffer.alloc(MiB)).catch(() => undefined);
      const overlay = path.join(mnt, 'disk');
      await assert.rejects(
        writeQcow2Overlay(overlay, { backingFile: '/base', backingFormat: 'raw', virtualSize: GiB }),
        DiskFullError,
      );
      assert.deepEqual((await readdir(mnt)).sort(), ['filler']);
    } finally {
      await exec('umount', [mnt]);
    }
  });
});
