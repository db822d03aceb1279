// Staging writes with O_DIRECT: whole aligned ring blocks bypass the page cache, the unaligned
// tail goes through it, and a filesystem or a buffer that O_DIRECT does not suit falls back to
// ordinary writes with the image intact. The publish stays durable and atomic either way.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';
import { BlockRing } from '../../src/fetch/block-hasher.js';
import { BLOCK_SIZE } from '../../src/fetch/download.js';
import { isImageCacheError } from '../../src/index.js';
import { downloadToSink } from '../../src/fetch/download.js';
import { DIRECT_IO_ALIGNMENT, FileStagingSink } from '../../src/fetch/staging.js';
import { MemoryImageSource } from '../../src/testing/memory-image-source.js';
import { listDir, makeMemoryTempDir, makeTempDir, seededBytes } from '../helpers/tmp.js';
import { mountRamfs, mountTmpfs } from '../helpers/tmpfs.js';

const IMAGE = '0e6a2c4b-9d18-4f37-a5c2-7b8e1d3f6a95';
const SIZES = [0, 1, 4095, 4096, 4097, BLOCK_SIZE + 1];
const run = promisify(execFile);

/** What `dir`'s filesystem does with O_DIRECT: open it at all, and refuse a misaligned buffer. */
async function directIoSupport(dir: string): Promise<{ opens: boolean; enforcesAlignment: boolean }> {
  const probe = path.join(dir, '.direct-io-probe');
  await writeFile(probe, '');
  try {
    const handle = await open(probe, constants.O_WRONLY | constants.O_DIRECT).catch(() => undefined);
    if (handle === undefined) return { opens: false, enforcesAlignment: false };
    try {
      const misaligned = new BlockRing(1, 2 * BLOCK_SIZE).blocks[0]?.subarray(1, 1 + DIRECT_IO_ALIGNMENT) as Buffer;
      await handle.write(misaligned, 0, misaligned.length, 0);
      return { opens: true, enforcesAlignment: false };
    } catch {
      return { opens: true, enforcesAlignment: true };
    } finally {
      await handle.close();
    }
  } finally {
    await unlink(probe);
  }
}

