// Fuzz of the raw HTTP/1.1 client's response parser (src/source/raw-http-get.ts) against node:http:
// random status lines, header casing and blanks, Content-Length and Transfer-Encoding variants,
// duplicate and malformed headers, interim 1xx heads, line ends, body lengths, and the sizes of
// the pieces the server writes them in. Each response is served from a loopback server twice, to
// the raw client and to node:http (llhttp), and the verdicts compared:
//   - the raw client hands a response over to node:http: node:http's verdict is the answer (fine);
//   - both accept: the same status and byte-identical bodies;
//   - node:http rejects: the raw client rejects or hands over, never accepts;
//   - nothing hangs (each client bounded by a hang guard that fails the case).
// The raw client may reject what node:http accepts (it reads a narrow subset); those are counted.
// Seeded: a failure prints the seed and replays with RELIABILITY_SEED. The responses the original
// parser accepted where node:http refuses them run first, as fixed examples.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import fc from 'fast-check';
import type { BodyExchange } from '../../src/source/body-exchange.js';
import { RawHttpGet } from '../../src/source/raw-http-get.js';
import { hangGuard } from './loopback.js';
import { withSeed } from './seed.js';

const RUNS = Number(process.env.RELIABILITY_FUZZ_RUNS ?? 250);
const HANG_MS = 5000;

type Verdict =
  | {
      readonly kind: 'accept';
      readonly status: number;
      readonly body: Buffer;
      /**
       * node:http only: the message was complete, then bytes after it failed the connection before
       * all of the body was handed out; `body` is a prefix, `length` the framed length.
       */
      readonly cut?: { readonly length: number } | undefined;
    }
  | { readonly kind: 'reject'; readonly why: string }
  | { readonly kind: 'handover' };

/** A response, as the parts it is made of. */
interface ResponseCase {
  readonly interims: readonly string[];
  readonly statusLine: string;
  readonly headers: readonly string[];
  readonly eol: string;
  readonly body: Uint8Array;
  /** Sizes of the pieces the server writes (the rest in one piece). */
  readonly pieces: readonly number[];
}

function bytesOf(c: ResponseCase): Buffer {
  const head = [c.statusLine, ...c.headers].map((line) => line + c.eol).join('') + c.eol;
  return Buffer.concat([Buffer.from(c.interims.join('') + head, 'latin1'), c.body]);
}

/** A header name in one of the casings a server may send. */
const casing = (name: string): fc.Arbitrary<string> =>
  fc.constantFrom(name, name.toLowerCase(), name.toUpperCase(), name.replace(/./g, (ch, i: number) => (i % 2 === 0 ? ch.toLowerCase() : ch.toUpperCase())));

/** The text between a header's name and its value, and after the value. */
const separator = fc.constantFrom(': ', ':', ':\t', ':  ', ': \t');
const trailing = fc.oneof({ weight: 12, arbitrary: fc.constant('') }, { weight: 1, arbitrary: fc.constantFrom(' ', '\t', ' \t') });
const oddSeparator = fc.constantFrom(' : ', ' :', '\t:');

const header = (name: string, value: string | fc.Arbitrary<string>, odd = false): fc.Arbitrary<string> =>
  fc
    .tuple(casing(name), odd ? fc.oneof({ weight: 9, arbitrary: separator }, { weight: 1, arbitrary: oddSeparator }) : separator, typeof value === 'string' ? fc.constant(value) : value, trailing)
    .map(([n, sep, v, t]) => `${n}${sep}${v}${t}`);

/** Content-Length values that are not a plain decimal. */
const oddLength = (n: number): fc.Arbitrary<string> =>
  fc.constantFrom(`+${n}`, `0x${n.toString(16)}`, `-${n}`, `0${n}`, `${n}.0`, `${n} ${n}`, '', '99999999999999999999', `${n},`, `,${n}`, `${n}, ${n}`, `${n},${n + 1}`, `${n}\u000b`);

