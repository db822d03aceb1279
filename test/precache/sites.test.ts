// Site-aware pre-caching (issue 16, "one pull per site"): per site one seed host is asked first,
// without peers; the others of the site after it answered, with the site's finished hosts as
// peers; a failed seed hands over; hosts without a site, and sites without peer endpoints, run as
// before; site speed caps; bytes per origin in outcomes, events and the summary.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { HostUnavailableError, precacheImages } from '../../src/index.js';
import type { HostClient, PrecacheEvent, PrecacheHost, PrecacheImagesOptions, PrecacheProgressEvent } from '../../src/index.js';
import { MemoryImageSource } from '../../src/testing/index.js';
import { captureLog } from '../helpers/capture-log.js';
import { FakeHostClient, IMAGE_BYTES, cachedFromFirstPeer, endpointsOf, report } from './fake-host-client.js';
import type { RecordedCall } from './fake-host-client.js';

const images = new MemoryImageSource([
  { id: 'image1', data: Buffer.alloc(IMAGE_BYTES, 1) },
  { id: 'image2', data: Buffer.alloc(IMAGE_BYTES, 2) },
]);

function site(name: string, count: number, prefix = name): PrecacheHost[] {
  return Array.from({ length: count }, (_, i) => ({ name: `${prefix}-${String(i + 1)}`, site: name }));
}

function request(client: HostClient, hosts: readonly PrecacheHost[], extra: Partial<PrecacheImagesOptions> = {}): PrecacheImagesOptions {
  return { aggregate: { id: 1, name: 'edge', hosts }, imageIds: ['image1'], source: images, client, ...extra };
}

function progressOf(events: readonly PrecacheEvent[]): PrecacheProgressEvent[] {
  return events.filter((event): event is PrecacheProgressEvent => event.type === 'aggregate.cache_images.progress');
}

/** Answers after a few ms, so calls overlap when concurrency allows. */
async function slowly(call: RecordedCall): Promise<ReturnType<typeof cachedFromFirstPeer> extends Promise<infer R> ? R : never> {
  await sleep(5);
  return cachedFromFirstPeer(call);
}

