// bench/precache: the aggregate fan-out over 1,000 in-process hosts, each answering in 20 ms, at
// concurrency 50, against the ideal ceil(1000 / 50) x 20 ms = 400 ms. Target: ratio <= 1.1.
//
// Each host is a real MemoryImageManager (image present) behind InProcessHostClient; its
// cacheImage does the real work (single flight, lock, touch) and then waits out the rest of its
// 20 ms, like a remote host whose answer takes 20 ms including its own work. The waits are precise
// (PreciseDelays): node's setTimeout(20) fires 1 to 2 ms late (libuv's 1 ms clock), which alone
// would cost ~8% of the budget before any of our code ran.
//
// Also printed, to tell the parts apart: the delays alone through p-limit (the simulator's floor),
// plain setTimeout(20) through p-limit, the fan-out alone (a HostClient that only waits 20 ms), and
// the variant where the 20 ms wait comes before the manager's work instead of including it. On one
// thread, 1,000 hosts' own CPU (~35 us each) competes with the fan-out: hosts released together
// interleave their microtasks and finish together, so each round costs 20 ms + 50 x that CPU.
import { setTimeout as sleep } from 'node:timers/promises';
import pLimit from 'p-limit';
import { InProcessHostClient, precacheImages } from '../src/index.js';
import type { CacheImageOptions, CacheImageResult, HostClient, PrecacheEvent } from '../src/index.js';
import { MemoryImageManager, MemoryImageSource } from '../src/testing/index.js';
import { median, recordResult, timed } from './lib.js';

const HOSTS = Number(process.env.BENCH_PRECACHE_HOSTS ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_PRECACHE_CONCURRENCY ?? 50);
const LATENCY_MS = 20;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const WARMUP = 3;
const IMAGE = 'bench-precache-image';
const IDEAL_MS = Math.ceil(HOSTS / CONCURRENCY) * LATENCY_MS;

/**
 * Delays accurate to a fraction of a millisecond, for every waiter at once: one timer sleeps until
 * about 1 ms before the earliest deadline, then one setImmediate loop (which lets I/O and timers
 * run between turns) releases the waiters whose time has come, one per turn. One loop for all
 * waiters, so the precision costs one check per turn, not one per waiter.
 */
class PreciseDelays {
  readonly #waiters: { until: number; resolve: () => void }[] = [];
  #timer: NodeJS.Timeout | undefined;
  #spinning = false;