/** A chunked encoding of `body`, well formed or broken in one of several ways. */
function chunked(body: Uint8Array, sizes: readonly number[], flaw: string): Buffer {
  const parts: Uint8Array[] = [];
  let at = 0;
  for (const size of [...sizes, body.length]) {
    if (at >= body.length) break;
    const piece = body.subarray(at, Math.min(body.length, at + Math.max(1, size)));
    at += piece.length;
    const ext = flaw === 'extension' ? ';name=value' : '';
    parts.push(Buffer.from(`${piece.length.toString(16)}${ext}\r\n`, 'latin1'), piece, Buffer.from('\r\n', 'latin1'));
  }
  if (flaw === 'no-last-chunk') return Buffer.concat(parts);
  if (flaw === 'bad-size') parts.unshift(Buffer.from('zz\r\nxx\r\n', 'latin1'));
  parts.push(Buffer.from(flaw === 'trailer' ? '0\r\nX-Trailer: t\r\n\r\n' : '0\r\n\r\n', 'latin1'));
  return Buffer.concat(parts);
}

/** How the body is framed: mostly what the raw client reads itself, often not. */
const framing = fc.oneof(
  { weight: 6, arbitrary: fc.constant('length') },
  { weight: 3, arbitrary: fc.constantFrom('none', 'length-short', 'length-long') },
  {
    weight: 2,
    arbitrary: fc.constantFrom('length-odd', 'length-dup-same', 'length-dup-other', 'chunked', 'chunked-and-length', 'te-gzip', 'te-list'),
  },
);

const extraHeader = fc.oneof(
  { weight: 2, arbitrary: header('Content-Type', 'application/octet-stream', true) },
  { weight: 2, arbitrary: header('X-Request-Id', fc.string({ unit: 'grapheme-ascii', maxLength: 20 }).map((s) => s.replace(/[\r\n]/g, ''))) },
  { weight: 2, arbitrary: header('Connection', fc.constantFrom('close', 'keep-alive', 'Close')) },
  { weight: 1, arbitrary: header('Content-Range', 'bytes 0-4/5') },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      'X-Fold: first\r\n second',
      'X-Empty:',
      'X-Ctl: a\u0001b',
      'X-Cr: a\rb',
      'X-Nul: a\u0000b',
      'X-Del: a\u007fb',
      'X-High: caf\u00e9',
      'Bad Name: v',
      ': no-name',
      'NoColon',
      'X-Lf: a\nb',
    ),
  },
);

const interim = fc.constantFrom(
  'HTTP/1.1 100 Continue\r\n\r\n',
  'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n',
  'HTTP/1.1 102 Processing\r\n\r\n',
  'HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\n',
);

