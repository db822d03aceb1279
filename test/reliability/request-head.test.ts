// Issue 13, class 1: header injection and request smuggling. Both clients write a request head as
// latin1, which keeps the low byte of each UTF-16 unit: U+010D goes out as CR and U+010A as LF. A
// token (a string, or a callback's answer on any request), an image id or an endpoint must never
// put a byte on the wire that adds a header or a second request. A loopback server records every
// byte each connection sent; each case says exactly which requests arrived, for both transports.
import assert from 'node:assert/strict';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ImageNotFoundError } from '../../src/errors.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import type { GlanceImageSourceOptions } from '../../src/source/glance-image-source.js';
import { resolveOptions } from '../../src/source/glance-options.js';
import type { ImageReader } from '../../src/source/image-reader.js';
import { HttpGet } from '../../src/source/node-http-get.js';
import { RawHttpGet } from '../../src/source/raw-http-get.js';
import { headerOf, startLoopback } from './loopback.js';
import type { LoopbackServer } from './loopback.js';
import { code } from '../helpers/error-code.js';

const IMAGE = '5b1c2d3e-4f50-4a6b-9c7d-8e9fa0b1c2d3';
const BODY = 'image bytes';
const GOOD_TOKEN = 'gAAAAAB-keystone_token.~+/=';
/** What latin1 turns into CR LF. */
const CRLF = '\u010d\u010a';
const TRANSPORTS = ['auto', 'node-http'] as const;

/** Tokens whose bytes would break out of the X-Auth-Token line, or that a peer would read differently. */
const HOSTILE_TOKENS: readonly [string, string][] = [
  ['U+010D U+010A then a header', `${GOOD_TOKEN}${CRLF}X-Injected: 1`],
  [
    'a smuggled DELETE with another token',
    `${GOOD_TOKEN}${CRLF}${CRLF}DELETE /v2/images/${IMAGE} HTTP/1.1${CRLF}Host: glance${CRLF}X-Auth-Token: admin-token${CRLF}${CRLF}`,
  ],
  ['U+010A alone then a header', `${GOOD_TOKEN}\u010aX-Injected: 1`],
  ['U+0100 (NUL in latin1)', `${GOOD_TOKEN}\u0100`],
  ['CR LF', `${GOOD_TOKEN}\r\nX-Injected: 1`],
  ['LF', `${GOOD_TOKEN}\nX-Injected: 1`],
  ['NUL', `${GOOD_TOKEN}\u0000`],
  ['DEL', `${GOOD_TOKEN}\u007f`],
  ['vertical tab', `${GOOD_TOKEN}\u000b`],
  ['latin1 obs-text', `${GOOD_TOKEN}\u00e9`],
  ['U+2028', `${GOOD_TOKEN}\u2028`],
  ['an astral character', `${GOOD_TOKEN}\u{1f600}`],
  ['a leading space', ` ${GOOD_TOKEN}`],
  ['a trailing tab', `${GOOD_TOKEN}\t`],
];

/** Image ids that are valid ids but not header-safe text: they must go out percent-encoded. */
const AWKWARD_IDS: readonly string[] = [
  `a${CRLF}X-Injected: 1`,
  `a${CRLF}${CRLF}DELETE x${CRLF}X-Auth-Token: admin${CRLF}${CRLF}`,
  'a b',
  'a%0D%0Ab',
  'a?x=1',
  'a#frag',
  'a\u2028b',
  'é',
  '\u{1f600}',
  `a;b'"<c>`,
];

async function readAll(reader: ImageReader): Promise<string> {
  let text = '';
  const into = Buffer.alloc(4);
  for (;;) {
    const n = await reader.read(into);
    if (n === 0) return text;
    text += into.toString('latin1', 0, n);
  }
}

/**
 * The one request a connection carried, checked to be exactly one clean GET head: only visible
 * ASCII, spaces and tabs between CRLF line ends, no extra header, nothing after it.
 */
