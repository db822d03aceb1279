// `npm run demo`: the main job on this machine. A fake Glance server on 127.0.0.1 serves a
// generated image; a compute host caches it on first spawn, reuses it for ten more, and a cache
// pass removes it once no instance uses it. Everything happens in a temp dir that is removed.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GlanceImageSource } from 'virt-imagecache';
import { ManualClock, MemoryImageManager, startFakeGlance } from 'virt-imagecache/testing';

const MiB = 1024 * 1024;
const IMAGE = 'fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0';
const SIZE = 256 * MiB;
const tty = process.stdout.isTTY;

const dir = await mkdtemp(path.join(os.tmpdir(), 'virt-imagecache-demo-'));
await using glance = await startFakeGlance({ images: [{ id: IMAGE, name: 'cirros-demo', content: { size: SIZE, seed: 42 } }] });
try {
  const clock = new ManualClock();
  const host = new MemoryImageManager({ host: 'compute-1', source: new GlanceImageSource({ endpoint: glance.url }), clock });
  let lastShown = -1;
  const progress = ({ bytesDone, totalBytes }: { bytesDone: number; totalBytes: number | null }): void => {
    const pct = totalBytes === null ? 0 : Math.floor((bytesDone / totalBytes) * 100);
    if (tty) process.stdout.write(`\r  downloading ${IMAGE}: ${'#'.repeat(pct / 4).padEnd(25, '.')} ${pct}%`);
    else if (pct >= lastShown + 25) {
      lastShown = pct;
      console.log(`  downloading ${IMAGE}: ${pct}%`);
    }
  };

  console.log(`fake Glance at ${glance.url}; image ${IMAGE} (${SIZE / MiB} MiB); work dir ${dir}`);
  const first = await host.cacheImage(IMAGE, { onProgress: progress, tolerateTouchErrors: true });
  if (tty) process.stdout.write('\n');
  const cached: number[] = [];
  for (let i = 0; i < 10; i++) cached.push((await host.cacheImage(IMAGE, { tolerateTouchErrors: true })).durationMs);
  const concurrent = await Promise.all(Array.from({ length: 8 }, () => host.cacheImage(IMAGE)));

  clock.advance(86400 + 1);
  const pass = await host.update([]);

  const pulled = glance.bytesServed(IMAGE);
  const withoutCache = SIZE * (1 + cached.length + concurrent.length);
  console.table({
    'first spawn (download + verify)': { ms: Math.round(first.durationMs), status: first.status },
    'cached spawn (median of 10)': { ms: Number(cached.sort((a, b) => a - b)[5]?.toFixed(2)), status: 'existing' },
  });
  console.log(`bytes pulled from the image service: ${pulled / MiB} MiB (without a cache: ${withoutCache / MiB} MiB)`);
  console.log(`cleanup pass after the image fell out of use: removed ${pass.removed.map((r) => `${r.name} (${r.reason}, unused ${Math.round(r.ageSeconds)} s)`).join(', ') || 'nothing'}`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
