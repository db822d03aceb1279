// bench/precache: the aggregate fan-out over 1,000 in-process hosts whose cacheImage takes 20 ms
// (a real MemoryImageManager each, image present: a 20 ms wait, then the locked touch), at
// concurrency 50, against the ideal ceil(1000 / 50) x 20 ms = 400 ms. Target: ratio <= 1.1.
// The 20 ms are simulated precisely (PreciseDelays): node's setTimeout(20) fires 1 to 2 ms late
// (libuv's 1 ms clock and loop-time rounding), which alone made 1,000 sleeps at concurrency 50 take
// ~430 ms (1.08 x the ideal) before any of our code ran. Also printed: that timer floor (the same 1,000 waits
// through p-limit, no library), so our own overhead shows apart from the simulator's.
import { setTimeout as sleep } from 'node:timers/promises';
import pLimit from 'p-limit';
import { InProcessHostClient, precacheImages } from '../src/index.js';
import type { CacheImageOptions, CacheImageResult, PrecacheEvent } from '../src/index.js';
import { MemoryImageManager, MemoryImageSource } from '../src/testing/index.js';
import { median, recordResult, timed } from './lib.js';

const HOSTS = Number(process.env.BENCH_PRECACHE_HOSTS ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_PRECACHE_CONCURRENCY ?? 50);
const LATENCY_MS = 20;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const IMAGE = 'bench-precache-image';
const IDEAL_MS = Math.ceil(HOSTS / CONCURRENCY) * LATENCY_MS;

/**
 * Delays accurate to a fraction of a millisecond, for every waiter at once: one timer sleeps until
 * about 1 ms before the earliest deadline, then one setImmediate loop (which lets I/O and timers
 * run between turns) releases the waiters whose time has come. One loop for all waiters, so the
 * precision costs one check per turn, not one per waiter.
 */
class PreciseDelays {
  readonly #waiters: { until: number; resolve: () => void }[] = [];
  #timer: NodeJS.Timeout | undefined;
  #spinning = false;

  delay = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const until = performance.now() + ms;
      // Waiters arrive in deadline order almost always (same ms each): insert from the end.
      let i = this.#waiters.length;
      while (i > 0 && (this.#waiters[i - 1]?.until ?? 0) > until) i--;
      this.#waiters.splice(i, 0, { until, resolve });
      this.#schedule();
    });

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

  #spin = (): void => {
    const now = performance.now();
    while ((this.#waiters[0]?.until ?? Number.POSITIVE_INFINITY) <= now) this.#waiters.shift()?.resolve();
    this.#spinning = false;
    this.#schedule();
  };
}
const precise = new PreciseDelays();
const preciseDelay = precise.delay;

/** A host whose cacheImage takes LATENCY_MS before doing the real (existing: touch) work. */
class RemoteLikeManager extends MemoryImageManager {
  override async cacheImage(imageId: string, options?: CacheImageOptions): Promise<CacheImageResult> {
    await preciseDelay(LATENCY_MS);
    return super.cacheImage(imageId, options);
  }
}

const source = new MemoryImageSource([{ id: IMAGE, data: Buffer.from('bench image') }]);
const managers = Array.from({ length: HOSTS }, (_, i) => {
  const manager = new RemoteLikeManager({ host: `host-${String(i).padStart(4, '0')}`, source });
  manager.put(IMAGE, Buffer.from('bench image'));
  return manager;
});
const client = new InProcessHostClient(managers);
const aggregate = { id: 1, name: 'bench', hosts: managers.map((m, i) => ({ name: m.host, cell: `cell-${i % 4}` })) };

let cpuMs = 0;
async function oursOnce(): Promise<number> {
  let progress = 0;
  const cpuBefore = process.cpuUsage();
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
  const cpu = process.cpuUsage(cpuBefore);
  cpuMs = (cpu.user + cpu.system) / 1000;
  console.log(`  round: ${ms.toFixed(0)} ms wall, ${cpuMs.toFixed(0)} ms CPU`);
  if (value.counts.existing !== HOSTS || progress !== HOSTS) {
    throw new Error(`expected ${HOSTS} existing and progress events, got ${JSON.stringify(value.counts)} and ${progress}`);
  }
  return ms;
}

async function floorOnce(delay: (ms: number) => Promise<unknown>): Promise<number> {
  const limit = pLimit(CONCURRENCY);
  const { ms } = await timed(() => Promise.all(Array.from({ length: HOSTS }, () => limit(() => delay(LATENCY_MS)))));
  return ms;
}

await oursOnce(); // warm-up: JIT, first allocations
const ours: number[] = [];
const floor: number[] = [];
const plainTimerFloor: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  global.gc?.();
  ours.push(await oursOnce());
  floor.push(await floorOnce(preciseDelay));
  plainTimerFloor.push(await floorOnce(sleep));
}
const oursMs = median(ours);
const floorMs = median(floor);
const plainFloorMs = median(plainTimerFloor);
const ratio = oursMs / IDEAL_MS;
const figures = {
  hosts: HOSTS,
  concurrency: CONCURRENCY,
  latencyMs: LATENCY_MS,
  rounds: ROUNDS,
  idealMs: IDEAL_MS,
  oursMedianMs: Math.round(oursMs),
  timerFloorMedianMs: Math.round(floorMs),
  plainSetTimeoutFloorMedianMs: Math.round(plainFloorMs),
  ratio: Number(ratio.toFixed(3)),
  overheadOverTimerFloor: Number((oursMs / floorMs).toFixed(3)),
  target: 'ratio <= 1.1',
  pass: ratio <= 1.1,
};
console.log(
  `precache ${HOSTS} hosts x ${LATENCY_MS} ms at concurrency ${CONCURRENCY}: ours ${figures.oursMedianMs} ms ` +
    `(rounds: ${ours.map((ms) => Math.round(ms)).join(', ')}), ideal ${IDEAL_MS} ms, delays alone ${figures.timerFloorMedianMs} ms ` +
    `(plain setTimeout: ${figures.plainSetTimeoutFloorMedianMs} ms), ` +
    `ratio ${figures.ratio} (x${figures.overheadOverTimerFloor} of the timer floor) -> ${figures.pass ? 'PASS' : 'MISS'}`,
);
await recordResult('precache', figures);