describe('site-aware fan-out: one pull per site', () => {
  it('the seed is asked alone, without peers; the other hosts of its site only after it answered, with the seed as their peer', async () => {
    const hosts = site('north', 4);
    const client = new FakeHostClient(slowly, endpointsOf(...hosts.map((h) => h.name)));
    const events: PrecacheEvent[] = [];
    const summary = await precacheImages(request(client, hosts, { concurrency: 4, onEvent: (e) => events.push(e) }));

    assert.deepEqual(client.journal.slice(0, 2), ['start north-1', 'end north-1']);
    assert.equal(client.calls[0]?.options.peers, undefined);
    assert.equal(client.maxActive, 3, 'the three others ran together once the seed answered');
    for (const call of client.calls.slice(1)) assert.equal(call.options.peers?.[0]?.name, 'north-1');
    assert.deepEqual(client.calls[1]?.options.peers, [{ name: 'north-1', url: 'http://10.0.0.1:8775' }]);

    assert.deepEqual(
      summary.hosts.map((h) => [h.host, h.site, h.seed, h.status, h.bytesFrom]),
      [
        ['north-1', 'north', true, 'done', [{ from: 'glance', bytes: IMAGE_BYTES }]],
        ['north-2', 'north', false, 'done', [{ from: 'peer:north-1', bytes: IMAGE_BYTES }]],
        ['north-3', 'north', false, 'done', [{ from: 'peer:north-1', bytes: IMAGE_BYTES }]],
        ['north-4', 'north', false, 'done', [{ from: 'peer:north-1', bytes: IMAGE_BYTES }]],
      ],
    );
    assert.deepEqual(summary.sites, [
      { site: 'north', hosts: 4, seed: 'north-1', peerFanOut: true, bytesFromGlance: IMAGE_BYTES, bytesFromPeers: 3 * IMAGE_BYTES, bytesSaved: 3 * IMAGE_BYTES },
    ]);
    const progress = progressOf(events);
    assert.deepEqual(progress[0] && [progress[0].host, progress[0].site, progress[0].seed, progress[0].bytes_from], [
      'north-1',
      'north',
      true,
      [{ from: 'glance', bytes: IMAGE_BYTES }],
    ]);
    assert.ok(progress.slice(1).every((p) => p.site === 'north' && !p.seed && p.bytes_from[0]?.from === 'peer:north-1'));
  });

  it('peer lists grow as hosts finish (the seed first) and are rotated per host, so the load spreads', async () => {
    const hosts = site('south', 4);
    const client = new FakeHostClient(cachedFromFirstPeer, endpointsOf(...hosts.map((h) => h.name)));
    await precacheImages(request(client, hosts, { concurrency: 1 }));
    assert.deepEqual(client.peerNames(), [
      ['south-1', []],
      ['south-2', ['south-1']],
      ['south-3', ['south-2', 'south-1']],
      ['south-4', ['south-3', 'south-1', 'south-2']],
    ]);
  });

  it('a host of a large site is given at most 8 peers, a window of the rotated list', async () => {
    const hosts = site('big', 12);
    const client = new FakeHostClient(cachedFromFirstPeer, endpointsOf(...hosts.map((h) => h.name)));
    await precacheImages(request(client, hosts, { concurrency: 1 }));
    const [, peers] = client.peerNames()[11] ?? ['', []];
    // The 11th host asked with peers (rotation 10) over the 11 finished hosts big-1..big-11.
    assert.deepEqual(peers, ['big-11', 'big-1', 'big-2', 'big-3', 'big-4', 'big-5', 'big-6', 'big-7']);
  });

  it('the bytes per origin are summed over a host\'s images, glance first', async () => {
    const hosts = site('east', 2);
    const client = new FakeHostClient(
      (call) =>
        Promise.resolve(
          call.host === 'east-1'
            ? report(call.host, call.imageIds, 'cached', [{ from: 'glance', bytes: 700 }])
            : report(call.host, call.imageIds, 'cached', [
                { from: 'peer:east-1', bytes: 600 },
                { from: 'glance', bytes: 100 },
              ]),
        ),
      endpointsOf('east-1', 'east-2'),
    );
    const summary = await precacheImages(request(client, hosts, { imageIds: ['image1', 'image2'] }));
    assert.deepEqual(summary.hosts[1]?.bytesFrom, [
      { from: 'glance', bytes: 200 },
      { from: 'peer:east-1', bytes: 1200 },
    ]);
    assert.deepEqual(
      summary.sites.map((s) => [s.bytesFromGlance, s.bytesFromPeers, s.bytesSaved]),
      [[1400 + 200, 1200, 1200]],
    );
  });

  it('within concurrency: every site\'s seed is asked before any peer-fed host, and hosts without a site get no peers', async () => {
    const hosts = [...site('a', 3), { name: 'plain-1' }, ...site('b', 3), { name: 'plain-2' }];
    const client = new FakeHostClient(slowly, endpointsOf(...hosts.map((h) => h.name)));
    const summary = await precacheImages(request(client, hosts, { concurrency: 2 }));
    assert.ok(client.maxActive <= 2);
    assert.equal(client.maxActive, 2);
    const order = client.calls.map((call) => call.host);
    assert.deepEqual(order.slice(0, 2), ['a-1', 'plain-1']);
    assert.ok(order.indexOf('b-1') < order.indexOf('a-2') || order.indexOf('b-1') < order.indexOf('a-3'), order.join(' '));
    for (const call of client.calls) {
      const peered = (call.options.peers ?? []).length > 0;
      assert.equal(peered, !['a-1', 'b-1', 'plain-1', 'plain-2'].includes(call.host), `${call.host}: peers ${String(peered)}`);
    }
    assert.deepEqual(
      summary.hosts.filter((h) => h.site === null).map((h) => [h.host, h.seed, h.bytesFrom]),
      [
        ['plain-1', false, [{ from: 'glance', bytes: IMAGE_BYTES }]],
        ['plain-2', false, [{ from: 'glance', bytes: IMAGE_BYTES }]],
      ],
    );
    assert.deepEqual(summary.sites.map((s) => [s.site, s.seed, s.bytesFromGlance, s.bytesFromPeers]), [
      ['a', 'a-1', IMAGE_BYTES, 2 * IMAGE_BYTES],
      ['b', 'b-1', IMAGE_BYTES, 2 * IMAGE_BYTES],
    ]);
  });

  it('a seed whose call fails hands over to the next host of the site, which pulls from Glance and feeds the rest', async () => {
    const hosts = site('west', 3);
    const client = new FakeHostClient(
      (call) => (call.host === 'west-1' ? Promise.reject(new HostUnavailableError('west-1', 'connection refused')) : cachedFromFirstPeer(call)),
      endpointsOf('west-1', 'west-2', 'west-3'),
    );
    const summary = await precacheImages(request(client, hosts, { concurrency: 3 }));
    assert.deepEqual(client.peerNames(), [
      ['west-1', []],
      ['west-2', []],
      ['west-3', ['west-2']],
    ]);
    assert.deepEqual(summary.hosts.map((h) => [h.host, h.seed, h.status]), [
      ['west-1', true, 'failed'],
      ['west-2', true, 'done'],
      ['west-3', false, 'done'],
    ]);
    assert.equal(summary.sites[0]?.seed, 'west-2');
  });

  it('a seed that answers with every image in error (it holds nothing to share) hands over too; a down host is never the seed', async () => {
    const hosts: PrecacheHost[] = [{ name: 'x-0', site: 'x', up: false }, ...site('x', 3)];
    const client = new FakeHostClient(
      (call) => (call.host === 'x-1' ? Promise.resolve(report(call.host, call.imageIds, 'error')) : cachedFromFirstPeer(call)),
      endpointsOf('x-0', 'x-1', 'x-2', 'x-3'),
    );
    const summary = await precacheImages(request(client, hosts, { concurrency: 1 }));
    assert.deepEqual(client.peerNames(), [
      ['x-1', []],
      ['x-2', []],
      ['x-3', ['x-2']],
    ]);
    assert.deepEqual(summary.sites, [
      { site: 'x', hosts: 4, seed: 'x-2', peerFanOut: true, bytesFromGlance: IMAGE_BYTES, bytesFromPeers: IMAGE_BYTES, bytesSaved: IMAGE_BYTES },
    ]);
  });

  it('a site whose hosts are all down still gets its totals line; a site of one host is its own seed without any endpoint', async () => {
    const hosts: PrecacheHost[] = [
      { name: 'd-1', site: 'down', up: false },
      { name: 'lone-1', site: 'lone' },
      { name: 'd-2', site: 'down', up: false },
    ];
    const client = new FakeHostClient();
    const summary = await precacheImages(request(client, hosts));
    assert.deepEqual(summary.sites, [
      { site: 'down', hosts: 2, seed: null, peerFanOut: false, bytesFromGlance: 0, bytesFromPeers: 0, bytesSaved: 0 },
      { site: 'lone', hosts: 1, seed: 'lone-1', peerFanOut: true, bytesFromGlance: IMAGE_BYTES, bytesFromPeers: 0, bytesSaved: 0 },
    ]);
  });

  it('hosts without a site are asked as before: in plan order, no peers, no seed, no site totals', async () => {
    const hosts = [{ name: 'h1' }, { name: 'h2', cell: 'c2' }, { name: 'h3' }];
    const client = new FakeHostClient(cachedFromFirstPeer, endpointsOf('h1', 'h2', 'h3'));
    const summary = await precacheImages(request(client, hosts, { concurrency: 3 }));
    assert.deepEqual(client.peerNames(), [
      ['h1', []],
      ['h3', []],
      ['h2', []],
    ]);
    assert.ok(client.calls.every((call) => !('peers' in call.options)));
    assert.deepEqual(summary.hosts.map((h) => [h.site, h.seed]), [[null, false], [null, false], [null, false]]);
    assert.deepEqual(summary.sites, []);
  });

  it('a site with a host whose peer endpoint is unknown runs site-unaware (everyone from Glance), with a warning', async () => {
    const hosts = site('dark', 3);
    const log = captureLog('virt-imagecache:precache');
    let summary;
    const client = new FakeHostClient(slowly, endpointsOf('dark-1', 'dark-2'));
    try {
      summary = await precacheImages(request(client, hosts, { concurrency: 3 }));
    } finally {
      log.restore();
    }
    assert.equal(client.maxActive, 3, 'no host waited for a seed');
    assert.ok(client.calls.every((call) => call.options.peers === undefined));
    assert.match(log.lines.join('\n'), /WARNING site dark: no peer endpoint is known for host dark-3/);
    assert.deepEqual(summary.sites, [
      { site: 'dark', hosts: 3, seed: null, peerFanOut: false, bytesFromGlance: 3 * IMAGE_BYTES, bytesFromPeers: 0, bytesSaved: 0 },
    ]);
    assert.ok(summary.hosts.every((h) => !h.seed));
    const noMethod = new FakeHostClient(cachedFromFirstPeer, endpointsOf('dark-1', 'dark-2', 'dark-3'));
    await precacheImages(request(noMethod.withoutPeerEndpoints(), hosts, { concurrency: 3 }));
    assert.equal(noMethod.calls.length, 3);
    assert.ok(noMethod.calls.every((call) => call.options.peers === undefined));
  });

  it('site caps: the seed gets the whole site cap, hosts pulling from Glance together split it, peer-fed hosts keep the host cap', async () => {
    const fed = new FakeHostClient(slowly, endpointsOf(...site('fed', 3).map((h) => h.name)));
    await precacheImages(request(fed, site('fed', 3), { concurrency: 3, siteBytesPerSecond: { fed: 9000 }, bytesPerSecond: 5000 }));
    assert.deepEqual(
      fed.calls.map((call) => [call.host, call.options.bytesPerSecond]),
      [
        ['fed-1', 5000],
        ['fed-2', 5000],
        ['fed-3', 5000],
      ],
    );
    const seedOnly = new FakeHostClient(slowly, endpointsOf('fed-1', 'fed-2'));
    await precacheImages(request(seedOnly, site('fed', 2), { siteBytesPerSecond: 9000 }));
    assert.deepEqual(seedOnly.calls.map((call) => call.options.bytesPerSecond), [9000, undefined]);

    // Site-unaware (no endpoints): all three pull from Glance at once and share the link.
    const shared = new FakeHostClient(slowly);
    await precacheImages(
      request(shared, [...site('wan', 3), { name: 'plain' }], { concurrency: 4, siteBytesPerSecond: { wan: 9000 }, bytesPerSecond: 4000 }),
    );
    assert.deepEqual(
      shared.calls.map((call) => [call.host, call.options.bytesPerSecond]),
      [
        ['wan-1', 4000],
        ['wan-2', 4000],
        ['wan-3', 3000],
        ['plain', 4000],
      ],
    );
  });

  it('bad sites and site caps are refused before any host is contacted', async () => {
    const client = new FakeHostClient();
    await assert.rejects(precacheImages(request(client, [{ name: 'h', site: '' }])), { code: 'ERR_INVALID_CONFIG', message: /site of host h/ });
    await assert.rejects(precacheImages(request(client, site('s', 2), { siteBytesPerSecond: { t: 100 } })), {
      code: 'ERR_INVALID_CONFIG',
      message: /siteBytesPerSecond\.t/,
    });
    await assert.rejects(precacheImages(request(client, site('s', 2), { siteBytesPerSecond: 0 })), { code: 'ERR_INVALID_CONFIG' });
    assert.deepEqual(client.calls, []);
  });

  it('the summary lines name each site, its seed and the bytes the peers saved', async () => {
    const hosts = site('north', 3);
    const log = captureLog('virt-imagecache:precache');
    try {
      await precacheImages(request(new FakeHostClient(cachedFromFirstPeer, endpointsOf('north-1', 'north-2', 'north-3')), hosts));
    } finally {
      log.restore();
    }
    assert.match(
      log.lines.join('\n'),
      /Site north \(3 hosts, seed north-1\): 1000 bytes from glance, 2000 bytes from peers \(2000 bytes saved\)/,
    );
  });
});
