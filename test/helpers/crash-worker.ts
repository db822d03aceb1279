// A process that the crash tests (test/reliability/crashes.test.ts) SIGKILL at a random point of
// a download, an instance-disk creation or a cleanup pass. It loads, says it is ready, and starts
// the work only when the parent sends `go`, so the kill delay is measured from the work's start,
// not from a variable module-loading time. Each unit of work is bracketed by `START <x>` / `DONE
// <x>` lines on stdout (synchronous on a pipe), so the parent knows what was in progress.
import path from 'node:path';
import type { InstanceRecord } from '../../src/instances.js';
import { serve, workerArgs } from './ipc-worker.js';
import { workerManager } from './worker-manager.js';
import type { WorkerHostArgs } from './worker-manager.js';

/** What to do once told to go. */
export type CrashWork =
  | { readonly kind: 'download'; readonly imageIds: readonly string[] }
  | { readonly kind: 'overlay'; readonly imageIds: readonly string[]; readonly prefix: string; readonly count: number }
  | { readonly kind: 'cleanup'; readonly instances: readonly InstanceRecord[] };

const args = workerArgs() as WorkerHostArgs;
const manager = workerManager(args);

serve(async (message) => {
  const work = message as CrashWork;
  if (work.kind === 'download') {
    for (const imageId of work.imageIds) {
      console.log(`START ${imageId}`);
      await manager.cacheImage(imageId);
      console.log(`DONE ${imageId}`);
    }
    return null;
  }
  if (work.kind === 'overlay') {
    for (let k = 0; k < work.count; k++) {
      const uuid = `${work.prefix}-${String(k).padStart(4, '0')}`;
      const imageId = work.imageIds[k % work.imageIds.length] as string;
      console.log(`START ${uuid} ${imageId}`);
      // Every fourth disk is a raw copy, the others qcow2 overlays.
      await manager.createInstanceDisk({ imageId, instanceDir: path.join(args.instancesPath, uuid), format: k % 4 === 3 ? 'raw' : 'qcow2' });
      console.log(`DONE ${uuid}`);
    }
    return null;
  }
  const started = performance.now();
  console.log('START pass');
  const report = await manager.update(work.instances);
  console.log('DONE pass');
  return { removed: report.removed.length, failures: report.failures.length, ms: performance.now() - started };
});
