// bench/capacity: the cost of capacity on a large cache (10,000 base files, no instance dirs).
// 1. Eviction: a pass that must evict the least recently used quarter for the size cap (rounds of
//    concurrent removals, LRU order) against a pass that ages out the same quarter (Nova's
//    removal, all at once). Target: eviction <= 1.5 x aging.
// 2. Admission: downloading 100 small images into that cache with a cap and listInstances
//    configured (one scan per download to check the cap, plus statfs) against no capacity
//    options. Reported per download; target: overhead <= 100 ms per download at 10,000 entries
//    (under 10% of a 1 GiB download at 1 GB/s; a cache of a few hundred images pays ~1 ms).
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pLimit from 'p-limit';
import { LibvirtFileImageManager } from '../src/backends/libvirt-file/libvirt-file-manager.js';
import type { LibvirtFileImageManagerOptions } from '../src/backends/libvirt-file/libvirt-file-manager.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { MemoryImageSource } from '../src/testing/memory-image-source.js';
import { recordResult, timed } from './lib.js';

const BASES = Number(process.env.BENCH_CAPACITY_BASES ?? 10_000);
const DOWNLOADS = 100;
const BASE_BYTES = 4096;
const DAY_MS = 86_400_000;
const execFileAsync = promisify(execFile);
const sha1 = (s: string): string => createHash('sha1').update(s).digest('hex');

/** `BASES` base files of 4 KiB; base i was last used (BASES - i) minutes before two days ago. */
async function buildCache(clock: ManualClock): Promise<{ dir: string; instancesPath: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vic-bench-capacity-'));
  const instancesPath = path.join(dir, 'instances');
  const baseDir = path.join(instancesPath, '_base');
  await mkdir(baseDir, { recursive: true });
  const limit = pLimit(64);
  const data = Buffer.alloc(BASE_BYTES, 7);
  await Promise.all(
    Array.from({ length: BASES }, (_, i) =>
      limit(async () => {
        const file = path.join(baseDir, sha1(`image-${i}`));
        await writeFile(file, data);
        const seconds = (clock.now() - 2 * DAY_MS - (BASES - i) * 60_000) / 1000;
        await utimes(file, seconds, seconds);
      }),
    ),
  );
  await execFileAsync('sync');
  return { dir, instancesPath };
}

async function passMs(options: Partial<LibvirtFileImageManagerOptions>): Promise<{ ms: number; removed: number }> {
  const clock = new ManualClock();
  const { dir, instancesPath } = await buildCache(clock);
  try {
    const manager = new LibvirtFileImageManager({ host: 'bench', instancesPath, source: new MemoryImageSource([]), clock, ...options });
    global.gc?.();
    const { ms, value } = await timed(() => manager.update([]));
    const left = (await readdir(path.join(instancesPath, '_base'))).length;
    if (value.removed.length !== BASES / 4 || left !== BASES - BASES / 4) {
      throw new Error(`removed ${value.removed.length}, ${left} left: expected the oldest quarter gone`);
    }
    return { ms, removed: value.removed.length };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function downloadsMs(options: Partial<LibvirtFileImageManagerOptions>): Promise<number> {
  const clock = new ManualClock();
  const { dir, instancesPath } = await buildCache(clock);
  try {
    const source = new MemoryImageSource(Array.from({ length: DOWNLOADS }, (_, i) => ({ id: `new-${i}`, data: Buffer.alloc(64 * 1024, i) })));
    const manager = new LibvirtFileImageManager({ host: 'bench', instancesPath, source, clock, ...options });
    global.gc?.();
    const { ms } = await timed(async () => {
      for (let i = 0; i < DOWNLOADS; i++) await manager.cacheImage(`new-${i}`);
    });
    return ms;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// The oldest quarter: past a minimum age placed between the quarter boundary's last uses.
const quarterAgeSeconds = 2 * 86_400 + (BASES - BASES / 4) * 60 + 30;
const aging = await passMs({ removeUnusedOriginalMinimumAgeSeconds: quarterAgeSeconds });
const eviction = await passMs({ removeUnusedBaseImages: false, maxCacheBytes: (BASES - BASES / 4) * BASE_BYTES });
const evictionRatio = eviction.ms / aging.ms;
console.log(`  ${BASES} entries: aging pass removing ${aging.removed} in ${aging.ms.toFixed(0)} ms; cap eviction pass removing ${eviction.removed} in ${eviction.ms.toFixed(0)} ms`);

const plain = await downloadsMs({});
const capped = await downloadsMs({ maxCacheBytes: 1024 ** 4, listInstances: () => [] });
const overheadMs = (capped - plain) / DOWNLOADS;
console.log(`  ${DOWNLOADS} downloads into ${BASES} entries: ${(plain / DOWNLOADS).toFixed(1)} ms each plain, ${(capped / DOWNLOADS).toFixed(1)} ms with a cap (+${overheadMs.toFixed(1)} ms)`);

const pass = evictionRatio <= 1.5 && overheadMs <= 100;
console.log(
  `capacity: eviction/aging ${evictionRatio.toFixed(3)} (target <= 1.5); admission +${overheadMs.toFixed(1)} ms per download (target <= 100) -> ${pass ? 'PASS' : 'MISS'}`,
);
await recordResult('capacity', {
  entries: BASES,
  agingMs: Math.round(aging.ms),
  evictionMs: Math.round(eviction.ms),
  ratio: Number(evictionRatio.toFixed(3)),
  admissionOverheadMs: Number(overheadMs.toFixed(1)),
  target: 'eviction <= 1.5 x aging; admission <= 100 ms per download',
  pass,
});
