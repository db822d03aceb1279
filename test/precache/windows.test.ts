// Pre-cache windows (issue 16): hosts are asked only inside a window; at its end the hosts still
// working are aborted with a PrecacheWindowClosedError and asked again in the next window, or
// reported `deferred` when none is left; a cancel while waiting for a window is prompt. Time is a
// ManualClock: windows open and close as the test moves it.
import assert from 'node:assert/strict';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { PrecacheWindowClosedError, dailyWindow, precacheImages } from '../../src/index.js';
import type {
  PrecacheEvent,
  PrecacheHost,
  PrecacheImagesOptions,
  PrecacheProgressEvent,
  PrecacheSchedule,
  PrecacheWindowEvent,
} from '../../src/index.js';
import { ManualClock, MemoryImageSource } from '../../src/testing/index.js';
import { FakeHostClient, IMAGE_BYTES, cachedFromFirstPeer, endpointsOf, untilAborted } from './fake-host-client.js';
import type { RecordedCall } from './fake-host-client.js';

const T0 = Date.UTC(2026, 0, 5, 0, 0, 0); // a Monday, midnight UTC
const HOUR = 3_600_000;

const images = new MemoryImageSource([{ id: 'image1', data: Buffer.alloc(IMAGE_BYTES, 1) }]);

function hosts(count: number, extra: Partial<PrecacheHost> = {}): PrecacheHost[] {
  return Array.from({ length: count }, (_, i) => ({ name: `h${String(i + 1)}`, ...extra }));
}

function request(client: FakeHostClient, clock: ManualClock, extra: Partial<PrecacheImagesOptions>): PrecacheImagesOptions {
  return { aggregate: { id: 1, name: 'night', hosts: hosts(2) }, imageIds: ['image1'], source: images, client, clock, ...extra };
}

function windowsOf(events: readonly PrecacheEvent[]): [string, number, number, readonly string[]][] {
  return events
    .filter((event): event is PrecacheWindowEvent => event.type === 'aggregate.cache_images.window')
    .map((event) => [event.state, event.start, event.end, event.paused]);
}

function progressOf(events: readonly PrecacheEvent[]): PrecacheProgressEvent[] {
  return events.filter((event): event is PrecacheProgressEvent => event.type === 'aggregate.cache_images.progress');
}

/** Turns the event loop until `condition` holds (the fan-out runs on promises and the fake's signals). */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let turn = 0; turn < 2000; turn += 1) {
    if (condition()) return;
    await nextTurn();
  }
  assert.fail(`timed out waiting until ${what}`);
}

/** Windows at fixed times: a schedule that is not a daily one. */
function windows(...ranges: [number, number][]): PrecacheSchedule {
  return { next: (after) => ranges.map(([start, end]) => ({ start, end })).find((range) => range.end > after) ?? null };
}

