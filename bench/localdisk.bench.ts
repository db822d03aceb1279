// bench/localdisk: the PowerVM localdisk backend on a FileVolumeGroup, 1 GiB image from the fake
// Glance server (a separate process). First spawn (download, verify, upload into a temporary disk,
// publish, clone) vs a cached spawn (lookup, touch, clone) in the same run. Target: a cached spawn
// costs at most half a first spawn (the clone is a full copy: ext4 has no reflink, PowerVM localdisk
// has no linked clones).
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FileVolumeGroup, GlanceImageSource, LocalDiskImageManager } from '../src/index.js';
import { GiB, MiB, median, recordResult, startGlanceServer, timed } from './lib.js';

const SIZE = Number(process.env.BENCH_LOCALDISK_BYTES ?? GiB);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const IMAGE = 'bench-localdisk-image';

const server = await startGlanceServer(IMAGE, SIZE, 4);
const { url } = server;
const dir = await mkdtemp(path.join(os.tmpdir(), 'vic-bench-localdisk-'));

try {
  const first: number[] = [];
  const cached: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // A fresh volume group each round: the first spawn is a real miss.
    const group = new FileVolumeGroup({ directory: path.join(dir, `vg-${round}`) });
    const manager = new LocalDiskImageManager({
      host: 'bench-host',
      volumeGroup: group,
      lockDir: path.join(dir, 'locks'),
      source: new GlanceImageSource({ endpoint: url }),
    });
    const miss = await timed(() => manager.createInstanceDisk({ imageId: IMAGE, instance: { uuid: `1111${round}-first`, name: 'first' } }));
    if (miss.value.cacheStatus !== 'cached') throw new Error(`first spawn was ${miss.value.cacheStatus}, expected cached`);
    const hit = await timed(() => manager.createInstanceDisk({ imageId: IMAGE, instance: { uuid: `2222${round}-again`, name: 'again' } }));
    if (hit.value.cacheStatus !== 'existing' || !hit.value.created) throw new Error('cached spawn did not hit');
    first.push(miss.ms);
    cached.push(hit.ms);
    console.log(`round ${round + 1}: first spawn ${Math.round(miss.ms)} ms, cached spawn ${Math.round(hit.ms)} ms`);
    await rm(group.directory, { recursive: true, force: true });
  }
  const firstMs = median(first);
  const cachedMs = median(cached);
  const ratio = cachedMs / firstMs;
  const figures = {
    bytes: SIZE,
    rounds: ROUNDS,
    firstSpawnMedianMs: Math.round(firstMs),
    cachedSpawnMedianMs: Math.round(cachedMs),
    ratio: Number(ratio.toFixed(3)),
    target: 'cached spawn <= 0.5 x first spawn',
    pass: ratio <= 0.5,
  };
  console.log(
    `localdisk ${SIZE / MiB} MiB on FileVolumeGroup (${ROUNDS} rounds): first spawn median ${figures.firstSpawnMedianMs} ms, ` +
      `cached spawn median ${figures.cachedSpawnMedianMs} ms, ratio ${figures.ratio} (target <= 0.5) -> ${figures.pass ? 'PASS' : 'MISS'}`,
  );
  await recordResult('localdisk', figures);
} finally {
  server.stop();
  await rm(dir, { recursive: true, force: true });
}
