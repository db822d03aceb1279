// A separate process spawning one instance on the localdisk backend over a FileVolumeGroup shared
// with the test: the SIGKILL-mid-upload and cleanup-vs-spawn tests run it. Prints UPLOADING at the
// first upload progress and CLONING when the clone starts; with `goFile` it then waits until that
// file exists before cloning.
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { FileVolumeGroup, GlanceImageSource, LocalDiskImageManager } from '../../src/index.js';
import type { VolumeGroup } from '../../src/index.js';

interface WorkerArgs {
  url: string;
  vgDir: string;
  lockDir: string;
  imageId: string;
  instance: { uuid: string; name: string };
  goFile?: string;
}

const args = JSON.parse(process.argv[2] ?? '{}') as WorkerArgs;
const files = new FileVolumeGroup({ directory: args.vgDir });
const group: VolumeGroup = {
  description: files.description,
  listDisks: (o) => files.listDisks(o),
  createDisk: (spec, o) => files.createDisk(spec, o),
  uploadDisk: (name, data, o) => files.uploadDisk(name, data, o),
  cloneDisk: async (source, spec, o) => {
    console.log('CLONING');
    while (args.goFile !== undefined && !existsSync(args.goFile)) await sleep(10);
    return files.cloneDisk(source, spec, o);
  },
  renameDisk: (from, to, o) => files.renameDisk(from, to, o),
  touchDisk: (name, at, o) => files.touchDisk(name, at, o),
  deleteDisk: (name, o) => files.deleteDisk(name, o),
};
const manager = new LocalDiskImageManager({
  host: 'host1',
  volumeGroup: group,
  lockDir: args.lockDir,
  source: new GlanceImageSource({ endpoint: args.url }),
  lockStaleMs: 2000,
});
let announced = false;
const result = await manager.createInstanceDisk({
  imageId: args.imageId,
  instance: args.instance,
  onProgress: () => {
    if (!announced) {
      announced = true;
      console.log('UPLOADING');
    }
  },
});
console.log(JSON.stringify(result));
