// `peers` on the host agent's wire (issue 16): the fan-out's peer list travels in the POST
// /v1/cache-images body, strictly checked by the agent (typed 400s); HttpHostClient knows each
// host's peer endpoint (its agent URL) and sends the list; reports carry bytes per origin. Then a
// site of three real agents pre-cached through HttpHostClient.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { RequestListener, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GlanceImageSource, HttpHostClient, LibvirtFileImageManager, createHostAgent, precacheImages } from '../../src/index.js';
import { MAX_REQUEST_PEERS, decodeHostCacheReport, encodeCacheImagesRequest, parseCacheImagesRequest } from '../../src/precache/index.js';
import { answeredOutcome } from '../../src/precache/outcomes.js';
import type { PrecacheImageResult } from '../../src/index.js';
import { startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { makeTempDir } from '../helpers/tmp.js';

const TOKEN = 'agent-token-peers-0123';
const IMAGE = 'c6bd3b56-3a43-4c36-9a3c-1b1e3f0a9d21';
const SIZE = 200_000;
const PEER = { name: 'edge-2', url: 'http://10.0.0.2:8775' };

async function listen(handler: RequestListener): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${String((server.address() as AddressInfo).port)}` };
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
}

describe('peers on the wire', () => {
  it('encode and parse carry peers both ways; none is left out of the body and parses as []', () => {
    const body = encodeCacheImagesRequest([IMAGE], { peers: [PEER, { name: 'edge-3', url: 'https://10.0.0.3:8775/agent' }] });
    assert.deepEqual(body.peers, [PEER, { name: 'edge-3', url: 'https://10.0.0.3:8775/agent' }]);
    assert.deepEqual(parseCacheImagesRequest(JSON.parse(JSON.stringify(body))).peers, body.peers);
    const plain = encodeCacheImagesRequest([IMAGE], { peers: [] });
    assert.equal('peers' in plain, false);
    assert.deepEqual(parseCacheImagesRequest(plain).peers, []);
  });

  it('the agent\'s parsing is strict: each malformed peers list is a typed ERR_INVALID_REQUEST', () => {
    const bad: [unknown, RegExp][] = [
      [{ name: 'x', url: 'http://a' }, /"peers" must be a list/],
      [Array.from({ length: MAX_REQUEST_PEERS + 1 }, (_, i) => ({ name: `h${String(i)}`, url: 'http://a' })), /at most 64/],
      [['edge-2'], /peers\[0\] must be an object/],
      [[{ name: 'edge-2' }], /exactly "name" and "url"/],
      [[{ ...PEER, token: 't' }], /exactly "name" and "url"/],
      [[{ name: '', url: 'http://a' }], /peers\[0\]\.name/],
      [[PEER, PEER], /peers\[1\]\.name .*each peer once/],
      [[{ name: 'edge-2', url: 'ftp://10.0.0.2/' }], /peers\[0\]\.url must be an http/],
      [[{ name: 'edge-2', url: 'not a url' }], /peers\[0\]\.url/],
      [[{ name: 'edge-2', url: 7 }], /peers\[0\]\.url/],
    ];
    for (const [peers, message] of bad) {
      assert.throws(() => parseCacheImagesRequest({ cache: [{ id: IMAGE }], peers }), { code: 'ERR_INVALID_REQUEST', message }, JSON.stringify(peers));
    }
  });

  it('HttpHostClient: each host\'s peer endpoint is its agent URL (map or function); it sends the peers; a report\'s bytesFrom is decoded', async () => {
    const bodies: unknown[] = [];
    let answerBytesFrom: unknown = [{ from: 'peer:edge-2', bytes: 10 }];
    const fake = await listen((request, response) => {
      let raw = '';
      request.on('data', (chunk: Buffer) => (raw += chunk.toString()));
      request.on('end', () => {
        bodies.push(JSON.parse(raw));
        const image = { imageId: IMAGE, status: 'cached', error: null, bytes: 10, durationMs: 1, pinnedUntil: null, bytesFrom: answerBytesFrom };
        if (answerBytesFrom === undefined) delete (image as Partial<typeof image>).bytesFrom;
        response.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ host: 'edge-1', images: [image], durationMs: 1 }));
      });
    });
    try {
      const client = new HttpHostClient({ endpoints: { 'edge-1': `${fake.url}/agents/one/` }, token: TOKEN });
      assert.deepEqual(client.peerEndpointOf({ name: 'edge-1' }), { name: 'edge-1', url: `${fake.url}/agents/one/` });
      assert.equal(client.peerEndpointOf({ name: 'elsewhere' }), undefined);
      assert.deepEqual(new HttpHostClient({ endpoints: (host) => `http://${host.name}.example:8775`, token: TOKEN }).peerEndpointOf({ name: 'edge-9' }), {
        name: 'edge-9',
        url: 'http://edge-9.example:8775/',
      });

      const signal = new AbortController().signal;
      const report = await client.cacheImages({ name: 'edge-1' }, [IMAGE], { signal, peers: [PEER] });
      assert.deepEqual(bodies.at(-1), { cache: [{ id: IMAGE }], peers: [PEER] });
      assert.deepEqual(report.images[0]?.bytesFrom, [{ from: 'peer:edge-2', bytes: 10 }]);

      answerBytesFrom = undefined; // an agent older than peers
      const older = await client.cacheImages({ name: 'edge-1' }, [IMAGE], { signal });
      assert.deepEqual(bodies.at(-1), { cache: [{ id: IMAGE }] });
      assert.deepEqual(older.images[0]?.bytesFrom, []);

      answerBytesFrom = [{ from: 'somewhere', bytes: 10 }, { from: 'glance', bytes: 4 }];
      const odd = await client.cacheImages({ name: 'edge-1' }, [IMAGE], { signal });
      assert.deepEqual(odd.images[0]?.bytesFrom, [{ from: 'glance', bytes: 4 }], 'an entry of unknown origin is dropped');
    } finally {
      await close(fake.server);
    }
  });
});

