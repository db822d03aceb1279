// Pre-caching across an aggregate: Nova's conductor, conductor API, REST API and functional
// catalogue (docs/nova-parity.md, catalogue), each test named after the Nova test it reproduces,
// plus what Nova does not do: failed hosts counted (gap G), a per-host timeout, cancellation, a
// summary.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import {
  HostUnavailableError,
  ImageServiceUnavailableError,
  InProcessHostClient,
  precacheImages,
} from '../../src/index.js';
import type {
  HostCacheOptions,
  HostCacheReport,
  HostClient,
  ImageInfo,
  ImageManager,
  ImageSource,
  PrecacheEvent,
  PrecacheHost,
  PrecacheImagesOptions,
  PrecacheProgressEvent,
  PrecacheSummary,
} from '../../src/index.js';
import { MemoryImageManager, MemoryImageSource } from '../../src/testing/index.js';
import { captureLog } from '../helpers/capture-log.js';

/** Nova's default driver: no image cache. */
class CachelessManager extends MemoryImageManager {
  override readonly hasImageCache = false;
}

/** Records every call, in order, across the image source and the host client. */
class Journal {
  readonly entries: string[] = [];
}

/** An image source that records its lookups in a journal. */
class RecordingSource implements ImageSource {
  readonly #inner: ImageSource;
  readonly #journal: Journal;
  constructor(inner: ImageSource, journal: Journal) {
    this.#inner = inner;
    this.#journal = journal;
  }
  describe(imageId: string): Promise<ImageInfo> {
    this.#journal.entries.push(`describe ${imageId}`);
    return this.#inner.describe(imageId);
  }
  open(imageId: string): ReturnType<ImageSource['open']> {
    return this.#inner.open(imageId);
  }
}

type Answer = (host: PrecacheHost, imageIds: readonly string[], options: HostCacheOptions) => Promise<HostCacheReport>;

/** A host client that records its calls (in a journal) and answers with `answer`. */
class RecordingClient implements HostClient {
  readonly calls: { host: string; imageIds: readonly string[]; options: HostCacheOptions }[] = [];
  active = 0;
  maxActive = 0;
  readonly #answer: Answer;
  readonly #journal: Journal | undefined;
  constructor(answer: Answer = allExisting, journal?: Journal) {
    this.#answer = answer;
    this.#journal = journal;
  }
  async cacheImages(host: PrecacheHost, imageIds: readonly string[], options: HostCacheOptions): Promise<HostCacheReport> {
    this.calls.push({ host: host.name, imageIds, options });
    this.#journal?.entries.push(`host ${host.name}`);
    this.active += 1;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      return await this.#answer(host, imageIds, options);
    } finally {
      this.active -= 1;
    }
  }
}

function allExisting(host: PrecacheHost, imageIds: readonly string[]): Promise<HostCacheReport> {
  return Promise.resolve({
    host: host.name,
    durationMs: 0,
    images: imageIds.map((imageId) => ({ imageId, status: 'existing' as const, error: null, bytes: 0, durationMs: 0, pinnedUntil: null, bytesFrom: [], blamedPeers: [] })),
  });
}

const images = new MemoryImageSource([
  { id: 'image1', data: Buffer.from('image one') },
  { id: 'image2', data: Buffer.from('image two') },
  { id: 'image3', data: Buffer.from('image three') },
  { id: 'queued-image', data: Buffer.alloc(0), status: 'queued' },
]);

function hosts(count: number, extra: Partial<PrecacheHost> = {}): PrecacheHost[] {
  return Array.from({ length: count }, (_, i) => ({ name: `host${i + 1}`, ...extra }));
}

function request(overrides: Partial<PrecacheImagesOptions> & Pick<PrecacheImagesOptions, 'client'>): PrecacheImagesOptions {
  return { aggregate: { id: 1, name: 'agg1', hosts: hosts(2) }, imageIds: ['image1'], source: images, ...overrides };
}

function progressOf(events: readonly PrecacheEvent[]): PrecacheProgressEvent[] {
  return events.filter((event): event is PrecacheProgressEvent => event.type === 'aggregate.cache_images.progress');
}

async function withLog<T>(fn: () => Promise<T>): Promise<{ value: T; lines: string[] }> {
  const log = captureLog('virt-imagecache:precache');
  try {
    return { value: await fn(), lines: log.lines };
  } finally {
    log.restore();
  }
}