  /** Resolves at `until` (a `performance.now()` time). */
  until = (until: number): Promise<void> =>
    new Promise((resolve) => {
      // Waiters arrive in deadline order almost always: insert from the end.
      let i = this.#waiters.length;
      while (i > 0 && (this.#waiters[i - 1]?.until ?? 0) > until) i--;
      this.#waiters.splice(i, 0, { until, resolve });
      this.#schedule();
    });

  /** Resolves `ms` from now. */
  delay = (ms: number): Promise<void> => this.until(performance.now() + ms);

  #schedule(): void {
    if (this.#spinning) return;
    const first = this.#waiters[0];
    if (first === undefined) return;
    clearTimeout(this.#timer);
    const left = first.until - performance.now();
    if (left > 2) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#schedule();
      }, Math.floor(left - 1));
    } else {
      this.#spinning = true;
      setImmediate(this.#spin);
    }
  }

  // One waiter per turn, like one socket event per answer from a real host: its continuation
  // (microtasks) runs to the end before the next answer is delivered. Releasing every due waiter in
  // one callback instead interleaves their continuations, so all of them finish as late as the last.
  #spin = (): void => {
    if ((this.#waiters[0]?.until ?? Number.POSITIVE_INFINITY) <= performance.now()) this.#waiters.shift()?.resolve();
    this.#spinning = false;
    this.#schedule();
  };
}
const precise = new PreciseDelays();

/** A host whose answer takes LATENCY_MS, its real work (here: an existing image, touched) included. */
class TwentyMsManager extends MemoryImageManager {
  override async cacheImage(imageId: string, options?: CacheImageOptions): Promise<CacheImageResult> {
    const answerAt = performance.now() + LATENCY_MS;
    const result = await super.cacheImage(imageId, options);
    await precise.until(answerAt);
    return result;
  }
}

/** A host that waits LATENCY_MS and then does its work (so its work comes on top of the 20 ms). */
class WaitThenWorkManager extends MemoryImageManager {
  override async cacheImage(imageId: string, options?: CacheImageOptions): Promise<CacheImageResult> {
    await precise.delay(LATENCY_MS);
    return super.cacheImage(imageId, options);
  }
}

const source = new MemoryImageSource([{ id: IMAGE, data: Buffer.from('bench image') }]);
function managers(Kind: typeof MemoryImageManager): MemoryImageManager[] {
  return Array.from({ length: HOSTS }, (_, i) => {
    const manager = new Kind({ host: `host-${String(i).padStart(4, '0')}`, source });
    manager.put(IMAGE, Buffer.from('bench image'));
    return manager;
  });
}
const twentyMs = new InProcessHostClient(managers(TwentyMsManager));
const waitThenWork = new InProcessHostClient(managers(WaitThenWorkManager));
const waitOnly: HostClient = {
  async cacheImages(host, imageIds) {
    await precise.delay(LATENCY_MS);
    return {
      host: host.name,
      durationMs: LATENCY_MS,
      images: imageIds.map((imageId) => ({ imageId, status: 'existing', error: null, bytes: 0, durationMs: LATENCY_MS, pinnedUntil: null, bytesFrom: [], blamedPeers: [] })),
    };
  },
};
const aggregate = {
  id: 1,
  name: 'bench',
  hosts: Array.from({ length: HOSTS }, (_, i) => ({ name: `host-${String(i).padStart(4, '0')}`, cell: `cell-${i % 4}` })),
};

async function fanOutOnce(client: HostClient): Promise<number> {
  let progress = 0;
  const { ms, value } = await timed(() =>
    precacheImages({
      aggregate,
      imageIds: [IMAGE],
      source,
      client,
      concurrency: CONCURRENCY,
      onEvent: (event: PrecacheEvent) => {
        if (event.type === 'aggregate.cache_images.progress') progress += 1;
      },
    }),
  );
  if (value.counts.existing !== HOSTS || progress !== HOSTS) {
    throw new Error(`expected ${HOSTS} existing and progress events, got ${JSON.stringify(value.counts)} and ${progress}`);
  }
  return ms;
}

async function floorOnce(wait: (ms: number) => Promise<unknown>): Promise<number> {
  const limit = pLimit(CONCURRENCY);
  const { ms } = await timed(() => Promise.all(Array.from({ length: HOSTS }, () => limit(() => wait(LATENCY_MS)))));
  return ms;
}

const runs = {
  ours: () => fanOutOnce(twentyMs),
  fanOutOnly: () => fanOutOnce(waitOnly),
  waitThenWork: () => fanOutOnce(waitThenWork),
  delayFloor: () => floorOnce(precise.delay),
  setTimeoutFloor: () => floorOnce(sleep),
};
const samples = Object.fromEntries(Object.keys(runs).map((name) => [name, [] as number[]])) as Record<keyof typeof runs, number[]>;
const variants = Object.entries(runs) as [keyof typeof runs, () => Promise<number>][];
for (let round = 0; round < WARMUP + ROUNDS; round++) {
  // Interleaved, and in a rotating order, so a noisy moment on a shared machine (or a collection
  // left over from the previous variant) hits every variant alike.
  for (let i = 0; i < variants.length; i++) {
    const variant = variants[(round + i) % variants.length];
    if (variant === undefined) continue;
    const [name, run] = variant;
    const ms = await run();
    if (round >= WARMUP) samples[name].push(ms);
  }
}
const medians = Object.fromEntries(Object.entries(samples).map(([name, values]) => [name, median(values)])) as Record<keyof typeof runs, number>;
const ratio = medians.ours / IDEAL_MS;
const rounded = (ms: number): number => Math.round(ms);
const figures = {
  hosts: HOSTS,
  concurrency: CONCURRENCY,
  latencyMs: LATENCY_MS,
  rounds: ROUNDS,
  idealMs: IDEAL_MS,
  oursMedianMs: rounded(medians.ours),
  oursRoundsMs: samples.ours.map(rounded),
  ratio: Number(ratio.toFixed(3)),
  fanOutOnlyMedianMs: rounded(medians.fanOutOnly),
  fanOutOnlyRatio: Number((medians.fanOutOnly / IDEAL_MS).toFixed(3)),
  waitThenWorkMedianMs: rounded(medians.waitThenWork),
  delayFloorMedianMs: rounded(medians.delayFloor),
  setTimeoutFloorMedianMs: rounded(medians.setTimeoutFloor),
  target: 'ratio <= 1.1',
  pass: ratio <= 1.1,
};
console.log(
  `precache ${HOSTS} hosts x ${LATENCY_MS} ms at concurrency ${CONCURRENCY}: ours ${figures.oursMedianMs} ms ` +
    `(rounds ${figures.oursRoundsMs.join(', ')}), ideal ${IDEAL_MS} ms, ratio ${figures.ratio} -> ${figures.pass ? 'PASS' : 'MISS'}\n` +
    `  fan-out alone ${figures.fanOutOnlyMedianMs} ms (ratio ${figures.fanOutOnlyRatio}); wait-then-work hosts ${figures.waitThenWorkMedianMs} ms; ` +
    `delays alone ${figures.delayFloorMedianMs} ms; plain setTimeout(20) alone ${figures.setTimeoutFloorMedianMs} ms`,
);
await recordResult('precache', figures);