/** Bytes of `file` in the page cache, by fincore (util-linux); undefined where it is missing. */
async function cachedBytes(file: string): Promise<number | undefined> {
  try {
    const { stdout } = await run('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]);
    return Number(stdout.trim());
  } catch {
    return undefined;
  }
}

/** The whole pipeline (MemoryImageSource, ring, hash, sink) for every awkward size, into `dir`. */
async function downloadsEverySize(dir: string, directIo?: boolean): Promise<void> {
  for (const size of SIZES) {
    const data = seededBytes(size, size + 1);
    const id = `${IMAGE}-${size}`;
    const source = new MemoryImageSource([{ id, data }]);
    const finalPath = path.join(dir, id);
    const sink = await FileStagingSink.create(finalPath, id, { directIo });
    const result = await downloadToSink({ imageId: id, info: await source.describe(id), source, sink });
    assert.equal(result.bytes, size);
    assert.equal(result.digest, createHash('sha512').update(data).digest('hex'), `${size} bytes`);
    assert.ok((await readFile(finalPath)).equals(data), `${size} bytes on disk`);
  }
  assert.deepEqual(await listDir(dir), SIZES.map((size) => `${IMAGE}-${size}`).sort(), 'final names only, no staging file');
}

describe('FileStagingSink and O_DIRECT', () => {
  for (const [where, makeDir] of [
    ['the temp dir', makeTempDir],
    ['tmpfs (/dev/shm when present)', makeMemoryTempDir],
  ] as const) {
    it(`publishes images of 0, 1, 4095, 4096, 4097 and 4 MiB + 1 bytes intact in ${where}`, async () => {
      const { dir, cleanup } = await makeDir();
      try {
        await downloadsEverySize(dir);
      } finally {
        await cleanup();
      }
    });
  }

  it('writes aligned ring blocks past the page cache and only the tail through it', async (t: TestContext) => {
    const { dir, cleanup } = await makeTempDir();
    try {
      const support = await directIoSupport(dir);
      const sink = await FileStagingSink.create(path.join(dir, IMAGE), IMAGE);
      assert.equal(sink.directIo, support.opens);
      const ring = new BlockRing(2, BLOCK_SIZE);
      const data = seededBytes(2 * BLOCK_SIZE + 100, 3);
      for (let at = 0, i = 0; at < data.length; at += BLOCK_SIZE, i ^= 1) {
        const block = ring.blocks[i] as Buffer;
        const length = data.copy(block, 0, at, at + BLOCK_SIZE);
        await sink.write(block.subarray(0, length));
      }
      assert.equal(sink.directIo, support.opens, 'aligned blocks and a tail do not turn O_DIRECT off');
      const cached = await cachedBytes(sink.stagingPath);
      await sink.commit();
      assert.ok((await readFile(path.join(dir, IMAGE))).equals(data));
      if (!support.opens || !support.enforcesAlignment) {
        t.diagnostic(`the temp dir's filesystem ${support.opens ? 'ignores O_DIRECT alignment (tmpfs)' : 'has no O_DIRECT'}: page cache use not checked`);
      } else if (cached === undefined) {
        t.diagnostic('no fincore: page cache use not checked');
      } else {
        assert.ok(cached <= 2 * DIRECT_IO_ALIGNMENT, `${cached} bytes of the staging file were in the page cache`);
      }
    } finally {
      await cleanup();
    }
  });

  it('a buffer O_DIRECT refuses (misaligned) is written through the page cache, and so is the rest', async () => {
    const { dir, cleanup } = await makeTempDir();
    try {
      const support = await directIoSupport(dir);
      const sink = await FileStagingSink.create(path.join(dir, IMAGE), IMAGE);
      const data = seededBytes(3 * DIRECT_IO_ALIGNMENT, 9);
      const misaligned = (new BlockRing(1, BLOCK_SIZE).blocks[0] as Buffer).subarray(1, 1 + data.length);
      data.copy(misaligned);
      await sink.write(misaligned);
      assert.equal(sink.directIo, support.opens && !support.enforcesAlignment, 'EINVAL turned O_DIRECT off');
      await sink.write(data);
      await sink.commit();
      assert.ok((await readFile(path.join(dir, IMAGE))).equals(Buffer.concat([data, data])));
    } finally {
      await cleanup();
    }
  });

  it('on a filesystem without O_DIRECT (ramfs) every write goes through the page cache', async (t) => {
    const ramfs = await mountRamfs(t);
    if (ramfs === undefined) return;
    try {
      const sink = await FileStagingSink.create(path.join(ramfs.dir, 'probe'), IMAGE);
      assert.equal(sink.directIo, false);
      await sink.discard();
      await downloadsEverySize(ramfs.dir);
    } finally {
      await ramfs.cleanup();
    }
  });

  it('directIo: false writes everything through the page cache', async () => {
    const { dir, cleanup } = await makeTempDir();
    try {
      const sink = await FileStagingSink.create(path.join(dir, 'probe'), IMAGE, { directIo: false });
      assert.equal(sink.directIo, false);
      await sink.discard();
      await downloadsEverySize(dir, false);
    } finally {
      await cleanup();
    }
  });

  it('ENOSPC on an O_DIRECT write is ERR_DISK_FULL, and discard leaves nothing', async (t) => {
    const tmpfs = await mountTmpfs(t, 6 * 1024 * 1024);
    if (tmpfs === undefined) return;
    try {
      const sink = await FileStagingSink.create(path.join(tmpfs.dir, IMAGE), IMAGE);
      const block = new BlockRing(1, BLOCK_SIZE).blocks[0] as Buffer;
      block.fill(7);
      await assert.rejects(
        (async () => {
          for (let i = 0; i < 4; i++) await sink.write(block);
        })(),
        (err) => isImageCacheError(err) && err.code === 'ERR_DISK_FULL',
      );
      await sink.discard();
      assert.deepEqual(await listDir(tmpfs.dir), []);
    } finally {
      await tmpfs.cleanup();
    }
  });
});