describe('pre-cache windows', () => {
  it('no host is asked before the window opens; at its start they are, and a window event says waiting, then open', async () => {
    const clock = new ManualClock(T0);
    const client = new FakeHostClient();
    const events: PrecacheEvent[] = [];
    const running = precacheImages(request(client, clock, { window: { start: T0 + HOUR, end: new Date(T0 + 5 * HOUR) }, onEvent: (e) => events.push(e) }));
    await until(() => clock.waiting > 0, 'the fan-out waits for the window');
    await sleep(20);
    assert.equal(client.calls.length, 0);
    clock.advance(3599);
    await sleep(5);
    assert.equal(client.calls.length, 0, 'one second before the start');
    clock.advance(1);
    const summary = await running;
    assert.deepEqual(client.calls.map((call) => call.host), ['h1', 'h2']);
    assert.deepEqual(summary.counts, { cached: 2, existing: 0, error: 0, unsupported: 0, skipped: 0, deferred: 0 });
    assert.deepEqual(windowsOf(events), [
      ['waiting', T0 + HOUR, T0 + 5 * HOUR, []],
      ['open', T0 + HOUR, T0 + 5 * HOUR, []],
    ]);
  });

  it('at the window\'s end the hosts in flight are aborted with a PrecacheWindowClosedError and asked again in the next window; done hosts stay done', async () => {
    const clock = new ManualClock(T0 + HOUR);
    let windowNumber = 1;
    const client = new FakeHostClient((call: RecordedCall) => (windowNumber === 1 && call.host !== 'h1' ? untilAborted(call) : cachedFromFirstPeer(call)));
    const events: PrecacheEvent[] = [];
    const running = precacheImages(
      request(client, clock, {
        aggregate: { id: 1, name: 'night', hosts: hosts(4) },
        concurrency: 2,
        window: windows([T0, T0 + 2 * HOUR], [T0 + 24 * HOUR, T0 + 26 * HOUR]),
        onEvent: (e) => events.push(e),
      }),
    );
    // h1 answers at once; h2 and h3 then work until the window ends; h4 waits for a slot.
    await until(() => client.calls.length === 3 && client.active === 2, 'h2 and h3 are in flight');
    clock.set(T0 + 2 * HOUR);
    await until(() => clock.waiting > 0 && client.active === 0, 'the fan-out waits for the next window');
    assert.equal(client.abortReasons.length >= 1, true);
    for (const reason of client.abortReasons) {
      assert.ok(reason instanceof PrecacheWindowClosedError);
      assert.equal(reason.code, 'ERR_PRECACHE_WINDOW_CLOSED');
      assert.equal(reason.windowEnd, T0 + 2 * HOUR);
    }
    assert.deepEqual(client.calls.map((call) => call.host), ['h1', 'h2', 'h3']);
    windowNumber = 2;
    clock.set(T0 + 24 * HOUR);
    const summary = await running;
    assert.deepEqual(client.calls.map((call) => call.host), ['h1', 'h2', 'h3', 'h2', 'h3', 'h4']);
    assert.deepEqual(summary.hosts.map((h) => h.status), ['done', 'done', 'done', 'done']);
    assert.equal(summary.counts.cached, 4);
    assert.deepEqual(windowsOf(events), [
      ['open', T0, T0 + 2 * HOUR, []],
      ['closed', T0, T0 + 2 * HOUR, ['h2', 'h3']],
      ['waiting', T0 + 24 * HOUR, T0 + 26 * HOUR, []],
      ['open', T0 + 24 * HOUR, T0 + 26 * HOUR, []],
    ]);
    assert.deepEqual(progressOf(events).map((p) => [p.host, p.index]), [
      ['h1', 1],
      ['h2', 2],
      ['h3', 3],
      ['h4', 4],
    ]);
  });

  it('with no window left the unfinished hosts are reported deferred, counted, with a progress event each', async () => {
    const clock = new ManualClock(T0);
    const client = new FakeHostClient((call) => (call.host === 'h1' ? cachedFromFirstPeer(call) : untilAborted(call)));
    const events: PrecacheEvent[] = [];
    const running = precacheImages(
      request(client, clock, { aggregate: { id: 1, name: 'night', hosts: hosts(3) }, window: { start: T0, end: T0 + HOUR }, onEvent: (e) => events.push(e) }),
    );
    await until(() => client.calls.length === 2 && client.active === 1, 'h2 is in flight');
    clock.advance(3600);
    const summary = await running;
    assert.deepEqual(client.calls.map((call) => call.host), ['h1', 'h2'], 'h3 was never asked');
    assert.deepEqual(summary.hosts.map((h) => [h.host, h.status, h.images[0]?.status, h.error?.code ?? null]), [
      ['h1', 'done', 'cached', null],
      ['h2', 'deferred', 'deferred', 'ERR_PRECACHE_WINDOW_CLOSED'],
      ['h3', 'deferred', 'deferred', 'ERR_PRECACHE_WINDOW_CLOSED'],
    ]);
    assert.deepEqual(summary.counts, { cached: 1, existing: 0, error: 0, unsupported: 0, skipped: 0, deferred: 2 });
    assert.equal(summary.deferredHosts, 2);
    assert.deepEqual(summary.images, [{ imageId: 'image1', cached: 1, existing: 0, error: 0, unsupported: 0, skipped: 0, deferred: 2 }]);
    assert.deepEqual(progressOf(events).map((p) => [p.host, p.status, p.images_failed]), [
      ['h1', 'done', []],
      ['h2', 'deferred', ['image1']],
      ['h3', 'deferred', ['image1']],
    ]);
    assert.deepEqual(windowsOf(events), [
      ['open', T0, T0 + HOUR, []],
      ['closed', T0, T0 + HOUR, ['h2']],
    ]);
  });

  it('a window already over: nobody is asked, everyone is deferred', async () => {
    const clock = new ManualClock(T0 + 10 * HOUR);
    const client = new FakeHostClient();
    const summary = await precacheImages(request(client, clock, { window: { start: T0, end: T0 + HOUR } }));
    assert.deepEqual(client.calls, []);
    assert.deepEqual(summary.hosts.map((h) => h.status), ['deferred', 'deferred']);
    assert.equal((summary.hosts[0]?.error as PrecacheWindowClosedError).windowEnd, null);
  });

  it('a cancel while waiting for the window ends the wait at once: every host failed with ERR_ABORTED, then the call rejects', async () => {
    const clock = new ManualClock(T0);
    const client = new FakeHostClient();
    const controller = new AbortController();
    const events: PrecacheEvent[] = [];
    const running = precacheImages(
      request(client, clock, { window: dailyWindow('01:00', '05:00'), signal: controller.signal, onEvent: (e) => events.push(e) }),
    );
    await until(() => clock.waiting > 0, 'the fan-out waits for 01:00');
    const cancelled = performance.now();
    controller.abort();
    await assert.rejects(running, { code: 'ERR_ABORTED' });
    assert.ok(performance.now() - cancelled < 1000);
    assert.equal(clock.waiting, 0, 'the wait was dropped');
    assert.deepEqual(client.calls, []);
    assert.deepEqual(progressOf(events).map((p) => [p.host, p.status, p.error?.code]), [
      ['h1', 'failed', 'ERR_ABORTED'],
      ['h2', 'failed', 'ERR_ABORTED'],
    ]);
    assert.equal(events.at(-1)?.type, 'aggregate.cache_images.end');
  });

  it('a site seed paused at the window\'s end is the seed again in the next window; its site follows it with peers', async () => {
    const clock = new ManualClock(T0);
    let windowNumber = 1;
    const client = new FakeHostClient(
      (call) => (windowNumber === 1 ? untilAborted(call) : cachedFromFirstPeer(call)),
      endpointsOf('s1', 's2', 's3'),
    );
    const running = precacheImages(
      request(client, clock, {
        aggregate: { id: 1, name: 'night', hosts: [1, 2, 3].map((i) => ({ name: `s${String(i)}`, site: 'edge' })) },
        concurrency: 3,
        window: windows([T0, T0 + HOUR], [T0 + 2 * HOUR, T0 + 3 * HOUR]),
      }),
    );
    await until(() => client.active === 1, 'the seed is in flight');
    clock.set(T0 + HOUR);
    await until(() => clock.waiting > 0 && client.active === 0, 'the seed was paused');
    windowNumber = 2;
    clock.set(T0 + 2 * HOUR);
    const summary = await running;
    assert.deepEqual(client.peerNames(), [
      ['s1', []],
      ['s1', []],
      ['s2', ['s1']],
      ['s3', ['s1']],
    ]);
    assert.deepEqual(summary.sites[0] && [summary.sites[0].seed, summary.sites[0].bytesFromGlance, summary.sites[0].bytesFromPeers], [
      's1',
      IMAGE_BYTES,
      2 * IMAGE_BYTES,
    ]);
  });

  it('with the system clock, a window opening shortly is waited for with real timers', async () => {
    const client = new FakeHostClient();
    const start = Date.now() + 150;
    await precacheImages({ aggregate: { id: 1, name: 'soon', hosts: hosts(1) }, imageIds: ['image1'], source: images, client, window: { start, end: start + HOUR } });
    assert.equal(client.calls.length, 1);
    assert.ok(Date.now() >= start);
  });

  it('a malformed window or clock is refused before any event', async () => {
    const clock = new ManualClock(T0);
    const client = new FakeHostClient();
    const events: PrecacheEvent[] = [];
    const onEvent = (event: PrecacheEvent): void => {
      events.push(event);
    };
    await assert.rejects(precacheImages(request(client, clock, { window: { start: T0 + HOUR, end: T0 }, onEvent })), {
      code: 'ERR_INVALID_CONFIG',
      message: /window\.end/,
    });
    await assert.rejects(precacheImages(request(client, clock, { window: { start: Number.NaN, end: T0 }, onEvent })), { code: 'ERR_INVALID_CONFIG' });
    await assert.rejects(precacheImages({ ...request(client, clock, { onEvent }), clock: JSON.parse('{}') as ManualClock }), { code: 'ERR_INVALID_CONFIG', message: /clock/ });
    assert.deepEqual(events, []);
  });
});