describe("Nova's conductor API and REST API catalogue: validation before any host", () => {
  it('conductor API test_cache_images: every image is looked up first, then the hosts are asked', async () => {
    const journal = new Journal();
    const client = new RecordingClient(allExisting, journal);
    await precacheImages(request({ client, imageIds: ['image1', 'image2'], source: new RecordingSource(images, journal) }));
    assert.deepEqual(journal.entries, ['describe image1', 'describe image2', 'host host1', 'host host2']);
  });

  it('conductor API test_cache_images_missing: an unknown image fails the request with ERR_IMAGE_NOT_FOUND naming it; no host is contacted, no event', async () => {
    const client = new RecordingClient();
    const events: PrecacheEvent[] = [];
    await assert.rejects(
      precacheImages(request({ client, imageIds: ['image1', 'no-such-image'], onEvent: (e) => events.push(e) })),
      { code: 'ERR_IMAGE_NOT_FOUND', imageId: 'no-such-image' },
    );
    assert.deepEqual(client.calls, []);
    assert.deepEqual(events, []);
  });

  it('conductor API test_cache_images_fail: any other lookup error propagates; no host is contacted', async () => {
    const client = new RecordingClient();
    const failing: ImageSource = {
      describe: (imageId) => Promise.reject(new ImageServiceUnavailableError(imageId, 6, new Error('503'))),
      open: () => Promise.reject(new Error('unused')),
    };
    await assert.rejects(precacheImages(request({ client, source: failing })), { code: 'ERR_IMAGE_SERVICE_UNAVAILABLE', imageId: 'image1' });
    assert.deepEqual(client.calls, []);
  });

  it('an image that is not active fails the request with ERR_IMAGE_NOT_ACTIVE naming it; no host is contacted', async () => {
    const client = new RecordingClient();
    await assert.rejects(precacheImages(request({ client, imageIds: ['image1', 'queued-image'] })), {
      code: 'ERR_IMAGE_NOT_ACTIVE',
      imageId: 'queued-image',
    });
    assert.deepEqual(client.calls, []);
  });

  it('with several bad images, the first in request order is reported, whichever lookup answers first', async () => {
    const slowMissing: ImageSource = {
      describe: async (imageId) => {
        if (imageId === 'missing-slow') await sleep(30);
        return images.describe(imageId);
      },
      open: (imageId) => images.open(imageId),
    };
    await assert.rejects(precacheImages(request({ client: new RecordingClient(), source: slowMissing, imageIds: ['missing-slow', 'missing-fast'] })), {
      imageId: 'missing-slow',
    });
  });

  it('API test_images_with_duplicate_id, _with_no_images, bad ids and duplicate hosts: typed errors, nothing looked up, no host contacted', async () => {
    const journal = new Journal();
    const client = new RecordingClient(allExisting, journal);
    const source = new RecordingSource(images, journal);
    await assert.rejects(precacheImages(request({ client, source, imageIds: ['image1', 'image2', 'image1'] })), {
      code: 'ERR_INVALID_REQUEST',
      imageId: 'image1',
      message: /image image1 is listed more than once/,
    });
    await assert.rejects(precacheImages(request({ client, source, imageIds: [] })), { code: 'ERR_INVALID_REQUEST', message: /no images/ });
    await assert.rejects(precacheImages(request({ client, source, imageIds: ['image1', 'a/b'] })), { code: 'ERR_INVALID_IMAGE_ID' });
    await assert.rejects(
      precacheImages(request({ client, source, aggregate: { id: 1, name: 'agg1', hosts: [{ name: 'h' }, { name: 'h' }] } })),
      { code: 'ERR_INVALID_REQUEST', message: /host h appears twice/ },
    );
    await assert.rejects(precacheImages(request({ client, source, concurrency: 0 })), { code: 'ERR_INVALID_CONFIG' });
    await assert.rejects(precacheImages(request({ client, source, timeoutMs: 2 ** 31 })), { code: 'ERR_INVALID_CONFIG' });
    assert.deepEqual(journal.entries, []);
  });

  it('API test_images_with_disorder_id: distinct ids in any order are accepted, and hosts get them in request order', async () => {
    const client = new RecordingClient();
    await precacheImages(request({ client, imageIds: ['image3', 'image1', 'image2'] }));
    await precacheImages(request({ client, imageIds: ['image2', 'image3', 'image1'] }));
    assert.deepEqual(
      client.calls.filter((call) => call.host === 'host1').map((call) => call.imageIds),
      [['image3', 'image1', 'image2'], ['image2', 'image3', 'image1']],
    );
  });
});