function onlyRequest(bytes: string): { target: string; head: string } {
  const end = bytes.indexOf('\r\n\r\n');
  assert.ok(end > 0, `no complete request head in ${JSON.stringify(bytes)}`);
  assert.equal(bytes.length, end + 4, `bytes after the request head: ${JSON.stringify(bytes.slice(end + 4))}`);
  const head = bytes.slice(0, end);
  const lines = head.split('\r\n');
  for (const line of lines) assert.match(line, /^[\x20-\x7e\t]+$/, `a line with other bytes: ${JSON.stringify(line)}`);
  const requestLine = /^GET (\/\S*) HTTP\/1\.1$/.exec(lines[0] ?? '');
  assert.ok(requestLine !== null, `not a GET request line: ${JSON.stringify(lines[0])}`);
  const names = lines.slice(1).map((line) => line.slice(0, line.indexOf(':')).toLowerCase());
  assert.ok(!names.includes('x-injected'), 'an injected header arrived');
  assert.equal(names.filter((name) => name === 'x-auth-token').length <= 1, true, 'two tokens arrived');
  return { target: requestLine[1] ?? '', head };
}

/** A Glance that answers its one image (metadata and a short body) and 404 for anything else. */
function answer(socket: net.Socket, head: string): void {
  const target = /^GET (\S+) /.exec(head)?.[1] ?? '';
  let status = '404 Not Found';
  let body = '';
  if (target === `/v2/images/${IMAGE}`) {
    status = '200 OK';
    body = JSON.stringify({ id: IMAGE, status: 'active', size: BODY.length, disk_format: 'raw', container_format: 'bare' });
  } else if (target === `/v2/images/${IMAGE}/file`) {
    status = '200 OK';
    body = BODY;
  }
  socket.end(`HTTP/1.1 ${status}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

describe('class 1: no value reaches a request head unchecked', () => {
  let glance: LoopbackServer;

  before(async () => {
    glance = await startLoopback(answer);
  });
  after(async () => {
    await glance.close();
  });

  /** Runs `body` and returns what connections it made to the server. */
  async function connectionsDuring(body: () => Promise<void> | void): Promise<string[]> {
    const first = glance.connections.length;
    await body();
    // A request on its way would be in by the time the client gave up on it; wait a turn anyway.
    await new Promise((resolve) => setImmediate(resolve));
    return glance.connections.slice(first).map((c) => c.bytes);
  }

  const source = (options: Partial<GlanceImageSourceOptions>): GlanceImageSource =>
    new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1, backoffMaxMs: 5, retries: 2, ...options });

  for (const transport of TRANSPORTS) {
    describe(`transport '${transport}'`, () => {
      it('a good token goes out byte for byte, inner spaces included, on one clean request', async () => {
        for (const token of [GOOD_TOKEN, 'a token with inner spaces', 'tab\tinside']) {
          const seen = await connectionsDuring(async () => {
            const src = source({ transport, token });
            assert.equal((await src.describe(IMAGE)).status, 'active');
            assert.equal(await readAll(await src.openReader(IMAGE)), BODY);
          });
          assert.equal(seen.length, 2);
          for (const bytes of seen) assert.equal(headerOf(onlyRequest(bytes).head, 'x-auth-token'), token);
        }
      });

      for (const [what, token] of HOSTILE_TOKENS) {
        it(`a string token with ${what} is refused at construction; nothing is sent`, async () => {
          const seen = await connectionsDuring(() => {
            assert.throws(
              () => source({ transport, token }),
              (err) => code(err) === 'ERR_INVALID_CONFIG' && (err as { option?: unknown }).option === 'token' && !(err as Error).message.includes(token),
            );
          });
          assert.deepEqual(seen, []);
        });

        it(`a token callback answering ${what} fails each request with ERR_INVALID_CONFIG, unretried; nothing is sent`, async () => {
          let calls = 0;
          const seen = await connectionsDuring(async () => {
            const src = source({ transport, token: () => (calls++, Promise.resolve(token)) });
            await assert.rejects(src.describe(IMAGE), (err) => code(err) === 'ERR_INVALID_CONFIG' && !(err as Error).message.includes(token));
            await assert.rejects(src.openReader(IMAGE), (err) => code(err) === 'ERR_INVALID_CONFIG');
          });
          assert.deepEqual(seen, []);
          assert.equal(calls, 2, 'one call per request, no retries');
        });

        it(`a token callback that turns to ${what} on a later request is caught on that request`, async () => {
          let calls = 0;
          const seen = await connectionsDuring(async () => {
            const src = source({ transport, token: () => (calls++ === 0 ? GOOD_TOKEN : token) });
            assert.equal((await src.describe(IMAGE)).status, 'active');
            await assert.rejects(src.openReader(IMAGE), (err) => code(err) === 'ERR_INVALID_CONFIG');
          });
          assert.equal(seen.length, 1);
          assert.equal(onlyRequest(seen[0] ?? '').target, `/v2/images/${IMAGE}`);
        });
      }

      it('a token renewed to a hostile value while a download resumes stops the download there', async () => {
        const cut = await startLoopback((socket) => {
          // Half the body, then a reset: the resume asks the callback for a token again.
          socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY.slice(0, 5)}`);
          setTimeout(() => socket.resetAndDestroy(), 20);
        });
        try {
          let calls = 0;
          const src = new GlanceImageSource({
            endpoint: cut.url,
            transport,
            backoffBaseMs: 1,
            token: () => (calls++ === 0 ? GOOD_TOKEN : `${GOOD_TOKEN}${CRLF}${CRLF}DELETE /v2/images/${IMAGE} HTTP/1.1${CRLF}${CRLF}`),
          });
          const reader = await src.openReader(IMAGE);
          await assert.rejects(readAll(reader), (err) => code(err) === 'ERR_INVALID_CONFIG');
          assert.equal(cut.connections.length, 1);
          assert.equal(onlyRequest(cut.connections[0]?.bytes ?? '').target, `/v2/images/${IMAGE}/file`);
        } finally {
          await cut.close();
        }
      });

      it('awkward image ids go out percent-encoded on one clean request each', async () => {
        for (const id of AWKWARD_IDS) {
          const seen = await connectionsDuring(async () => {
            const src = source({ transport, token: GOOD_TOKEN });
            await assert.rejects(src.describe(id), ImageNotFoundError);
            await assert.rejects(src.openReader(id), ImageNotFoundError);
          });
          assert.deepEqual(
            seen.map((bytes) => onlyRequest(bytes).target),
            [`/v2/images/${encodeURIComponent(id)}`, `/v2/images/${encodeURIComponent(id)}/file`],
            JSON.stringify(id),
          );
        }
      });

      it('an endpoint path with encoded line breaks, and a host name, stay one clean request', async () => {
        const prefixed = await connectionsDuring(async () => {
          await assert.rejects(source({ transport, endpoint: `${glance.url}/pre%0D%0AX-Injected:%201` }).describe(IMAGE), ImageNotFoundError);
        });
        assert.equal(onlyRequest(prefixed[0] ?? '').target, `/pre%0D%0AX-Injected:%201/v2/images/${IMAGE}`);
        const named = await connectionsDuring(async () => {
          assert.equal(await readAll(await source({ transport, endpoint: `http://localhost:${glance.port}` }).openReader(IMAGE)), BODY);
        });
        assert.equal(headerOf(onlyRequest(named[0] ?? '').head, 'host'), `localhost:${glance.port}`);
      });
    });
  }

  it('both clients refuse, before connecting, any header name or value that is not sent as is', async () => {
    const url = new URL(`${glance.url}/v2/images/${IMAGE}/file`);
    const options = resolveOptions({ endpoint: glance.url });
    const bad: Record<string, string>[] = [
      { 'x-other': `a${CRLF}X-Injected: 1` },
      { 'x-other': 'a\r\nX-Injected: 1' },
      { 'x-other': 'é' },
      { 'bad name': 'v' },
      { 'x-inj\r\nected': 'v' },
      { [`x${CRLF}`]: 'v' },
    ];
    const seen = await connectionsDuring(() => {
      for (const headers of bad) {
        assert.throws(() => new RawHttpGet(url, headers, { connectTimeoutMs: 1000, idleTimeoutMs: 1000, fallback: () => assert.fail('no fallback') }), (err) => code(err) === 'ERR_INVALID_CONFIG');
        assert.throws(() => new HttpGet(url, headers, options), (err) => code(err) === 'ERR_INVALID_CONFIG');
      }
    });
    assert.deepEqual(seen, []);
  });
});
