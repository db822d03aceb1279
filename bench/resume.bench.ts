// bench/resume: a 1 GiB download interrupted at 90 %, then restarted: how much of the image the
// restart pulls from Glance again (the fake's byte counter), and what the restart costs. Two
// interruptions: an abort in this process (the staging is kept with a sidecar recording every
// byte written), and a SIGKILL of a downloading process at 90 % (only the last checkpoint, at most
// 8 MiB or 2 s behind, is kept). Target: the restart pulls <= 0.15 x the image (today 1.0 x).
// Also printed: the restart's time, and the time to re-hash the kept prefix on the hash worker
// (measured again afterwards on the published file, its pages cached).
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { LockManager, fileFetchTarget } from '../src/backend-kit/index.js';
import { BlockRing, WorkerBlockHasher, primeFromFile } from '../src/fetch/block-hasher.js';
import { ImageFetcher } from '../src/fetch/image-fetcher.js';
import type { EnsureResult } from '../src/fetch/image-fetcher.js';
import { GlanceImageSource } from '../src/source/glance-image-source.js';
import { startFakeGlance } from '../src/testing/fake-glance.js';
import { startChild } from '../test/helpers/child.js';
import { GiB, MiB, recordResult, timed } from './lib.js';

const SIZE = Number(process.env.BENCH_RESUME_BYTES ?? GiB);
const AT = 0.9;
const IMAGE = 'bench-resume-image';

const dir = await mkdtemp(path.join(os.tmpdir(), 'vic-bench-resume-'));
const cacheDir = path.join(dir, '_base');
const lockDir = path.join(dir, 'locks');
const glance = await startFakeGlance({ images: [{ id: IMAGE, content: { size: SIZE, seed: 5 } }] });

const fetcher = (): ImageFetcher =>
  new ImageFetcher({ source: new GlanceImageSource({ endpoint: glance.url }), locks: new LockManager({ lockDir, staleMs: 2000 }) });
const target = fileFetchTarget(IMAGE, path.join(cacheDir, IMAGE));

/** Interrupts a download at AT of the image by aborting it in this process. */
async function abortAtNinety(): Promise<void> {
  const f = fetcher();
  const controller = new AbortController();
  await f
    .ensure(IMAGE, target, { signal: controller.signal, onProgress: (p) => {
        if (p.bytesDone >= AT * SIZE) controller.abort();
      } })
    .then(() => {
      throw new Error('the download was not interrupted');
    })
    .catch((err: unknown) => {
      if ((err as { code?: string }).code !== 'ERR_ABORTED') throw err;
    });
  while (f.activeDownloads > 0) await new Promise((resolve) => setTimeout(resolve, 5));
}

/** Interrupts a download at AT of the image by SIGKILLing the process running it. */
async function killAtNinety(): Promise<void> {
  const child = startChild('fetch-worker.ts', { url: glance.url, cacheDir, lockDir, imageId: IMAGE, calls: 1, lockStaleMs: 2000 });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  while (glance.bytesServed(IMAGE) < AT * SIZE) await new Promise((resolve) => setTimeout(resolve, 2));
  child.kill('SIGKILL');
  await exited;
  // The dead process's lock goes stale before the restart can take it.
  await new Promise((resolve) => setTimeout(resolve, 2500));
}

/** Time to re-hash `bytes` of the published image on a hash worker (its pages cached by now), ms. */
async function rehashMs(bytes: number): Promise<number> {
  const ring = new BlockRing(4, 4 * MiB);
  const hasher = new WorkerBlockHasher('sha512', ring);
  try {
    await hasher.prefixDigest();
    return (await timed(() => primeFromFile(hasher, ring, path.join(cacheDir, IMAGE), bytes))).ms;
  } finally {
    await hasher.close();
  }
}

async function scenario(name: string, interrupt: () => Promise<void>): Promise<Record<string, unknown>> {
  glance.resetStats();
  await interrupt();
  const before = glance.bytesServed(IMAGE);
  const { ms, value } = await timed<EnsureResult>(() => fetcher().ensure(IMAGE, target));
  if (value.status !== 'cached' || value.digest === null) throw new Error('not verified');
  const again = glance.bytesServed(IMAGE) - before;
  const kept = value.resumedFromBytes;
  const figures = {
    interruptedAt: AT,
    servedBeforeInterruptMiB: Math.round(before / MiB),
    keptMiB: Number((kept / MiB).toFixed(1)),
    pulledAgainMiB: Number((again / MiB).toFixed(1)),
    pulledAgainRatio: Number((again / SIZE).toFixed(3)),
    restartMs: Math.round(ms),
    rehashMsWarm: Math.round(await rehashMs(kept)),
  };
  console.log(
    `${name}: ${figures.servedBeforeInterruptMiB} MiB served before the interruption, ${figures.keptMiB} MiB kept; ` +
      `the restart pulled ${figures.pulledAgainMiB} MiB (${figures.pulledAgainRatio} x the image) in ${figures.restartMs} ms; ` +
      `re-hashing the kept prefix takes ${figures.rehashMsWarm} ms (page cache warm)`,
  );
  await rm(cacheDir, { recursive: true, force: true });
  return figures;
}

try {
  const aborted = await scenario('abort at 90 %', abortAtNinety);
  const killed = await scenario('SIGKILL at 90 %', killAtNinety);
  const ratio = Math.max(aborted.pulledAgainRatio as number, killed.pulledAgainRatio as number);
  const pass = ratio <= 0.15;
  console.log(`resume ${SIZE / MiB} MiB: the restart pulls at most ${ratio} x the image (target <= 0.15) -> ${pass ? 'PASS' : 'MISS'}`);
  await recordResult('resume', { bytes: SIZE, aborted, killed, ratio, target: 'restart after 90 % pulls <= 0.15 x the image', pass });
} finally {
  await glance.close();
  await rm(dir, { recursive: true, force: true });
}
