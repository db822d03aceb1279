// A separate process that fetches one image N times concurrently into a shared cache directory:
// the cross-process single-flight and crash tests run several of these.
import path from 'node:path';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import { LockManager, fileFetchTarget } from '../../src/backend-kit/index.js';
import { ImageFetcher } from '../../src/fetch/image-fetcher.js';

interface WorkerArgs {
  url: string;
  cacheDir: string;
  lockDir: string;
  imageId: string;
  calls: number;
  lockStaleMs?: number;
  bytesPerSecond?: number;
}

const args = JSON.parse(process.argv[2] ?? '{}') as WorkerArgs;
const fetcher = new ImageFetcher({
  source: new GlanceImageSource({ endpoint: args.url, backoffBaseMs: 5 }),
  locks: new LockManager({ lockDir: args.lockDir, staleMs: args.lockStaleMs ?? 2000 }),
  bytesPerSecond: args.bytesPerSecond,
});
const target = fileFetchTarget(args.imageId, path.join(args.cacheDir, args.imageId));
let announced = false;
const results = await Promise.all(
  Array.from({ length: args.calls }, () =>
    fetcher.ensure(args.imageId, target, {
      onProgress: () => {
        if (!announced) {
          announced = true;
          console.log('DOWNLOADING');
        }
      },
    }),
  ),
);
console.log(JSON.stringify(results.map((r) => ({ status: r.status, shared: r.shared, bytes: r.bytes }))));
