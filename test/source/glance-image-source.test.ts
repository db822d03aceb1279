import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { ImageServiceUnavailableError, NotAuthorizedError } from '../../src/errors.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import type { GlanceImageSourceOptions } from '../../src/source/glance-image-source.js';
import { abortableSleep } from '../../src/abort.js';
import { backoffDelay, withRetry } from '../../src/source/retry.js';
import { generatedImageBytes, generatedImageChunks, startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';
import { makeTempDir, seededBytes } from '../helpers/tmp.js';
import { code } from '../helpers/error-code.js';

const IMAGE = '6f1f2bd0-2f5e-4a8e-9e43-7d3c1a5b9e01';
const DATA = seededBytes(3 * 1024 * 1024 + 17, 3);
const MiB = 1024 * 1024;

function causeCode(err: unknown): unknown {
  const cause = (err as { cause?: unknown }).cause;
  return (cause as { code?: unknown } | undefined)?.code;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('GlanceImageSource', () => {
  let glance: FakeGlance;

  before(async () => {
    glance = await startFakeGlance({
      images: [
        {
          id: IMAGE,
          content: DATA,
          name: 'cirros',
          diskFormat: 'qcow2',
          containerFormat: 'bare',
          virtualSize: 1073741824,
        },
      ],
    });
  });
  after(async () => {
    await glance.close();
  });
  beforeEach(() => {
    glance.addImage({ id: IMAGE, content: DATA, name: 'cirros', diskFormat: 'qcow2', virtualSize: 1073741824 });
    glance.resetStats();
  });

  const source = (options: Partial<GlanceImageSourceOptions> = {}): GlanceImageSource =>
    new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1, backoffMaxMs: 10, ...options });

  describe('describe', () => {
    it('maps the Glance v2 document to ImageInfo', async () => {
      const info = await source().describe(IMAGE);
      assert.deepEqual(info, {
        id: IMAGE,
        status: 'active',
        size: DATA.length,
        checksum: createHash('md5').update(DATA).digest('hex'),
        hashAlgo: 'sha512',
        hashValue: createHash('sha512').update(DATA).digest('hex'),
        diskFormat: 'qcow2',
        containerFormat: 'bare',
        name: 'cirros',
        virtualSize: 1073741824,
      });
      assert.deepEqual(glance.requests(IMAGE), { metadata: 1, file: 0 });
    });

    it('a 404 is ImageNotFoundError and is not retried', async () => {
      await assert.rejects(source().describe('no-such-image'), (err) => code(err) === 'ERR_IMAGE_NOT_FOUND');
      assert.equal(glance.requests('no-such-image').metadata, 1);
    });

    it('a 403 is NotAuthorizedError with statusCode 403', async () => {
      glance.addImage({ id: 'private', content: DATA, forbidden: true });
      await assert.rejects(
        source().describe('private'),
        (err) => err instanceof NotAuthorizedError && err.code === 'ERR_NOT_AUTHORIZED' && err.statusCode === 403,
      );
      assert.equal(glance.requests('private').metadata, 1);
    });

    it('an image that is not active is ERR_IMAGE_NOT_ACTIVE with its status', async () => {
      glance.setStatus(IMAGE, 'queued');
      await assert.rejects(
        source().describe(IMAGE),
        (err) => code(err) === 'ERR_IMAGE_NOT_ACTIVE' && (err as { status?: unknown }).status === 'queued',
      );
    });

    it('503 on the first calls is retried until it succeeds', async () => {
      glance.setFaults(IMAGE, { failFirst: 3 });
      const info = await source().describe(IMAGE);
      assert.equal(info.size, DATA.length);
      assert.equal(glance.requests(IMAGE).metadata, 4);
    });

    it('5xx forever is ERR_IMAGE_SERVICE_UNAVAILABLE after retries + 1 attempts', async () => {
      glance.setFaults(IMAGE, { failFirst: 1000 });
      await assert.rejects(
        source({ retries: 3 }).describe(IMAGE),
        (err) => err instanceof ImageServiceUnavailableError && err.code === 'ERR_IMAGE_SERVICE_UNAVAILABLE' && err.attempts === 4,
      );
      assert.equal(glance.requests(IMAGE).metadata, 4);
    });

    it('headers that never come hit the idle timeout, which is retried', async () => {
      glance.setFaults(IMAGE, { latencyMs: 5000 });
      await assert.rejects(
        source({ retries: 1, idleTimeoutMs: 100 }).describe(IMAGE),
        (err) => code(err) === 'ERR_IMAGE_SERVICE_UNAVAILABLE' && causeCode(err) === 'ERR_IDLE_TIMEOUT',
      );
      assert.equal(glance.requests(IMAGE).metadata, 2);
    });

    it('a refused connection is retried, then ERR_IMAGE_SERVICE_UNAVAILABLE', async () => {
      const dead = await startFakeGlance();
      const endpoint = dead.url;
      await dead.close();
      await assert.rejects(
        new GlanceImageSource({ endpoint, retries: 2, backoffBaseMs: 1 }).describe(IMAGE),
        (err) =>
          err instanceof ImageServiceUnavailableError && err.attempts === 3 && causeCode(err) === 'ECONNREFUSED',
      );
    });

    it('a body that is not JSON is ERR_IMAGE_SERVICE_UNAVAILABLE without retry', async () => {
      // A real server that answers garbage; the fake only speaks proper Glance.
      let hits = 0;
      const server = createServer((_req, res) => {
        hits += 1;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"status": "act');
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const { port } = server.address() as AddressInfo;
        await assert.rejects(
          new GlanceImageSource({ endpoint: `http://127.0.0.1:${port}`, backoffBaseMs: 1 }).describe(IMAGE),
          (err) => err instanceof ImageServiceUnavailableError && err.attempts === 1,
        );
        assert.equal(hits, 1);
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });

    it('an aborted signal rejects with ERR_ABORTED, before or during the call', async () => {
      await assert.rejects(source().describe(IMAGE, { signal: AbortSignal.abort() }), (err) => code(err) === 'ERR_ABORTED');
      glance.setFaults(IMAGE, { latencyMs: 10_000 });
      const controller = new AbortController();
      const pending = source().describe(IMAGE, { signal: controller.signal });
      setImmediate(() => {
        controller.abort();
      });
      await assert.rejects(pending, (err) => code(err) === 'ERR_ABORTED');
    });

    it('an abort during the backoff wait rejects with ERR_ABORTED', async () => {
      glance.setFaults(IMAGE, { failFirst: 1000 });
      const controller = new AbortController();
      const pending = source({ backoffBaseMs: 60_000, backoffMaxMs: 60_000, random: () => 0.99 }).describe(IMAGE, {
        signal: controller.signal,
      });
      while (glance.requests(IMAGE).metadata < 1) await delay(5);
      controller.abort();
      await assert.rejects(pending, (err) => code(err) === 'ERR_ABORTED');
      assert.equal(glance.requests(IMAGE).metadata, 1);
    });

    it('rejects invalid image ids before any request', async () => {
      await assert.rejects(source().describe('../etc/passwd'), (err) => code(err) === 'ERR_INVALID_IMAGE_ID');
      assert.equal(glance.totalRequests, 0);
    });
  });

  describe('tokens', () => {
    let secured: FakeGlance;
    before(async () => {
      secured = await startFakeGlance({ token: 'tok-123', images: [{ id: IMAGE, content: DATA }] });
    });
    after(async () => {
      await secured.close();
    });

    it('sends the token as X-Auth-Token, from a string or an async function', async () => {
      const viaString = new GlanceImageSource({ endpoint: secured.url, token: 'tok-123' });
      assert.equal((await viaString.describe(IMAGE)).size, DATA.length);
      const viaFunction = new GlanceImageSource({ endpoint: secured.url, token: () => Promise.resolve('tok-123') });
      assert.deepEqual(await readAll(await viaFunction.open(IMAGE)), DATA);
    });

    it('no token or a wrong one is NotAuthorizedError 401, not retried', async () => {
      secured.resetStats();
      for (const token of [undefined, 'wrong']) {
        const src = new GlanceImageSource({ endpoint: secured.url, token, backoffBaseMs: 1 });
        await assert.rejects(src.describe(IMAGE), (err) => err instanceof NotAuthorizedError && err.statusCode === 401);
        await assert.rejects(src.open(IMAGE), (err) => err instanceof NotAuthorizedError && err.statusCode === 401);
      }
      assert.deepEqual(secured.requests(IMAGE), { metadata: 2, file: 2 });
    });
  });

  // Both transports run under the same download state machine: every behaviour is pinned for each.
  for (const transport of ['auto', 'node-http'] as const) describe(`open (transport ${transport})`, () => {
    const openSource = (options: Partial<GlanceImageSourceOptions> = {}): GlanceImageSource => source({ transport, ...options });

    it('streams the whole image', async () => {
      const stream = await openSource().open(IMAGE);
      assert.equal(stream.readableObjectMode, false);
      assert.deepEqual(await readAll(stream), DATA);
      assert.equal(glance.requests(IMAGE).file, 1);
      assert.equal(glance.log[0]?.range, undefined);
    });

    it('pipes into a file', async () => {
      const { dir, cleanup } = await makeTempDir();
      try {
        const file = path.join(dir, IMAGE);
        await pipeline(await openSource().open(IMAGE), createWriteStream(file));
        assert.deepEqual(await readFile(file), DATA);
      } finally {
        await cleanup();
      }
    });

    it('starts at offset with a Range request', async () => {
      const stream = await openSource().open(IMAGE, { offset: 1000 });
      assert.deepEqual(await readAll(stream), DATA.subarray(1000));
      assert.deepEqual(
        glance.log.map((r) => [r.kind, r.range, r.status]),
        [['file', 'bytes=1000-', 206]],
      );
    });

    it('starts at offset even when the server ignores Range', async () => {
      glance.setFaults(IMAGE, { honourRange: false });
      assert.deepEqual(await readAll(await openSource().open(IMAGE, { offset: 123_457 })), DATA.subarray(123_457));
    });

    it('an offset equal to the size is an empty stream; past the size a non-retried error', async () => {
      assert.equal((await readAll(await openSource().open(IMAGE, { offset: DATA.length }))).length, 0);
      glance.resetStats();
      await assert.rejects(
        openSource().open(IMAGE, { offset: DATA.length + 1 }),
        (err) => err instanceof ImageServiceUnavailableError && err.attempts === 1,
      );
      // The 416 and, as Glance's 416 does not say where the image ends, one probe of the byte before.
      assert.equal(glance.requests(IMAGE).file, 2);
      await assert.rejects(openSource().open(IMAGE, { offset: -1 }), (err) => code(err) === 'ERR_INVALID_CONFIG');
    });

    it('maps 404, 403 and no data (204) to typed errors', async () => {
      await assert.rejects(openSource().open('missing'), (err) => code(err) === 'ERR_IMAGE_NOT_FOUND');
      glance.addImage({ id: 'private', content: DATA, forbidden: true });
      await assert.rejects(openSource().open('private'), (err) => err instanceof NotAuthorizedError && err.statusCode === 403);
      glance.setStatus(IMAGE, 'saving');
      await assert.rejects(openSource().open(IMAGE), (err) => code(err) === 'ERR_IMAGE_NOT_ACTIVE');
    });

    it('503 on the first calls is retried before the stream is returned', async () => {
      glance.setFaults(IMAGE, { failFirst: 2 });
      assert.deepEqual(await readAll(await openSource().open(IMAGE)), DATA);
      assert.equal(glance.requests(IMAGE).file, 3);
    });

    it('5xx forever rejects open with ERR_IMAGE_SERVICE_UNAVAILABLE after retries + 1 attempts', async () => {
      glance.setFaults(IMAGE, { failFirst: 1000 });
      await assert.rejects(
        openSource({ retries: 2 }).open(IMAGE),
        (err) => err instanceof ImageServiceUnavailableError && err.attempts === 3,
      );
      assert.equal(glance.requests(IMAGE).file, 3);
    });

    it('a reset mid-body is resumed with Range: one continuous, identical stream', async () => {
      glance.setFaults(IMAGE, { resetAfterBytes: MiB, resets: 1 });
      assert.deepEqual(await readAll(await openSource().open(IMAGE)), DATA);
      const files = glance.log.filter((r) => r.kind === 'file');
      assert.equal(files.length, 2);
      assert.equal(files[0]?.range, undefined);
      assert.match(files[1]?.range ?? '', /^bytes=\d+-$/);
      assert.equal(files[1]?.status, 206);
      assert.ok(glance.bytesServed(IMAGE) <= DATA.length + MiB);
    });

    it('a reset after an offset resumes from offset + delivered', async () => {
      glance.setFaults(IMAGE, { resetAfterBytes: 300_000, resets: 1 });
      assert.deepEqual(await readAll(await openSource().open(IMAGE, { offset: 5000 })), DATA.subarray(5000));
      const ranges = glance.log.filter((r) => r.kind === 'file').map((r) => r.range);
      assert.equal(ranges.length, 2);
      const resumedAt = Number(/^bytes=(\d+)-$/.exec(ranges[1] ?? '')?.[1]);
      assert.ok(resumedAt > 5000 && resumedAt <= 305_000);
    });

    it('when the server ignores Range, a reset restarts and skips what was delivered', async () => {
      glance.setFaults(IMAGE, { resetAfterBytes: MiB, resets: 1, honourRange: false });
      assert.deepEqual(await readAll(await openSource().open(IMAGE)), DATA);
      const files = glance.log.filter((r) => r.kind === 'file');
      assert.equal(files.length, 2);
      assert.equal(files[1]?.status, 200);
    });

    it('more resets than retries still complete when each attempt makes progress', async () => {
      glance.setFaults(IMAGE, { resetAfterBytes: 256 * 1024, resets: 6 });
      assert.deepEqual(await readAll(await openSource({ retries: 1 }).open(IMAGE)), DATA);
      assert.equal(glance.requests(IMAGE).file, 7);
    });

    it('resets without progress give up with ERR_IMAGE_SERVICE_UNAVAILABLE on the stream', async () => {
      glance.setFaults(IMAGE, { resetAfterBytes: 0, resets: 1000 });
      await assert.rejects(
        async () => readAll(await openSource({ retries: 2 }).open(IMAGE)),
        (err) => err instanceof ImageServiceUnavailableError && err.attempts === 3,
      );
    });

    it('a stalled body hits the idle timeout and the download completes on retry', async () => {
      glance.setFaults(IMAGE, { stallAfterBytes: 512 * 1024, stalls: 1 });
      assert.deepEqual(await readAll(await openSource({ idleTimeoutMs: 200 }).open(IMAGE)), DATA);
      const files = glance.log.filter((r) => r.kind === 'file');
      assert.equal(files.length, 2);
      assert.match(files[1]?.range ?? '', /^bytes=\d+-$/);
    });

    it('a body that stalls every time fails the stream with the idle timeout as cause', async () => {
      glance.setFaults(IMAGE, { stallAfterBytes: 0, stalls: 1000 });
      const stream = await openSource({ idleTimeoutMs: 100, retries: 1 }).open(IMAGE);
      await assert.rejects(
        readAll(stream),
        (err) => code(err) === 'ERR_IMAGE_SERVICE_UNAVAILABLE' && causeCode(err) === 'ERR_IDLE_TIMEOUT',
      );
    });

    it('an abort mid-body errors the stream with ERR_ABORTED and closes the request', async () => {
      glance.setFaults(IMAGE, { throttleBytesPerSecond: 256 * 1024 });
      const controller = new AbortController();
      const stream = await openSource().open(IMAGE, { signal: controller.signal });
      const chunks: Buffer[] = [];
      await assert.rejects(
        (async () => {
          for await (const chunk of stream) {
            chunks.push(chunk as Buffer);
            controller.abort();
          }
        })(),
        (err) => code(err) === 'ERR_ABORTED',
      );
      assert.ok(chunks.length >= 1);
      assert.ok(stream.destroyed);
      await assert.rejects(openSource().open(IMAGE, { signal: AbortSignal.abort() }), (err) => code(err) === 'ERR_ABORTED');
    });

    it('respects backpressure: an unread stream does not pull the whole image', async () => {
      const big = { size: 64 * MiB, seed: 9 };
      glance.addImage({ id: 'big', content: big, checksum: 'x', hashValue: 'y' });
      const stream = await openSource().open('big');
      try {
        while (stream.readableLength < stream.readableHighWaterMark) await delay(5);
        await delay(100);
        assert.ok(glance.bytesServed('big') < 32 * MiB, `served ${glance.bytesServed('big')} bytes to a reader that read none`);
        assert.ok(stream.readableLength < 4 * MiB);
      } finally {
        stream.destroy();
      }
    });

    it('streams generated content whose digest matches the published one', async () => {
      const spec = { size: 24 * MiB + 5, seed: 42 };
      glance.addImage({ id: 'generated', content: spec });
      const src = openSource();
      const info = await src.describe('generated');
      const hash = createHash('sha512');
      let length = 0;
      for await (const chunk of await src.open('generated')) {
        hash.update(chunk as Buffer);
        length += (chunk as Buffer).length;
      }
      assert.equal(length, spec.size);
      assert.equal(hash.digest('hex'), info.hashValue);
      const expected = createHash('sha512');
      for (const chunk of generatedImageChunks(spec)) expected.update(chunk);
      assert.equal(expected.digest('hex'), info.hashValue);
    });

    it('resumes generated content byte-exactly across several resets', async () => {
      const spec = { size: 5 * MiB + 999, seed: 5 };
      glance.addImage({ id: 'gen-reset', content: spec, faults: { resetAfterBytes: 700_001, resets: 3 } });
      assert.ok((await readAll(await openSource().open('gen-reset'))).equals(generatedImageBytes(spec)));
      assert.equal(glance.requests('gen-reset').file, 4);
    });
  });

  describe('options', () => {
    it('rejects bad options with ERR_INVALID_CONFIG naming the option', () => {
      const bad: [string, Record<string, unknown>][] = [
        ['endpoint', { endpoint: 'ftp://glance' }],
        ['endpoint', { endpoint: 'not a url' }],
        ['endpoint', { endpoint: 'http://glance:9292/?x=1' }],
        ['retries', { endpoint: 'http://glance', retries: -1 }],
        ['connectTimeoutMs', { endpoint: 'http://glance', connectTimeoutMs: 0 }],
        ['idleTimeoutMs', { endpoint: 'http://glance', idleTimeoutMs: 1.5 }],
        ['backoffMaxMs', { endpoint: 'http://glance', backoffBaseMs: 100, backoffMaxMs: 50 }],
        ['token', { endpoint: 'http://glance', token: 42 }],
        ['token', { endpoint: 'http://glance', token: 'abc\r\nX-Injected: 1' }],
        ['transport', { endpoint: 'http://glance', transport: 'http2' }],
        ['ca', { endpoint: 'http://glance', ca: 'PEM' }],
        ['agent', { endpoint: 'http://glance', agent: {} }],
        ['retrys', { endpoint: 'http://glance', retrys: 3 }],
      ];
      for (const [option, options] of bad) {
        assert.throws(
          () => new GlanceImageSource(options as unknown as GlanceImageSourceOptions),
          (err) => code(err) === 'ERR_INVALID_CONFIG' && (err as { option?: unknown }).option === option,
          option,
        );
      }
    });

    it('a token callback returning a value that would break its header line is ERR_INVALID_CONFIG, not retried', async () => {
      const src = source({ token: () => 'good\nX-Injected: 1' });
      await assert.rejects(src.describe(IMAGE), (err) => code(err) === 'ERR_INVALID_CONFIG' && !(err as Error).message.includes('Injected'));
      await assert.rejects(src.open(IMAGE), (err) => code(err) === 'ERR_INVALID_CONFIG');
      assert.equal(glance.totalRequests, 0);
    });

    it('accepts a path prefix and a trailing slash', () => {
      assert.equal(new GlanceImageSource({ endpoint: 'https://cloud.example/image/' }).endpoint, 'https://cloud.example/image');
    });
  });
});

describe('retry helpers', () => {
  it('backoffDelay is full jitter under an exponential cap', () => {
    const options = { baseMs: 100, maxMs: 1000 };
    assert.equal(backoffDelay(1, { ...options, random: () => 0 }), 0);
    assert.equal(backoffDelay(1, { ...options, random: () => 0.5 }), 50);
    assert.equal(backoffDelay(3, { ...options, random: () => 0.5 }), 200);
    assert.equal(backoffDelay(10, { ...options, random: () => 0.999 }), 999);
    assert.equal(backoffDelay(5000, { ...options, random: () => 0.5 }), 500);
    assert.equal(backoffDelay(2, { ...options, random: () => Number.NaN }), 0);
  });

  it('abortableSleep rejects with ERR_ABORTED when its signal fires', async () => {
    await assert.rejects(abortableSleep(10, AbortSignal.abort()), (err) => code(err) === 'ERR_ABORTED');
    const controller = new AbortController();
    const pending = abortableSleep(60_000, controller.signal, 'Retry wait', 'img');
    controller.abort();
    await assert.rejects(pending, (err) => code(err) === 'ERR_ABORTED');
  });

  it('withRetry retries only what the classifier allows, and maps exhaustion', async () => {
    let calls = 0;
    const value = await withRetry(
      (attempt) => {
        calls += 1;
        return attempt < 3 ? Promise.reject(new Error('transient')) : Promise.resolve(attempt);
      },
      { retries: 5, baseMs: 0, maxMs: 0, isRetryable: () => true },
    );
    assert.equal(value, 3);
    assert.equal(calls, 3);

    const fatal = new Error('fatal');
    await assert.rejects(
      withRetry(() => Promise.reject(fatal), { retries: 5, baseMs: 0, maxMs: 0, isRetryable: (e) => e !== fatal }),
      (err) => err === fatal,
    );

    const seen: number[] = [];
    await assert.rejects(
      withRetry(() => Promise.reject(new Error('down')), {
        retries: 2,
        baseMs: 0,
        maxMs: 0,
        isRetryable: () => true,
        onRetry: (_e, attempt) => seen.push(attempt),
        onExhausted: (last, attempts) => new ImageServiceUnavailableError('img', attempts, last),
      }),
      (err) => err instanceof ImageServiceUnavailableError && err.attempts === 3,
    );
    assert.deepEqual(seen, [1, 2]);
  });
});