describe('blamedPeers on the wire', () => {
  const answer = (blamedPeers: unknown, withField = true): unknown => ({
    host: 'edge-1',
    images: [{ imageId: IMAGE, status: 'cached', error: null, bytes: 10, durationMs: 1, pinnedUntil: null, bytesFrom: [], ...(withField ? { blamedPeers } : {}) }],
    durationMs: 1,
  });
  const decoded = (value: unknown): readonly string[] | undefined => decodeHostCacheReport('edge-1', value).images[0]?.blamedPeers;

  // Fails if the decoder drops a well-formed list, keeps a malformed entry, repeats a peer, or
  // leaves the field undefined for an older agent (the summary would then throw on it).
  it('decodeHostCacheReport reads blamedPeers tolerantly: as sent; absent or not a list → []; malformed or repeated entries dropped', () => {
    assert.deepEqual(decoded(answer(['edge-3', 'edge-2'])), ['edge-3', 'edge-2'], 'kept, in order');
    assert.deepEqual(decoded(answer(undefined, false)), [], 'an agent older than blame sends none');
    assert.deepEqual(decoded(answer(null)), []);
    assert.deepEqual(decoded(answer('edge-3')), [], 'not a list');
    assert.deepEqual(decoded(answer([7, '', null, { peer: 'x' }, 'edge-3', 'edge-3', 'edge-2'])), ['edge-3', 'edge-2'], 'malformed and repeated entries dropped');
    const report = decodeHostCacheReport('edge-1', JSON.parse(JSON.stringify(answer(['edge-3']))));
    assert.deepEqual(report.images[0]?.blamedPeers, ['edge-3'], 'survives a JSON round trip');
  });

  // Fails if a HostClient written before blame (no blamedPeers on its results) breaks the outcome,
  // or if the host outcome is not the union of its images' blamed peers, each once.
  it("a host outcome unions its images' blamedPeers (first seen, each once); a client without the field blames none", () => {
    const place = { host: 'edge-1', cell: 'default', site: 'north' };
    const image = (imageId: string, blamedPeers?: string[]): PrecacheImageResult =>
      ({ imageId, status: 'cached', error: null, bytes: 1, durationMs: 0, pinnedUntil: null, bytesFrom: [], ...(blamedPeers === undefined ? {} : { blamedPeers }) }) as PrecacheImageResult;
    const ids = ['a', 'b', 'c'];
    const outcome = answeredOutcome(place, ids, { host: 'edge-1', images: [image('a', ['edge-3']), image('b', ['edge-2', 'edge-3']), image('c', [])], durationMs: 0 }, 0);
    assert.deepEqual(outcome.blamedPeers, ['edge-3', 'edge-2']);
    const older = answeredOutcome(place, ids, { host: 'edge-1', images: ids.map((id) => image(id)), durationMs: 0 }, 0);
    assert.deepEqual([older.blamedPeers, older.images.map((i) => i.blamedPeers)], [[], [[], [], []]]);
  });
});