describe("Nova's conductor and functional catalogue: fan-out, statuses, notifications", () => {
  it('conductor test_cache_images_failed_compute: unsupported, error and a down host give Nova\'s log lines', async () => {
    const source = new MemoryImageSource([{ id: 'image1', data: Buffer.from('x') }]);
    const client = new InProcessHostClient([
      new CachelessManager({ host: 'host1', source }),
      // host2's image service does not know the image: its cacheImage fails.
      new MemoryImageManager({ host: 'host2', source: new MemoryImageSource([]) }),
    ]);
    const { value: summary, lines } = await withLog(() =>
      precacheImages({
        aggregate: { id: 1, name: 'agg1', hosts: [{ name: 'host1' }, { name: 'host2' }, { name: 'host3', up: false }] },
        imageIds: ['image1'],
        source,
        client,
      }),
    );
    const text = lines.join('\n');
    assert.match(text, /0 cached, 0 existing, 1 errors, 1 unsupported, 1 skipped \(down\) hosts/);
    assert.match(text, /Skipping image pre-cache request to compute 'host3' because it is not up/);
    assert.match(text, /Image pre-cache operation for image image1 failed 1 times/);
    assert.deepEqual(summary.counts, { cached: 0, existing: 0, error: 1, unsupported: 1, skipped: 1, deferred: 0 });
    assert.deepEqual(
      summary.hosts.map((h) => [h.host, h.status, h.images[0]?.status]),
      [['host1', 'done', 'unsupported'], ['host2', 'done', 'error'], ['host3', 'skipped', 'skipped']],
    );
    assert.equal(summary.hosts[1]?.images[0]?.error?.code, 'ERR_IMAGE_NOT_FOUND');
    assert.deepEqual(summary.images, [{ imageId: 'image1', cached: 0, existing: 0, error: 1, unsupported: 1, skipped: 1, deferred: 0 }]);
  });

  it('functional ImageCacheTest.test_cache_image: two cells, a down host skipped, 4 progress events, Nova\'s summary line', async () => {
    const source = new MemoryImageSource([{ id: 'image1', data: Buffer.from('the image') }]);
    const managers = new Map<string, MemoryImageManager>(
      ['compute1', 'compute2', 'compute3', 'compute4', 'compute5'].map((host) => [host, new MemoryImageManager({ host, source })]),
    );
    const events: PrecacheEvent[] = [];
    const { value: summary, lines } = await withLog(() =>
      precacheImages({
        // compute2 is not in the aggregate; compute5 is forced down.
        aggregate: {
          id: 7,
          name: 'agg',
          hosts: [
            { name: 'compute1', cell: 'cell1' },
            { name: 'compute3', cell: 'cell2' },
            { name: 'compute4', cell: 'cell2' },
            { name: 'compute5', cell: 'cell2', up: false },
          ],
        },
        imageIds: ['image1'],
        source,
        client: new InProcessHostClient(managers),
        concurrency: 2,
        onEvent: (event) => events.push(event),
      }),
    );
    const cachedOn = [...managers].filter(([, m]) => m.names().includes('image1')).map(([host]) => host);
    assert.deepEqual(cachedOn, ['compute1', 'compute3', 'compute4']);
    assert.equal(source.openCalls('image1'), 3);

    assert.deepEqual(events.map((e) => e.type), [
      'aggregate.cache_images.start',
      ...Array<string>(4).fill('aggregate.cache_images.progress'),
      'aggregate.cache_images.end',
    ]);
    const progress = progressOf(events);
    assert.deepEqual(progress.map((p) => p.index), [1, 2, 3, 4]);
    assert.ok(progress.every((p) => p.total === 4));
    assert.deepEqual(progress.map((p) => p.host).sort(), ['compute1', 'compute3', 'compute4', 'compute5']);
    const down = progress.find((p) => p.host === 'compute5');
    assert.deepEqual([down?.status, down?.images_cached, down?.images_failed], ['skipped', [], ['image1']]);
    assert.ok(progress.filter((p) => p.host !== 'compute5').every((p) => p.images_cached[0] === 'image1' && p.images_failed.length === 0));

    const text = lines.join('\n');
    assert.match(text, /Preparing to request pre-caching of image\(s\) image1 on 4 hosts across 2 cells\./);
    assert.match(text, /3 cached, 0 existing, 0 errors, 0 unsupported, 1 skipped \(down\) hosts/);
    assert.doesNotMatch(text, /failed \d+ times/);
    assert.deepEqual(summary.counts, { cached: 3, existing: 0, error: 0, unsupported: 0, skipped: 1, deferred: 0 });
    assert.deepEqual(summary.hosts.map((h) => [h.host, h.cell]), [
      ['compute1', 'cell1'],
      ['compute3', 'cell2'],
      ['compute4', 'cell2'],
      ['compute5', 'cell2'],
    ]);
  });

  it('notification sample test_aggregate_cache_images: exactly three events, start, progress, end, with Nova\'s payload fields', async () => {
    const events: PrecacheEvent[] = [];
    const summary = await precacheImages({
      aggregate: { id: 1, name: 'my-aggregate', hosts: [{ name: 'compute' }] },
      imageIds: ['image1'],
      source: images,
      client: new RecordingClient(),
      onEvent: (event) => events.push(event),
    });
    assert.deepEqual(events, [
      {
        type: 'aggregate.cache_images.start',
        aggregate: { id: 1, name: 'my-aggregate', hosts: ['compute'] },
        imageIds: ['image1'],
        total: 1,
      },
      {
        type: 'aggregate.cache_images.progress',
        aggregate: { id: 1, name: 'my-aggregate' },
        host: 'compute',
        cell: 'default',
        site: null,
        seed: false,
        status: 'done',
        index: 1,
        total: 1,
        images_cached: ['image1'],
        images_failed: [],
        bytes_from: [],
        blamed_peers: [],
        error: null,
      },
      { type: 'aggregate.cache_images.end', aggregate: { id: 1, name: 'my-aggregate', hosts: ['compute'] }, summary },
    ]);
  });

  it('CacheImagesExecutorTestCase: at most `concurrency` hosts in flight; the default is precacheConcurrency = 1', async () => {
    const slow: Answer = async (host, imageIds) => {
      await sleep(10);
      return allExisting(host, imageIds);
    };
    const serial = new RecordingClient(slow);
    await precacheImages(request({ client: serial, aggregate: { id: 1, name: 'a', hosts: hosts(4) } }));
    assert.equal(serial.maxActive, 1);
    const parallel = new RecordingClient(slow);
    const summary = await precacheImages(request({ client: parallel, aggregate: { id: 1, name: 'a', hosts: hosts(12) }, concurrency: 3 }));
    assert.equal(parallel.maxActive, 3);
    assert.equal(summary.counts.existing, 12);
  });

  it('request options reach every host: pin TTL and speed cap', async () => {
    const client = new RecordingClient();
    await precacheImages(request({ client, pinTtlSeconds: 7200, bytesPerSecond: 5_000_000 }));
    assert.deepEqual(
      client.calls.map((c) => [c.host, c.options.pinTtlSeconds, c.options.bytesPerSecond]),
      [['host1', 7200, 5_000_000], ['host2', 7200, 5_000_000]],
    );
  });
});

