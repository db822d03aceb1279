// The host agent over real loopback HTTP, and HttpHostClient against it: Nova's API schema tests
// (docs/nova-parity.md, precache: 400 for each malformed body) on the agent's route, the bearer
// token, the body limit, cancellation on disconnect, and every failure mapped to a typed error
// naming the host.
import assert from 'node:assert/strict';
import { createServer, request as httpRequest } from 'node:http';
import type { RequestListener, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import {
  GlanceImageSource,
  HttpHostClient,
  LibvirtFileImageManager,
  RemoteImageCacheError,
  createHostAgent,
  isImageCacheError,
} from '../../src/index.js';
import type { HostCacheOptions, HttpHostClientOptions } from '../../src/index.js';
import { startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { listDir, makeTempDir } from '../helpers/tmp.js';

const TOKEN = 'agent-token-0123456789';
const IMAGE = 'fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0';
const SLOW_IMAGE = 'slow-image';

async function listen(handler: RequestListener): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
}

/** A raw POST, to see exactly what the agent answers. */
async function post(
  url: string,
  body: string,
  headers: Record<string, string> = { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
  method = 'POST',
  route = '/v1/cache-images',
): Promise<{ status: number; headers: Headers; json: { error?: { code: string; name: string; message: string } } }> {
  const response = await fetch(`${url}${route}`, { method, headers, ...(method === 'POST' ? { body } : {}) });
  return { status: response.status, headers: response.headers, json: (await response.json()) as { error?: { code: string; name: string; message: string } } };
}

function options(extra: Partial<HostCacheOptions> = {}): HostCacheOptions {
  return { signal: new AbortController().signal, ...extra };
}

describe('host agent and HttpHostClient over loopback HTTP', () => {
  let glance: FakeGlance;
  let manager: LibvirtFileImageManager;
  let agent: { server: Server; url: string };
  let cleanup: () => Promise<void>;
  const client = (extra: Partial<HttpHostClientOptions> = {}): HttpHostClient =>
    new HttpHostClient({ endpoints: { compute1: agent.url }, token: TOKEN, ...extra });

  before(async () => {
    glance = await startFakeGlance({
      images: [
        { id: IMAGE, content: { size: 300_000, seed: 7 } },
        { id: SLOW_IMAGE, content: { size: 8 * 1024 * 1024, seed: 8 }, faults: { throttleBytesPerSecond: 256 * 1024 } },
      ],
    });
    const tmp = await makeTempDir('vic-agent-');
    cleanup = tmp.cleanup;
    manager = new LibvirtFileImageManager({
      host: 'compute1',
      instancesPath: tmp.dir,
      source: new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 5 }),
    });
    agent = await listen(createHostAgent(manager, { token: TOKEN, maxBodyBytes: 4096 }));
  });
  after(async () => {
    await close(agent.server);
    await glance.close();
    await cleanup();
  });

  it('AggregatesV281Test.test_cache_images_on_aggregate: the agent caches the image and answers the report; again, existing', async () => {
    const first = await client().cacheImages({ name: 'compute1' }, [IMAGE], options({ pinTtlSeconds: 3600 }));
    assert.equal(first.host, 'compute1');
    assert.deepEqual(first.images.map((i) => [i.imageId, i.status, i.bytes]), [[IMAGE, 'cached', 300_000]]);
    assert.equal(typeof first.images[0]?.pinnedUntil, 'number');
    assert.deepEqual([...(await manager.listPins()).keys()], [IMAGE]);
    const second = await client().cacheImages({ name: 'compute1' }, [IMAGE], options());
    assert.equal(second.images[0]?.status, 'existing');
    assert.equal(glance.bytesServed(IMAGE), 300_000);
  });

  it('an image error on the host comes back typed: a RemoteImageCacheError with the remote code and class name', async () => {
    const report = await client().cacheImages({ name: 'compute1' }, ['not-in-glance'], options());
    const error = report.images[0]?.error;
    assert.ok(error instanceof RemoteImageCacheError);
    assert.equal(error.code, 'ERR_IMAGE_NOT_FOUND');
    assert.equal(error.remoteName, 'ImageNotFoundError');
    assert.equal(error.host, 'compute1');
    assert.equal(error.imageId, 'not-in-glance');
    assert.equal((error.toJSON()).name, 'ImageNotFoundError');
  });

  it('a missing or wrong bearer token gets 401 with WWW-Authenticate, before the body is looked at', async () => {
    const body = JSON.stringify({ cache: [{ id: IMAGE }] });
    const none = await post(agent.url, body, { 'Content-Type': 'application/json' });
    assert.equal(none.status, 401);
    assert.match(none.headers.get('www-authenticate') ?? '', /^Bearer/);
    assert.equal(none.json.error?.code, 'ERR_HOST_UNAUTHORIZED');
    const wrong = await post(agent.url, 'not even json', { Authorization: `Bearer ${TOKEN}x`, 'Content-Type': 'application/json' });
    assert.equal(wrong.status, 401);
    const basic = await post(agent.url, body, { Authorization: `Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}`, 'Content-Type': 'application/json' });
    assert.equal(basic.status, 401);
  });

  it('HttpHostClient maps a wrong token to ERR_HOST_UNAUTHORIZED naming the host', async () => {
    await assert.rejects(client({ token: 'wrong' }).cacheImages({ name: 'compute1' }, [IMAGE], options()), (err: unknown) => {
      assert.ok(isImageCacheError(err));
      assert.equal(err.code, 'ERR_HOST_UNAUTHORIZED');
      assert.match(err.message, /host compute1 refused the request \(HTTP 401\)/);
      return true;
    });
  });

  for (const [test, body] of [
    ['_with_no_images', { cache: [] }],
    ['_with_duplicates', { cache: [{ id: IMAGE }, { id: IMAGE }] }],
    ['_with_additional_in_image', { cache: [{ id: IMAGE, foo: 'bar' }] }],
    ['_with_missing_image_id', { cache: [{ foo: 'bar' }] }],
    ['_with_missing_cache', {}],
    ['_with_additional_in_cache', { cache: [{ id: IMAGE }], foo: 'bar' }],
    ['(a bad image id)', { cache: [{ id: '../../etc/passwd' }] }],
    ['(a bad pin)', { cache: [{ id: IMAGE }], pinTtlSeconds: -5 }],
  ] as const) {
    it(`AggregatesV281Test.test_cache_images${test}: 400 with a typed error`, async () => {
      const answer = await post(agent.url, JSON.stringify(body));
      assert.equal(answer.status, 400);
      assert.match(answer.json.error?.code ?? '', /^ERR_INVALID_(REQUEST|IMAGE_ID|CONFIG)$/);
    });
  }

  it('malformed JSON is 400, another path 404, another method 405, another type 415, a body over the limit 413', async () => {
    assert.equal((await post(agent.url, '{"cache": [')).status, 400);
    assert.equal((await post(agent.url, '{}', undefined, 'POST', '/v1/other')).status, 404);
    const get = await post(agent.url, '', { Authorization: `Bearer ${TOKEN}` }, 'GET');
    assert.equal(get.status, 405);
    assert.equal(get.headers.get('allow'), 'POST');
    const text = await post(agent.url, '{}', { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'text/plain' });
    assert.equal(text.status, 415);
    const many = JSON.stringify({ cache: Array.from({ length: 200 }, (_, i) => ({ id: `image-${i}-${'x'.repeat(20)}` })) });
    const large = await post(agent.url, many);
    assert.equal(large.status, 413);
    assert.equal(large.json.error?.code, 'ERR_INVALID_REQUEST');
  });

  it('a 400 from the agent reaches HttpHostClient as the remote typed error', async () => {
    await assert.rejects(client().cacheImages({ name: 'compute1' }, [IMAGE, IMAGE], options()), (err: unknown) => {
      assert.ok(err instanceof RemoteImageCacheError);
      assert.equal(err.code, 'ERR_INVALID_REQUEST');
      return true;
    });
  });

  it('a client that disconnects cancels the download on the host: no more bytes are fetched, nothing partial is left', async () => {
    const request = httpRequest(`${agent.url}/v1/cache-images`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    });
    request.on('error', () => undefined);
    request.end(JSON.stringify({ cache: [{ id: SLOW_IMAGE }] }));
    while (glance.bytesServed(SLOW_IMAGE) === 0) await sleep(20);
    request.destroy();
    await sleep(300);
    const served = glance.bytesServed(SLOW_IMAGE);
    await sleep(400);
    assert.equal(glance.bytesServed(SLOW_IMAGE), served, 'the host kept downloading after the client left');
    assert.ok(served < 8 * 1024 * 1024);
    const names = await listDir(manager.baseDir);
    assert.ok(!names.includes(manager.cacheFileName(SLOW_IMAGE)));
    assert.deepEqual(names.filter((name) => name.endsWith('.part')), []);
  });

  it('HttpHostClient: 5xx, refused connections, malformed answers, a mixed-up endpoint and no endpoint are ERR_HOST_UNAVAILABLE', async () => {
    const failing = await listen((_req, res) => {
      res.writeHead(503, { 'Content-Type': 'text/html' }).end('<h1>Service Unavailable</h1>');
    });
    const garbage = await listen((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"host": "garbage", "images": "nope"}');
    });
    const refused = await listen(() => undefined);
    await close(refused.server);
    try {
      const endpoints = { h503: failing.url, garbage: garbage.url, refused: refused.url, mixed: agent.url };
      const http = new HttpHostClient({ endpoints, token: TOKEN });
      const errorOf = async (host: string): Promise<{ code: string; statusCode: unknown; message: string }> => {
        try {
          await http.cacheImages({ name: host }, [IMAGE], options());
        } catch (err) {
          assert.ok(isImageCacheError(err));
          return { code: err.code, statusCode: (err as { statusCode?: unknown }).statusCode, message: err.message };
        }
        assert.fail(`host ${host} answered`);
      };
      const h503 = await errorOf('h503');
      assert.deepEqual([h503.code, h503.statusCode], ['ERR_HOST_UNAVAILABLE', 503]);
      assert.match(h503.message, /answered HTTP 503/);
      assert.match((await errorOf('garbage')).message, /malformed: the answer has no "images" list/);
      assert.match((await errorOf('refused')).message, /ECONNREFUSED/);
      assert.match((await errorOf('mixed')).message, /serves host "compute1", not mixed/);
      assert.match((await errorOf('nowhere')).message, /no agent endpoint is configured/);
      assert.throws(() => new HttpHostClient({ endpoints: { bad: 'ftp://x' }, token: TOKEN }), { code: 'ERR_INVALID_CONFIG' });
    } finally {
      await close(failing.server);
      await close(garbage.server);
    }
  });

  it('HttpHostClient: a host that never answers is ERR_HOST_TIMEOUT; a cancelled call is ERR_ABORTED', async () => {
    const silent = await listen(() => undefined);
    try {
      const http = new HttpHostClient({ endpoints: () => silent.url, token: TOKEN, timeoutMs: 150 });
      await assert.rejects(http.cacheImages({ name: 'quiet' }, [IMAGE], options()), { code: 'ERR_HOST_TIMEOUT', host: 'quiet', timeoutMs: 150 });
      const controller = new AbortController();
      setTimeout(() => {
        controller.abort();
      }, 50);
      await assert.rejects(http.cacheImages({ name: 'quiet' }, [IMAGE], { signal: controller.signal }), { code: 'ERR_ABORTED' });
    } finally {
      await close(silent.server);
    }
  });

  it('an agent needs a token; a path prefix in the endpoint is kept', async () => {
    assert.throws(() => createHostAgent(manager, { token: '' }), { code: 'ERR_INVALID_CONFIG' });
    const seen: string[] = [];
    const prefixed = await listen((req, res) => {
      seen.push(req.url ?? '');
      res.writeHead(404).end();
    });
    try {
      const http = new HttpHostClient({ endpoints: { h: `${prefixed.url}/agents/h/` }, token: TOKEN });
      await assert.rejects(http.cacheImages({ name: 'h' }, [IMAGE], options()), { code: 'ERR_HOST_UNAVAILABLE', message: /no pre-cache agent answers/ });
      assert.deepEqual(seen, ['/agents/h/v1/cache-images']);
    } finally {
      await close(prefixed.server);
    }
  });

  it('pre-caching leaves the cache consistent: only complete images under final names', async () => {
    const names = await listDir(path.join(manager.instancesPath, '_base'));
    assert.deepEqual(names, [manager.cacheFileName(IMAGE)]);
  });
});
