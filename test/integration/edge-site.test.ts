// Issue 16, "one pull per site", end to end: a fake Glance, four hosts each a real file cache
// behind a real host agent on loopback, pre-cached through precacheImages + HttpHostClient. The
// seed pulls from Glance, the others from their site's peers; a seed that fails hands over; a
// peer serving wrong bytes is blamed and the host ends verified from another peer; a peer that
// disappears mid-body is resumed at the byte reached, from the next peer or Glance; a peer without
// the image (404) and a peer that stalls are left for the next peer. Every test
// ends with each host's cached file checked (SHA-256 = the image's) and Glance's own byte counter
// asserted exactly. (Restart-resume across processes: test/reliability/resume-crashes.test.ts.)
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { GlanceImageSource, HostUnavailableError, describePrecacheSummary, precacheImages } from '../../src/index.js';
import type { PrecacheEvent, PrecacheSummary } from '../../src/index.js';
import { startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { captureLog } from '../helpers/capture-log.js';
import { seededBytes } from '../helpers/tmp.js';
import {
  assertNotCached,
  assertVerified,
  failingPrecache,
  hostileImageRoute,
  notFound,
  originsOf,
  servesBytes,
  stallsAt,
  startEdgeSite,
  vanishesAt,
} from './edge-site-fixture.js';
import type { AgentShape, EdgeSite } from './edge-site-fixture.js';

const SIZE = 3 * 1024 * 1024 + 321;
/** Where the vanishing peer drops the connection. */
const CUT = 1_234_567;
const IMAGES = {
  plain: 'ed9e0001-0000-4000-8000-000000000001',
  seedFails: 'ed9e0001-0000-4000-8000-000000000002',
  liar: 'ed9e0001-0000-4000-8000-000000000003',
  vanishing: 'ed9e0001-0000-4000-8000-000000000004',
  stalled: 'ed9e0001-0000-4000-8000-000000000005',
};
const BYTES = seededBytes(SIZE, 1616);
/** The image with one byte changed near the end: same size, another digest. */
const CORRUPT = Buffer.from(BYTES);
CORRUPT[SIZE - 100] = (CORRUPT[SIZE - 100] as number) ^ 0x5a;

function hostRows(summary: PrecacheSummary): [string, string, boolean, string, Record<string, number>][] {
  return summary.hosts.map((h) => [h.host, h.status, h.seed, h.images[0]?.status ?? '?', originsOf(h.bytesFrom)]);
}

describe('an edge site pre-cached end to end (agents on loopback, HttpHostClient, fake Glance)', () => {
  let glance: FakeGlance;
  let site: EdgeSite | undefined;

  before(async () => {
    glance = await startFakeGlance({ images: Object.values(IMAGES).map((id) => ({ id, content: BYTES })) });
  });
  afterEach(async () => {
    await site?.close();
    site = undefined;
  });
  after(async () => {
    await glance.close();
  });

  async function precache(
    imageId: string,
    shapes: Record<string, AgentShape>,
    concurrency: number,
    siteOf?: (host: string) => string,
    onEvent?: (event: PrecacheEvent) => void,
  ): Promise<{ summary: PrecacheSummary; edge: EdgeSite }> {
    const edge = await startEdgeSite(glance, shapes);
    site = edge;
    const summary = await precacheImages({
      aggregate: edge.aggregate(siteOf),
      imageIds: [imageId],
      source: new GlanceImageSource({ endpoint: glance.url }),
      client: edge.client,
      concurrency,
      onEvent,
    });
    return { summary, edge };
  }

  // Fails if the fan-out stops being site-aware (Glance would serve 4x SIZE), if a host reads from
  // Glance instead of the seed, or if the summary's origins or site totals are wrong.
  it('a site of 4 hosts: Glance serves the image exactly once; the seed is reported from glance, the others from peer:<seed>, 3x the size saved', async () => {
    const image = IMAGES.plain;
    const { summary, edge } = await precache(image, { e1: 'real', e2: 'real', e3: 'real', e4: 'real' }, 4);
    assert.deepEqual(hostRows(summary), [
      ['e1', 'done', true, 'cached', { glance: SIZE }],
      ['e2', 'done', false, 'cached', { 'peer:e1': SIZE }],
      ['e3', 'done', false, 'cached', { 'peer:e1': SIZE }],
      ['e4', 'done', false, 'cached', { 'peer:e1': SIZE }],
    ]);
    assert.deepEqual(summary.sites, [
      { site: 'edge', hosts: 4, seed: 'e1', peerFanOut: true, bytesFromGlance: SIZE, bytesFromPeers: 3 * SIZE, bytesSaved: 3 * SIZE },
    ]);
    assert.ok(
      describePrecacheSummary(summary).includes(`Site edge (4 hosts, seed e1): ${SIZE} bytes from glance, ${3 * SIZE} bytes from peers (${3 * SIZE} bytes saved)`),
    );
    for (const host of edge.hosts) await assertVerified(host, image, BYTES);
    assert.equal(glance.bytesServed(image), SIZE, 'Glance served 1.00 x the image');
    assert.equal(glance.requests(image).file, 1);
  });

  // Fails if a failed seed does not hand over (e3 and e4 would end with nothing, or pull from
  // Glance on their own: more than 1x SIZE), or if a failed host were used as a peer.
  it('seeds that fail (an agent answering 500, then one that is down while marked up) hand over; Glance still serves 1x the image', async () => {
    const image = IMAGES.seedFails;
    const { summary, edge } = await precache(image, { e1: failingPrecache(500), e2: 'down', e3: 'real', e4: 'real' }, 2);
    assert.deepEqual(hostRows(summary), [
      ['e1', 'failed', true, 'error', {}],
      ['e2', 'failed', true, 'error', {}],
      ['e3', 'done', true, 'cached', { glance: SIZE }],
      ['e4', 'done', false, 'cached', { 'peer:e3': SIZE }],
    ]);
    assert.deepEqual(summary.hosts.map((h) => [h.error?.code ?? null, h.error instanceof HostUnavailableError ? h.error.statusCode : null]), [
      ['ERR_HOST_UNAVAILABLE', 500],
      ['ERR_HOST_UNAVAILABLE', null],
      [null, null],
      [null, null],
    ]);
    assert.equal(summary.failedHosts, 2);
    assert.deepEqual(summary.sites.map((s) => [s.seed, s.bytesFromGlance, s.bytesFromPeers]), [['e3', SIZE, SIZE]]);
    const [e1, e2, e3, e4] = edge.hosts;
    assert.ok(e1 && e2 && e3 && e4);
    await assertNotCached(e1, image);
    await assertNotCached(e2, image);
    await assertVerified(e3, image, BYTES);
    await assertVerified(e4, image, BYTES);
    assert.equal(glance.bytesServed(image), SIZE, 'Glance served 1.00 x the image');
  });

  // Fails if wrong bytes from a peer reach a final name (the sha256 check), if the liar is not
  // blamed (it would be asked again: 2 GETs), or if the host falls back to Glance instead of the
  // next peer (Glance would serve 2x SIZE); and if the blame does not reach the operator: the
  // image result and host outcome of e3 (through the agent's JSON report), e3's progress event,
  // the summary's blamedPeers and its log line, each naming the liar and e3, and no other host.
  it('a peer serving wrong bytes (right size) is blamed; the host ends verified from another peer; Glance served only the seed', async () => {
    const image = IMAGES.liar;
    // One at a time, so the peer lists are known (the site's holders, rotated one more per host):
    // the liar caches from e1 for real, then e3 gets [liar, e1] and e4 gets [e3, e1, liar].
    const log = captureLog('virt-imagecache:precache');
    const progress: [string, readonly string[]][] = [];
    let summary: PrecacheSummary;
    let edge: EdgeSite;
    try {
      ({ summary, edge } = await precache(image, { e1: 'real', liar: hostileImageRoute(servesBytes(CORRUPT)), e3: 'real', e4: 'real' }, 1, undefined, (event) => {
        if (event.type === 'aggregate.cache_images.progress') progress.push([event.host, event.blamed_peers]);
      }));
    } finally {
      log.restore();
    }
    assert.deepEqual(
      summary.hosts.map((h) => [h.host, h.blamedPeers, h.images.map((i) => i.blamedPeers)]),
      [
        ['e1', [], [[]]],
        ['liar', [], [[]]],
        ['e3', ['liar'], [['liar']]],
        ['e4', [], [[]]],
      ],
      'e3 (and only e3) names the liar, on its outcome and its image',
    );
    assert.deepEqual(progress, [
      ['e1', []],
      ['liar', []],
      ['e3', ['liar']],
      ['e4', []],
    ], "e3's progress event carries blamed_peers");
    assert.deepEqual(summary.blamedPeers, [{ peer: 'liar', by: 'e3', imageId: image }]);
    const blameLine = `Peer liar served bad bytes for image ${image} to host e3; check its cache`;
    assert.deepEqual(describePrecacheSummary(summary).filter((line) => line.startsWith('Peer ')), [blameLine]);
    assert.ok(log.lines.some((line) => line.includes(blameLine)), 'the fan-out logs the blame line');
    assert.deepEqual(hostRows(summary), [
      ['e1', 'done', true, 'cached', { glance: SIZE }],
      ['liar', 'done', false, 'cached', { 'peer:e1': SIZE }],
      ['e3', 'done', false, 'cached', { 'peer:e1': SIZE }],
      ['e4', 'done', false, 'cached', { 'peer:e3': SIZE }],
    ]);
    assert.ok(
      log.lines.some((line) => line.includes(`e3: image ${image}, peer liar: blamed (bad-digest)`)),
      `e3 blamed the liar: ${log.lines.filter((line) => line.includes('peer liar')).join(' | ')}`,
    );
    assert.deepEqual(
      edge.host('liar').requests.filter((request) => request.startsWith('GET /v1/images/')),
      [`GET /v1/images/${image} -`],
      'the liar was read once (by e3), then never again',
    );
    for (const host of edge.hosts) await assertVerified(host, image, BYTES);
    assert.equal(glance.bytesServed(image), SIZE, 'Glance served only the seed');
  });

  // Fails if a cut body is not resumed at the byte reached (Glance would serve more than exactly
  // the remainder, or the ranges would differ), or if the bytes before the cut were fetched again.
  it('a peer that disappears mid-body: the next origin resumes at the byte reached (a peer: Glance 0; Glance: exactly the remainder)', async () => {
    const image = IMAGES.vanishing;
    // Two sites, one host at a time, so the peer lists are known. North: e1 seeds, `flaky`
    // caches from it for real but its image route drops every body at CUT; e3 gets [flaky, e1],
    // e4 gets [e3, e1, flaky]. South: its seed's route drops bodies at CUT, and s2 has no other peer.
    const { summary, edge } = await precache(
      image,
      { e1: 'real', flaky: hostileImageRoute(vanishesAt(BYTES, CUT)), e3: 'real', e4: 'real', s1: hostileImageRoute(vanishesAt(BYTES, CUT)), s2: 'real' },
      1,
      (host) => (host.startsWith('s') ? 'south' : 'north'),
    );
    assert.deepEqual(hostRows(summary), [
      ['e1', 'done', true, 'cached', { glance: SIZE }],
      ['flaky', 'done', false, 'cached', { 'peer:e1': SIZE }],
      ['e3', 'done', false, 'cached', { 'peer:flaky': CUT, 'peer:e1': SIZE - CUT }],
      ['e4', 'done', false, 'cached', { 'peer:e3': SIZE }],
      ['s1', 'done', true, 'cached', { glance: SIZE }],
      ['s2', 'done', false, 'cached', { 'peer:s1': CUT, glance: SIZE - CUT }],
    ]);
    assert.deepEqual(edge.host('e1').requests.filter((request) => request.startsWith('GET')), [
      `GET /v1/images/${image} -`,
      `GET /v1/images/${image} bytes=${CUT}-`,
    ], 'e1 served flaky the whole image, then e3 the rest from the cut');
    assert.deepEqual(
      glance.log.filter((record) => record.imageId === image && record.kind === 'file').map((record) => record.range),
      [undefined, undefined, `bytes=${CUT}-`],
      'the two seeds pulled the whole image, s2 only the rest from the cut',
    );
    assert.deepEqual(summary.sites.map((s) => [s.site, s.bytesFromGlance, s.bytesFromPeers]), [
      ['north', SIZE, 3 * SIZE],
      ['south', SIZE + (SIZE - CUT), CUT],
    ]);
    for (const host of edge.hosts) await assertVerified(host, image, BYTES);
    assert.equal(glance.bytesServed(image), 2 * SIZE + (SIZE - CUT), "Glance: each seed's pull and exactly the remainder after s2's cut");
  });

  // Fails if a peer without the image or a stalled peer ends the host's download (e4 or `stuck`
  // would be `error`), if a stall is not resumed at the byte reached (e1 would be asked from 0),
  // or if either falls back to Glance (more than 1x SIZE). Slow by design: the agent's peer
  // source leaves a silent peer after its default stall timeout (5 s).
  it('a peer without the image (404) and a peer that stalls mid-body are left for the next peer; Glance served only the seed', async () => {
    const image = IMAGES.stalled;
    // One at a time: `evicted` and `stuck` cache from e1 for real, but `evicted`'s image route
    // answers 404 and `stuck`'s stops sending at CUT. stuck gets [evicted, e1]; e4 gets [stuck, e1, evicted].
    const log = captureLog('virt-imagecache:precache');
    let summary: PrecacheSummary;
    let edge: EdgeSite;
    try {
      ({ summary, edge } = await precache(
        image,
        { e1: 'real', evicted: hostileImageRoute(notFound), stuck: hostileImageRoute(stallsAt(BYTES, CUT)), e4: 'real' },
        1,
      ));
    } finally {
      log.restore();
    }
    // The stall is detected by the peer source's rate floor (its window and the stall timeout are
    // both 5 s by default); the bytes of the read it cut are kept, so `stuck` is left exactly at
    // CUT, where it stopped sending, and e1 serves the rest from there.
    const fromStuck = summary.hosts[3]?.bytesFrom.find((origin) => origin.from === 'peer:stuck')?.bytes ?? 0;
    assert.equal(fromStuck, CUT, `stuck delivered ${fromStuck} bytes`);
    assert.deepEqual(hostRows(summary), [
      ['e1', 'done', true, 'cached', { glance: SIZE }],
      ['evicted', 'done', false, 'cached', { 'peer:e1': SIZE }],
      ['stuck', 'done', false, 'cached', { 'peer:e1': SIZE }],
      ['e4', 'done', false, 'cached', { 'peer:stuck': CUT, 'peer:e1': SIZE - CUT }],
    ]);
    const skipped = log.lines.filter((line) => line.includes(': skipped ('));
    assert.ok(skipped.some((line) => line.includes(`stuck: image ${image}, peer evicted: skipped (not-found)`)), skipped.join(' | '));
    assert.ok(skipped.some((line) => /e4: image \S+, peer stuck: skipped \((timeout|too-slow)\)/.test(line)), skipped.join(' | '));
    assert.deepEqual(edge.host('stuck').requests.filter((request) => request.startsWith('GET')), [`GET /v1/images/${image} -`]);
    assert.deepEqual(edge.host('e1').requests.filter((request) => request.startsWith('GET')), [
      `GET /v1/images/${image} -`,
      `GET /v1/images/${image} -`,
      `GET /v1/images/${image} bytes=${CUT}-`,
    ], 'e1 served evicted and stuck whole, then e4 the rest from where stuck was left');
    for (const host of edge.hosts) await assertVerified(host, image, BYTES);
    assert.equal(glance.bytesServed(image), SIZE, 'Glance served only the seed');
  });
});
