// bench/download: 1 GiB from the fake Glance server, our verified pipeline vs `curl -o` against
// the same server in the same run. Target: >= 0.8 x curl's throughput while verifying the
// checksum, and RSS growth <= 64 MiB. Second baseline: the same bytes uploaded to the real Glance
// (glance-api, when installed), ours vs `curl -o` from it; recorded as `download-real-glance`.
// Each also prints the ratio to the physical bound: the slower of `curl -o` and sha512 over the
// same number of bytes from memory, measured in the same rounds (a verified download can go no
// faster than either). Target >= 0.9 x that bound.
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { LockManager, fileFetchTarget } from '../src/backend-kit/index.js';
import { ImageFetcher } from '../src/fetch/image-fetcher.js';
import { GlanceImageSource } from '../src/source/glance-image-source.js';
import { generatedImageBytes, generatedImageChunks } from '../src/testing/fake-glance.js';
import { findGlanceApi, startRealGlance } from '../test/helpers/real-glance.js';
import { GiB, MiB, median, recordResult, startGlanceServer, timed } from './lib.js';

const SIZE = Number(process.env.BENCH_DOWNLOAD_BYTES ?? GiB);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const IMAGE = 'bench-download-image';

const SEED = 3;
const dir = await mkdtemp(path.join(os.tmpdir(), 'vic-bench-download-'));

async function curlOnce(url: string, imageId: string): Promise<number> {
  const out = path.join(dir, 'curl.out');
  const { ms } = await timed(() => promisify(execFile)('curl', ['-sS', '-o', out, `${url}/v2/images/${imageId}/file`]));
  await rm(out, { force: true });
  return ms;
}

async function oursOnce(url: string, imageId: string): Promise<{ ms: number; rssGrowth: number }> {
  const cacheDir = path.join(dir, '_base');
  const fetcher = new ImageFetcher({
    source: new GlanceImageSource({ endpoint: url }),
    locks: new LockManager({ lockDir: path.join(dir, 'locks') }),
  });
  global.gc?.();
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  try {
    const { ms, value } = await timed(() => fetcher.ensure(imageId, fileFetchTarget(imageId, path.join(cacheDir, imageId))));
    if (value.status !== 'cached' || value.digest === null) throw new Error('not verified');
    return { ms, rssGrowth: peak - baseline };
  } finally {
    clearInterval(sampler);
    await rm(cacheDir, { recursive: true, force: true });
  }
}

/** sha512 over SIZE bytes from memory (a 64 MiB slice of the image, hashed again and again), ms. */
function sha512Once(slice: Buffer): number {
  const started = performance.now();
  const hash = createHash('sha512');
  for (let done = 0; done < SIZE; done += slice.length) hash.update(done + slice.length <= SIZE ? slice : slice.subarray(0, SIZE - done));
  hash.digest('hex');
  return performance.now() - started;
}

/** Alternates curl and ours ROUNDS times against `url`, prints and records the medians. */
async function compare(name: string, server: string, url: string, imageId: string): Promise<void> {
  const curl: number[] = [];
  const ours: number[] = [];
  const hashing: number[] = [];
  const slice = generatedImageBytes({ size: Math.min(SIZE, 64 * MiB), seed: SEED });
  let rssGrowth = 0;
  for (let round = 0; round < ROUNDS; round++) {
    curl.push(await curlOnce(url, imageId));
    hashing.push(sha512Once(slice));
    const run = await oursOnce(url, imageId);
    ours.push(run.ms);
    rssGrowth = Math.max(rssGrowth, run.rssGrowth);
  }
  const curlMiBs = SIZE / MiB / (median(curl) / 1000);
  const oursMiBs = SIZE / MiB / (median(ours) / 1000);
  const ratio = oursMiBs / curlMiBs;
  const sha512MiBs = SIZE / MiB / (median(hashing) / 1000);
  const boundMiBs = Math.min(curlMiBs, sha512MiBs);
  const boundRatio = oursMiBs / boundMiBs;
  const figures = {
    server,
    bytes: SIZE,
    rounds: ROUNDS,
    curlMedianMs: Math.round(median(curl)),
    oursMedianMs: Math.round(median(ours)),
    curlMiBps: Math.round(curlMiBs),
    oursMiBps: Math.round(oursMiBs),
    ratio: Number(ratio.toFixed(3)),
    sha512MiBps: Math.round(sha512MiBs),
    boundMiBps: Math.round(boundMiBs),
    boundRatio: Number(boundRatio.toFixed(3)),
    boundTarget: 'boundRatio >= 0.9',
    boundPass: boundRatio >= 0.9,
    peakRssGrowthMiB: Number((rssGrowth / MiB).toFixed(1)),
    target: 'ratio >= 0.8, RSS growth <= 64 MiB',
    pass: ratio >= 0.8 && rssGrowth <= 64 * MiB,
  };
  console.log(
    `${name} ${SIZE / MiB} MiB from ${server}: curl ${figures.curlMiBps} MiB/s, ours (sha512-verified) ${figures.oursMiBps} MiB/s, ratio ${figures.ratio}, peak RSS growth ${figures.peakRssGrowthMiB} MiB -> ${figures.pass ? 'PASS' : 'MISS'}; ` +
      `sha512 from memory ${figures.sha512MiBps} MiB/s, physical bound ${figures.boundMiBps} MiB/s, ratio ${figures.boundRatio} (target >= 0.9) -> ${figures.boundPass ? 'PASS' : 'MISS'}`,
  );
  await recordResult(name, figures);
}

try {
  const fake = await startGlanceServer(IMAGE, SIZE, SEED);
  try {
    await compare('download', 'the fake Glance', fake.url, IMAGE);
  } finally {
    fake.stop();
  }
  if (findGlanceApi() === null) {
    console.log('download-real-glance: skipped, glance-api is not installed');
  } else {
    await using glance = await startRealGlance();
    // The very bytes the fake served, uploaded through Glance's own API (it hashes them as it stores).
    const image = await glance.createImage({ name: 'bench-download' });
    await glance.upload(image.id, generatedImageChunks({ size: SIZE, seed: SEED }));
    await compare('download-real-glance', `the real Glance ${glance.version}`, glance.url, image.id);
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
