// Class 8 of issue 13: nothing grows with the number of distinct image ids ever asked for, and no
// delay from an option or a request overflows node's timers (above 2^31 - 1 ms, `setTimeout`
// fires after 1 ms with only a TimeoutOverflowWarning).
//   - 36,000 unknown ids through `cacheImage`: the heap, after a full GC, is where it was (main
//     kept ~100-200 bytes per id forever in the capacity controller's name → id map);
//   - a lock wait of 2^31 ms, a throttle sleep of ~48 days, a sleep of 2^31 + 1 ms and a
//     pre-cache deadline at the longest accepted timeout really wait (they fired after 1 ms);
//   - speed caps below 1 byte/s and stale times past node's timers are refused, not ignored;
//   - and, over all of it, no TimeoutOverflowWarning.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it, mock } from 'node:test';
import { abortableSleep } from '../../src/abort.js';
import { LockManager } from '../../src/fetch/lock-manager.js';
import { Throttle } from '../../src/fetch/throttle.js';
import { resolveImageCacheOptions } from '../../src/options.js';
import { createHostAgent } from '../../src/precache/host-agent.js';
import { HttpHostClient } from '../../src/precache/http-host-client.js';
import { precacheImages } from '../../src/precache/precache-images.js';
import type { HostClient } from '../../src/precache/host-client.js';
import { MemoryImageManager, MemoryImageSource } from '../../src/testing/index.js';

const MAX_TIMER_MS = 2 ** 31 - 1;
const helpers = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'helpers');

/** Settles with 'pending' when `promise` has not settled after `ms` (it must still be waiting). */
async function stateAfter(promise: Promise<unknown>, ms: number): Promise<'pending' | 'resolved' | 'rejected'> {
  const marked = promise.then(
    () => 'resolved' as const,
    () => 'rejected' as const,
  );
  return Promise.race([marked, sleep(ms).then(() => 'pending' as const)]);
}

function figures(t: { diagnostic: (message: string) => void }, what: string, values: Record<string, unknown>): void {
  const line = JSON.stringify(values);
  t.diagnostic(`${what}: ${line}`);
  console.log(`[reliability] memory-and-timers ${what} ${line}`);
}

