// Issue 16, "pre-cache windows", end to end with a ManualClock: Glance is throttled so the seed's
// download takes a few seconds; the window closes (the clock is moved past its end) while the
// seed is mid-download: the fan-out aborts its call, its agent aborts the download, and the
// staging file and its resume sidecar are KEPT in the cache dir. The next window opens: the seed
// is asked again, resumes with Range from the kept offset, ends verified, and its site follows
// from it. Glance's total for the image stays under size + one checkpoint interval (far less
// than 2x). With no next window, the host is reported `deferred` with its staging kept.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { GlanceImageSource, precacheImages } from '../../src/index.js';
import type { PrecacheEvent, PrecacheWindowClosedError, PrecacheSchedule, PrecacheSummary, PrecacheWindowEvent } from '../../src/index.js';
import { CHECKPOINT_BYTES } from '../../src/fetch/resume.js';
import { readResumeRecord } from '../../src/fetch/resume-sidecar.js';
import { ManualClock, startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { seededBytes } from '../helpers/tmp.js';
import { assertNotCached, assertVerified, originsOf, startEdgeSite, waitFor } from './edge-site-fixture.js';
import type { EdgeHost, EdgeSite } from './edge-site-fixture.js';

const MiB = 1024 * 1024;
/** 24 MiB at 8 MiB/s: about 3 s from Glance, so a window can close in the middle. */
const SIZE = 24 * MiB + 4321;
const RATE = 8 * MiB;
/** Glance bytes after which the test closes the window (the seed is then mid-download). */
const CLOSE_AT = 6 * MiB;
const BYTES = seededBytes(SIZE, 4242);
const PAUSED = 'ed9e0002-0000-4000-8000-000000000001';
const DEFERRED = 'ed9e0002-0000-4000-8000-000000000002';

const T0 = Date.UTC(2026, 0, 5, 1, 0, 0);
const HOUR = 3_600_000;

/** Windows at fixed times. */
function windows(...ranges: [number, number][]): PrecacheSchedule {
  return { next: (after) => ranges.map(([start, end]) => ({ start, end })).find((range) => range.end > after) ?? null };
}

/** The staging files in `host`'s cache dir for `imageId`, each with its sidecar's verified byte count. */
async function keptStaging(host: EdgeHost, imageId: string): Promise<{ names: string[]; bytes: number }> {
  const final = host.manager.cachePathFor(imageId);
  const dir = path.dirname(final);
  const names = (await readdir(dir)).filter((name) => name.startsWith(`${path.basename(final)}.`)).sort();
  const staging = names.filter((name) => name.endsWith('.staging'));
  assert.equal(staging.length, 1, `one staging file kept: ${names.join(', ')}`);
  const record = await readResumeRecord(path.join(dir, staging[0] as string));
  assert.ok(typeof record !== 'string', `its sidecar is valid: ${typeof record === 'string' ? record : ''}`);
  return { names, bytes: record.bytes };
}

function fileRanges(glance: FakeGlance, imageId: string): (string | undefined)[] {
  return glance.log.filter((record) => record.imageId === imageId && record.kind === 'file').map((record) => record.range);
}

describe('pre-cache windows end to end (agents on loopback, throttled Glance, manual clock)', () => {
  let glance: FakeGlance;
  let site: EdgeSite | undefined;

  before(async () => {
    glance = await startFakeGlance({
      images: [PAUSED, DEFERRED].map((id) => ({ id, content: BYTES, faults: { throttleBytesPerSecond: RATE } })),
    });
  });
  afterEach(async () => {
    await site?.close();
    site = undefined;
  });
  after(async () => {
    await glance.close();
  });

  /** Moves the clock past the window's end once the seed is mid-download, then waits until its aborted download kept its staging. */
  async function closeMidDownload(clock: ManualClock, imageId: string, end: number, seed: EdgeHost): Promise<void> {
    await waitFor(() => glance.bytesServed(imageId) >= CLOSE_AT, 'the seed is mid-download');
    assert.ok(glance.bytesServed(imageId) < SIZE / 2, 'the download is far from done when the window closes');
    clock.set(end);
    await waitFor(() => seed.manager.downloadsRunning === 0, "the seed's aborted download has settled");
  }

  // Fails if the window's end does not abort the host's download (it would finish: no staging,
  // one Glance request), if the staging or sidecar is discarded on that abort (the next window
  // would start from 0: no Range, Glance total ~1.25x), or if the next window does not ask again.
  it('the window closes mid-download: staging and sidecar kept; the next window resumes it with Range; Glance < size + one checkpoint', async (t) => {
    site = await startEdgeSite(glance, { n1: 'real', n2: 'real' });
    const [n1, n2] = site.hosts;
    assert.ok(n1 && n2);
    const clock = new ManualClock(T0);
    const events: PrecacheEvent[] = [];
    const running = precacheImages({
      aggregate: site.aggregate(),
      imageIds: [PAUSED],
      source: new GlanceImageSource({ endpoint: glance.url }),
      client: site.client,
      concurrency: 2,
      clock,
      window: windows([T0, T0 + HOUR], [T0 + 24 * HOUR, T0 + 25 * HOUR]),
      onEvent: (event) => events.push(event),
    });

    await closeMidDownload(clock, PAUSED, T0 + HOUR, n1);
    await waitFor(() => clock.waiting > 0, 'the fan-out waits for the next window');
    const kept = await keptStaging(n1, PAUSED);
    assert.equal(kept.names.length, 2, `a staging file and its sidecar: ${kept.names.join(', ')}`);
    assert.ok(kept.names[1]?.endsWith('.staging.resume'));
    const servedInFirst = glance.bytesServed(PAUSED);
    assert.ok(kept.bytes > 0 && kept.bytes <= servedInFirst, `kept ${kept.bytes} of the ${servedInFirst} bytes served`);
    await assertNotCached(n1, PAUSED);
    await assertNotCached(n2, PAUSED);
    assert.deepEqual(fileRanges(glance, PAUSED), [undefined]);
    assert.equal(n2.requests.length, 0, 'n2 waits for its seed');

    clock.set(T0 + 24 * HOUR);
    const summary: PrecacheSummary = await running;
    assert.deepEqual(
      summary.hosts.map((h) => [h.host, h.status, h.seed, h.images[0]?.status, originsOf(h.bytesFrom)]),
      [
        ['n1', 'done', true, 'cached', { glance: SIZE - kept.bytes }],
        ['n2', 'done', false, 'cached', { 'peer:n1': SIZE }],
      ],
      'n1 fetched only the rest; n2 all from n1',
    );
    assert.deepEqual(fileRanges(glance, PAUSED), [undefined, `bytes=${kept.bytes}-`], 'the second window resumed at the kept offset');
    assert.deepEqual(
      events.filter((e): e is PrecacheWindowEvent => e.type === 'aggregate.cache_images.window').map((e) => [e.state, e.start, e.paused]),
      [
        ['open', T0, []],
        ['closed', T0, ['n1']],
        ['waiting', T0 + 24 * HOUR, []],
        ['open', T0 + 24 * HOUR, []],
      ],
    );
    await assertVerified(n1, PAUSED, BYTES);
    await assertVerified(n2, PAUSED, BYTES);
    const total = glance.bytesServed(PAUSED);
    assert.equal(total, servedInFirst + (SIZE - kept.bytes), 'Glance: the first window, then exactly the rest');
    t.diagnostic(`image ${SIZE} B; first window: ${servedInFirst} B served, ${kept.bytes} B kept; Glance total ${total} B (${(total / SIZE).toFixed(3)} x)`);
    assert.ok(total < SIZE + CHECKPOINT_BYTES, `Glance served ${total} bytes: less than the image + one checkpoint interval`);
  });

  // Fails if a host still working at the last window's end is not `deferred` (or its staging not
  // kept: the next request would fetch the whole image again, Glance total ~1.25x).
  it('no next window: the host is deferred with its staging kept; asking again later resumes it', async (t) => {
    site = await startEdgeSite(glance, { d1: 'real' });
    const [d1] = site.hosts;
    assert.ok(d1);
    const clock = new ManualClock(T0);
    const request = {
      aggregate: site.aggregate(),
      imageIds: [DEFERRED],
      source: new GlanceImageSource({ endpoint: glance.url }),
      client: site.client,
      clock,
    };
    const running = precacheImages({ ...request, window: { start: T0, end: T0 + HOUR } });
    await closeMidDownload(clock, DEFERRED, T0 + HOUR, d1);
    const summary = await running;
    assert.deepEqual(summary.hosts.map((h) => [h.host, h.status, h.images[0]?.status, h.error?.code]), [
      ['d1', 'deferred', 'deferred', 'ERR_PRECACHE_WINDOW_CLOSED'],
    ]);
    assert.equal((summary.hosts[0]?.error as PrecacheWindowClosedError).windowEnd, T0 + HOUR);
    assert.equal(summary.deferredHosts, 1);
    const kept = await keptStaging(d1, DEFERRED);
    assert.ok(kept.names.some((name) => name.endsWith('.staging.resume')), `the sidecar is kept: ${kept.names.join(', ')}`);
    await assertNotCached(d1, DEFERRED);
    const servedInFirst = glance.bytesServed(DEFERRED);

    // The operator asks again (no window): the kept staging is resumed.
    const again = await precacheImages(request);
    assert.deepEqual(again.hosts.map((h) => [h.host, h.status, originsOf(h.bytesFrom)]), [['d1', 'done', { glance: SIZE - kept.bytes }]]);
    assert.deepEqual(fileRanges(glance, DEFERRED), [undefined, `bytes=${kept.bytes}-`]);
    await assertVerified(d1, DEFERRED, BYTES);
    const total = glance.bytesServed(DEFERRED);
    assert.equal(total, servedInFirst + (SIZE - kept.bytes));
    t.diagnostic(`image ${SIZE} B; first window: ${servedInFirst} B served, ${kept.bytes} B kept; Glance total ${total} B (${(total / SIZE).toFixed(3)} x)`);
    assert.ok(total < SIZE + CHECKPOINT_BYTES, `Glance served ${total} bytes: less than the image + one checkpoint interval`);
  });
});
