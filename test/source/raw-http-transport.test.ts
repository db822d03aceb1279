// GlanceImageSource.openReader over the raw HTTP/1.1 client (`http:` endpoints): the body lands
// straight in the caller's buffers, and every recovery the node:http path has (Range resume,
// restart-and-skip, retries counted the same way, typed statuses, idle timeout, abort) holds.
// Responses it does not read are handed to node:http, which reads or rejects them.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { ImageServiceUnavailableError, NotAuthorizedError } from '../../src/errors.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import type { GlanceImageSourceOptions } from '../../src/source/glance-image-source.js';
import type { ImageReader } from '../../src/source/image-reader.js';
import { startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';
import { seededBytes } from '../helpers/tmp.js';
import { code } from '../helpers/error-code.js';

const IMAGE = '3c9e51d2-7a40-4b8f-8e1d-5f2a6c0b9d34';
const MiB = 1024 * 1024;
const DATA = seededBytes(3 * MiB + 4097, 13);
const TOKEN = 'gAAAAAB-keystone-token';

function causeCode(err: unknown): unknown {
  return ((err as { cause?: { code?: unknown } }).cause ?? {}).code;
}

/** Reads to the end in `size`-byte buffers; the byte counts of the reads come back too. */
async function readAll(reader: ImageReader, size = MiB): Promise<{ bytes: Buffer; counts: number[] }> {
  const parts: Buffer[] = [];
  const counts: number[] = [];
  for (;;) {
    const into = Buffer.alloc(size);
    const n = await reader.read(into);
    if (n === 0) return { bytes: Buffer.concat(parts), counts };
    counts.push(n);
    parts.push(into.subarray(0, n));
  }
}

/** A server on loopback; resolves with its base URL. */
async function listen(server: Server | net.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function stop(server: Server | net.Server): Promise<void> {
  if ('closeAllConnections' in server) server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

/** A TCP server answering each connection with `answer(connection number)` once the request is in. */
async function rawServer(answer: (socket: net.Socket, index: number) => void): Promise<{ url: string; server: net.Server; connections: () => number }> {
  let count = 0;
  const server = net.createServer((socket) => {
    const index = count++;
    let request = '';
    socket.on('error', () => undefined);
    socket.on('data', (data) => {
      request += data.toString('latin1');
      if (request.includes('\r\n\r\n')) answer(socket, index);
    });
  });
  return { url: await listen(server), server, connections: () => count };
}

describe('GlanceImageSource.openReader over the raw HTTP client', () => {
  let glance: FakeGlance;

  before(async () => {
    glance = await startFakeGlance({ images: [{ id: IMAGE, content: DATA }], token: TOKEN });
  });
  after(async () => {
    await glance.close();
  });
  beforeEach(() => {
    glance.setFaults(IMAGE, {});
    glance.resetStats();
  });

  const source = (options: Partial<GlanceImageSourceOptions> = {}): GlanceImageSource =>
    new GlanceImageSource({ endpoint: glance.url, token: TOKEN, backoffBaseMs: 1, backoffMaxMs: 10, ...options });

  it('fills each buffer it is given, byte for byte, in one request', async () => {
    const { bytes, counts } = await readAll(await source().openReader(IMAGE));
    assert.ok(bytes.equals(DATA));
    assert.deepEqual(counts, [MiB, MiB, MiB, 4097]);
    assert.equal(glance.requests(IMAGE).file, 1);
  });

  it('starts at an offset with Range: bytes=N-', async () => {
    assert.ok((await readAll(await source().openReader(IMAGE, { offset: 12_345 }))).bytes.equals(DATA.subarray(12_345)));
    assert.deepEqual(glance.log.map((r) => [r.range, r.status]), [['bytes=12345-', 206]]);
  });

  it('a connection closed mid-body is resumed with Range from the exact byte reached', async () => {
    glance.setFaults(IMAGE, { resetAfterBytes: MiB + 5, resets: 1 });
    assert.ok((await readAll(await source().openReader(IMAGE), 700_000)).bytes.equals(DATA));
    assert.deepEqual(glance.log.map((r) => [r.range, r.status]), [[undefined, 200], [`bytes=${MiB + 5}-`, 206]]);
  });

  it('when the server ignores Range, a cut is restarted from zero and the delivered bytes skipped', async () => {
    glance.setFaults(IMAGE, { resetAfterBytes: MiB + 5, resets: 1, honourRange: false });
    assert.ok((await readAll(await source().openReader(IMAGE), 700_000)).bytes.equals(DATA));
    assert.deepEqual(glance.log.map((r) => [r.range, r.status]), [[undefined, 200], [`bytes=${MiB + 5}-`, 200]]);
  });

  it('resets that make progress are not counted against the retries; resets that do not are', async () => {
    glance.setFaults(IMAGE, { resetAfterBytes: 300_000, resets: 6 });
    assert.ok((await readAll(await source({ retries: 1 }).openReader(IMAGE))).bytes.equals(DATA));
    assert.equal(glance.requests(IMAGE).file, 7);
    glance.setFaults(IMAGE, { resetAfterBytes: 0, resets: 100 });
    await assert.rejects(source({ retries: 2 }).openReader(IMAGE).then(readAll), (err) => err instanceof ImageServiceUnavailableError && err.attempts === 3);
  });

  it('401, 403, 404 and 204 are the typed errors, without retry', async () => {
    await assert.rejects(source({ token: 'expired' }).openReader(IMAGE), (err) => err instanceof NotAuthorizedError && err.statusCode === 401);
    glance.addImage({ id: 'private', content: DATA, forbidden: true });
    await assert.rejects(source().openReader('private'), (err) => err instanceof NotAuthorizedError && err.statusCode === 403);
    await assert.rejects(source().openReader('missing'), (err) => code(err) === 'ERR_IMAGE_NOT_FOUND');
    glance.addImage({ id: 'queued', content: DATA, status: 'queued' });
    await assert.rejects(source().openReader('queued'), (err) => code(err) === 'ERR_IMAGE_NOT_ACTIVE');
    assert.equal(glance.totalRequests, 4);
  });

  it('5xx is retried with backoff, and after retries + 1 attempts is ERR_IMAGE_SERVICE_UNAVAILABLE', async () => {
    glance.setFaults(IMAGE, { failFirst: 2 });
    assert.ok((await readAll(await source().openReader(IMAGE))).bytes.equals(DATA));
    assert.equal(glance.requests(IMAGE).file, 3);
    glance.resetStats();
    glance.setFaults(IMAGE, { failFirst: 100 });
    await assert.rejects(source({ retries: 2 }).openReader(IMAGE), (err) => err instanceof ImageServiceUnavailableError && err.attempts === 3);
    assert.equal(glance.requests(IMAGE).file, 3);
  });

  it('a stalled body hits the idle timeout, and the retry resumes with Range', async () => {
    glance.setFaults(IMAGE, { stallAfterBytes: 512 * 1024, stalls: 1 });
    assert.ok((await readAll(await source({ idleTimeoutMs: 150 }).openReader(IMAGE))).bytes.equals(DATA));
    assert.deepEqual(glance.log.map((r) => r.range), [undefined, `bytes=${512 * 1024}-`]);
    glance.setFaults(IMAGE, { stallAfterBytes: 0, stalls: 100 });
    await assert.rejects(
      source({ idleTimeoutMs: 100, retries: 1 }).openReader(IMAGE).then(readAll),
      (err) => code(err) === 'ERR_IMAGE_SERVICE_UNAVAILABLE' && causeCode(err) === 'ERR_IDLE_TIMEOUT',
    );
  });

  it('a consumer that pauses longer than the idle timeout is not taken for a stalled server', async () => {
    const reader = await source({ idleTimeoutMs: 100 }).openReader(IMAGE);
    const first = Buffer.alloc(MiB);
    assert.equal(await reader.read(first), MiB);
    await delay(400);
    const rest = await readAll(reader);
    assert.ok(Buffer.concat([first, rest.bytes]).equals(DATA));
    assert.equal(glance.requests(IMAGE).file, 1);
  });

  it('an abort rejects the pending read with ERR_ABORTED and closes the connection', async () => {
    glance.setFaults(IMAGE, { throttleBytesPerSecond: 512 * 1024 });
    const controller = new AbortController();
    const reader = await source().openReader(IMAGE, { signal: controller.signal });
    const pending = reader.read(Buffer.alloc(DATA.length));
    setTimeout(() => {
      controller.abort();
    }, 100);
    await assert.rejects(pending, (err) => code(err) === 'ERR_ABORTED');
    await assert.rejects(reader.read(Buffer.alloc(10)), (err) => code(err) === 'ERR_ABORTED');
    const served = glance.bytesServed(IMAGE);
    await delay(300);
    assert.ok(glance.bytesServed(IMAGE) - served <= 256 * 1024, 'the server stopped sending');
    assert.ok(served < DATA.length);
    await assert.rejects(source().openReader(IMAGE, { signal: AbortSignal.abort() }), (err) => code(err) === 'ERR_ABORTED');
  });

  it('an offset equal to the size is an empty image (416 at the end)', async () => {
    const reader = await source().openReader(IMAGE, { offset: DATA.length });
    assert.equal(await reader.read(Buffer.alloc(10)), 0);
  });
});

describe('the raw HTTP client on the wire', () => {
  const servers: (Server | net.Server)[] = [];
  after(async () => {
    await Promise.all(servers.map(stop));
  });
  const source = (endpoint: string, options: Partial<GlanceImageSourceOptions> = {}): GlanceImageSource =>
    new GlanceImageSource({ endpoint, backoffBaseMs: 1, backoffMaxMs: 10, ...options });

  it('sends GET with Host, X-Auth-Token, Range and Connection: close (node:http only with transport node-http)', async () => {
    const seen: IncomingHttpHeaders[] = [];
    const server = createServer((req, res) => {
      seen.push(req.headers);
      res.writeHead(206, { 'content-length': 3, 'content-range': 'bytes 7-9/10' }).end('xyz');
    });
    servers.push(server);
    const url = await listen(server);
    assert.equal((await readAll(await source(url, { token: TOKEN }).openReader(IMAGE, { offset: 7 }))).bytes.toString(), 'xyz');
    await readAll(await source(url, { token: TOKEN, transport: 'node-http' }).openReader(IMAGE, { offset: 7 }));
    const wanted = ['connection', 'host', 'x-auth-token', 'range', 'accept'];
    const picked = seen.map((headers) => Object.fromEntries(wanted.map((name) => [name, headers[name]])));
    assert.deepEqual(picked[0], { connection: 'close', host: url.slice('http://'.length), 'x-auth-token': TOKEN, range: 'bytes=7-', accept: 'application/octet-stream' });
    assert.equal(picked.length, 2);
    assert.notEqual(picked[1]?.connection, 'close');
  });

  it('a chunked body is read through node:http for that attempt, and the source keeps to node:http', async () => {
    const seen: (string | undefined)[] = [];
    const server = createServer((req, res) => {
      seen.push(req.headers.connection);
      res.writeHead(200);
      res.write(DATA.subarray(0, 1000));
      res.end(DATA.subarray(1000));
    });
    servers.push(server);
    const glance = source(await listen(server));
    assert.ok((await readAll(await glance.openReader(IMAGE))).bytes.equals(DATA));
    assert.equal(seen.length, 2, 'asked again through node:http');
    assert.equal(seen[0], 'close');
    assert.ok((await readAll(await glance.openReader(IMAGE))).bytes.equals(DATA));
    assert.equal(seen.length, 3, 'later downloads go straight to node:http');
    assert.notEqual(seen[2], 'close');
  });

  it('a body without Content-Length runs to the end of the connection (HTTP/1.0)', async () => {
    const { url, server } = await rawServer((socket) => {
      socket.end(Buffer.concat([Buffer.from('HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n'), DATA]));
    });
    servers.push(server);
    assert.ok((await readAll(await source(url).openReader(IMAGE), 777_777)).bytes.equals(DATA));
  });

  it('interim 1xx responses are skipped, and bytes past Content-Length never reach the caller', async () => {
    const { url, server } = await rawServer((socket) => {
      socket.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n');
      socket.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloGARBAGE');
    });
    servers.push(server);
    const reader = await source(url).openReader(IMAGE);
    const into = Buffer.alloc(64, '.');
    assert.equal(await reader.read(into), 5);
    assert.equal(into.toString('latin1', 0, 8), 'hello...');
    assert.equal(await reader.read(into), 0);
  });

  it('a response head over 16 KiB is rejected, not retried, as node:http rejects it', async () => {
    const { url, server, connections } = await rawServer((socket) => {
      socket.end(`HTTP/1.1 200 OK\r\nX-Padding: ${'x'.repeat(20 * 1024)}\r\nContent-Length: 1\r\n\r\nz`);
    });
    servers.push(server);
    await assert.rejects(
      source(url).openReader(IMAGE),
      (err) => err instanceof ImageServiceUnavailableError && err.attempts === 1 && causeCode(err) === 'ERR_HTTP_HEADER_OVERFLOW',
    );
    assert.equal(connections(), 1);
    await assert.rejects(source(url, { transport: 'node-http' }).openReader(IMAGE), (err) => err instanceof ImageServiceUnavailableError && err.attempts === 1);
  });

  it('a head it does not read (bare LF line ends) gets node:http verdict', async () => {
    const { url, server, connections } = await rawServer((socket) => {
      socket.end('HTTP/1.1 200 OK\nContent-Length: 5\n\nhello');
    });
    servers.push(server);
    await assert.rejects(source(url).openReader(IMAGE), (err) => err instanceof ImageServiceUnavailableError && causeCode(err) === 'HPE_CR_EXPECTED');
    assert.equal(connections(), 2, 'one raw attempt handed over, one through node:http');
  });

  it('a connection dropped before the head or reset mid-body is retried and resumed', async () => {
    const { url, server, connections } = await rawServer((socket, index) => {
      if (index === 0) {
        socket.destroy();
      } else if (index === 1) {
        socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${DATA.length}\r\n\r\n`), DATA.subarray(0, 100_000)]));
        setTimeout(() => socket.resetAndDestroy(), 50);
      } else {
        socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 206 Partial Content\r\nContent-Length: ${DATA.length - 100_000}\r\nContent-Range: bytes 100000-${DATA.length - 1}/${DATA.length}\r\n\r\n`), DATA.subarray(100_000)]));
      }
    });
    servers.push(server);
    assert.ok((await readAll(await source(url).openReader(IMAGE))).bytes.equals(DATA));
    assert.equal(connections(), 3);
  });

  it('a refused connection is retried, then ERR_IMAGE_SERVICE_UNAVAILABLE', async () => {
    const probe = net.createServer();
    const url = await listen(probe);
    await stop(probe);
    await assert.rejects(source(url, { retries: 2 }).openReader(IMAGE), (err) => err instanceof ImageServiceUnavailableError && err.attempts === 3 && causeCode(err) === 'ECONNREFUSED');
  });
});
