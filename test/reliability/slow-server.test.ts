// Issue 13, class 2: a server that keeps the connection busy without answering. The idle timeout
// fires only on silence, so a byte every 200 ms (in the head or the body), endless `1xx` interim
// heads, or a metadata answer trickled through node:http would hold a download (and the image
// lock with it) for ever. The head deadline, the metadata deadline and the minimum transfer rate
// end each in ImageServiceUnavailableError after the retries, resuming with Range in between; a
// server that is slow but above the floor, and a consumer that is slow itself, still complete.
// Small option values keep each case to a few seconds; a hang guard fails a case that does not end.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type net from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { ImageServiceUnavailableError, isImageCacheError } from '../../src/errors.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import type { GlanceImageSourceOptions } from '../../src/source/glance-image-source.js';
import type { ImageReader } from '../../src/source/image-reader.js';
import { makeMemoryTempDir, seededBytes } from '../helpers/tmp.js';
import { hangGuard, headerOf, startLoopback, trickle } from './loopback.js';
import type { LoopbackServer } from './loopback.js';

const IMAGE = '0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a';
const TRANSPORTS = ['auto', 'node-http'] as const;
/** Far above what any case needs with the small options below; far below "for ever". */
const HANG_MS = 15_000;
const BYTE_EVERY_MS = 200;

const RETRIES = 2;
const WINDOW_MS = 400;

/** Small deadlines; the idle timeout stays long, as it would not help against a trickle. */
const TIGHT: Partial<GlanceImageSourceOptions> = {
  retries: RETRIES,
  backoffBaseMs: 1,
  backoffMaxMs: 5,
  idleTimeoutMs: 30_000,
  headTimeoutMs: 600,
  metadataTimeoutMs: 600,
  minBytesPerSecond: 200,
  minSpeedWindowMs: WINDOW_MS,
};

function causeCode(err: unknown): unknown {
  return ((err as { cause?: { code?: unknown } }).cause ?? {}).code;
}

/** Reads to the end in `size`-byte buffers, waiting `pauseMs` between reads (a busy consumer). */
async function readAll(reader: ImageReader, size: number, pauseMs = 0): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (;;) {
    const into = Buffer.alloc(size);
    const n = await reader.read(into);
    if (n === 0) return Buffer.concat(parts);
    parts.push(into.subarray(0, n));
    if (pauseMs > 0) await delay(pauseMs);
  }
}

/** Writes a response head at once and its body a byte every 200 ms. */
function trickledBody(socket: net.Socket, head: string, body: Buffer): void {
  socket.write(head);
  void trickle(socket, body, BYTE_EVERY_MS);
}

/** Answers a request for `body` (honouring `Range: bytes=N-`) with the body trickled. */
function trickledRange(socket: net.Socket, head: string, body: Buffer): void {
  const from = Number(/bytes=(\d+)-/.exec(headerOf(head, 'range') ?? '')?.[1] ?? 0);
  const status = from > 0 ? `206 Partial Content\r\nContent-Range: bytes ${from}-${body.length - 1}/${body.length}` : '200 OK';
  trickledBody(socket, `HTTP/1.1 ${status}\r\nContent-Length: ${body.length - from}\r\n\r\n`, body.subarray(from));
}

/** Runs `body` against a server answering with `answer`, then closes the server. */
async function withServer(answer: (socket: net.Socket, head: string, index: number) => void, body: (server: LoopbackServer) => Promise<void>): Promise<void> {
  const server = await startLoopback(answer);
  try {
    await body(server);
  } finally {
    await server.close();
  }
}

function isUnavailableFrom(code: string) {
  return (err: unknown): boolean => err instanceof ImageServiceUnavailableError && causeCode(err) === code;
}

