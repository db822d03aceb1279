import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Agent, request } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { generatedImageBytes, generatedImageChunks, startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance, GeneratedContent } from '../../src/testing/fake-glance.js';
import { MemoryImageSource } from '../../src/testing/memory-image-source.js';
import { seededBytes } from '../helpers/tmp.js';
import { code } from '../helpers/error-code.js';

const MiB = 1024 * 1024;
const ID = 'a1b2c3d4-0000-4000-8000-000000000001';
const DATA = seededBytes(2 * MiB + 333, 21);

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** True when the connection died (or went idle for `idleMs`) before the body was complete. */
  interrupted: boolean;
}

/** One GET on a fresh connection; never rejects for a broken body, it reports `interrupted`. */
function get(url: string, headers: Record<string, string> = {}, idleMs = 10_000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false });
    let done: ((interrupted: boolean) => void) | undefined;
    req.setTimeout(idleMs, () => req.destroy(new Error('idle')));
    req.on('error', (err) => {
      if (done === undefined) reject(err);
      else done(true);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      done = (interrupted) => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), interrupted });
      };
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', () => done?.(true));
      res.on('end', () => done?.(!res.complete));
    });
    req.end();
  });
}

async function json(url: string, headers: Record<string, string> = {}): Promise<Record<string, unknown>> {
  const res = await get(url, headers);
  assert.equal(res.status, 200);
  return JSON.parse(res.body.toString('utf8')) as Record<string, unknown>;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function digest(algorithm: string, chunks: Iterable<Uint8Array>): string {
  const hash = createHash(algorithm);
  for (const chunk of chunks) hash.update(chunk);
  return hash.digest('hex');
}

describe('generated content', () => {
  const spec: GeneratedContent = { size: 3 * MiB + 4321, seed: 7 };

  it('is deterministic and the same whichever way it is read', () => {
    const whole = generatedImageBytes(spec);
    assert.equal(whole.length, spec.size);
    assert.ok(whole.equals(generatedImageBytes(spec)));
    assert.ok(whole.equals(Buffer.concat([...generatedImageChunks(spec)])));
    const start = MiB - 1000;
    const end = 2 * MiB + 77;
    assert.ok(whole.subarray(start, end).equals(generatedImageBytes(spec, start, end)));
    for (const chunk of generatedImageChunks(spec)) assert.ok(chunk.length <= MiB);
  });

  it('differs between blocks and between seeds; zero content is all zeros', () => {
    const whole = generatedImageBytes(spec);
    assert.ok(!whole.subarray(0, MiB).equals(whole.subarray(MiB, 2 * MiB)));
    assert.ok(!whole.equals(generatedImageBytes({ ...spec, seed: 8 })));
    const zero = generatedImageBytes({ size: MiB + 3, zero: true });
    assert.equal(zero.length, MiB + 3);
    assert.ok(zero.every((byte) => byte === 0));
  });

  it('rejects ranges outside the content', () => {
    assert.throws(() => generatedImageBytes(spec, 0, spec.size + 1), RangeError);
    assert.throws(() => [...generatedImageChunks(spec, 10, 5)], RangeError);
  });
});

describe('startFakeGlance', () => {
  let glance: FakeGlance;

  before(async () => {
    glance = await startFakeGlance();
  });
  after(async () => {
    await glance.close();
  });
  beforeEach(() => {
    glance.addImage({ id: ID, content: DATA, name: 'ubuntu', diskFormat: 'qcow2', virtualSize: 10 * MiB });
    glance.resetStats();
  });

  it('serves the Glance v2 image document', async () => {
    assert.match(glance.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const doc = await json(`${glance.url}/v2/images/${ID}`);
    assert.equal(doc.id, ID);
    assert.equal(doc.name, 'ubuntu');
    assert.equal(doc.status, 'active');
    assert.equal(doc.size, DATA.length);
    assert.equal(doc.checksum, createHash('md5').update(DATA).digest('hex'));
    assert.equal(doc.os_hash_algo, 'sha512');
    assert.equal(doc.os_hash_value, createHash('sha512').update(DATA).digest('hex'));
    assert.equal(doc.disk_format, 'qcow2');
    assert.equal(doc.container_format, 'bare');
    assert.equal(doc.virtual_size, 10 * MiB);
  });

  it('hashes generated content as it serves it, with the chosen algorithm', async () => {
    const spec = { size: 20 * MiB + 1, seed: 3 };
    glance.addImage({ id: 'gen', content: spec, hashAlgo: 'sha256' });
    const doc = await json(`${glance.url}/v2/images/gen`);
    assert.equal(doc.os_hash_algo, 'sha256');
    assert.equal(doc.os_hash_value, digest('sha256', generatedImageChunks(spec)));
    assert.equal(doc.checksum, digest('md5', generatedImageChunks(spec)));
    assert.equal(doc.virtual_size, spec.size, 'raw: virtual size is the size');
    const file = await get(`${glance.url}/v2/images/gen/file`);
    assert.equal(file.status, 200);
    assert.equal(digest('sha256', [file.body]), doc.os_hash_value);
  });

  it('uses precomputed digests as given, and publishes no multihash for hashAlgo null', async () => {
    glance.addImage({ id: 'pre', content: { size: 1024 * MiB }, checksum: 'c'.repeat(32), hashValue: 'd'.repeat(128) });
    const pre = await json(`${glance.url}/v2/images/pre`);
    assert.equal(pre.checksum, 'c'.repeat(32));
    assert.equal(pre.os_hash_value, 'd'.repeat(128));
    glance.addImage({ id: 'legacy', content: DATA, hashAlgo: null });
    const legacy = await json(`${glance.url}/v2/images/legacy`);
    assert.equal(legacy.checksum, createHash('md5').update(DATA).digest('hex'));
    assert.equal(legacy.os_hash_algo, null);
    assert.equal(legacy.os_hash_value, null);
  });

  it('serves the file with Content-Length and Content-MD5, and Range as 206 with Content-Range, as Glance does', async () => {
    const md5 = createHash('md5').update(DATA).digest('hex');
    const whole = await get(`${glance.url}/v2/images/${ID}/file`);
    assert.equal(whole.status, 200);
    assert.equal(whole.headers['content-length'], String(DATA.length));
    assert.equal(whole.headers['content-md5'], md5);
    assert.equal(whole.headers['accept-ranges'], undefined);
    assert.ok(whole.body.equals(DATA));

    const tail = await get(`${glance.url}/v2/images/${ID}/file`, { range: 'bytes=1000-' });
    assert.equal(tail.status, 206);
    assert.equal(tail.headers['content-range'], `bytes 1000-${DATA.length - 1}/${DATA.length}`);
    assert.equal(tail.headers['content-md5'], md5, "Glance's Content-MD5 is the whole image's, even for a range");
    assert.ok(tail.body.equals(DATA.subarray(1000)));

    const middle = await get(`${glance.url}/v2/images/${ID}/file`, { range: 'bytes=10-19' });
    assert.equal(middle.status, 206);
    assert.ok(middle.body.equals(DATA.subarray(10, 20)));

    const suffix = await get(`${glance.url}/v2/images/${ID}/file`, { range: 'bytes=-5' });
    assert.equal(suffix.status, 206);
    assert.ok(suffix.body.equals(DATA.subarray(DATA.length - 5)));

    const past = await get(`${glance.url}/v2/images/${ID}/file`, { range: `bytes=${DATA.length}-` });
    assert.equal(past.status, 416);
    assert.equal(past.headers['content-range'], undefined);
    assert.equal((await get(`${glance.url}/v2/images/${ID}/file`, { range: 'bytes=5-2' })).status, 416);
    assert.equal((await get(`${glance.url}/v2/images/${ID}/file`, { range: 'bytes=0-1,5-6' })).status, 400);
  });

  it('ignores Range when honourRange is false', async () => {
    glance.setFaults(ID, { honourRange: false });
    const res = await get(`${glance.url}/v2/images/${ID}/file`, { range: 'bytes=1000-' });
    assert.equal(res.status, 200);
    assert.equal(res.headers['accept-ranges'], undefined);
    assert.ok(res.body.equals(DATA));
  });

  it('answers 404 for unknown images and paths, 403 for forbidden images', async () => {
    assert.equal((await get(`${glance.url}/v2/images/nope`)).status, 404);
    assert.equal((await get(`${glance.url}/v2/images/nope/file`)).status, 404);
    assert.equal((await get(`${glance.url}/v1/images/${ID}`)).status, 404);
    glance.addImage({ id: 'secret', content: DATA, forbidden: true });
    assert.equal((await get(`${glance.url}/v2/images/secret`)).status, 403);
    assert.equal((await get(`${glance.url}/v2/images/secret/file`)).status, 403);
  });

  it('a queued image has null size and checksums, and its file is 204 (500 with a Range, as Glance)', async () => {
    glance.setStatus(ID, 'queued');
    const doc = await json(`${glance.url}/v2/images/${ID}`);
    assert.equal(doc.status, 'queued');
    assert.equal(doc.size, null);
    assert.equal(doc.checksum, null);
    assert.equal(doc.os_hash_value, null);
    const file = await get(`${glance.url}/v2/images/${ID}/file`);
    assert.equal(file.status, 204);
    assert.equal(file.body.length, 0);
    assert.equal((await get(`${glance.url}/v2/images/${ID}/file`, { range: 'bytes=0-' })).status, 500);
  });

  it('a deactivated image keeps its size and checksums, and its file is 403; a deleted one is 404', async () => {
    glance.setStatus(ID, 'deactivated');
    const doc = await json(`${glance.url}/v2/images/${ID}`);
    assert.equal(doc.size, DATA.length);
    assert.equal(doc.checksum, createHash('md5').update(DATA).digest('hex'));
    assert.equal((await get(`${glance.url}/v2/images/${ID}/file`)).status, 403);
    glance.setStatus(ID, 'deleted');
    assert.equal((await get(`${glance.url}/v2/images/${ID}`)).status, 404);
    assert.equal((await get(`${glance.url}/v2/images/${ID}/file`)).status, 404);
  });

  it('requires the exact token when one is configured', async () => {
    await using secured = await startFakeGlance({ token: 's3cret', images: [{ id: ID, content: DATA }] });
    assert.equal((await get(`${secured.url}/v2/images/${ID}`)).status, 401);
    assert.equal((await get(`${secured.url}/v2/images/${ID}`, { 'x-auth-token': 'S3CRET' })).status, 401);
    assert.equal((await get(`${secured.url}/v2/images/${ID}/file`)).status, 401);
    assert.equal((await get(`${secured.url}/v2/images/${ID}`, { 'x-auth-token': 's3cret' })).status, 200);
  });

  it('failFirst answers 503 to the first K requests, metadata and file together', async () => {
    glance.setFaults(ID, { failFirst: 3 });
    const statuses = [
      (await get(`${glance.url}/v2/images/${ID}`)).status,
      (await get(`${glance.url}/v2/images/${ID}/file`)).status,
      (await get(`${glance.url}/v2/images/${ID}`)).status,
      (await get(`${glance.url}/v2/images/${ID}/file`)).status,
      (await get(`${glance.url}/v2/images/${ID}`)).status,
    ];
    assert.deepEqual(statuses, [503, 503, 503, 200, 200]);
    assert.deepEqual(glance.requests(ID), { metadata: 3, file: 2 });
  });

  it('wrongChecksum publishes digests of the same form that do not match', async () => {
    glance.setFaults(ID, { wrongChecksum: true });
    const doc = await json(`${glance.url}/v2/images/${ID}`);
    const md5 = createHash('md5').update(DATA).digest('hex');
    const sha = createHash('sha512').update(DATA).digest('hex');
    assert.notEqual(doc.checksum, md5);
    assert.notEqual(doc.os_hash_value, sha);
    assert.match(String(doc.checksum), /^[0-9a-f]{32}$/);
    assert.match(String(doc.os_hash_value), /^[0-9a-f]{128}$/);
  });

  it('wrongLength serves a shorter (or zero-padded longer) body with a matching Content-Length', async () => {
    glance.setFaults(ID, { wrongLength: 1000 });
    assert.equal((await json(`${glance.url}/v2/images/${ID}`)).size, DATA.length);
    const short = await get(`${glance.url}/v2/images/${ID}/file`);
    assert.equal(short.headers['content-length'], '1000');
    assert.equal(short.interrupted, false);
    assert.ok(short.body.equals(DATA.subarray(0, 1000)));
    glance.setFaults(ID, { wrongLength: DATA.length + 10 });
    const long = await get(`${glance.url}/v2/images/${ID}/file`);
    assert.equal(long.body.length, DATA.length + 10);
    assert.ok(long.body.subarray(0, DATA.length).equals(DATA));
    assert.ok(long.body.subarray(DATA.length).every((byte) => byte === 0));
  });

  it('resetAfterBytes cuts the first `resets` file responses after exactly N bytes', async () => {
    glance.setFaults(ID, { resetAfterBytes: 300_000, resets: 2 });
    for (let i = 0; i < 2; i++) {
      const cut = await get(`${glance.url}/v2/images/${ID}/file`);
      assert.equal(cut.status, 200);
      assert.equal(cut.interrupted, true);
      assert.ok(cut.body.equals(DATA.subarray(0, 300_000)));
    }
    const whole = await get(`${glance.url}/v2/images/${ID}/file`);
    assert.equal(whole.interrupted, false);
    assert.ok(whole.body.equals(DATA));
    assert.equal(glance.bytesServed(ID), 2 * 300_000 + DATA.length);
  });

  it('stallAfterBytes sends N bytes, then nothing while keeping the connection open', async () => {
    glance.setFaults(ID, { stallAfterBytes: 100_000 });
    const stalled = await get(`${glance.url}/v2/images/${ID}/file`, {}, 150);
    assert.equal(stalled.interrupted, true);
    assert.ok(stalled.body.equals(DATA.subarray(0, 100_000)));
    const next = await get(`${glance.url}/v2/images/${ID}/file`);
    assert.ok(next.body.equals(DATA), 'stalls defaults to 1');
  });

  it('latencyMs delays every response', async () => {
    glance.setFaults(ID, { latencyMs: 150 });
    const started = performance.now();
    assert.equal((await get(`${glance.url}/v2/images/${ID}`)).status, 200);
    assert.ok(performance.now() - started >= 140);
  });

  it('throttleBytesPerSecond keeps the body near the rate (512 KiB at 1 MiB/s takes >= 0.3 s)', async () => {
    glance.addImage({ id: 'slow', content: DATA.subarray(0, 512 * 1024), faults: { throttleBytesPerSecond: MiB } });
    const started = performance.now();
    const res = await get(`${glance.url}/v2/images/slow/file`);
    const elapsed = performance.now() - started;
    assert.ok(res.body.equals(DATA.subarray(0, 512 * 1024)));
    assert.ok(elapsed >= 300, `took ${elapsed} ms`);
  });

  it('counts requests and bytes, logs requests, and resets the stats', async () => {
    await get(`${glance.url}/v2/images/${ID}`);
    await get(`${glance.url}/v2/images/${ID}/file`, { range: 'bytes=100-' });
    await get(`${glance.url}/v2/images/other`);
    assert.deepEqual(glance.requests(ID), { metadata: 1, file: 1 });
    assert.equal(glance.bytesServed(ID), DATA.length - 100);
    assert.equal(glance.totalRequests, 3);
    assert.deepEqual(glance.log, [
      { imageId: ID, kind: 'metadata', range: undefined, status: 200 },
      { imageId: ID, kind: 'file', range: 'bytes=100-', status: 206 },
      { imageId: 'other', kind: 'metadata', range: undefined, status: 404 },
    ]);
    glance.resetStats();
    assert.deepEqual(glance.requests(ID), { metadata: 0, file: 0 });
    assert.equal(glance.bytesServed(ID), 0);
    assert.equal(glance.totalRequests, 0);
    assert.deepEqual(glance.log, []);
  });

  it('setFaults restarts the fault counts; addImage replaces; removeImage removes', async () => {
    glance.setFaults(ID, { failFirst: 1 });
    assert.equal((await get(`${glance.url}/v2/images/${ID}`)).status, 503);
    assert.equal((await get(`${glance.url}/v2/images/${ID}`)).status, 200);
    glance.setFaults(ID, { failFirst: 1 });
    assert.equal((await get(`${glance.url}/v2/images/${ID}`)).status, 503);

    glance.addImage({ id: ID, content: Buffer.from('replaced') });
    assert.equal((await get(`${glance.url}/v2/images/${ID}/file`)).body.toString(), 'replaced');
    assert.equal(glance.removeImage(ID), true);
    assert.equal(glance.removeImage(ID), false);
    assert.equal((await get(`${glance.url}/v2/images/${ID}`)).status, 404);
    assert.throws(() => {
      glance.setFaults(ID, {});
    }, RangeError);
    assert.throws(() => {
      glance.setStatus(ID, 'active');
    }, RangeError);
  });

  it('rejects invalid images and faults', () => {
    assert.throws(() => {
      glance.addImage({ id: 'x', content: { size: -1 } });
    }, RangeError);
    assert.throws(() => {
      glance.addImage({ id: 'x', content: DATA, hashAlgo: 'no-such-hash' });
    });
    assert.throws(() => {
      glance.setFaults(ID, { resets: 1.5 });
    }, RangeError);
  });
});

describe('FakeGlance lifecycle', () => {
  it('close() ends keep-alive and stalled connections, and is idempotent', async () => {
    const glance = await startFakeGlance({ images: [{ id: ID, content: DATA, faults: { stallAfterBytes: 10 } }] });
    const agent = new Agent({ keepAlive: true });
    try {
      // A pooled idle connection...
      await new Promise<void>((resolve, reject) => {
        request(`${glance.url}/v2/images/${ID}`, { agent }, (res) => {
          res.resume();
          res.on('end', resolve);
        })
          .on('error', reject)
          .end();
      });
      // ...and a stalled one.
      const stalled = get(`${glance.url}/v2/images/${ID}/file`, {}, 60_000);
      while (glance.bytesServed(ID) < 10) await new Promise((resolve) => setTimeout(resolve, 5));
      const first = glance.close();
      const second = glance.close();
      await Promise.all([first, second]);
      await glance.close();
      assert.equal((await stalled).interrupted, true);
      await assert.rejects(get(`${glance.url}/v2/images/${ID}`), (err) => (err as { code?: unknown }).code === 'ECONNREFUSED');
    } finally {
      agent.destroy();
    }
  });

  it('await using closes the server at the end of the scope', async () => {
    let url: string;
    {
      await using glance = await startFakeGlance({ images: [{ id: ID, content: DATA }] });
      url = glance.url;
      assert.equal((await get(`${url}/v2/images/${ID}`)).status, 200);
    }
    await assert.rejects(get(`${url}/v2/images/${ID}`), (err) => (err as { code?: unknown }).code === 'ECONNREFUSED');
  });
});

describe('MemoryImageSource', () => {
  let source: MemoryImageSource;
  beforeEach(() => {
    source = new MemoryImageSource([{ id: ID, data: DATA }]);
  });
  afterEach(() => {
    source.remove(ID);
  });

  it('describes images with computed digests', async () => {
    source.add({ id: 'q', data: DATA, diskFormat: 'qcow2', hashAlgo: 'sha256', name: 'cirros' });
    assert.deepEqual(await source.describe(ID), {
      id: ID,
      status: 'active',
      size: DATA.length,
      checksum: createHash('md5').update(DATA).digest('hex'),
      hashAlgo: 'sha512',
      hashValue: createHash('sha512').update(DATA).digest('hex'),
      diskFormat: 'raw',
      containerFormat: 'bare',
      name: ID,
      virtualSize: DATA.length,
    });
    const q = await source.describe('q');
    assert.equal(q.hashAlgo, 'sha256');
    assert.equal(q.hashValue, createHash('sha256').update(DATA).digest('hex'));
    assert.equal(q.diskFormat, 'qcow2');
    assert.equal(q.virtualSize, null);
    assert.equal(q.name, 'cirros');
  });

  it('streams from an offset and counts calls and bytes', async () => {
    assert.ok((await readAll(await source.open(ID))).equals(DATA));
    assert.ok((await readAll(await source.open(ID, { offset: 777 }))).equals(DATA.subarray(777)));
    assert.equal((await readAll(await source.open(ID, { offset: DATA.length }))).length, 0);
    await source.describe(ID);
    assert.equal(source.openCalls(ID), 3);
    assert.equal(source.describeCalls(ID), 1);
    assert.equal(source.bytesServed(ID), 2 * DATA.length - 777);
  });

  it('fails like an image service: not found, not active, offset past the end', async () => {
    await assert.rejects(source.describe('missing'), (err) => code(err) === 'ERR_IMAGE_NOT_FOUND');
    await assert.rejects(source.open('missing'), (err) => code(err) === 'ERR_IMAGE_NOT_FOUND');
    assert.equal(source.describeCalls('missing'), 1);
    source.add({ id: 'q', data: DATA, status: 'saving' });
    await assert.rejects(source.describe('q'), (err) => code(err) === 'ERR_IMAGE_NOT_ACTIVE');
    await assert.rejects(source.open('q'), (err) => code(err) === 'ERR_IMAGE_NOT_ACTIVE');
    await assert.rejects(source.open(ID, { offset: DATA.length + 1 }), (err) => code(err) === 'ERR_IMAGE_SERVICE_UNAVAILABLE');
    await assert.rejects(source.describe('bad/id'), (err) => code(err) === 'ERR_INVALID_IMAGE_ID');
    assert.equal(source.remove(ID), true);
    await assert.rejects(source.describe(ID), (err) => code(err) === 'ERR_IMAGE_NOT_FOUND');
  });

  it('honours AbortSignal before and during the stream', async () => {
    await assert.rejects(source.describe(ID, { signal: AbortSignal.abort() }), (err) => code(err) === 'ERR_ABORTED');
    await assert.rejects(source.open(ID, { signal: AbortSignal.abort() }), (err) => code(err) === 'ERR_ABORTED');
    const controller = new AbortController();
    const stream = await source.open(ID, { signal: controller.signal });
    await assert.rejects(
      (async () => {
        for await (const chunk of stream) {
          assert.ok((chunk as Buffer).length > 0);
          controller.abort();
        }
      })(),
      (err) => code(err) === 'ERR_ABORTED',
    );
    assert.ok(source.bytesServed(ID) < DATA.length);
  });
});

describe('startFakeGlance: the reliability suite\'s knobs', () => {
  let glance: FakeGlance;
  before(async () => {
    glance = await startFakeGlance({ images: [{ id: ID, content: DATA }] });
  });
  after(async () => {
    await glance.close();
  });

  it('failStatus chooses the status failFirst answers', async () => {
    glance.setFaults(ID, { failFirst: 2, failStatus: 502 });
    assert.equal((await get(`${glance.url}/v2/images/${ID}`)).status, 502);
    assert.equal((await get(`${glance.url}/v2/images/${ID}/file`)).status, 502);
    assert.equal((await get(`${glance.url}/v2/images/${ID}`)).status, 200);
    assert.throws(() => { glance.setFaults(ID, { failStatus: 302 }); }, RangeError);
    assert.throws(() => { glance.setFaults(ID, { failStatus: 600 }); }, RangeError);
  });

  it('resetOffsets resets each successive file response at its own offset, then stops', async () => {
    glance.setFaults(ID, { resetOffsets: [1000, 70_000] });
    const first = await get(`${glance.url}/v2/images/${ID}/file`);
    assert.ok(first.interrupted);
    assert.equal(first.body.length, 1000);
    const second = await get(`${glance.url}/v2/images/${ID}/file`, { range: 'bytes=1000-' });
    assert.ok(second.interrupted);
    assert.equal(second.body.length, 70_000);
    const third = await get(`${glance.url}/v2/images/${ID}/file`, { range: 'bytes=71000-' });
    assert.ok(!third.interrupted);
    assert.ok(third.body.equals(DATA.subarray(71_000)));
    assert.throws(() => { glance.setFaults(ID, { resetOffsets: [-1] }); }, RangeError);
  });

  it('metadataOverrides serves hostile fields as given', async () => {
    glance.setFaults(ID, { metadataOverrides: { size: -5, os_hash_algo: 'sha3-1024' } });
    const doc = await json(`${glance.url}/v2/images/${ID}`);
    assert.equal(doc.size, -5);
    assert.equal(doc.os_hash_algo, 'sha3-1024');
    assert.equal(doc.id, ID);
    glance.setFaults(ID, {});
    assert.equal((await json(`${glance.url}/v2/images/${ID}`)).size, DATA.length);
  });
});