const responseCase: fc.Arbitrary<ResponseCase> = fc
  .record({
    interims: fc.array(interim, { maxLength: 3 }),
    status: fc.constantFrom(200, 200, 200, 206, 204, 304, 404, 500, 503, 101, 199, 299, 600),
    statusForm: fc.oneof(
      { weight: 12, arbitrary: fc.constantFrom('HTTP/1.1 %s OK', 'HTTP/1.1 %s', 'HTTP/1.0 %s OK', 'HTTP/1.1 %s Partial Content') },
      {
        weight: 2,
        arbitrary: fc.constantFrom('HTTP/1.1 %s ', 'HTTP/1.1  %s OK', 'http/1.1 %s OK', 'HTTP/1.1 %s O\u0001K', 'HTTP/1.1 %s reason\twith tab', 'HTTP/2 %s', 'HTTP/1.1 0%s OK', 'HTTP/1.1 %sOK', 'HTTP/1.1 %s caf\u00e9'),
      },
    ),
    framing,
    lengthName: casing('Content-Length'),
    teName: casing('Transfer-Encoding'),
    sep: fc.tuple(separator, trailing),
    extras: fc.array(extraHeader, { maxLength: 2 }),
    extrasFirst: fc.boolean(),
    bareLf: fc.oneof({ weight: 20, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    body: fc.integer({ min: 0, max: 3000 }).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
    chunkSizes: fc.array(fc.integer({ min: 1, max: 900 }), { maxLength: 5 }),
    chunkFlaw: fc.constantFrom('', '', '', 'extension', 'trailer', 'no-last-chunk', 'bad-size'),
    delta: fc.integer({ min: 1, max: 50 }),
    oddLength: fc.integer({ min: 0, max: 3000 }).chain(oddLength),
    pieces: fc.array(fc.integer({ min: 1, max: 700 }), { maxLength: 8 }),
  })
  .map((r) => {
    const { body } = r;
    const [sep, trail] = r.sep;
    const line = (name: string, value: string | number): string => `${name}${sep}${value}${trail}`;
    let framed: Uint8Array = body;
    let framingHeaders: string[] = [];
    switch (r.framing) {
      case 'length':
        framingHeaders = [line(r.lengthName, body.length)];
        break;
      case 'none':
        break;
      case 'length-short':
        framingHeaders = [line(r.lengthName, Math.max(0, body.length - r.delta))];
        break;
      case 'length-long':
        framingHeaders = [line(r.lengthName, body.length + r.delta)];
        break;
      case 'length-odd':
        framingHeaders = [line(r.lengthName, r.oddLength)];
        break;
      case 'length-dup-same':
        framingHeaders = [line(r.lengthName, body.length), line('Content-Length', body.length)];
        break;
      case 'length-dup-other':
        framingHeaders = [line(r.lengthName, body.length), line('Content-Length', body.length + r.delta)];
        break;
      case 'chunked':
        framed = chunked(body, r.chunkSizes, r.chunkFlaw);
        framingHeaders = [line(r.teName, 'chunked')];
        break;
      case 'chunked-and-length':
        framed = chunked(body, r.chunkSizes, r.chunkFlaw);
        framingHeaders = [line(r.teName, 'chunked'), line(r.lengthName, framed.length)];
        break;
      case 'te-gzip':
        framingHeaders = [line(r.teName, 'gzip'), line(r.lengthName, body.length)];
        break;
      case 'te-list':
        framed = chunked(body, r.chunkSizes, r.chunkFlaw);
        framingHeaders = [line(r.teName, 'gzip, chunked')];
        break;
    }
    return {
      interims: r.interims,
      statusLine: r.statusForm.replace('%s', String(r.status)),
      headers: r.extrasFirst ? [...r.extras, ...framingHeaders] : [...framingHeaders, ...r.extras],
      eol: r.bareLf ? '\n' : '\r\n',
      body: framed,
      pieces: r.pieces,
    };
  });

/** A plain response with `headers`, and the divergences the fuzz found on the original parser. */
const plain = (statusLine: string, headers: string[], body = ''): ResponseCase => ({
  interims: [],
  statusLine,
  headers,
  eol: '\r\n',
  body: Buffer.from(body, 'latin1'),
  pieces: [],
});
const FOUND: ResponseCase[] = [
  plain('HTTP/1.1 200 OK', ['Content-Length: 0, 0']),
  plain('HTTP/1.1 200 OK', ['Content-Length: 5, 5'], 'hello'),
  plain('HTTP/1.1 200 ', ['Content-Length: 0', 'Content-Length: 0']),
  plain('HTTP/1.1 200 OK', ['Content-Length: 0 \t']),
  plain('HTTP/1.1 304 OK', ['Content-Length: 0', 'Content-Length: 0']),
  plain('HTTP/1.1 404 OK', ['Transfer-Encoding: gzip', 'Content-Length: 0']),
  plain('HTTP/1.1 200 OK', ['X-Cr: a\rb', 'Content-Length: 5'], 'hello'),
  plain('HTTP/1.1 200 O\u0001K', ['Content-Length: 5'], 'hello'),
];

class HandedOver extends Error {}

/** A failure's code, or its message. */
function why(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : error instanceof Error ? error.message : String(error);
}

/** What the fallback gives the raw client: an exchange whose head says it was handed over. */
function handedOverExchange(url: string): BodyExchange {
  const head = Promise.reject(new HandedOver('handed over to node:http'));
  head.catch(() => undefined);
  return {
    url,
    head,
    received: 0,
    read: () => Promise.reject(new HandedOver('handed over')),
    close: () => undefined,
  };
}

async function rawVerdict(url: URL): Promise<Verdict> {
  const get = new RawHttpGet(url, { 'user-agent': 'fuzz' }, { connectTimeoutMs: HANG_MS, idleTimeoutMs: HANG_MS, fallback: () => handedOverExchange(url.href) });
  try {
    const head = await get.head;
    const parts: Buffer[] = [];
    for (;;) {
      // Odd buffer sizes: the body's end lands anywhere in a read.
      const into = Buffer.alloc(257);
      const n = await get.read(into);
      if (n === 0) return { kind: 'accept', status: head.status, body: Buffer.concat(parts) };
      parts.push(into.subarray(0, n));
    }
  } catch (error) {
    if (error instanceof HandedOver) return { kind: 'handover' };
    return { kind: 'reject', why: why(error) };
  } finally {
    get.close();
  }
}

/**
 * node:http's verdict: the message as llhttp framed it when it completed. Bytes after a complete
 * message (a body longer than its Content-Length, a body after a 304) make llhttp fail on what it
 * takes for a next response; the message itself was accepted, and that is what is compared.
 */
function nodeVerdict(url: URL): Promise<Verdict> {
  return new Promise<Verdict>((resolve) => {
    let response: http.IncomingMessage | undefined;
    const parts: Buffer[] = [];
    const settle = (why: string | undefined): void => {
      if (response?.complete !== true) {
        resolve({ kind: 'reject', why: why ?? 'incomplete' });
        return;
      }
      const { statusCode = 0, headers } = response;
      const length = statusCode === 204 || statusCode === 304 ? 0 : Number(headers['content-length']);
      resolve({ kind: 'accept', status: statusCode, body: Buffer.concat(parts), cut: why === undefined ? undefined : { length } });
    };
    const req = http.get(url, { agent: false, headers: { 'user-agent': 'fuzz' } }, (res) => {
      response = res;
      res.on('data', (chunk: Buffer) => parts.push(chunk));
      res.on('end', () => {
        settle(undefined);
      });
      res.on('error', (error) => {
        settle(why(error));
      });
      res.on('close', () => {
        settle('closed before the end');
      });
    });
    req.on('error', (error) => {
      settle(why(error));
    });
    // A 101 without an 'upgrade' listener: node:http hands the socket over to nobody.
    req.on('upgrade', (_res, socket) => {
      socket.destroy();
      resolve({ kind: 'reject', why: 'upgrade' });
    });
  });
}

const show = (v: Verdict): string => (v.kind === 'accept' ? `accept ${v.status} (${v.body.length} bytes)` : v.kind === 'reject' ? `reject (${v.why})` : 'handover');

describe('raw HTTP client response parser vs node:http', () => {
  let server: net.Server;
  let url: URL;
  let current: ResponseCase | undefined;

  before(async () => {
    server = net.createServer((socket) => {
      socket.setNoDelay(true);
      socket.on('error', () => undefined);
      const c = current;
      let request = '';
      let answered = false;
      socket.on('data', (data) => {
        request += data.toString('latin1');
        if (answered || !request.includes('\r\n\r\n') || c === undefined) return;
        answered = true;
        void (async () => {
          const bytes = bytesOf(c);
          let at = 0;
          for (const size of c.pieces) {
            if (at >= bytes.length || socket.destroyed) break;
            socket.write(bytes.subarray(at, at + size));
            at += size;
            // A pause so the pieces tend to arrive as separate reads.
            await delay(1);
          }
          if (!socket.destroyed) socket.end(bytes.subarray(at));
        })();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v2/images/fuzz/file`);
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it(`${RUNS} random responses: never a different body, never an acceptance node:http refuses, never a hang`, async (t) => {
    await withSeed(t, async (seed) => {
      const tally = { cases: 0, bothAccept: 0, bytesPastTheEnd: 0, bothReject: 0, handedOver: 0, rawStricter: 0 };
      await fc.assert(
        fc.asyncProperty(responseCase, async (c) => {
          current = c;
          const raw = await hangGuard(rawVerdict(url), HANG_MS, 'the raw client');
          const node = await hangGuard(nodeVerdict(url), HANG_MS, 'node:http');
          tally.cases++;
          const context = `raw: ${show(raw)}, node:http: ${show(node)}, response ${JSON.stringify(bytesOf(c).toString('latin1').slice(0, 400))}`;
          if (raw.kind === 'handover') {
            tally.handedOver++;
            return;
          }
          if (raw.kind === 'reject') {
            if (node.kind === 'accept') tally.rawStricter++;
            else tally.bothReject++;
            return;
          }
          if (node.kind !== 'accept') assert.fail(`the raw client accepted what node:http refuses; ${context}`);
          assert.equal(raw.status, node.status, context);
          if (node.cut === undefined) {
            assert.ok(raw.body.equals(node.body), `different bodies; ${context}`);
          } else {
            // Bytes past the framed end: the raw client stops at that end; node:http failed on them.
            assert.equal(raw.body.length, node.cut.length, `a body past its framed length; ${context}`);
            assert.ok(raw.body.subarray(0, node.body.length).equals(node.body), `different bodies; ${context}`);
            tally.bytesPastTheEnd++;
          }
          tally.bothAccept++;
        }),
        { seed, numRuns: RUNS, examples: FOUND.map((c) => [c]) },
      );
      t.diagnostic(`raw-http-fuzz: ${JSON.stringify(tally)}`);
      console.log(`[reliability] raw-http-fuzz ${JSON.stringify(tally)}`);
    });
  });
});
