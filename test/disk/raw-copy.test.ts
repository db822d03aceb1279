import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { copyFile, mkdir, mkdtemp, open, readdir, readFile, rm, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';
import { copyRawDisk } from '../../src/disk/raw-copy.js';
import { AbortedError, DiskFullError, FlavorDiskSmallerThanImageError, InvalidConfigError } from '../../src/errors.js';

const MiB = 2 ** 20;
const exec = promisify(execFile);

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * MiB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function readRange(file: string, position: number, length: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, position);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** Whether `dir`'s filesystem can reflink, found by trying. */
async function canReflink(dir: string): Promise<boolean> {
  const a = path.join(dir, '.probe-a');
  const b = path.join(dir, '.probe-b');
  await writeFile(a, 'x');
  try {
    await copyFile(a, b, constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch {
    return false;
  } finally {
    await unlink(a).catch(() => undefined);
    await unlink(b).catch(() => undefined);
  }
}

/** A sparse file of `size` bytes with random data in the given MiB-sized slots. */
async function sparseFile(file: string, size: number, dataAt: readonly number[]): Promise<Map<number, Buffer>> {
  await writeFile(file, '');
  await truncate(file, size);
  const handle = await open(file, 'r+');
  const written = new Map<number, Buffer>();
  try {
    for (const position of dataAt) {
      const bytes = randomBytes(MiB);
      await handle.write(bytes, 0, MiB, position);
      written.set(position, bytes);
    }
  } finally {
    await handle.close();
  }
  return written;
}

/**
 * Mounts a fresh filesystem at `mnt` for the duration of `body`, or skips the test when this
 * process may not mount (not root, no loop devices, a container without CAP_SYS_ADMIN).
 */
async function withMount(
  t: TestContext,
  mountArgs: readonly string[],
  mnt: string,
  body: () => Promise<void>,
): Promise<void> {
  if (process.getuid?.() !== 0) {
    t.skip('needs root to mount a filesystem');
    return;
  }
  await mkdir(mnt, { recursive: true });
  try {
    await exec('mount', [...mountArgs, mnt]);
  } catch (err) {
    t.skip(`mount is not permitted here: ${String(err).split('\n')[0] ?? ''}`);
    return;
  }
  try {
    await body();
  } finally {
    await exec('umount', [mnt]).catch(() => exec('umount', ['-l', mnt]));
  }
}

describe('copyRawDisk', () => {
  let dir: string;
  let reflinkHere: boolean;

  // Per-test directories live under one root removed in `after`: Node 20 runs no afterEach hook
  // for a test that calls t.skip(), so afterEach alone would leak the skipped tests' directories.
  let root: string;
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'vic-raw-copy-'));
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  beforeEach(async () => {
    dir = await mkdtemp(path.join(root, 'case-'));
    reflinkHere = await canReflink(dir);
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Names in `dir` other than the given ones: staging leftovers, partial copies. */
  async function leftovers(...expected: string[]): Promise<string[]> {
    return (await readdir(dir)).filter((name) => !expected.includes(name));
  }

  it('copies a dense image byte for byte, by reflink or else the kernel copy', async () => {
    const src = path.join(dir, 'base');
    const bytes = randomBytes(3 * MiB + 123);
    await writeFile(src, bytes);
    const dst = path.join(dir, 'disk');
    const result = await copyRawDisk(src, dst);
    // On ext4 (and tmpfs) there is no reflink, so the fallback must have been used.
    assert.equal(result.method, reflinkHere ? 'reflink' : 'copy');
    assert.ok((await readFile(dst)).equals(bytes));
    assert.deepEqual(await leftovers('base', 'disk'), []);
  });

  it('extends the copy to sizeBytes with a hole', async () => {
    const src = path.join(dir, 'base');
    const bytes = randomBytes(3 * MiB);
    await writeFile(src, bytes);
    const dst = path.join(dir, 'disk');
    await copyRawDisk(src, dst, { sizeBytes: 64 * MiB });
    const st = await stat(dst);
    assert.equal(st.size, 64 * MiB);
    assert.ok(st.blocks * 512 <= 4 * MiB, `extension must be a hole, ${st.blocks * 512} bytes allocated`);
    assert.ok((await readRange(dst, 0, 3 * MiB)).equals(bytes));
    assert.ok((await readRange(dst, 3 * MiB, MiB)).equals(Buffer.alloc(MiB)));
    assert.ok((await readRange(dst, 63 * MiB, MiB)).equals(Buffer.alloc(MiB)));
  });

  it('keeps a sparse source sparse', async () => {
    const src = path.join(dir, 'base');
    const size = 256 * MiB + 4096;
    const data = await sparseFile(src, size, [0, 100 * MiB, 255 * MiB]);
    const dst = path.join(dir, 'disk');
    const result = await copyRawDisk(src, dst, { sizeBytes: 512 * MiB });
    assert.equal(result.method, reflinkHere ? 'reflink' : 'sparse-copy');
    const st = await stat(dst);
    assert.equal(st.size, 512 * MiB);
    assert.ok(st.blocks * 512 <= 8 * MiB, `holes must stay holes, ${st.blocks * 512} bytes allocated`);
    for (const [position, bytes] of data) assert.ok((await readRange(dst, position, MiB)).equals(bytes));
    await truncate(dst, size);
    assert.equal(await sha256File(dst), await sha256File(src));
  });

  it('refuses a disk smaller than the image and leaves nothing behind', async () => {
    const src = path.join(dir, 'base');
    await writeFile(src, randomBytes(MiB));
    const dst = path.join(dir, 'disk');
    await assert.rejects(copyRawDisk(src, dst, { sizeBytes: MiB - 512, imageId: 'img-1' }), (err: unknown) => {
      assert.ok(err instanceof FlavorDiskSmallerThanImageError);
      assert.equal(err.imageId, 'img-1');
      assert.equal(err.flavorSize, MiB - 512);
      assert.equal(err.imageSize, MiB);
      return true;
    });
    assert.deepEqual(await leftovers('base'), []);
  });

  it('rejects a bad sizeBytes', async () => {
    const src = path.join(dir, 'base');
    await writeFile(src, 'x');
    for (const sizeBytes of [-1, 1.5, Number.NaN, 2 ** 60]) {
      await assert.rejects(copyRawDisk(src, path.join(dir, 'disk'), { sizeBytes }), InvalidConfigError);
    }
    assert.deepEqual(await leftovers('base'), []);
  });

  it('does nothing when already aborted', async () => {
    const src = path.join(dir, 'base');
    await writeFile(src, randomBytes(MiB));
    await assert.rejects(copyRawDisk(src, path.join(dir, 'disk'), { signal: AbortSignal.abort() }), AbortedError);
    assert.deepEqual(await leftovers('base'), []);
  });

  it('stops a sparse copy between blocks when aborted and removes the staging file', async (t) => {
    if (reflinkHere) {
      t.skip('this filesystem reflinks, so there is no block copy to interrupt');
      return;
    }
    const src = path.join(dir, 'base');
    await sparseFile(src, 512 * MiB, [0, 511 * MiB]);
    const controller = new AbortController();
    const copying = copyRawDisk(src, path.join(dir, 'disk'), { signal: controller.signal, imageId: 'img-2' });
    const state = { settled: false };
    void copying.finally(() => (state.settled = true)).catch(() => undefined);
    // Abort once the first block has landed in the staging file, i.e. mid-copy.
    let staged: string | undefined;
    while (staged === undefined && !state.settled) {
      await new Promise((resolve) => setTimeout(resolve, 1));
      for (const name of await readdir(dir)) {
        if (name.endsWith('.staging') && (await stat(path.join(dir, name)).catch(() => null))?.size) staged = name;
      }
    }
    controller.abort();
    assert.ok(staged !== undefined, 'the copy finished before it could be aborted mid-way');
    await assert.rejects(copying, (err: unknown) => err instanceof AbortedError && err.imageId === 'img-2');
    assert.deepEqual(await leftovers('base'), []);
  });

  it('replaces an existing destination only with a complete copy', async () => {
    const src = path.join(dir, 'base');
    const bytes = randomBytes(2 * MiB);
    await writeFile(src, bytes);
    const dst = path.join(dir, 'disk');
    await writeFile(dst, 'old');
    await copyRawDisk(src, dst);
    assert.ok((await readFile(dst)).equals(bytes));
    assert.deepEqual(await leftovers('base', 'disk'), []);
  });

  it('propagates ENOENT for a missing source', async () => {
    await assert.rejects(copyRawDisk(path.join(dir, 'missing'), path.join(dir, 'disk')), { code: 'ENOENT' });
    assert.deepEqual(await leftovers(), []);
  });

  it('reflinks on XFS with reflink=1, and falls back across filesystems', async (t) => {
    const image = path.join(dir, 'xfs.img');
    await writeFile(image, '');
    await truncate(image, 320 * MiB);
    try {
      await exec('mkfs.xfs', ['-q', '-m', 'reflink=1', image]);
    } catch {
      t.skip('mkfs.xfs is not available');
      return;
    }
    const mnt = path.join(dir, 'xfs');
    await withMount(t, ['-o', 'loop', image], mnt, async () => {
      const src = path.join(mnt, 'base');
      const bytes = randomBytes(8 * MiB);
      await writeFile(src, bytes);
      const dst = path.join(mnt, 'disk');
      assert.deepEqual(await copyRawDisk(src, dst, { sizeBytes: 16 * MiB }), { method: 'reflink' });
      assert.equal((await stat(dst)).size, 16 * MiB);
      assert.ok((await readRange(dst, 0, 8 * MiB)).equals(bytes));
      assert.ok((await readRange(dst, 8 * MiB, 8 * MiB)).equals(Buffer.alloc(8 * MiB)));

      // A sparse source is reflinked too: cloning keeps the holes for free.
      const sparse = path.join(mnt, 'sparse');
      await sparseFile(sparse, 64 * MiB, [MiB]);
      assert.deepEqual(await copyRawDisk(sparse, path.join(mnt, 'disk2')), { method: 'reflink' });

      // Across filesystems FICLONE fails with EXDEV and the kernel copy takes over.
      const outside = path.join(dir, 'outside');
      await writeFile(outside, bytes);
      assert.deepEqual(await copyRawDisk(outside, path.join(mnt, 'disk3')), { method: 'copy' });
      assert.ok((await readFile(path.join(mnt, 'disk3'))).equals(bytes));
      assert.deepEqual((await readdir(mnt)).filter((n) => n.includes('staging')), []);
    });
  });

  it('maps ENOSPC to DiskFullError and leaves no partial copy', async (t) => {
    const src = path.join(dir, 'base');
    await writeFile(src, randomBytes(8 * MiB));
    const mnt = path.join(dir, 'small');
    await withMount(t, ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs'], mnt, async () => {
      await assert.rejects(copyRawDisk(src, path.join(mnt, 'disk'), { imageId: 'img-3' }), (err: unknown) => {
        assert.ok(err instanceof DiskFullError, String(err));
        assert.equal(err.imageId, 'img-3');
        return true;
      });
      assert.deepEqual(await readdir(mnt), []);
    });
  });
});