describe('dailyWindow', () => {
  it('yields the window open now, else the next one, every day; in UTC or a fixed offset; across midnight', () => {
    const night = dailyWindow('01:00', '05:00');
    assert.deepEqual(night.next(T0), { start: T0 + HOUR, end: T0 + 5 * HOUR });
    assert.deepEqual(night.next(T0 + 2 * HOUR), { start: T0 + HOUR, end: T0 + 5 * HOUR });
    assert.deepEqual(night.next(T0 + 5 * HOUR), { start: T0 + 25 * HOUR, end: T0 + 29 * HOUR });
    const late = dailyWindow('22:30', '02:00');
    assert.deepEqual(late.next(T0 + HOUR), { start: T0 - 1.5 * HOUR, end: T0 + 2 * HOUR }, 'opened the day before, still open');
    assert.deepEqual(late.next(T0 + 3 * HOUR), { start: T0 + 22.5 * HOUR, end: T0 + 26 * HOUR });
    const paris = dailyWindow('01:00', '05:00', { timeZone: '+02:00' });
    assert.deepEqual(paris.next(T0), { start: T0 - HOUR, end: T0 + 3 * HOUR }, '01:00 at +02:00 is 23:00 UTC');
    const behind = dailyWindow('01:00', '05:00', { timeZone: '-05:30' });
    assert.deepEqual(behind.next(T0), { start: T0 + 6.5 * HOUR, end: T0 + 10.5 * HOUR });
  });

  it('refuses malformed times, an empty window and named time zones', () => {
    assert.throws(() => dailyWindow('1:00', '05:00'), { code: 'ERR_INVALID_CONFIG', message: /start/ });
    assert.throws(() => dailyWindow('01:00', '24:00'), { code: 'ERR_INVALID_CONFIG', message: /end/ });
    assert.throws(() => dailyWindow('01:00', '01:00'), { code: 'ERR_INVALID_CONFIG' });
    assert.throws(() => dailyWindow('01:00', '05:00', { timeZone: 'Europe/Paris' }), { code: 'ERR_INVALID_CONFIG', message: /timeZone/ });
  });
});