describe('class 8: memory and timers stay bounded', () => {
  const warnings: Error[] = [];
  const onWarning = (warning: Error): void => {
    warnings.push(warning);
  };
  before(() => {
    process.on('warning', onWarning);
  });
  after(() => {
    process.off('warning', onWarning);
  });

  it('36,000 unknown image ids leave the heap where it was', async (t) => {
    // In a child with --expose-gc: measured after full GCs, away from the test runner's allocations.
    const rounds = 3;
    const perRound = 12_000;
    const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', path.join(helpers, 'unknown-ids-worker.ts'), JSON.stringify({ rounds, perRound })], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, out);
    const { growth, unexpected, listed } = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { growth: number[]; unexpected: number; listed: number };
    assert.equal(unexpected, 0, 'every unknown id is ERR_IMAGE_NOT_FOUND');
    assert.equal(listed, 0);
    const total = growth.reduce((sum, bytes) => sum + bytes, 0);
    const perId = total / (rounds * perRound);
    figures(t, 'heap after unknown ids', { ids: rounds * perRound, growthPerRound: growth, perIdBytes: +perId.toFixed(1) });
    // Main kept ~100 (memory backend) to ~212 (libvirt-file) bytes per id forever; GC noise is a
    // few hundred KB per round, a few bytes per id.
    assert.ok(perId < 30, `the heap grew by ${total} bytes over ${rounds * perRound} unknown ids (${perId.toFixed(1)} per id)`);
  });

  it('setLongTimeout fires once, at its delay, however long; a cleared or infinite one never', async () => {
    // Imported here so that the file's other tests still run (and fail) on a tree without it.
    const { setLongTimeout } = await import('../../src/timer.js');
    // Mocked node timers: a real wait of 2^33 ms is 99 days. Each tick fires what is due and lets
    // the chain arm its next step, as real timers do.
    mock.timers.enable({ apis: ['setTimeout'] });
    try {
      let fired = 0;
      setLongTimeout(() => (fired += 1), 2 ** 33 + 5);
      for (let step = 0; step < 4; step += 1) {
        mock.timers.tick(MAX_TIMER_MS);
        assert.equal(fired, 0, `fired after ${step + 1} × 2^31 - 1 ms`);
      }
      mock.timers.tick(8);
      assert.equal(fired, 0, 'fired 1 ms early');
      mock.timers.tick(1);
      assert.equal(fired, 1, 'did not fire at 2^33 + 5 ms');
      const cleared = setLongTimeout(() => (fired += 10), 2 ** 32);
      setLongTimeout(() => (fired += 100), Infinity);
      mock.timers.tick(MAX_TIMER_MS);
      cleared.clear();
      for (let step = 0; step < 8; step += 1) mock.timers.tick(MAX_TIMER_MS);
      assert.equal(fired, 1);
    } finally {
      mock.timers.reset();
    }
  });

  it('a lock wait of 2^31 ms waits for the holder instead of timing out after 1 ms', async () => {
    const locks = new LockManager({ timeoutMs: 2 ** 31 });
    const held = await locks.acquire('image');
    const waiting = locks.acquire('image');
    const perCall = locks.acquire('image', { timeoutMs: 2 ** 40 });
    assert.equal(await stateAfter(waiting, 100), 'pending');
    assert.equal(await stateAfter(perCall, 0), 'pending');
    await held.release();
    await (await waiting).release();
    await (await perCall).release();
    // The manager's option takes the same long wait.
    assert.equal(resolveImageCacheOptions({ lockTimeoutMs: 2 ** 31 }).lockTimeoutMs, 2 ** 31);
  });

  it('a throttle sleeps as long as its cap says, even past 2^31 - 1 ms', async () => {
    const throttle = new Throttle(1);
    const controller = new AbortController();
    // 2^22 bytes at 1 byte/s: 48 days, past the longest timer; main woke after 1 ms.
    const consumed = throttle.consume(2 ** 22, controller.signal);
    assert.equal(await stateAfter(consumed, 100), 'pending');
    controller.abort(new Error('enough'));
    await assert.rejects(consumed, { code: 'ERR_ABORTED' });

    for (const ms of [MAX_TIMER_MS + 1, 2 ** 33]) {
      const stop = new AbortController();
      const long = abortableSleep(ms, stop.signal);
      assert.equal(await stateAfter(long, 50), 'pending', `a sleep of ${ms} ms`);
      stop.abort();
      await assert.rejects(long, { code: 'ERR_ABORTED' });
    }
  });

  it('speed caps under 1 byte/s and stale times past node timers are refused, not ignored', async () => {
    for (const cap of [0.001, 0.5, 0, -1, Number.NaN]) {
      assert.throws(() => resolveImageCacheOptions({ downloadBytesPerSecond: cap }), { code: 'ERR_INVALID_CONFIG' }, `downloadBytesPerSecond ${cap}`);
      assert.throws(() => new Throttle(cap), { code: 'ERR_INVALID_CONFIG' }, `Throttle(${cap})`);
    }
    assert.equal(resolveImageCacheOptions({ downloadBytesPerSecond: 1 }).downloadBytesPerSecond, 1);
    assert.equal(resolveImageCacheOptions({ downloadBytesPerSecond: Infinity }).downloadBytesPerSecond, Infinity);
    for (const stale of [2 ** 31, 2 ** 40, Number.MAX_SAFE_INTEGER]) {
      assert.throws(() => resolveImageCacheOptions({ lockStaleMs: stale }), { code: 'ERR_INVALID_CONFIG' }, `lockStaleMs ${stale}`);
    }
    assert.equal(resolveImageCacheOptions({ lockStaleMs: MAX_TIMER_MS }).lockStaleMs, MAX_TIMER_MS);
    // A per-call cap goes through the same check, before anything happens.
    const source = new MemoryImageSource([{ id: 'image-1', data: new Uint8Array(16) }]);
    const manager = new MemoryImageManager({ host: 'memory', source });
    await assert.rejects(manager.cacheImage('image-1', { bytesPerSecond: 0.001 }), { code: 'ERR_INVALID_CONFIG' });
    assert.equal(source.describeCalls('image-1'), 0);
  });

  it('a pre-cache deadline at the longest accepted timeout does not expire at once', async () => {
    const source = new MemoryImageSource([{ id: 'image-1', data: new Uint8Array(16) }]);
    const slow: HostClient = {
      async cacheImages(host, imageIds) {
        await sleep(50);
        return { host: host.name, images: imageIds.map((imageId) => ({ imageId, status: 'cached', error: null, bytes: 16, durationMs: 50, pinnedUntil: null, bytesFrom: [], blamedPeers: [] })), durationMs: 50 };
      },
    };
    const summary = await precacheImages({
      aggregate: { id: 1, name: 'agg', hosts: [{ name: 'compute1' }] },
      imageIds: ['image-1'],
      source,
      client: slow,
      timeoutMs: MAX_TIMER_MS,
    });
    assert.equal(summary.failedHosts, 0, JSON.stringify(summary.hosts.map((h) => h.error?.code)));
  });

  it('an HTTP host client without a connect timeout (Infinity) connects and is answered', async () => {
    const manager = new MemoryImageManager({ host: 'compute1', source: new MemoryImageSource([{ id: 'image-1', data: new Uint8Array(16) }]) });
    const server = createServer(createHostAgent(manager, { token: 'secret-token' }));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const client = new HttpHostClient({ endpoints: { compute1: `http://127.0.0.1:${port}` }, token: 'secret-token', connectTimeoutMs: Infinity, timeoutMs: Infinity });
      const report = await client.cacheImages({ name: 'compute1' }, ['image-1'], { signal: new AbortController().signal });
      assert.equal(report.images[0]?.status, 'cached');
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('no TimeoutOverflowWarning was emitted by any of the above', () => {
    const overflow = warnings.filter((w) => w.name === 'TimeoutOverflowWarning');
    assert.deepEqual(overflow.map((w) => w.message), []);
  });
});
