// The host agent's image route (HEAD/GET /v1/images/{id}) over real loopback HTTP: what a peer
// gets (200, 206, 416), what it never gets (staging files, a path outside the cache, a planted
// link's target), the token, and the file's lifetime (a removal mid-stream, a client that leaves).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readlink, readdir, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { NoopImageManager, createHostAgent } from '../../src/index.js';
import { MemoryImageManager, MemoryImageSource, generatedImageBytes, startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { SITE_TOKEN, listen, sha256, siteHost } from '../helpers/peers.js';
import type { Listening, SiteHost } from '../helpers/peers.js';
import { listDir, seededBytes } from '../helpers/tmp.js';

const IMAGE = 'fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0';
const BIG = 'b16b16b1-0000-4000-8000-000000000001';
const SLOW = 'd0d0d0d0-0000-4000-8000-000000000002';
const MISSING = '00000000-0000-4000-8000-000000000404';
const BYTES = seededBytes(300_000, 3);
/** Large enough that a paused client leaves most of it unread on the server (past socket buffers). */
const BIG_CONTENT = { size: 48 * 1024 * 1024, seed: 4 };

interface Answer {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
}

/** One raw request, the path sent exactly as given (no URL normalisation). */
function ask(url: string, target: string, options: { method?: string; headers?: Record<string, string>; token?: string | null } = {}): Promise<Answer> {
  const { method = 'GET', token = SITE_TOKEN } = options;
  const headers: Record<string, string> = { ...options.headers };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}${target}`, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
      res.on('error', reject);
    });
    // The path is sent as given: node would not normalise it, and the agent must judge it.
    req.path = target;
    req.on('error', reject);
    req.end();
  });
}

function errorCode(answer: Answer): string | undefined {
  return (JSON.parse(answer.body.toString('utf8')) as { error?: { code?: string } }).error?.code;
}

describe('host agent image route', () => {
  let glance: FakeGlance;
  let host: SiteHost;
  let agent: Listening;

  before(async () => {
    glance = await startFakeGlance({
      images: [
        { id: IMAGE, content: BYTES },
        { id: BIG, content: BIG_CONTENT },
        { id: SLOW, content: { size: 4 * 1024 * 1024, seed: 9 }, faults: { throttleBytesPerSecond: 512 * 1024 } },
      ],
    });
    host = await siteHost('compute1', glance);
    await host.manager.cacheImage(IMAGE);
    await host.manager.cacheImage(BIG);
    agent = await host.serve();
  });
  after(async () => {
    await host.close();
    await glance.close();
  });

  it('GET answers 200 with the whole verified image, its length, and Accept-Ranges; HEAD the same head, no body', async () => {
    const got = await ask(agent.url, `/v1/images/${IMAGE}`);
    assert.equal(got.status, 200);
    assert.equal(got.headers['content-length'], String(BYTES.length));
    assert.equal(got.headers['accept-ranges'], 'bytes');
    assert.equal(got.headers['content-range'], undefined);
    assert.equal(sha256(got.body), sha256(BYTES));
    const head = await ask(agent.url, `/v1/images/${IMAGE}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(BYTES.length));
    assert.equal(head.body.length, 0);
  });

  it('Range bytes=N- and bytes=N-M answer 206 with Content-Range and exactly those bytes; a last byte past the end is clamped', async () => {
    const tail = await ask(agent.url, `/v1/images/${IMAGE}`, { headers: { range: 'bytes=1000-' } });
    assert.equal(tail.status, 206);
    assert.equal(tail.headers['content-range'], `bytes 1000-${BYTES.length - 1}/${BYTES.length}`);
    assert.equal(tail.headers['content-length'], String(BYTES.length - 1000));
    assert.ok(tail.body.equals(BYTES.subarray(1000)));
    const middle = await ask(agent.url, `/v1/images/${IMAGE}`, { headers: { range: 'bytes=10-19' } });
    assert.equal(middle.status, 206);
    assert.equal(middle.headers['content-range'], `bytes 10-19/${BYTES.length}`);
    assert.ok(middle.body.equals(BYTES.subarray(10, 20)));
    const clamped = await ask(agent.url, `/v1/images/${IMAGE}`, { headers: { range: `bytes=${BYTES.length - 5}-${BYTES.length + 100}` } });
    assert.equal(clamped.status, 206);
    assert.ok(clamped.body.equals(BYTES.subarray(BYTES.length - 5)));
    const suffix = await ask(agent.url, `/v1/images/${IMAGE}`, { headers: { range: 'bytes=-7' } });
    assert.equal(suffix.status, 206);
    assert.ok(suffix.body.equals(BYTES.subarray(BYTES.length - 7)));
  });

  it('a range starting at or past the end answers 416 with Content-Range: bytes */size', async () => {
    for (const range of [`bytes=${BYTES.length}-`, `bytes=${BYTES.length + 10}-${BYTES.length + 20}`]) {
      const got = await ask(agent.url, `/v1/images/${IMAGE}`, { headers: { range } });
      assert.equal(got.status, 416, range);
      assert.equal(got.headers['content-range'], `bytes */${BYTES.length}`);
    }
  });

  it('401 without the token or with another; the image is not sent', async () => {
    for (const token of [null, 'wrong-token']) {
      const got = await ask(agent.url, `/v1/images/${IMAGE}`, { token });
      assert.equal(got.status, 401);
      assert.equal(errorCode(got), 'ERR_HOST_UNAUTHORIZED');
      assert.ok(got.body.length < 1000);
    }
  });

  it('405 with Allow: GET, HEAD for other methods', async () => {
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const got = await ask(agent.url, `/v1/images/${IMAGE}`, { method });
      assert.equal(got.status, 405, method);
      assert.equal(got.headers.allow, 'GET, HEAD');
    }
  });

  it('404 for an image not cached here, with a typed error', async () => {
    const got = await ask(agent.url, `/v1/images/${MISSING}`);
    assert.equal(got.status, 404);
    assert.equal(errorCode(got), 'ERR_PEER_UNAVAILABLE');
  });

  it('an id that walks out of the cache (../x, encoded or not) is never served', async () => {
    const outside = path.join(host.instancesPath, 'secret');
    await writeFile(outside, 'not an image');
    for (const target of ['/v1/images/..%2Fsecret', '/v1/images/..%2F..%2Fsecret', '/v1/images/a%2Fb', '/v1/images/%ZZ', '/v1/images/.']) {
      const got = await ask(agent.url, target);
      assert.equal(got.status, 400, target);
      assert.equal(errorCode(got), 'ERR_INVALID_IMAGE_ID', target);
    }
    // Dot segments are resolved by the agent's URL parser into another path: not the image route.
    for (const target of ['/v1/images/../../secret', '/v1/images/%2E%2E/secret', '/v1/images/..']) {
      const walked = await ask(agent.url, target);
      assert.equal(walked.status, 404, target);
      assert.ok(!walked.body.includes('not an image'), target);
    }
  });

  it('a symbolic link planted under the entry name is not followed out of the cache', async () => {
    const planted = 'c0ffee00-0000-4000-8000-000000000003';
    const outside = path.join(host.instancesPath, 'outside-file');
    await writeFile(outside, 'bytes outside the cache');
    await symlink(outside, host.manager.cachePathFor(planted));
    try {
      const got = await ask(agent.url, `/v1/images/${planted}`);
      assert.equal(got.status, 404);
      assert.ok(!got.body.includes('bytes outside the cache'));
    } finally {
      await unlink(host.manager.cachePathFor(planted));
    }
  });

  it('a download in progress (its staging file) is not served: 404 until it is published', async () => {
    const controller = new AbortController();
    const caching = host.manager.cacheImage(SLOW, { signal: controller.signal });
    caching.catch(() => undefined);
    const base = path.dirname(host.manager.cachePathFor(SLOW));
    const name = path.basename(host.manager.cachePathFor(SLOW));
    for (let i = 0; i < 200 && !(await listDir(base)).some((entry) => entry.startsWith(`.${name}`) || (entry.includes(name) && entry !== name)); i++) {
      await sleep(10);
    }
    assert.ok((await listDir(base)).some((entry) => entry.includes(name) && entry !== name), 'a staging file exists');
    const got = await ask(agent.url, `/v1/images/${SLOW}`);
    assert.equal(got.status, 404);
    controller.abort();
    await assert.rejects(caching);
  });

  it('serving is not a use: the entry is not touched', async () => {
    const file = host.manager.cachePathFor(IMAGE);
    const before = await stat(file);
    await sleep(20);
    await ask(agent.url, `/v1/images/${IMAGE}`);
    const afterServe = await stat(file);
    assert.equal(afterServe.mtimeMs, before.mtimeMs);
  });

  /** Descriptors of this process open on `file`. */
  async function openOn(file: string): Promise<number> {
    let count = 0;
    for (const fd of await readdir('/proc/self/fd')) {
      try {
        if ((await readlink(`/proc/self/fd/${fd}`)) === file) count++;
      } catch {
        // closed while listing
      }
    }
    return count;
  }

  /** Starts a GET of BIG and holds the response paused (the server blocks on backpressure). */
  async function pausedGet(): Promise<{ res: IncomingMessage; destroy: () => void }> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(`${agent.url}/v1/images/${BIG}`, { headers: { authorization: `Bearer ${SITE_TOKEN}` } }, (res) => {
        res.pause();
        resolve({
          res,
          destroy: () => {
            req.destroy();
          },
        });
      });
      req.on('error', reject);
      req.end();
    });
  }

  it('an entry removed mid-stream still reaches the peer complete (the open descriptor keeps the inode)', async () => {
    const file = host.manager.cachePathFor(BIG);
    const { res } = await pausedGet();
    await sleep(50);
    assert.equal(await openOn(file), 1, 'the file is still being read when it is removed');
    await unlink(file);
    const hash = createHash('sha256');
    let length = 0;
    await new Promise<void>((resolve, reject) => {
      res.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        length += chunk.length;
      });
      res.on('end', resolve);
      res.on('error', reject);
      res.resume();
    });
    assert.equal(res.statusCode, 200);
    assert.equal(length, BIG_CONTENT.size);
    assert.equal(hash.digest('hex'), sha256(generatedImageBytes(BIG_CONTENT)));
    assert.equal((await ask(agent.url, `/v1/images/${BIG}`)).status, 404);
    await host.manager.cacheImage(BIG);
  });

  it('a client that leaves mid-body closes the file', async () => {
    const file = host.manager.cachePathFor(BIG);
    const { destroy } = await pausedGet();
    await sleep(50);
    assert.equal(await openOn(file), 1, 'the file is open while it is served');
    destroy();
    let open = 1;
    for (let i = 0; i < 100 && open > 0; i++) {
      await sleep(10);
      open = await openOn(file);
    }
    assert.equal(open, 0);
  });

  it('a backend without a cache answers 501; one that keeps no files answers 404', async () => {
    const noop = await listen(createHostAgent(new NoopImageManager({ host: 'noop1', source: new MemoryImageSource([]) }), { token: SITE_TOKEN }));
    const memory = new MemoryImageManager({ host: 'mem1', source: new MemoryImageSource([{ id: IMAGE, data: BYTES }]) });
    await memory.cacheImage(IMAGE);
    const memoryAgent = await listen(createHostAgent(memory, { token: SITE_TOKEN }));
    try {
      const fromNoop = await ask(noop.url, `/v1/images/${IMAGE}`);
      assert.equal(fromNoop.status, 501);
      assert.equal(errorCode(fromNoop), 'ERR_UNSUPPORTED');
      assert.equal((await ask(memoryAgent.url, `/v1/images/${IMAGE}`)).status, 404);
    } finally {
      await noop.close();
      await memoryAgent.close();
    }
  });

});
