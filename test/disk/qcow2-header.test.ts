import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import {
  detectFormat,
  inspectDiskImage,
  readBackingFile,
  readQcow2Header,
  virtualSizeOf,
} from '../../src/disk/qcow2-header.js';
import { parseQcow2Header } from '../../src/disk/qcow2-format.js';
import type { Qcow2Header } from '../../src/disk/qcow2-format.js';
import { encodeQcow2Overlay } from '../../src/disk/qcow2-overlay.js';
import type { Qcow2OverlayOptions } from '../../src/disk/qcow2-overlay.js';
import { qemuImgCheck, qemuImgInfo, requireQemuImg, runQemuImg } from '../helpers/qemu.js';
import { assertSane, isInvalidDiskImage, materialize } from '../helpers/qcow2.js';
import type { QemuImgInfo } from '../helpers/qemu.js';

const GiB = 2 ** 30;

/** A small deterministic PRNG, so a failing mutation can be replayed from its seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function assertMatchesQemu(header: Qcow2Header, info: QemuImgInfo): void {
  assert.equal(info.format, 'qcow2');
  assert.equal(header.virtualSize, info['virtual-size']);
  assert.equal(header.clusterSize, info['cluster-size']);
  assert.equal(header.backingFile, info['backing-filename'] ?? null);
  assert.equal(header.backingFormat, info['backing-filename-format'] ?? null);
  const data = info['format-specific']?.data ?? {};
  assert.equal(header.version === 2 ? '0.10' : '1.1', data.compat);
  assert.equal(2 ** header.refcountOrder, data['refcount-bits']);
  assert.equal(header.compressionType, data['compression-type']);
  if (header.version === 3) {
    assert.equal((header.compatibleFeatures & 1n) !== 0n, data['lazy-refcounts']);
    assert.equal(header.extendedL2, data['extended-l2']);
    assert.equal(header.corrupt, data.corrupt);
  }
}

const isInvalid = isInvalidDiskImage;

describe('qcow2 header reader', () => {
  let dir: string;
  let good: Buffer;
  const overlayOptions: Qcow2OverlayOptions = {
    backingFile: '/var/lib/nova/instances/_base/0123456789abcdef',
    backingFormat: 'raw',
    virtualSize: 10 * GiB,
  };

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'vic-qcow2-header-'));
    await writeFile(path.join(dir, 'base.raw'), randomBytes(64 * 1024));
    good = materialize(encodeQcow2Overlay(overlayOptions));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Writes `bytes` to a fresh file and returns its path. */
  let counter = 0;
  async function file(bytes: Uint8Array): Promise<string> {
    const name = path.join(dir, `case-${counter++}.img`);
    await writeFile(name, bytes);
    return name;
  }

  async function assertInvalid(bytes: Uint8Array, why: string): Promise<void> {
    const name = await file(bytes);
    await assert.rejects(inspectDiskImage(name), isInvalid, `${why}: file`);
    await assert.rejects(detectFormat(name), isInvalid, `${why}: detectFormat`);
    assert.throws(() => parseQcow2Header(bytes), isInvalid, `${why}: buffer`);
  }

  /** `good` with fields overwritten by `edit`. */
  function mutate(edit: (b: Buffer) => void, bytes: Buffer = good): Buffer {
    const copy = Buffer.from(bytes);
    edit(copy);
    return copy;
  }

  describe('against qemu-img', () => {
    const variants: { name: string; options: string[]; size?: string }[] = [
      { name: 'v3 without backing file', options: [] },
      { name: 'v2 (compat=0.10) without backing file', options: ['-o', 'compat=0.10'] },
      { name: 'v3 with a raw backing file', options: ['-b', '@/base.raw', '-F', 'raw'] },
      { name: 'v2 with a raw backing file', options: ['-o', 'compat=0.10', '-b', '@/base.raw', '-F', 'raw'] },
      { name: 'v3 with a relative backing file name', options: ['-b', 'base.raw', '-F', 'raw'] },
      { name: 'v3 with a qcow2 backing file', options: ['-b', '@/base.qcow2', '-F', 'qcow2'] },
      { name: '512-byte clusters', options: ['-o', 'cluster_size=512'] },
      { name: '2 MiB clusters', options: ['-o', 'cluster_size=2M', '-b', '@/base.raw', '-F', 'raw'] },
      { name: 'lazy refcounts, 64-bit refcounts', options: ['-o', 'lazy_refcounts=on,refcount_bits=64'] },
      { name: 'extended L2 entries', options: ['-o', 'extended_l2=on,cluster_size=16k'] },
      { name: 'zstd compression', options: ['-o', 'compression_type=zstd'] },
      { name: 'a size that qemu-img rounds up', options: [], size: '1000' },
      { name: 'size 0', options: [], size: '0' },
    ];
    for (const variant of variants) {
      it(`reads ${variant.name} like qemu-img info`, async (t) => {
        if (requireQemuImg(t) === undefined) return;
        const base = path.join(dir, 'base.qcow2');
        await runQemuImg(['create', '-q', '-f', 'qcow2', base, '1G']).catch(() => undefined);
        const image = path.join(dir, `qemu-${counter++}.qcow2`);
        const options = variant.options.map((o) => o.replace('@', dir));
        await runQemuImg(['create', '-q', '-f', 'qcow2', ...options, image, variant.size ?? '5G']);
        const header = await readQcow2Header(image);
        const info = await qemuImgInfo(image);
        assertMatchesQemu(header, info);
        assertSane(header, (await readFile(image)).length);
        assert.equal(await readBackingFile(image), info['backing-filename'] ?? null);
        assert.equal(await detectFormat(image), 'qcow2');
        assert.equal(await virtualSizeOf(image), info['virtual-size']);
      });
    }

    it('rejects an image with an external data file', async (t) => {
      if (requireQemuImg(t) === undefined) return;
      const image = path.join(dir, 'data-file.qcow2');
      await runQemuImg(['create', '-q', '-f', 'qcow2', '-o', `data_file=${path.join(dir, 'data.raw')}`, image, '1G']);
      await assert.rejects(readQcow2Header(image), (err: unknown) => {
        assert.ok(isInvalid(err));
        assert.match((err as Error).message, /external data file/);
        return true;
      });
    });

    it('reads a backing file name stored past the first 4 KiB (second read)', async (t) => {
      const name = path.join(dir, 'base.raw');
      const bytes = mutate((b) => {
        b.fill(0, 136, 136 + 64);
        b.writeBigUInt64BE(8192n, 8);
        b.writeUInt32BE(Buffer.byteLength(name), 16);
        b.write(name, 8192, 'utf8');
      });
      const image = await file(bytes);
      const header = await readQcow2Header(image);
      assert.equal(header.backingFile, name);
      assert.equal(header.backingFormat, 'raw');
      if (requireQemuImg(t) === undefined) return;
      assertMatchesQemu(header, await qemuImgInfo(image));
      await qemuImgCheck(image);
    });
  });

  describe('raw and non-qcow2 files', () => {
    it('treats a file without the magic as raw with no backing file', async () => {
      const image = await file(randomBytes(3 * 1024 * 1024 + 17));
      assert.equal(await detectFormat(image), 'raw');
      assert.equal(await readBackingFile(image), null);
      assert.equal(await virtualSizeOf(image), 3 * 1024 * 1024 + 17);
      const info = await inspectDiskImage(image);
      assert.equal(info.header, null);
      await assert.rejects(readQcow2Header(image), isInvalid);
    });

    it('treats empty and tiny files as raw', async () => {
      for (const bytes of [Buffer.alloc(0), Buffer.from('QFI')]) {
        const image = await file(bytes);
        assert.equal(await detectFormat(image), 'raw');
        assert.equal(await virtualSizeOf(image), bytes.length);
      }
    });

    it('rejects a directory and a FIFO without hanging', async (t) => {
      const sub = path.join(dir, 'a-directory');
      await mkdir(sub);
      await assert.rejects(detectFormat(sub), isInvalid);
      const fifo = path.join(dir, 'a-fifo');
      try {
        await promisify(execFile)('mkfifo', [fifo]);
      } catch {
        t.diagnostic('mkfifo unavailable; FIFO case not run');
        return;
      }
      await assert.rejects(detectFormat(fifo), isInvalid);
    });

    it('propagates ENOENT for a missing file', async () => {
      await assert.rejects(detectFormat(path.join(dir, 'missing')), { code: 'ENOENT' });
    });
  });

  describe('our own overlays', () => {
    for (const clusterBits of [9, 12, 16, 21]) {
      it(`round-trips an overlay with ${2 ** clusterBits}-byte clusters`, async () => {
        const options = { ...overlayOptions, backingFormat: 'qcow2' as const, virtualSize: 3 * GiB + 512, clusterBits };
        const encoded = encodeQcow2Overlay(options);
        const image = await file(materialize(encoded));
        const header = await readQcow2Header(image);
        assert.equal(header.version, 3);
        assert.equal(header.virtualSize, options.virtualSize);
        assert.equal(header.clusterBits, clusterBits);
        assert.equal(header.backingFile, options.backingFile);
        assert.equal(header.backingFormat, 'qcow2');
        assert.equal(header.l1Size, encoded.l1Size);
        assert.equal(header.l1TableOffset, encoded.l1TableOffset);
        assert.equal(header.incompatibleFeatures, 0n);
        assertSane(header, encoded.fileSize);
      });
    }

    it('reads through an open FileHandle and leaves it open', async () => {
      const image = await file(good);
      const handle = await open(image, 'r');
      try {
        const header = await readQcow2Header(handle);
        assert.equal(header.backingFile, overlayOptions.backingFile);
        const { bytesRead } = await handle.read(Buffer.alloc(4), 0, 4, 0);
        assert.equal(bytesRead, 4);
      } finally {
        await handle.close();
      }
    });
  });

  describe('hostile headers', () => {
    it('rejects truncated files that start with the magic', async () => {
      for (const length of [4, 8, 50, 71, 100, 111, 140, 4096, 65536, good.length - 1]) {
        await assertInvalid(good.subarray(0, length), `truncated to ${length}`);
      }
    });

    it('rejects bad backing file names', async () => {
      await assertInvalid(mutate((b) => b.writeUInt32BE(0xffffffff, 16)), 'huge name length');
      await assertInvalid(mutate((b) => b.writeUInt32BE(1024, 16)), 'name length 1024');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(BigInt(good.length + 10), 8)), 'offset past EOF');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(2n ** 62n, 8)), 'offset 2^62');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(2n ** 64n - 1n, 8)), 'offset 2^64-1');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(65536n - 4n, 8)), 'name crossing cluster 0');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(16n, 8)), 'name inside the header');
      await assertInvalid(mutate((b) => b.writeUInt8(0, 140)), 'NUL in the name');
      await assertInvalid(mutate((b) => b.writeUInt8(0xff, 140)), 'name not UTF-8');
    });

    it('rejects out-of-range fixed fields', async () => {
      for (const bits of [0, 8, 22, 64, 0xffffffff]) {
        await assertInvalid(mutate((b) => b.writeUInt32BE(bits, 20)), `cluster_bits ${bits}`);
      }
      for (const version of [0, 1, 4, 0xffffffff]) {
        await assertInvalid(mutate((b) => b.writeUInt32BE(version, 4)), `version ${version}`);
      }
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(2n ** 53n, 24)), 'virtual size 2^53');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(2n ** 63n, 24)), 'virtual size 2^63');
      await assertInvalid(mutate((b) => b.writeUInt32BE(3, 32)), 'unknown crypt method');
      await assertInvalid(mutate((b) => b.writeUInt32BE(0xffffffff, 36)), 'huge l1_size');
      await assertInvalid(mutate((b) => b.writeUInt32BE(1, 36)), 'L1 too small for the size');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(2n ** 40n, 40)), 'L1 past EOF');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(196608n + 8n, 40)), 'L1 unaligned');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(0n, 48)), 'refcount table at 0');
      await assertInvalid(mutate((b) => b.writeUInt32BE(0, 56)), 'no refcount table');
      await assertInvalid(mutate((b) => b.writeUInt32BE(0xffffffff, 56)), 'huge refcount table');
      await assertInvalid(mutate((b) => b.writeUInt32BE(1, 60)), 'snapshots at offset 0');
      await assertInvalid(mutate((b) => b.writeUInt32BE(0xffffffff, 60)), 'too many snapshots');
    });

    it('rejects unknown or unsafe incompatible features', async () => {
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(1n << 2n, 72)), 'external data file bit');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(1n << 5n, 72)), 'unknown bit 5');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(1n << 63n, 72)), 'unknown bit 63');
      await assertInvalid(mutate((b) => b.writeBigUInt64BE(1n << 3n, 72)), 'compression bit without a type');
      await assertInvalid(mutate((b) => b.writeUInt8(1, 104)), 'zstd without the compression bit');
      await assertInvalid(mutate((b) => b.writeUInt8(7, 104)), 'unknown compression type');
      await assertInvalid(mutate((b) => b.writeUInt32BE(7, 96)), 'refcount_order 7');
    });

    it('rejects bad header lengths and extensions', async () => {
      for (const length of [0, 72, 103, 65537, 0xffffffff]) {
        await assertInvalid(mutate((b) => b.writeUInt32BE(length, 100)), `header_length ${length}`);
      }
      await assertInvalid(mutate((b) => b.writeUInt32BE(0xffffffff, 116)), 'huge extension length');
      await assertInvalid(mutate((b) => b.writeUInt32BE(16, 116)), 'backing format of 16 bytes');
      await assertInvalid(mutate((b) => b.write('r w', 120, 'latin1')), 'backing format with a space');
      // Header, two backing-format extensions, end marker, name.
      const nameLength = Buffer.byteLength(overlayOptions.backingFile);
      const header = good.subarray(0, 112);
      const extension = good.subarray(112, 128);
      const name = good.subarray(136, 136 + nameLength);
      const twice = Buffer.concat([header, extension, extension, Buffer.alloc(8), name]);
      twice.writeBigUInt64BE(152n, 8);
      await assertInvalid(Buffer.concat([twice, good.subarray(twice.length)]), 'two backing format extensions');
    });

    it('rejects random bytes after the magic', () => {
      const random = mulberry32(0xc0ffee);
      for (let i = 0; i < 200; i++) {
        const length = 4 + Math.floor(random() * 8192);
        const bytes = Buffer.alloc(length);
        for (let j = 0; j < length; j++) bytes[j] = Math.floor(random() * 256);
        bytes.writeUInt32BE(0x514649fb, 0);
        try {
          assertSane(parseQcow2Header(bytes) ?? assert.fail('magic must be seen'), length);
        } catch (err) {
          assert.ok(isInvalid(err), `case ${i}: ${String(err)}`);
        }
      }
    });

    /** Mutations of a valid image: each must parse (sanely) or be rejected as invalid. */
    function mutations(base: Buffer, seed: number, count: number): Buffer[] {
      const random = mulberry32(seed);
      const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)] as T;
      const interesting32 = [0, 1, 7, 8, 9, 16, 21, 22, 104, 112, 1023, 1024, 0x7fffffff, 0x80000000, 0xffffffff];
      const out: Buffer[] = [];
      for (let i = 0; i < count; i++) {
        let bytes = Buffer.from(base);
        const edits = 1 + Math.floor(random() * 4);
        for (let e = 0; e < edits; e++) {
          switch (Math.floor(random() * 5)) {
            case 0:
              bytes[Math.floor(random() * Math.min(bytes.length, 128))] = Math.floor(random() * 256);
              break;
            case 1:
              bytes[Math.floor(random() * Math.min(bytes.length, 4096))] = Math.floor(random() * 256);
              break;
            case 2: {
              const value = random() < 0.7 ? pick(interesting32) : Math.floor(random() * 2 ** 32);
              const at = 4 + 4 * Math.floor(random() * 30);
              if (at + 4 <= bytes.length) bytes.writeUInt32BE(value, at);
              break;
            }
            case 3: {
              const values = [0n, 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, BigInt(bytes.length), 65536n, 196608n];
              const at = 8 * Math.floor(random() * 14);
              if (at + 8 <= bytes.length) bytes.writeBigUInt64BE(pick(values), at);
              break;
            }
            default:
              bytes = bytes.subarray(0, Math.floor(random() * bytes.length));
          }
        }
        // Keep the magic most of the time: without it everything is simply raw.
        if (bytes.length >= 4 && random() < 0.9) bytes.writeUInt32BE(0x514649fb, 0);
        out.push(bytes);
      }
      return out;
    }

    it('survives 5000 seeded mutations in memory', () => {
      const small = materialize(encodeQcow2Overlay({ ...overlayOptions, clusterBits: 12, virtualSize: GiB }));
      for (const [seed, base] of [[1, small], [2, good]] as const) {
        mutations(base, seed, 2500).forEach((bytes, i) => {
          try {
            const header = parseQcow2Header(bytes);
            if (header !== null) assertSane(header, bytes.length);
          } catch (err) {
            assert.ok(isInvalid(err), `seed ${seed} case ${i}: ${String(err)}`);
          }
        });
      }
    });

    it('survives 300 seeded mutations of real files (ours and qemu-img\'s)', async (t) => {
      if (requireQemuImg(t) === undefined) return;
      const bases: Buffer[] = [good];
      for (const compat of ['0.10', '1.1']) {
        const image = path.join(dir, `fuzz-base-${compat}.qcow2`);
        const backing = path.join(dir, 'base.raw');
        await runQemuImg(['create', '-q', '-f', 'qcow2', '-o', `compat=${compat}`, '-b', backing, '-F', 'raw', image, '2G']);
        bases.push(await readFile(image));
      }
      const target = path.join(dir, 'fuzz.img');
      let parsed = 0;
      for (const [index, base] of bases.entries()) {
        const cases = mutations(base, 100 + index, 100);
        for (const [i, bytes] of cases.entries()) {
          await writeFile(target, bytes);
          try {
            const info = await inspectDiskImage(target);
            if (info.header !== null) assertSane(info.header, bytes.length);
            parsed++;
          } catch (err) {
            assert.ok(isInvalid(err), `base ${index} case ${i}: ${String(err)}`);
          }
        }
      }
      t.diagnostic(`${parsed} of 300 mutated files still parsed`);
    });
  });
});