describe('a site of three host agents pre-cached through HttpHostClient', () => {
  let glance: FakeGlance;
  const agents: { host: string; server: Server; url: string }[] = [];
  let cleanup: () => Promise<void>;

  before(async () => {
    glance = await startFakeGlance({ images: [{ id: IMAGE, content: { size: SIZE, seed: 16 } }] });
    const tmp = await makeTempDir('vic-site-');
    cleanup = tmp.cleanup;
    for (const host of ['edge-1', 'edge-2', 'edge-3']) {
      const manager = new LibvirtFileImageManager({
        host,
        instancesPath: path.join(tmp.dir, host),
        source: new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 5 }),
      });
      agents.push({ host, ...(await listen(createHostAgent(manager, { token: TOKEN }))) });
    }
  });
  after(async () => {
    for (const agent of agents) await close(agent.server);
    await glance.close();
    await cleanup();
  });

  it('the seed caches first; the others are asked with peers, which the agents accept; every byte is accounted to Glance or a peer', async () => {
    const bodies = new Map<string, unknown>();
    const endpoints = Object.fromEntries(agents.map((agent) => [agent.host, agent.url]));
    const client = new HttpHostClient({ endpoints, token: TOKEN });
    const recording = {
      peerEndpointOf: client.peerEndpointOf.bind(client),
      cacheImages: (...args: Parameters<HttpHostClient['cacheImages']>) => {
        bodies.set(args[0].name, encodeCacheImagesRequest(args[1], args[2]));
        return client.cacheImages(...args);
      },
    };
    const summary = await precacheImages({
      aggregate: { id: 'site', name: 'site', hosts: agents.map((agent) => ({ name: agent.host, site: 'edge' })) },
      imageIds: [IMAGE],
      source: new GlanceImageSource({ endpoint: glance.url }),
      client: recording,
      concurrency: 3,
    });
    assert.deepEqual(summary.hosts.map((h) => [h.host, h.status, h.images[0]?.status, h.seed]), [
      ['edge-1', 'done', 'cached', true],
      ['edge-2', 'done', 'cached', false],
      ['edge-3', 'done', 'cached', false],
    ]);
    assert.deepEqual(bodies.get('edge-1'), { cache: [{ id: IMAGE }] });
    assert.deepEqual(bodies.get('edge-2'), { cache: [{ id: IMAGE }], peers: [{ name: 'edge-1', url: `${endpoints['edge-1'] ?? ''}/` }] });
    const [site] = summary.sites;
    assert.ok(site !== undefined);
    assert.equal(site.bytesFromGlance + site.bytesFromPeers, 3 * SIZE);
    assert.equal(glance.bytesServed(IMAGE), site.bytesFromGlance);
    assert.equal(summary.hosts[0]?.bytesFrom[0]?.from, 'glance');
  });

  it('an agent answers a malformed peers list with HTTP 400 ERR_INVALID_REQUEST, before any work', async () => {
    const before = glance.bytesServed(IMAGE);
    const response = await fetch(`${agents[0]?.url ?? ''}/v1/cache-images`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ cache: [{ id: 'another-image' }], peers: [{ name: 'edge-2', url: 'file:///etc/passwd' }] }),
    });
    assert.equal(response.status, 400);
    const json = (await response.json()) as { error: { code: string; message: string } };
    assert.equal(json.error.code, 'ERR_INVALID_REQUEST');
    assert.match(json.error.message, /peers\[0\]\.url/);
    assert.equal(glance.bytesServed(IMAGE), before);
  });
});