describe('beyond Nova: every host reported, however it ends', () => {
  it('gap G closed: a host whose call fails gets a progress event and counts as errors; the others carry on', async () => {
    const client = new RecordingClient((host, imageIds) => {
      if (host.name === 'host2') return Promise.reject(new HostUnavailableError('host2', 'connection refused'));
      if (host.name === 'host3') return Promise.reject(new Error('a broken client'));
      return allExisting(host, imageIds);
    });
    const events: PrecacheEvent[] = [];
    const summary = await precacheImages(
      request({ client, imageIds: ['image1', 'image2'], aggregate: { id: 1, name: 'a', hosts: hosts(4) }, onEvent: (e) => events.push(e) }),
    );
    assert.equal(progressOf(events).length, 4);
    assert.deepEqual(summary.counts, { cached: 0, existing: 4, error: 4, unsupported: 0, skipped: 0, deferred: 0 });
    assert.equal(summary.failedHosts, 2);
    const failed = summary.hosts.filter((h) => h.status === 'failed');
    assert.deepEqual(failed.map((h) => [h.host, h.error?.code]), [['host2', 'ERR_HOST_UNAVAILABLE'], ['host3', 'ERR_HOST_UNAVAILABLE']]);
    assert.match(failed[1]?.error?.message ?? '', /Host host3 could not pre-cache: its client failed: a broken client/);
    assert.deepEqual(failed[0]?.images.map((i) => [i.imageId, i.status, i.error?.code]), [
      ['image1', 'error', 'ERR_HOST_UNAVAILABLE'],
      ['image2', 'error', 'ERR_HOST_UNAVAILABLE'],
    ]);
    assert.deepEqual(summary.images.map((i) => [i.imageId, i.error]), [['image1', 2], ['image2', 2]]);
  });

  it('a host that does not answer within timeoutMs fails with ERR_HOST_TIMEOUT, even if its client ignores the signal; the others finish', async () => {
    const client = new RecordingClient((host, imageIds) =>
      host.name === 'host1' ? new Promise<HostCacheReport>(() => undefined) : allExisting(host, imageIds),
    );
    const started = performance.now();
    const summary = await precacheImages(request({ client, timeoutMs: 100, concurrency: 2, aggregate: { id: 1, name: 'a', hosts: hosts(3) } }));
    assert.ok(performance.now() - started < 2000);
    assert.deepEqual(summary.hosts.map((h) => [h.host, h.status, h.error?.code ?? null]), [
      ['host1', 'failed', 'ERR_HOST_TIMEOUT'],
      ['host2', 'done', null],
      ['host3', 'done', null],
    ]);
    assert.equal(client.calls[0]?.options.signal.aborted, true);
  });

  it('a client answering for other images than asked makes that host failed', async () => {
    const client = new RecordingClient((host) => allExisting(host, ['image2']));
    const summary = await precacheImages(request({ client }));
    assert.equal(summary.hosts[0]?.status, 'failed');
    assert.match(summary.hosts[0].error?.message ?? '', /answered for images \[image2\] instead of \[image1\]/);
  });

  it('cancelling: hosts not asked yet are not asked, every host still gets its progress event, end carries the summary, the call rejects', async () => {
    const controller = new AbortController();
    const client = new RecordingClient(async (host, imageIds, options) => {
      if (host.name === 'host2') controller.abort();
      await sleep(5, undefined, { signal: options.signal }).catch(() => undefined);
      return allExisting(host, imageIds);
    });
    const events: PrecacheEvent[] = [];
    await assert.rejects(
      precacheImages(
        request({ client, aggregate: { id: 1, name: 'a', hosts: hosts(5) }, signal: controller.signal, onEvent: (e) => events.push(e) }),
      ),
      { code: 'ERR_ABORTED' },
    );
    assert.deepEqual(client.calls.map((c) => c.host), ['host1', 'host2']);
    assert.equal(progressOf(events).length, 5);
    const end = events.at(-1);
    assert.equal(end?.type, 'aggregate.cache_images.end');
    const summary = (end as { summary: PrecacheSummary }).summary;
    assert.equal(summary.aborted, true);
    assert.deepEqual(summary.hosts.map((h) => [h.status, h.error?.code ?? null]), [
      ['done', null],
      ['failed', 'ERR_ABORTED'],
      ['failed', 'ERR_ABORTED'],
      ['failed', 'ERR_ABORTED'],
      ['failed', 'ERR_ABORTED'],
    ]);
  });

  it('a listener that throws changes nothing; the summary serialises to JSON with typed error codes', async () => {
    const client = new RecordingClient((host, imageIds) =>
      host.name === 'host2' ? Promise.reject(new HostUnavailableError('host2', 'reset')) : allExisting(host, imageIds),
    );
    const summary = await precacheImages(
      request({
        client,
        onEvent: () => {
          throw new Error('listener bug');
        },
      }),
    );
    assert.equal(summary.hosts.length, 2);
    const json = JSON.parse(JSON.stringify(summary)) as { hosts: { error: { code: string; name: string } | null }[]; counts: unknown };
    assert.deepEqual(json.hosts.map((h) => h.error?.code ?? null), [null, 'ERR_HOST_UNAVAILABLE']);
    assert.equal(json.hosts[1]?.error?.name, 'HostUnavailableError');
    assert.deepEqual(json.counts, summary.counts);
  });

  it('an in-process client with no manager for a host reports it unavailable', async () => {
    const managers: ImageManager[] = [new MemoryImageManager({ host: 'host1', source: images })];
    const summary = await precacheImages(request({ client: new InProcessHostClient(managers) }));
    assert.deepEqual(summary.hosts.map((h) => [h.host, h.status, h.images[0]?.status]), [
      ['host1', 'done', 'cached'],
      ['host2', 'failed', 'error'],
    ]);
    assert.match(summary.hosts[1]?.error?.message ?? '', /no image manager is registered/);
  });
});
