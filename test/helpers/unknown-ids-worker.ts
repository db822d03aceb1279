// Asks a MemoryImageManager for `rounds` × `perRound` distinct image ids its source does not know,
// after a warm-up round, and prints the heap growth of each round, measured after a full GC, as
// one JSON line. Run with --expose-gc (test/reliability/memory-and-timers.test.ts does), in its
// own process: a test runner's own allocations would drown the figure.
import { ImageNotFoundError, isImageCacheError } from '../../src/errors.js';
import type { ImageSource } from '../../src/source/image-source.js';
import { MemoryImageManager } from '../../src/testing/memory-image-manager.js';

const { rounds, perRound } = JSON.parse(process.argv[2] ?? '{}') as { rounds: number; perRound: number };
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');

// Keeps nothing per id itself (MemoryImageSource counts calls per id).
const source: ImageSource = {
  describe: (imageId) => Promise.reject(new ImageNotFoundError(imageId)),
  open: (imageId) => Promise.reject(new ImageNotFoundError(imageId)),
};
const manager = new MemoryImageManager({ host: 'memory', source });
let next = 0;
let unexpected = 0;

async function round(count: number): Promise<void> {
  for (let done = 0; done < count; done += 100) {
    const ids = Array.from({ length: Math.min(100, count - done) }, () => `unknown-image-${next++}`);
    for (const outcome of await Promise.allSettled(ids.map((id) => manager.cacheImage(id)))) {
      if (outcome.status !== 'rejected' || !isImageCacheError(outcome.reason) || outcome.reason.code !== 'ERR_IMAGE_NOT_FOUND') unexpected += 1;
    }
  }
}

function heapUsed(): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
}

await round(2000);
const growth: number[] = [];
for (let i = 0; i < rounds; i += 1) {
  const before = heapUsed();
  await round(perRound);
  growth.push(heapUsed() - before);
}
console.log(JSON.stringify({ growth, unexpected, listed: (await manager.list()).length }));
