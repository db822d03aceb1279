// Pins the fake Glance (src/testing/fake-glance.ts) to the real one: the same probes go to both,
// for the same image bytes under the same id, and the parts of the answers a client can depend on
// must be equal: status, the framing and content headers, the body (error texts included), the
// image document's fields and hashes, and Range handling.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import path from 'node:path';
import type { IncomingHttpHeaders } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import type { GlanceImageDocument } from '../helpers/real-glance.js';
import { startRealGlanceOrSkip } from '../helpers/real-glance.js';
import { findQemuImg, runQemuImg } from '../helpers/qemu.js';
import { makeTempDir, seededBytes } from '../helpers/tmp.js';

const { glance: real, skip } = await startRealGlanceOrSkip();
const DATA = seededBytes(256 * 1024 + 7, 51);
const UNKNOWN = '00000000-0000-4000-8000-000000000000';
/** Headers whose values must agree. `date` and the request id differ by nature; their presence is compared. */
const COMPARED_HEADERS = ['content-type', 'content-length', 'content-md5', 'content-range', 'accept-ranges', 'transfer-encoding', 'allow', 'www-authenticate'];

interface Answer {
  status: number;
  headers: Record<string, string | undefined>;
  hasRequestId: boolean;
  body: string;
}

function probe(base: string, method: string, urlPath: string, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${urlPath}`, { method, headers, agent: false });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const picked = (all: IncomingHttpHeaders): Record<string, string | undefined> =>
          Object.fromEntries(COMPARED_HEADERS.map((name) => [name, all[name] === undefined ? undefined : String(all[name])]));
        resolve({ status: res.statusCode ?? 0, headers: picked(res.headers), hasRequestId: res.headers['x-openstack-request-id'] !== undefined, body: Buffer.concat(chunks).toString('latin1') });
      });
    });
    req.end();
  });
}

/** The image document without what differs by nature (timestamps). */
function comparable(document: Record<string, unknown>): Record<string, unknown> {
  const { created_at: created, updated_at: updated, ...rest } = document;
  assert.match(String(created), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.match(String(updated), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  return rest;
}

const ACCEPTS: readonly (string | undefined)[] = [undefined, 'application/octet-stream', 'application/json', '*/*', 'text/html'];
const RANGES: readonly (string | undefined)[] = [
  undefined,
  'bytes=0-9',
  'bytes=1000-',
  `bytes=${DATA.length - 10}-${DATA.length * 2}`,
  'bytes=-5',
  `bytes=-${DATA.length * 2}`,
  'bytes=0-0',
  `bytes=${DATA.length}-`,
  `bytes=${DATA.length + 100}-`,
  'bytes=5-2',
  'bytes=0-1,5-6',
  'items=0-5',
  'bytes=-0',
  'bytes=-',
  'BYTES = 0 - 3',
];
/** Glance's legacy request `Content-Range` (used when there is no `Range`). */
const CONTENT_RANGES: readonly string[] = [
  'bytes 0-9/*',
  `bytes 2-4/${DATA.length}`,
  `bytes 0-${DATA.length + 5}/*`,
  `bytes ${DATA.length}-${DATA.length + 1}/${DATA.length + 10}`,
  'bytes 5-2/*',
  'bytes */*',
  'junk',
];
/** What each of them does to an image without data. */
const RANGES_WITHOUT_DATA: readonly Record<string, string>[] = [
  { range: 'bytes=0-' },
  { range: 'bytes=-5' },
  { range: 'bytes=5-2' },
  { range: 'bytes=0-1,5-6' },
  { 'content-range': 'bytes 0-9/*' },
  { 'content-range': 'junk' },
];

