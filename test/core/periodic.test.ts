// The periodic pass runner, on the in-memory backend: oslo.service interval semantics, one pass at
// a time, failures that do not stop the schedule, stop and abort.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { PassReport } from '../../src/cache-entry.js';
import { InvalidConfigError, isImageCacheError } from '../../src/errors.js';
import type { InstanceRecord } from '../../src/instances.js';
import type { UpdateOptions } from '../../src/manager.js';
import { DEFAULT_PERIODIC_SPACING_SECONDS, effectiveIntervalMs, startPeriodicPass } from '../../src/periodic.js';
import type { PeriodicPass } from '../../src/periodic.js';
import { ManualClock } from '../../src/testing/manual-clock.js';
import { MemoryImageManager } from '../../src/testing/memory-image-manager.js';
import type { MemoryImageManagerOptions } from '../../src/testing/memory-image-manager.js';

const TINY = 0.005;

/** Counts update() calls and the most that ever ran at once. */
class CountingManager extends MemoryImageManager {
  calls = 0;
  inside = 0;
  peak = 0;

  override async update(instances?: Iterable<InstanceRecord>, options?: UpdateOptions): Promise<PassReport> {
    this.calls += 1;
    this.inside += 1;
    this.peak = Math.max(this.peak, this.inside);
    try {
      return await super.update(instances, options);
    } finally {
      this.inside -= 1;
    }
  }
}

/** A shared-storage backend in miniature: every storageUsers() call registers and reads again. */
class SharedManager extends CountingManager {
  registryReads = 0;

  protected override storageUsers(): Promise<readonly string[]> {
    this.registryReads += 1;
    return Promise.resolve(this.registryReads === 1 ? ['h', 'other'] : ['h', 'late']);
  }
}

class NoCacheManager extends CountingManager {
  override readonly hasImageCache: boolean = false;
}

