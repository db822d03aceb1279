// A libvirt driver's spawn flow over virt-imagecache, end to end on this machine:
//   node --import tsx examples/libvirt-spawn.ts
// A loopback Glance (our fake) stands in for the image service; everything else is what a driver
// does: one manager per compute host, createInstanceDisk in spawn, a periodic cache pass fed by
// the driver's own instance list, and cleanup when an instance is deleted.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GlanceImageSource, LibvirtFileImageManager, startPeriodicPass } from 'virt-imagecache';
import type { InstanceRecord } from 'virt-imagecache';
import { ManualClock, startFakeGlance } from 'virt-imagecache/testing';

const IMAGE = 'a3c5e7f9-1b2d-4f6a-8c0e-2d4f6a8c0e1b';
const GiB = 1024 ** 3;

const instancesPath = await mkdtemp(path.join(os.tmpdir(), 'vic-example-libvirt-'));
await using glance = await startFakeGlance({ images: [{ id: IMAGE, name: 'cirros', content: { size: 32 * 1024 * 1024, seed: 1 } }] });
try {
  // The driver's view of its instances; Nova would query its database here.
  const instances = new Map<string, InstanceRecord>();
  const clock = new ManualClock(); // the real driver omits this; here it ages the cache in a second
  const manager = new LibvirtFileImageManager({
    host: 'compute-1',
    instancesPath,
    source: new GlanceImageSource({ endpoint: glance.url }),
    clock,
    listInstances: () => instances.values(),
  });

  // spawn(): the driver builds the root disk; the first spawn downloads, the rest reuse the base.
  async function spawn(uuid: string): Promise<void> {
    const disk = await manager.createInstanceDisk({
      imageId: IMAGE,
      instanceDir: path.join(instancesPath, uuid),
      sizeBytes: 10 * GiB,
      format: 'qcow2',
    });
    instances.set(uuid, { uuid, name: `instance-${uuid.slice(0, 8)}`, host: 'compute-1', imageRef: IMAGE });
    console.log(`spawned ${uuid}: ${disk.path} (${disk.format}, ${disk.virtualSize / GiB} GiB) on ${path.basename(disk.basePath)} [${disk.cacheStatus}]`);
  }
  await spawn('11111111-aaaa-4bbb-8ccc-000000000001');
  await spawn('11111111-aaaa-4bbb-8ccc-000000000002');

  // The compute manager's periodic task: every managerInterval seconds in production.
  const controller = new AbortController();
  const periodic = startPeriodicPass(manager, { signal: controller.signal });
  const inUse = await periodic.runNow();
  console.log(`pass with 2 instances: kept ${inUse?.kept.map((k) => `${k.name} (${k.reason})`).join(', ') ?? 'nothing'}`);

  // Both instances are deleted (the driver removes their directories); a day later the base is no
  // longer protected.
  for (const uuid of instances.keys()) await rm(path.join(instancesPath, uuid), { recursive: true });
  instances.clear();
  clock.advance(86_400 + 1);
  const cleaned = await periodic.runNow();
  console.log(`pass a day after the last delete: removed ${cleaned?.removed.map((r) => `${r.name} (${r.reason})`).join(', ') ?? 'nothing'}`);
  controller.abort();
  await periodic.stop();
} finally {
  await rm(instancesPath, { recursive: true, force: true });
}
