// The manager a worker process of the reliability suite runs as one "compute host": libvirt-file
// over the shared instances path, images from the parent's fake Glance, both minimum ages forced
// to 0 (so only the in-use computation and the locks protect a base), the shortest lock staleness.
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';

/** What every such worker is started with. */
export interface WorkerHostArgs {
  /** This host's name. */
  readonly host: string;
  /** The shared instances path. */
  readonly instancesPath: string;
  /** The fake Glance's URL. */
  readonly url: string;
}

export function workerManager(args: WorkerHostArgs): LibvirtFileImageManager {
  return new LibvirtFileImageManager({
    host: args.host,
    instancesPath: args.instancesPath,
    source: new GlanceImageSource({ endpoint: args.url, backoffBaseMs: 1, backoffMaxMs: 20 }),
    removeUnusedOriginalMinimumAgeSeconds: 0,
    removeUnusedResizedMinimumAgeSeconds: 0,
    lockStaleMs: 2000,
  });
}