for (const transport of TRANSPORTS) {
  describe(`class 2, transport '${transport}': a trickling server has a deadline`, () => {
    const source = (url: string, options: Partial<GlanceImageSourceOptions> = {}): GlanceImageSource =>
      new GlanceImageSource({ endpoint: url, transport, ...TIGHT, ...options });

    it('a body at 1 byte per 200 ms ends in ERR_IMAGE_SERVICE_UNAVAILABLE (too slow), resuming with Range in between', async () => {
      const body = seededBytes(4096, 1);
      await withServer(
        (socket, head) => {
          trickledRange(socket, head, body);
        },
        async (server) => {
          const reader = await source(server.url).openReader(IMAGE);
          // One-byte reads: every trickled byte is delivered, so a resume has somewhere to start.
          await assert.rejects(hangGuard(readAll(reader, 1), HANG_MS, 'the trickled body'), isUnavailableFrom('ERR_TRANSFER_TOO_SLOW'));
          const heads = server.connections.map((c) => c.bytes);
          assert.equal(heads.length, RETRIES + 1, 'one request per short window');
          assert.equal(headerOf(heads[0] ?? '', 'range'), undefined);
          for (const later of heads.slice(1)) assert.match(headerOf(later, 'range') ?? '', /^bytes=[1-9]\d*-$/);
        },
      );
    });

    it('a server that trickles and resets before each window closes gains nothing by it', async () => {
      const body = seededBytes(4096, 2);
      await withServer(
        (socket, head) => {
          trickledRange(socket, head, body);
          // Two bytes, then a reset: each attempt "makes progress", never enough of it.
          setTimeout(() => socket.resetAndDestroy(), BYTE_EVERY_MS * 1.5);
        },
        async (server) => {
          const reader = await source(server.url).openReader(IMAGE);
          await assert.rejects(hangGuard(readAll(reader, 1), HANG_MS, 'the trickle-and-reset body'), isUnavailableFrom('ERR_TRANSFER_TOO_SLOW'));
          assert.ok(server.connections.length > RETRIES + 1, 'resets were retried on the way');
        },
      );
    });

    it('a response head at 1 byte per 200 ms ends in ERR_IMAGE_SERVICE_UNAVAILABLE (head timeout) after the retries', async () => {
      await withServer(
        // Long enough that, without a deadline, the head would outlast the hang guard.
        (socket) => void trickle(socket, `HTTP/1.1 200 OK\r\nX-Padding: ${'p'.repeat(100)}\r\nContent-Length: 5\r\n\r\nhello`, BYTE_EVERY_MS),
        async (server) => {
          await assert.rejects(hangGuard(source(server.url).openReader(IMAGE), HANG_MS, 'the trickled head'), isUnavailableFrom('ERR_HEAD_TIMEOUT'));
          assert.equal(server.connections.length, RETRIES + 1);
        },
      );
    });

    it('endless 1xx interim heads do not extend the head deadline', async () => {
      await withServer(
        (socket) => {
          const timer = setInterval(() => {
            if (socket.destroyed) clearInterval(timer);
            else socket.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n');
          }, 50);
        },
        async (server) => {
          await assert.rejects(hangGuard(source(server.url).openReader(IMAGE), HANG_MS, 'the endless 1xx'), isUnavailableFrom('ERR_HEAD_TIMEOUT'));
          assert.equal(server.connections.length, RETRIES + 1);
        },
      );
    });

    it('a metadata answer trickled through node:http ends in ERR_IMAGE_SERVICE_UNAVAILABLE (metadata timeout)', async () => {
      const document = JSON.stringify({ id: IMAGE, status: 'active', size: 5, disk_format: 'raw', container_format: 'bare' });
      for (const trickleHead of [false, true]) {
        const response = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${document.length}\r\n\r\n`;
        await withServer(
          (socket) => {
            if (trickleHead) void trickle(socket, response + document, BYTE_EVERY_MS);
            else trickledBody(socket, response, Buffer.from(document));
          },
          async (server) => {
            await assert.rejects(hangGuard(source(server.url).describe(IMAGE), HANG_MS, 'the trickled metadata'), isUnavailableFrom('ERR_METADATA_TIMEOUT'));
            assert.equal(server.connections.length, RETRIES + 1);
          },
        );
      }
    });

    it('a server slow but above the floor, and a consumer slower than the window, still complete', async () => {
      const body = seededBytes(3000, 3);
      await withServer(
        (socket) => {
          socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`);
          // 100 bytes every 50 ms: 2000 B/s against a floor of 200.
          void trickle(socket, body, 50, 100);
        },
        async (server) => {
          const reader = await source(server.url).openReader(IMAGE);
          assert.ok((await hangGuard(readAll(reader, 512), HANG_MS, 'the slow body')).equals(body));
          assert.equal(server.connections.length, 1);
        },
      );
      const fast = seededBytes(2000, 4);
      await withServer(
        (socket) => socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${fast.length}\r\n\r\n`), fast])),
        async (server) => {
          const reader = await source(server.url).openReader(IMAGE);
          // Twice the window between reads: the time the consumer spends is not the server's.
          assert.ok((await hangGuard(readAll(reader, 1000, 2 * WINDOW_MS), HANG_MS, 'the slowly read body')).equals(fast));
          assert.equal(server.connections.length, 1);
        },
      );
    });
  });
}

describe('class 2: the image lock', () => {
  it('a second host waiting on the lock of a trickled download gets it, and the image, once the floor ends that download', async () => {
    const body = seededBytes(5000, 5);
    const document = JSON.stringify({
      id: IMAGE,
      status: 'active',
      size: body.length,
      checksum: createHash('md5').update(body).digest('hex'),
      disk_format: 'raw',
      container_format: 'bare',
    });
    let fileRequests = 0;
    let firstFileRequest!: () => void;
    const downloading = new Promise<void>((resolve) => {
      firstFileRequest = resolve;
    });
    const { dir, cleanup } = await makeMemoryTempDir('vic-slow-lock-');
    await withServer(
      (socket, head) => {
        if (!head.includes('/file ')) {
          socket.end(`HTTP/1.1 200 OK\r\nContent-Length: ${document.length}\r\n\r\n${document}`);
          return;
        }
        // Host a's attempts (the first retries + 1) trickle; host b's is served at once.
        if (fileRequests++ > RETRIES) {
          socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`), body]));
          return;
        }
        firstFileRequest();
        trickledBody(socket, `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`, body);
      },
      async (server) => {
        const host = (name: string): LibvirtFileImageManager =>
          new LibvirtFileImageManager({ host: name, instancesPath: dir, source: new GlanceImageSource({ endpoint: server.url, ...TIGHT }), lockTimeoutMs: HANG_MS });
        try {
          const first = host('a').cacheImage(IMAGE);
          first.catch(() => undefined);
          await downloading;
          const second = host('b').cacheImage(IMAGE);
          await assert.rejects(hangGuard(first, HANG_MS, "host a's download"), isUnavailableFrom('ERR_TRANSFER_TOO_SLOW'));
          const cached = await hangGuard(second, HANG_MS, "host b's wait for the lock");
          assert.equal(cached.status, 'cached');
          assert.ok((await readFile(path.join(dir, '_base', cached.name))).equals(body));
        } finally {
          await cleanup();
        }
      },
    );
  });
});

describe('class 2 options', () => {
  it('the deadlines and the floor are range-checked options with defaults', () => {
    const bad: [string, number][] = [
      ['headTimeoutMs', 0],
      ['headTimeoutMs', 2 ** 31],
      ['metadataTimeoutMs', 1.5],
      ['metadataTimeoutMs', -1],
      ['minSpeedWindowMs', 0],
      ['minSpeedWindowMs', 2 ** 31],
      ['minBytesPerSecond', -1],
      ['minBytesPerSecond', 0.5],
      ['minBytesPerSecond', 2 ** 31],
    ];
    for (const [option, value] of bad) {
      assert.throws(
        () => new GlanceImageSource({ endpoint: 'http://glance', [option]: value }),
        (err) => isImageCacheError(err) && err.code === 'ERR_INVALID_CONFIG' && (err as { option?: unknown }).option === option,
        `${option}: ${value}`,
      );
    }
    assert.doesNotThrow(() => new GlanceImageSource({ endpoint: 'http://glance', minBytesPerSecond: 0, headTimeoutMs: 1, metadataTimeoutMs: 2 ** 31 - 1 }));
  });
});
