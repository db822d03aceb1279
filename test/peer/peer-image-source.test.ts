// PeerImageSource on a loopback site: a seed host's real agent, hostile peers on raw node:http,
// and the fake Glance as the image service. Every test ends with the image cached and verified
// (the SHA-256 of the cache file is the image's) and checks Glance's byte counter: exactly what
// was pulled from the image service, 0 when peers served everything, the rest only when a
// download resumed mid-body.
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  GlanceImageSource,
  HttpHostClient,
  InProcessHostClient,
  LibvirtFileImageManager,
  PeerImageSource,
  cacheImages,
  createHostAgent,
} from '../../src/index.js';
import type { BytesFrom, CacheImageResult, ImageSource, PeerEndpoint, PeerEvent, PeerImageSourceOptions } from '../../src/index.js';
import { decodeHostCacheReport } from '../../src/precache/index.js';
import { startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { SITE_TOKEN, answerHead, deadUrl, listen, sha256, sha256File, siteHost } from '../helpers/peers.js';
import type { Listening, SiteHost } from '../helpers/peers.js';
import { makeTempDir, seededBytes } from '../helpers/tmp.js';

const IMAGE = 'e1e1e1e1-0000-4000-8000-000000000001';
const BAD_SUM = 'e1e1e1e1-0000-4000-8000-000000000002';
const SIZE = 3 * 1024 * 1024;
const HALF = 1_500_000;
const BYTES = seededBytes(SIZE, 16);
/** The image with one byte changed: same size, another digest. */
const CORRUPT = Buffer.from(BYTES);
CORRUPT[SIZE - 10] = (CORRUPT[SIZE - 10] as number) ^ 0xff;

/** Fast timeouts: every failure of a peer is detected within a few hundred ms. */
const FAST: Partial<PeerImageSourceOptions> = { connectTimeoutMs: 500, headTimeoutMs: 1000, stallTimeoutMs: 300 };

/** A hostile peer: counts its requests and the ranges asked. */
interface Hostile extends Listening {
  readonly ranges: (string | undefined)[];
  readonly endpoint: PeerEndpoint;
}

async function hostile(name: string, handler: (request: IncomingMessage, response: ServerResponse) => void): Promise<Hostile> {
  const ranges: (string | undefined)[] = [];
  const server = await listen((request, response) => {
    ranges.push(request.headers.range);
    handler(request, response);
  });
  return { ...server, ranges, endpoint: { name, url: server.url } };
}

/** A peer that sends the bytes up to `upTo`, then closes the connection cleanly mid-body. */
const vanishing = (name: string, upTo: number): Promise<Hostile> =>
  hostile(name, (request, response) => {
    const start = answerHead(request, response, SIZE);
    response.write(BYTES.subarray(start, Math.max(start, upTo)), () => {
      response.socket?.destroySoon();
    });
  });

/** A peer that sends the bytes up to `upTo`, then nothing, keeping the connection open. */
const stalling = (name: string, upTo: number): Promise<Hostile> =>
  hostile(name, (request, response) => {
    const start = answerHead(request, response, SIZE);
    response.write(BYTES.subarray(start, Math.max(start, upTo)));
  });

/** A peer that sends 16 KiB every 100 ms (about 160 KB/s). */
const trickling = (name: string): Promise<Hostile> =>
  hostile(name, (request, response) => {
    let at = answerHead(request, response, SIZE);
    const timer = setInterval(() => {
      const end = Math.min(SIZE, at + 16 * 1024);
      response.write(BYTES.subarray(at, end));
      at = end;
      if (at === SIZE) {
        clearInterval(timer);
        response.end();
      }
    }, 100);
    response.on('close', () => {
      clearInterval(timer);
    });
  });

/** A peer whose copy is corrupt (right size, one byte wrong); it honours Range. */
const corrupt = (name: string): Promise<Hostile> =>
  hostile(name, (request, response) => {
    const start = answerHead(request, response, SIZE);
    response.end(CORRUPT.subarray(start));
  });

function bytesFromOf(result: CacheImageResult): Record<string, number> {
  return Object.fromEntries(result.bytesFrom.map(({ from, bytes }: BytesFrom) => [from, bytes]));
}

describe('PeerImageSource on a loopback site', () => {
  let glance: FakeGlance;
  let seed: SiteHost;
  let seedAgent: Listening;
  /** Ranges the seed's agent was asked for. */
  const seedRanges: (string | undefined)[] = [];
  let seedPeer: PeerEndpoint;
  const cleanups: (() => Promise<void>)[] = [];
  let edges = 0;

  before(async () => {
    glance = await startFakeGlance({
      images: [
        { id: IMAGE, content: BYTES },
        { id: BAD_SUM, content: seededBytes(200_000, 17), faults: { wrongChecksum: true } },
      ],
    });
    seed = await siteHost('seed', glance);
    await seed.manager.cacheImage(IMAGE);
    const handler = createHostAgent(seed.manager, { token: SITE_TOKEN });
    seedAgent = await listen((request, response) => {
      seedRanges.push(request.headers.range);
      handler(request, response);
    });
    seedPeer = { name: 'seed', url: seedAgent.url };
  });
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    await seedAgent.close();
    await seed.close();
    await glance.close();
  });

  /** A fresh host with an empty cache; Glance's counters start at 0. */
  async function edge(): Promise<SiteHost> {
    const host = await siteHost(`edge${++edges}`, glance);
    cleanups.push(() => host.close());
    glance.resetStats();
    seedRanges.length = 0;
    return host;
  }

  function keep<T extends Listening>(server: T): T {
    cleanups.push(() => server.close());
    return server;
  }

  /** Caches IMAGE on a fresh host through a PeerImageSource over `peers`; checks the file. */
  async function cacheVia(
    peers: readonly PeerEndpoint[],
    options: Partial<PeerImageSourceOptions> = {},
  ): Promise<{ result: CacheImageResult; events: PeerEvent[]; source: PeerImageSource }> {
    const host = await edge();
    const events: PeerEvent[] = [];
    const source = new PeerImageSource({
      upstream: host.manager.imageSource as GlanceImageSource,
      peers,
      token: SITE_TOKEN,
      ...FAST,
      onPeerEvent: (event) => events.push(event),
      ...options,
    });
    const result = await host.manager.cacheImage(IMAGE, { source });
    assert.equal(result.status, 'cached');
    assert.equal(await sha256File(host.manager.cachePathFor(IMAGE)), sha256(BYTES), 'the cached file is the image');
    const total = result.bytesFrom.reduce((sum, { bytes }) => sum + bytes, 0);
    assert.equal(total, SIZE, 'bytesFrom adds up to the image: no byte fetched twice');
    return { result, events, source };
  }

  const summary = (events: readonly PeerEvent[]): string[] =>
    events.map((event) => `${event.type} ${event.peer}@${event.offset}${event.reason === null ? '' : ` ${event.reason}`}`);

  it('a peer that holds the image serves all of it: Glance only describes it (0 bytes)', async () => {
    const { result, events } = await cacheVia([seedPeer]);
    assert.deepEqual(bytesFromOf(result), { 'peer:seed': SIZE });
    assert.equal(glance.bytesServed(IMAGE), 0);
    assert.ok(glance.requests(IMAGE).metadata >= 1, 'the size and digest came from Glance');
    assert.deepEqual(summary(events), ['reading seed@0']);
  });

  it('a peer without the image (404) is left for the next peer', async () => {
    const empty = await siteHost('empty', glance);
    cleanups.push(() => empty.close());
    const emptyAgent = await empty.serve();
    const { result, events } = await cacheVia([{ name: 'empty', url: emptyAgent.url }, seedPeer]);
    assert.deepEqual(summary(events), ['skipped empty@0 not-found', 'reading seed@0']);
    assert.deepEqual(bytesFromOf(result), { 'peer:seed': SIZE });
    assert.equal(glance.bytesServed(IMAGE), 0);
  });

  it('peers that refuse (connection refused, another token: 401) are left; with no peer left, Glance serves the image', async () => {
    const otherToken = keep(await listen(createHostAgent(seed.manager, { token: 'another-token' })));
    const { result, events } = await cacheVia([
      { name: 'gone', url: await deadUrl() },
      { name: 'locked', url: otherToken.url },
    ]);
    assert.deepEqual(summary(events), ['skipped gone@0 refused', 'skipped locked@0 unauthorized']);
    assert.equal(events[0]?.error?.code, 'ERR_PEER_UNAVAILABLE');
    assert.deepEqual(bytesFromOf(result), { glance: SIZE });
    assert.equal(glance.bytesServed(IMAGE), SIZE);
  });

  it('a peer that disappears mid-body: the next peer resumes at the byte reached', async () => {
    const gone = keep(await vanishing('vanishing', HALF));
    const { result, events } = await cacheVia([gone.endpoint, seedPeer]);
    assert.deepEqual(summary(events), ['reading vanishing@0', `skipped vanishing@${HALF} cut-short`, `reading seed@${HALF}`]);
    assert.deepEqual(bytesFromOf(result), { 'peer:vanishing': HALF, 'peer:seed': SIZE - HALF });
    assert.deepEqual(seedRanges, [`bytes=${HALF}-`]);
    assert.equal(glance.bytesServed(IMAGE), 0);
  });

  it('a peer that stalls is left after stallTimeoutMs; Glance serves only the rest, from the byte reached', async () => {
    const stuck = keep(await stalling('stalling', HALF));
    const started = performance.now();
    const { result, events } = await cacheVia([stuck.endpoint]);
    assert.ok(performance.now() - started < 5000);
    assert.deepEqual(summary(events), ['reading stalling@0', `skipped stalling@${HALF} timeout`]);
    assert.deepEqual(bytesFromOf(result), { 'peer:stalling': HALF, glance: SIZE - HALF });
    assert.equal(glance.bytesServed(IMAGE), SIZE - HALF);
    assert.deepEqual(
      glance.log.filter((record) => record.kind === 'file').map((record) => record.range),
      [`bytes=${HALF}-`],
    );
  });

  it('a peer slower than minBytesPerSecond is left for the next peer; no byte is fetched twice', async () => {
    const slow = keep(await trickling('trickling'));
    const { result, events } = await cacheVia([slow.endpoint, seedPeer], { minBytesPerSecond: 1024 * 1024, minSpeedWindowMs: 300 });
    // What the slow peer sent before the floor cut it is kept (the read it was filling resolves
    // with it), and the next peer starts right after: nothing it sent is fetched again.
    const fromSlow = bytesFromOf(result)['peer:trickling'] ?? 0;
    assert.ok(fromSlow > 0 && fromSlow < SIZE / 4, `the slow peer delivered ${fromSlow} bytes`);
    assert.deepEqual(summary(events), ['reading trickling@0', `skipped trickling@${fromSlow} too-slow`, `reading seed@${fromSlow}`]);
    assert.equal(bytesFromOf(result)['peer:seed'], SIZE - fromSlow);
    assert.deepEqual(seedRanges, [fromSlow === 0 ? undefined : `bytes=${fromSlow}-`]);
    assert.equal(glance.bytesServed(IMAGE), 0);
  });

  it('a peer serving wrong bytes: the download fails verification, the peer is blamed and skipped, the next peer serves a verified image', async () => {
    const liar = keep(await corrupt('liar'));
    const { result, events, source } = await cacheVia([liar.endpoint, seedPeer]);
    assert.deepEqual(summary(events), ['reading liar@0', 'blamed liar@0 bad-digest', 'reading seed@0']);
    assert.equal(events[1]?.error?.cause instanceof Error && (events[1].error.cause as { code?: string }).code, 'ERR_CHECKSUM_MISMATCH');
    assert.deepEqual(bytesFromOf(result), { 'peer:seed': SIZE });
    assert.deepEqual([...source.badPeers], [[IMAGE, ['liar']]]);
    assert.equal(liar.ranges.length, 1, 'a blamed peer is not asked again');
    assert.equal(glance.bytesServed(IMAGE), 0);
  });

  it('every peer serves wrong bytes: each is blamed once, then Glance serves the image', async () => {
    const liars = [keep(await corrupt('liar1')), keep(await corrupt('liar2'))];
    const { result, events, source } = await cacheVia(liars.map((liar) => liar.endpoint));
    assert.deepEqual(summary(events), ['reading liar1@0', 'blamed liar1@0 bad-digest', 'reading liar2@0', 'blamed liar2@0 bad-digest']);
    assert.deepEqual(bytesFromOf(result), { glance: SIZE });
    assert.deepEqual(source.badPeers.get(IMAGE), ['liar1', 'liar2']);
    assert.equal(glance.bytesServed(IMAGE), SIZE);
  });

  it('a peer announcing another size than Glance describes is not read', async () => {
    const other = keep(
      await hostile('resized', (request, response) => {
        response.writeHead(200, { 'Content-Length': SIZE + 1 });
        response.end(Buffer.concat([BYTES, Buffer.alloc(1)]));
      }),
    );
    const { result, events } = await cacheVia([other.endpoint, seedPeer]);
    assert.deepEqual(summary(events), ['skipped resized@0 size-mismatch', 'reading seed@0']);
    assert.deepEqual(bytesFromOf(result), { 'peer:seed': SIZE });
    assert.equal(glance.bytesServed(IMAGE), 0);
  });

  it('when only Glance contributed to a bad digest, the error is the download\'s, as without peers (no retry)', async () => {
    const host = await edge();
    const source = new PeerImageSource({ upstream: host.manager.imageSource as GlanceImageSource, peers: [seedPeer], token: SITE_TOKEN, ...FAST });
    await assert.rejects(host.manager.cacheImage(BAD_SUM, { source }), { code: 'ERR_CHECKSUM_MISMATCH' });
    assert.equal(glance.requests(BAD_SUM).file, 1);
    assert.equal(glance.bytesServed(BAD_SUM), 200_000);
    assert.equal(source.badPeers.size, 0);
  });

  it('a signal that fires while a peer stalls aborts the download: no fall back to Glance', async () => {
    const stuck = keep(await stalling('stalled', HALF));
    const host = await edge();
    const source = new PeerImageSource({ upstream: host.manager.imageSource as GlanceImageSource, peers: [stuck.endpoint], token: SITE_TOKEN, ...FAST, stallTimeoutMs: 5000 });
    const controller = new AbortController();
    setTimeout(() => {
      controller.abort();
    }, 100);
    await assert.rejects(host.manager.cacheImage(IMAGE, { source, signal: controller.signal }), { code: 'ERR_ABORTED' });
    assert.equal(glance.bytesServed(IMAGE), 0);
  });

  it('spawns on demand: a manager built over a PeerImageSource creates instance disks from the site\'s peers', async () => {
    const tmp = await makeTempDir('vic-spawn-');
    cleanups.push(tmp.cleanup);
    glance.resetStats();
    const manager = new LibvirtFileImageManager({
      host: 'spawner',
      instancesPath: tmp.dir,
      source: new PeerImageSource({ upstream: new GlanceImageSource({ endpoint: glance.url }), peers: [seedPeer], token: SITE_TOKEN, ...FAST }),
    });
    const disk = await manager.createInstanceDisk({ imageId: IMAGE, instanceDir: path.join(tmp.dir, 'instance-1'), format: 'raw' });
    assert.equal(disk.cacheStatus, 'cached');
    assert.equal(await sha256File(manager.cachePathFor(IMAGE)), sha256(BYTES));
    assert.equal(glance.bytesServed(IMAGE), 0);
  });

  it('cacheImages with peers reads from them (this host left out) and reports bytesFrom; peers need a peerToken', async () => {
    const host = await edge();
    const self = { name: host.name, url: await deadUrl() };
    await assert.rejects(cacheImages(host.manager, [IMAGE], { peers: [seedPeer] }), { code: 'ERR_INVALID_CONFIG' });
    const report = await cacheImages(host.manager, [IMAGE], { peers: [self, seedPeer], peerToken: SITE_TOKEN });
    assert.deepEqual(report.images.map((image) => [image.status, image.bytesFrom]), [['cached', [{ from: 'peer:seed', bytes: SIZE }]]]);
    assert.equal(await sha256File(host.manager.cachePathFor(IMAGE)), sha256(BYTES));
    assert.equal(glance.bytesServed(IMAGE), 0);
  });

  it('InProcessHostClient passes its peerToken; HttpHostClient decodes bytesFrom from the agent\'s report', async () => {
    const inProcess = await edge();
    const client = new InProcessHostClient([inProcess.manager], { peerToken: SITE_TOKEN });
    const local = await client.cacheImages({ name: inProcess.name }, [IMAGE], { signal: new AbortController().signal, peers: [seedPeer] });
    assert.deepEqual(local.images[0]?.bytesFrom, [{ from: 'peer:seed', bytes: SIZE }]);
    assert.equal(glance.bytesServed(IMAGE), 0);
    const remote = await edge();
    const agent = await remote.serve();
    const http = new HttpHostClient({ endpoints: { [remote.name]: agent.url }, token: SITE_TOKEN });
    const report = await http.cacheImages({ name: remote.name }, [IMAGE], { signal: new AbortController().signal });
    assert.deepEqual(report.images[0]?.bytesFrom, [{ from: 'glance', bytes: SIZE }]);
    assert.equal(await sha256File(remote.manager.cachePathFor(IMAGE)), sha256(BYTES));
    assert.equal(glance.bytesServed(IMAGE), SIZE);
  });

  it('open() streams the same bytes across peers (the first vanishing mid-body)', async () => {
    glance.resetStats();
    const gone = keep(await vanishing('half-gone', HALF));
    const source = new PeerImageSource({ upstream: new GlanceImageSource({ endpoint: glance.url }), peers: [gone.endpoint, seedPeer], token: SITE_TOKEN, ...FAST });
    const chunks: Buffer[] = [];
    for await (const chunk of await source.open(IMAGE)) chunks.push(chunk as Buffer);
    assert.equal(sha256(Buffer.concat(chunks)), sha256(BYTES));
    assert.equal(glance.bytesServed(IMAGE), 0);
  });

  it('options are checked: the token, each peer, the timeouts', () => {
    const upstream = new GlanceImageSource({ endpoint: glance.url });
    const make = (extra: Partial<PeerImageSourceOptions>): PeerImageSource => new PeerImageSource({ upstream, peers: [seedPeer], token: SITE_TOKEN, ...extra });
    assert.throws(() => make({ token: 'has space' }), { code: 'ERR_INVALID_CONFIG', message: /token/ });
    assert.throws(() => make({ peers: [{ name: 'x', url: 'ftp://host' }] }), { code: 'ERR_INVALID_CONFIG', message: /peers/ });
    assert.throws(() => make({ peers: [{ name: '', url: seedAgent.url }] }), { code: 'ERR_INVALID_CONFIG', message: /peers/ });
    assert.throws(() => make({ stallTimeoutMs: 0 }), { code: 'ERR_INVALID_CONFIG', message: /stallTimeoutMs/ });
    assert.throws(() => make({ minBytesPerSecond: -1 }), { code: 'ERR_INVALID_CONFIG', message: /minBytesPerSecond/ });
    assert.throws(() => make({ upstream: JSON.parse('{}') as ImageSource }), { code: 'ERR_INVALID_CONFIG', message: /upstream/ });
    assert.ok(make({}) instanceof PeerImageSource);
  });

  it('a report without bytesFrom (an older agent) decodes as []; malformed entries are dropped', () => {
    const base = { imageId: IMAGE, status: 'cached', error: null, bytes: 1, durationMs: 1, pinnedUntil: null };
    const decoded = decodeHostCacheReport('h1', {
      host: 'h1',
      durationMs: 1,
      images: [base, { ...base, bytesFrom: [{ from: 'peer:a', bytes: 5 }, { from: 'elsewhere', bytes: 1 }, { from: 'glance', bytes: -1 }, 'x'] }],
    });
    assert.deepEqual(
      decoded.images.map((image) => image.bytesFrom),
      [[], [{ from: 'peer:a', bytes: 5 }]],
    );
  });
});