const instance = (uuid: string, imageRef: string): InstanceRecord => ({ uuid, name: `instance-${uuid}`, host: 'h', imageRef });

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls with ref'd timers: the runner's timers are unref'd and would not keep the test alive. */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await sleep(2);
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe('startPeriodicPass', () => {
  let clock: ManualClock;
  let handles: PeriodicPass[];

  const make = <T extends CountingManager>(Kind: new (o: MemoryImageManagerOptions) => T, options: Partial<MemoryImageManagerOptions> = {}): T => {
    const m = new Kind({ host: 'h', clock, ...options });
    m.put('img-1', new Uint8Array(10));
    return m;
  };
  const manager = (options: Partial<MemoryImageManagerOptions> = {}): CountingManager => make(CountingManager, options);
  const start = (...args: Parameters<typeof startPeriodicPass>): PeriodicPass => {
    const handle = startPeriodicPass(...args);
    handles.push(handle);
    return handle;
  };

  beforeEach(() => {
    clock = new ManualClock(1_700_000_000_000);
    handles = [];
  });
  afterEach(async () => {
    await Promise.all(handles.map((h) => h.stop()));
  });

  it('effectiveIntervalMs: 0 is 60 s, negative is disabled, fractions are allowed', () => {
    assert.equal(DEFAULT_PERIODIC_SPACING_SECONDS, 60);
    assert.equal(effectiveIntervalMs(0), 60_000);
    assert.equal(effectiveIntervalMs(-1), null);
    assert.equal(effectiveIntervalMs(-0.5), null);
    assert.equal(effectiveIntervalMs(0.05), 50);
    assert.equal(effectiveIntervalMs(2400), 2_400_000);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, '60' as unknown as number]) {
      assert.throws(
        () => effectiveIntervalMs(bad),
        (err) => err instanceof InvalidConfigError && err.code === 'ERR_INVALID_CONFIG' && err.option === 'intervalSeconds',
      );
    }
  });

  it('rejects a bad interval with ERR_INVALID_CONFIG', () => {
    assert.throws(
      () => start(manager(), { intervalSeconds: Number.NaN }),
      (err) => isImageCacheError(err) && err.code === 'ERR_INVALID_CONFIG',
    );
  });

  it('interval 0 is enabled (60 s spacing) and does not run before its first interval', async () => {
    const m = manager();
    const handle = start(m, { intervalSeconds: 0, listInstances: () => [] });
    assert.equal(handle.enabled, true);
    await sleep(20);
    assert.equal(m.calls, 0);
    assert.equal(handle.passes, 0);
    const report = await handle.runNow();
    assert.equal(report?.host, 'h');
    assert.equal(handle.passes, 1);
  });

  it('defaults to the manager\'s managerInterval, where 0 also means 60 s', async () => {
    const m = manager({ managerInterval: 0 });
    const handle = start(m);
    assert.equal(handle.enabled, true);
    await sleep(20);
    assert.equal(m.calls, 0);
  });

  for (const [label, make] of [
    ['a negative interval', (m: CountingManager) => startPeriodicPass(m, { intervalSeconds: -1, runImmediately: true })],
    ['managerInterval -1', (m: CountingManager) => startPeriodicPass(m, { runImmediately: true })],
  ] as const) {
    it(`${label} disables it: never runs, runNow does nothing`, async () => {
      const m = manager({ managerInterval: -1 });
      const handle = make(m);
      handles.push(handle);
      assert.equal(handle.enabled, false);
      assert.equal(await handle.runNow(), null);
      await sleep(20);
      assert.equal(m.calls, 0);
      assert.equal(handle.passes, 0);
      assert.equal(handle.running, false);
      assert.equal(handle.lastReport, null);
      await handle.stop();
    });
  }

  it('a manager without an image cache is disabled (Nova skips the pass)', async () => {
    const m = make(NoCacheManager);
    const handle = start(m, { intervalSeconds: TINY, runImmediately: true });
    assert.equal(handle.enabled, false);
    await sleep(20);
    assert.equal(m.calls, 0);
  });

  it('runs repeatedly, reports each pass, and stops', async () => {
    const m = manager();
    const reports: PassReport[] = [];
    const emitted: PassReport[] = [];
    m.on('pass', (r) => emitted.push(r));
    const handle = start(m, {
      intervalSeconds: TINY,
      listInstances: () => [instance('u1', 'img-1')],
      onReport: (r) => reports.push(r),
    });
    await until(() => handle.passes >= 3);
    await handle.stop();
    const done = handle.passes;
    assert.ok(done >= 3);
    assert.equal(reports.length, done);
    assert.deepEqual(reports, emitted);
    const last = handle.lastReport;
    assert.ok(last !== null);
    assert.equal(last, reports.at(-1));
    assert.deepEqual(last.active, ['img-1']);
    await sleep(30);
    assert.equal(handle.passes, done, 'no pass after stop');
    assert.equal(m.calls, done);
    assert.equal(await handle.runNow(), null, 'runNow after stop does nothing');
  });

  it('gives listInstances the storage users and the signal, and passes its instances to update', async () => {
    const m = manager();
    const controller = new AbortController();
    const seen: { hosts: readonly string[]; signal: AbortSignal | undefined }[] = [];
    const handle = start(m, {
      intervalSeconds: 3600,
      signal: controller.signal,
      listInstances: async (hosts, signal) => {
        seen.push({ hosts, signal });
        await sleep(1);
        return new Set([instance('u1', 'img-1')]);
      },
    });
    const report = await handle.runNow();
    assert.deepEqual(seen, [{ hosts: ['h'], signal: controller.signal }]);
    assert.ok(report !== null);
    assert.deepEqual(report.active, ['img-1']);
    assert.equal(report.instanceCount, 1);
  });

  it('reads the storage users once per pass: the lister and the report see the same hosts', async () => {
    const m = make(SharedManager);
    const listed: (readonly string[])[] = [];
    const handle = start(m, {
      intervalSeconds: 3600,
      listInstances: (hosts) => {
        listed.push(hosts);
        return [instance('u1', 'img-1')];
      },
    });
    const first = await handle.runNow();
    assert.equal(m.registryReads, 1);
    assert.deepEqual(listed, [['h', 'other']]);
    assert.deepEqual(first?.hosts, ['h', 'other']);
    assert.equal(Object.hasOwn(m, 'storageUsers'), false, 'nothing is left on the manager');
    const second = await handle.runNow();
    assert.equal(m.registryReads, 2);
    assert.deepEqual(listed.at(-1), ['h', 'late']);
    assert.deepEqual(second?.hosts, ['h', 'late']);
  });

  it('without listInstances, update asks the manager\'s own lister', async () => {
    const asked: (readonly string[])[] = [];
    const m = manager({
      listInstances: (hosts) => {
        asked.push(hosts);
        return [instance('u1', 'img-1')];
      },
    });
    const handle = start(m, { intervalSeconds: 3600, runImmediately: true });
    await until(() => handle.passes === 1);
    assert.deepEqual(asked, [['h']]);
    assert.deepEqual(handle.lastReport?.active, ['img-1']);
  });

  it('never runs two passes at once: runNow joins the pass in flight', async () => {
    const m = manager();
    const handle = start(m, {
      intervalSeconds: TINY,
      listInstances: async () => {
        await sleep(15);
        return [instance('u1', 'img-1')];
      },
    });
    const joined = [handle.runNow(), handle.runNow(), handle.runNow()];
    assert.equal(joined[0], joined[1]);
    assert.equal(joined[1], joined[2]);
    assert.equal(handle.running, true);
    const reports = await Promise.all(joined);
    assert.ok(reports[0] !== null);
    for (let i = 0; i < 5; i++) {
      await Promise.all([handle.runNow(), handle.runNow()]);
      await sleep(3);
    }
    await until(() => handle.passes >= 10);
    await handle.stop();
    assert.equal(m.peak, 1);
    assert.equal(m.calls, handle.passes);
  });

  it('a failing pass goes to onError and the schedule continues', async () => {
    const m = manager();
    const boom = new Error('database down');
    const errors: unknown[] = [];
    let call = 0;
    const handle = start(m, {
      intervalSeconds: TINY,
      runImmediately: true,
      listInstances: () => {
        call += 1;
        if (call === 1) throw boom;
        return [instance('u1', 'img-1')];
      },
      onError: (err) => errors.push(err),
    });
    await until(() => handle.passes >= 2);
    assert.deepEqual(errors, [boom]);
    assert.equal(m.calls, handle.passes + 1, 'the failed pass failed inside update, and was not counted');
  });

  it('without onError, failures are logged and the schedule continues; throwing callbacks do not break it', async () => {
    const m = manager();
    let call = 0;
    const handle = start(m, {
      intervalSeconds: TINY,
      runImmediately: true,
      listInstances: () => {
        call += 1;
        if (call % 2 === 1) throw new Error('flaky');
        return [];
      },
      onReport: () => {
        throw new Error('listener bug');
      },
    });
    await until(() => handle.passes >= 2 && call >= 4);
    const failing = start(manager(), {
      intervalSeconds: TINY,
      runImmediately: true,
      listInstances: () => {
        throw new Error('always');
      },
      onError: () => {
        throw new Error('handler bug');
      },
    });
    assert.equal(await failing.runNow(), null);
    await failing.runNow();
    assert.equal(failing.passes, 0);
  });

  it('stop() waits for the pass in flight, without aborting it', async () => {
    const m = manager();
    const gate = deferred();
    const handle = start(m, {
      intervalSeconds: TINY,
      listInstances: async () => {
        await gate.promise;
        return [instance('u1', 'img-1')];
      },
    });
    const pass = handle.runNow();
    let stopped = false;
    const stopping = handle.stop().then(() => {
      stopped = true;
    });
    await sleep(20);
    assert.equal(stopped, false);
    assert.equal(handle.running, true);
    gate.resolve();
    await stopping;
    assert.equal(handle.running, false);
    assert.deepEqual((await pass)?.active, ['img-1']);
    assert.equal(handle.passes, 1);
    await handle.stop();
    await sleep(20);
    assert.equal(m.calls, 1, 'nothing was scheduled after stop');
  });

  it('aborting the signal stops the runner and aborts the pass in flight', async () => {
    const m = manager();
    const controller = new AbortController();
    const gate = deferred();
    const errors: unknown[] = [];
    const handle = start(m, {
      intervalSeconds: TINY,
      signal: controller.signal,
      listInstances: async () => {
        await gate.promise;
        return [instance('u1', 'img-1')];
      },
      onError: (err) => errors.push(err),
    });
    const pass = handle.runNow();
    await until(() => handle.running);
    controller.abort();
    gate.resolve();
    assert.equal(await pass, null);
    assert.equal(m.calls, 1, 'update was called with the aborted signal and gave up');
    assert.equal(handle.passes, 0);
    assert.deepEqual(errors, [], 'an abort the caller asked for is not an error');
    await handle.stop();
    assert.equal(await handle.runNow(), null);
    await sleep(20);
    assert.equal(m.calls, 1);
  });

  it('an already-aborted signal means it never runs', async () => {
    const m = manager();
    const handle = start(m, { intervalSeconds: TINY, runImmediately: true, signal: AbortSignal.abort() });
    assert.equal(await handle.runNow(), null);
    await sleep(20);
    assert.equal(m.calls, 0);
  });

  it('intervals longer than a timer can hold do not fire early', async () => {
    const m = manager();
    start(m, { intervalSeconds: 30 * 86400 });
    await sleep(20);
    assert.equal(m.calls, 0);
  });
});
