// The pull-style reader contract, over any Readable: what every third-party ImageSource (one with
// only open(), like MemoryImageSource) is read through by the download pipeline.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { isImageCacheError } from '../../src/index.js';
import { readerFromReadable } from '../../src/backend-kit/index.js';
import { downloadToSink } from '../../src/fetch/download.js';
import { FileStagingSink } from '../../src/fetch/staging.js';
import { openImageReader } from '../../src/source/image-reader.js';
import type { ImageReader, ImageSource } from '../../src/index.js';
import { MemoryImageSource } from '../../src/testing/memory-image-source.js';
import { listDir, makeTempDir, seededBytes } from '../helpers/tmp.js';

const IMAGE = 'a7d3c1f0-5e2b-4c8a-9f61-0b2d4e6f8a10';
const DATA = seededBytes(1024 * 1024 + 333, 11);

function code(err: unknown): string | undefined {
  if (isImageCacheError(err)) return err.code;
  return (err as { code?: string } | undefined)?.code;
}

async function readAll(reader: ImageReader, size: number): Promise<{ bytes: Buffer; counts: number[] }> {
  const parts: Buffer[] = [];
  const counts: number[] = [];
  for (;;) {
    const into = Buffer.alloc(size);
    const n = await reader.read(into);
    if (n === 0) break;
    counts.push(n);
    parts.push(into.subarray(0, n));
  }
  return { bytes: Buffer.concat(parts), counts };
}

describe('readerFromReadable (the ImageReader over any open() stream)', () => {
  const source = (): MemoryImageSource => new MemoryImageSource([{ id: IMAGE, data: DATA }]);

  it('reads MemoryImageSource stream chunks into the caller buffers, the exact bytes, then 0 for good', async () => {
    const reader = readerFromReadable(await source().open(IMAGE));
    const { bytes, counts } = await readAll(reader, 100_000);
    assert.ok(bytes.equals(DATA));
    assert.ok(counts.every((n) => n >= 1 && n <= 100_000));
    assert.equal(await reader.read(Buffer.alloc(10)), 0, 'the end stays the end');
  });

  it('fills a large buffer from several buffered chunks rather than one chunk per read', async () => {
    // 256 KiB chunks: a 1 MiB buffer takes several when they are already buffered.
    const stream = await source().open(IMAGE);
    await new Promise((resolve) => stream.once('readable', resolve));
    const reader = readerFromReadable(stream);
    const into = Buffer.alloc(DATA.length);
    const first = await reader.read(into);
    assert.ok(first > 256 * 1024, `first read took ${first} bytes`);
    assert.ok(into.subarray(0, first).equals(DATA.subarray(0, first)));
  });

  it('splits a chunk larger than the buffer and hands its rest to the next read', async () => {
    const reader = readerFromReadable(Readable.from([Buffer.from('abcdefghij'), Buffer.from('klm')]));
    const { bytes, counts } = await readAll(reader, 4);
    assert.equal(bytes.toString(), 'abcdefghijklm');
    assert.deepEqual(counts, [4, 4, 4, 1]);
  });

  it('a stream error rejects the pending read, and every later one', async () => {
    const stream = new Readable({ read() {} });
    const reader = readerFromReadable(stream);
    const pending = reader.read(Buffer.alloc(16));
    stream.destroy(Object.assign(new Error('disk on fire'), { code: 'EIO' }));
    await assert.rejects(pending, (err) => code(err) === 'EIO');
    await assert.rejects(reader.read(Buffer.alloc(16)), (err) => code(err) === 'EIO');
  });

  it('a stream destroyed before its end is a premature close, not a clean end', async () => {
    const stream = new Readable({ read() {} });
    stream.push(Buffer.from('abc'));
    const reader = readerFromReadable(stream);
    assert.equal(await reader.read(Buffer.alloc(16)), 3);
    stream.destroy();
    await assert.rejects(reader.read(Buffer.alloc(16)), (err) => code(err) === 'ERR_STREAM_PREMATURE_CLOSE');
  });

  it('an abort rejects a pending read with ERR_ABORTED and destroys the stream', async () => {
    const stream = new Readable({ read() {} });
    const controller = new AbortController();
    const reader = readerFromReadable(stream, { signal: controller.signal, imageId: IMAGE });
    const pending = reader.read(Buffer.alloc(16));
    controller.abort();
    await assert.rejects(pending, (err) => code(err) === 'ERR_ABORTED');
    assert.ok(stream.destroyed);
    const already = readerFromReadable(new Readable({ read() {} }), { signal: AbortSignal.abort(), imageId: IMAGE });
    await assert.rejects(already.read(Buffer.alloc(1)), (err) => code(err) === 'ERR_ABORTED');
  });

  it('destroy rejects a pending read and destroys the stream', async () => {
    const stream = new Readable({ read() {} });
    const reader = readerFromReadable(stream);
    const pending = reader.read(Buffer.alloc(16));
    reader.destroy();
    await assert.rejects(pending);
    assert.ok(stream.destroyed);
  });

  it('openImageReader prefers openReader, and reads open() through the adapter otherwise', async () => {
    const memory = source();
    let viaReader = 0;
    const withReader: ImageSource = {
      describe: (id, options) => memory.describe(id, options),
      open: (id, options) => memory.open(id, options),
      openReader: async (id, options) => {
        viaReader++;
        return readerFromReadable(await memory.open(id, options));
      },
    };
    assert.ok((await readAll(await openImageReader(withReader, IMAGE), 65_536)).bytes.equals(DATA));
    assert.equal(viaReader, 1);
    assert.ok((await readAll(await openImageReader(memory, IMAGE, { offset: 5 }), 65_536)).bytes.equals(DATA.subarray(5)));
    assert.equal(memory.openCalls(IMAGE), 2);
  });

  it('downloadToSink verifies and publishes an image from a source with only open()', async () => {
    const { dir, cleanup } = await makeTempDir();
    try {
      const memory = source();
      const info = await memory.describe(IMAGE);
      const finalPath = path.join(dir, IMAGE);
      const result = await downloadToSink({ imageId: IMAGE, info, source: memory, sink: await FileStagingSink.create(finalPath, IMAGE) });
      assert.equal(result.digest, createHash('sha512').update(DATA).digest('hex'));
      assert.ok((await readFile(finalPath)).equals(DATA));
      assert.deepEqual(await listDir(dir), [IMAGE]);
    } finally {
      await cleanup();
    }
  });
});