describe(`the fake Glance answers as the real Glance ${real?.version ?? ''}`, { skip }, () => {
  let fake: FakeGlance;
  let active: GlanceImageDocument;
  let queued: GlanceImageDocument;
  let deactivated: GlanceImageDocument;
  let deleted: GlanceImageDocument;
  let empty: GlanceImageDocument;
  let qcow2: GlanceImageDocument | undefined;
  let qcow2Bytes: Buffer | undefined;

  before(async () => {
    assert.ok(real !== undefined);
    active = await real.createActiveImage(DATA, { name: 'pinned' });
    queued = await real.createImage();
    deactivated = await real.createActiveImage(DATA);
    await real.deactivate(deactivated.id);
    deleted = await real.createActiveImage(DATA);
    await real.deleteImage(deleted.id);
    empty = await real.createActiveImage(new Uint8Array(0));
    if (findQemuImg() !== null) {
      const { dir, cleanup } = await makeTempDir('vic-fake-vs-real-');
      try {
        await runQemuImg(['create', '-q', '-f', 'qcow2', path.join(dir, 'image.qcow2'), '12345k']);
        qcow2Bytes = await readFile(path.join(dir, 'image.qcow2'));
      } finally {
        await cleanup();
      }
      qcow2 = await real.createActiveImage(qcow2Bytes, { disk_format: 'qcow2' });
    }
    fake = await startFakeGlance({
      images: [
        { id: active.id, content: DATA, name: 'pinned' },
        { id: queued.id, content: new Uint8Array(0), status: 'queued' },
        { id: deactivated.id, content: DATA, status: 'deactivated' },
        { id: deleted.id, content: DATA, status: 'deleted' },
        { id: empty.id, content: new Uint8Array(0) },
        ...(qcow2 === undefined || qcow2Bytes === undefined ? [] : [{ id: qcow2.id, content: qcow2Bytes, diskFormat: 'qcow2' }]),
      ],
    });
  });
  after(async () => {
    await fake.close();
    await real?.close();
  });

  /** Sends the same request to both; the real one to the anonymous (non-admin) pipeline when `asUser`. */
  async function both(method: string, urlPath: string, headers: Record<string, string>, asUser = false): Promise<[Answer, Answer]> {
    assert.ok(real !== undefined);
    return Promise.all([probe(fake.url, method, urlPath, headers), probe(asUser ? real.anonymousUrl : real.url, method, urlPath, headers)]);
  }

  function assertSame([fromFake, fromReal]: [Answer, Answer], what: string): void {
    assert.deepEqual(fromFake, fromReal, `${what}: the fake (actual) differs from the real Glance (expected)`);
  }

  it('image documents: the same fields, values and hashes (raw, empty, qcow2 when qemu-img is installed, queued, deactivated)', async () => {
    for (const image of [active, empty, ...(qcow2 === undefined ? [] : [qcow2]), queued, deactivated]) {
      const [fromFake, fromReal] = await both('GET', `/v2/images/${image.id}`, { accept: 'application/json' });
      assert.equal(fromFake.status, 200);
      const fakeDocument = comparable(JSON.parse(fromFake.body) as Record<string, unknown>);
      const realDocument = comparable(JSON.parse(fromReal.body) as Record<string, unknown>);
      assert.deepEqual(fakeDocument, realDocument, `the document of the ${image.status} image`);
      assert.deepEqual(Object.keys(fakeDocument), Object.keys(realDocument), 'the same fields in the same order');
      // Same fields and values: the same length too, unless the serialization differs.
      assert.deepEqual({ ...fromFake, body: '' }, { ...fromReal, body: '' }, `GET ${image.id} headers`);
    }
  });

  for (const accept of ACCEPTS) {
    it(`data and errors with ${accept === undefined ? 'no Accept' : `Accept: ${accept}`}: every Range form`, async () => {
      const headers: Record<string, string> = accept === undefined ? {} : { accept };
      for (const range of RANGES) {
        const withRange = range === undefined ? headers : { ...headers, range };
        assertSame(await both('GET', `/v2/images/${active.id}/file`, withRange), `GET file, Range ${range ?? 'none'}`);
        assertSame(await both('GET', `/v2/images/${empty.id}/file`, withRange), `GET an empty image, Range ${range ?? 'none'}`);
      }
      for (const contentRange of CONTENT_RANGES) {
        assertSame(await both('GET', `/v2/images/${active.id}/file`, { ...headers, 'content-range': contentRange }), `GET file, Content-Range ${contentRange}`);
      }
    });

    it(`errors with ${accept === undefined ? 'no Accept' : `Accept: ${accept}`}: unknown and deleted images, unknown paths, other methods`, async () => {
      const headers: Record<string, string> = accept === undefined ? {} : { accept };
      for (const id of [UNKNOWN, deleted.id, 'not-a-uuid']) {
        assertSame(await both('GET', `/v2/images/${id}`, headers), `GET ${id}`);
        assertSame(await both('GET', `/v2/images/${id}/file`, headers), `GET ${id}/file`);
      }
      assertSame(await both('GET', '/v2/elsewhere', headers), 'GET an unknown path');
      assertSame(await both('DELETE', `/v2/images/${active.id}/file`, headers), 'DELETE file');
      assertSame(await both('HEAD', `/v2/images/${active.id}/file`, headers), 'HEAD file');
    });

    it(`images without usable data with ${accept === undefined ? 'no Accept' : `Accept: ${accept}`}: queued (204, 500 with a Range), deactivated (403 to a user)`, async () => {
      const headers: Record<string, string> = accept === undefined ? {} : { accept };
      assertSame(await both('GET', `/v2/images/${queued.id}/file`, headers), 'GET a queued image file');
      for (const range of RANGES_WITHOUT_DATA) {
        // A valid one makes Glance fail: eventlet's bare 500, without a request id.
        assertSame(await both('GET', `/v2/images/${queued.id}/file`, { ...headers, ...range }), `GET a queued image file with ${JSON.stringify(range)}`);
      }
      assertSame(await both('GET', `/v2/images/${deactivated.id}/file`, headers, true), 'GET a deactivated image file as a user');
    });
  }
});
