// `npm run demo`: the main job, end to end, on this machine.
//
// A fake Glance server on 127.0.0.1 serves generated images; three compute hosts (each its own
// instances path under a temp dir, libvirt-file layout) run the real flow: a first spawn that
// downloads, ten cached spawns (qcow2 overlays), a pre-cache of a new image onto the aggregate of
// the hosts, a cleanup pass once an image falls out of use (a manual clock stands in for a day),
// a capacity eviction to make room for a download, and an edge site: four hosts behind their host
// agents on 127.0.0.1, pre-cached site-aware (Glance pulled once, the rest from peers). It prints
// what happened and leaves nothing behind.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { GlanceImageSource, HttpHostClient, InProcessHostClient, LibvirtFileImageManager, createHostAgent, precacheImages } from 'virt-imagecache';
import { createProgressBar, formatBytes } from 'virt-imagecache/cli';
import type { InstanceRecord, RemovedEntry } from 'virt-imagecache';
import { ManualClock, startFakeGlance } from 'virt-imagecache/testing';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const DAY = 86_400;
const BASE = { id: 'fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0', name: 'ubuntu-24.04', size: Number(process.env.DEMO_IMAGE_MIB ?? 320) * MiB };
const ROLLOUT = { id: '5b1e7c2a-9d3f-4e6b-8a1c-2f4d6e8a0b1c', name: 'ubuntu-24.04-hotfix', size: 48 * MiB };
const TOOLS = { id: 'c4d2a8e6-1f3b-4c5d-9e7f-8a0b2c4d6e8f', name: 'tools', size: 40 * MiB };
const EDGE = { id: '9a7c5e3b-1d2f-4a6b-8c0e-3f5a7b9d1e2c', name: 'edge-base', size: 32 * MiB };
const HOSTS = ['compute-1', 'compute-2', 'compute-3'];
const SITE = { name: 'edge-a', hosts: ['edge-1', 'edge-2', 'edge-3', 'edge-4'] };
const AGENT_TOKEN = 'demo-agent-token';

const say = (line: string): void => {
  console.log(line);
};
const ms = (value: number): string => (value < 10 ? value.toFixed(2) : value.toFixed(0));

const work = await mkdtemp(path.join(os.tmpdir(), 'virt-imagecache-demo-'));
await using glance = await startFakeGlance({
  images: [BASE, ROLLOUT, TOOLS, EDGE].map(({ id, name, size }) => ({ id, name, content: { size, seed: size % 97 } })),
});
try {
  const clock = new ManualClock();
  const source = new GlanceImageSource({ endpoint: glance.url });
  // What each host's driver knows about its instances (Nova would ask its database).
  const instances = new Map<string, Map<string, InstanceRecord>>(HOSTS.map((host) => [host, new Map()]));
  const hosts = HOSTS.map(
    (host) =>
      new LibvirtFileImageManager({
        host,
        instancesPath: path.join(work, host),
        source,
        clock,
        listInstances: () => instances.get(host)?.values() ?? [],
        // compute-2 has a small cache disk: at most 80 MiB of images.
        ...(host === 'compute-2' ? { maxCacheBytes: 80 * MiB } : {}),
      }),
  );
  const [compute1, compute2] = hosts as [LibvirtFileImageManager, LibvirtFileImageManager, LibvirtFileImageManager];
  const cleaned: { host: string; entry: RemovedEntry; trigger: string }[] = [];
  for (const manager of hosts) {
    manager.on('removed', (entry) => cleaned.push({ host: manager.host, entry, trigger: entry.reason === 'unused' || entry.reason === 'stale-staging' ? 'cleanup pass' : 'capacity' }));
  }

  let spawned = 0;
  const spawn = async (manager: LibvirtFileImageManager, imageId: string, showProgress = false): Promise<{ ms: number; status: string }> => {
    const uuid = `00000000-0000-4000-8000-${String(++spawned).padStart(12, '0')}`;
    const bar = showProgress ? createProgressBar({ stream: process.stdout, label: `  ${manager.host} downloading ${imageId.slice(0, 8)}`, lineStepPercent: 50 }) : null;
    const started = performance.now();
    const disk = await manager.createInstanceDisk({
      imageId,
      instanceDir: path.join(manager.instancesPath, uuid),
      sizeBytes: 20 * GiB,
      onProgress: bar?.update,
    });
    const took = performance.now() - started;
    bar?.done();
    instances.get(manager.host)?.set(uuid, { uuid, name: `instance-${String(spawned)}`, host: manager.host, imageRef: imageId });
    return { ms: took, status: disk.cacheStatus };
  };
  const deleteInstancesOf = async (manager: LibvirtFileImageManager, imageId: string): Promise<void> => {
    const mine = instances.get(manager.host) ?? new Map<string, InstanceRecord>();
    for (const [uuid, record] of mine) {
      if (record.imageRef !== imageId) continue;
      await rm(path.join(manager.instancesPath, uuid), { recursive: true });
      mine.delete(uuid);
    }
  };

  say(`virt-imagecache demo: fake Glance at ${glance.url}, ${HOSTS.length} compute hosts under ${work}`);
  say(`images: ${[BASE, ROLLOUT, TOOLS, EDGE].map((i) => `${i.name} (${formatBytes(i.size)})`).join(', ')}\n`);

  say(`1. first spawn of ${BASE.name} on compute-1 (download, verify, overlay)`);
  const first = await spawn(compute1, BASE.id, true);
  say(`   ${first.status} in ${ms(first.ms)} ms`);

  say('2. ten more spawns of the same image on compute-1 (cache hits: a qcow2 overlay each)');
  const cached: number[] = [];
  for (let i = 0; i < 10; i++) cached.push((await spawn(compute1, BASE.id)).ms);
  const cachedMedian = cached.sort((a, b) => a - b)[5] ?? 0;
  say(`   median ${ms(cachedMedian)} ms per spawn\n`);

  say(`3. pre-cache ${ROLLOUT.name} onto aggregate "rollout" (${HOSTS.join(', ')}), pinned for 30 h`);
  const summary = await precacheImages({
    aggregate: { id: 1, name: 'rollout', hosts: HOSTS.map((name) => ({ name })) },
    imageIds: [ROLLOUT.id],
    source,
    client: new InProcessHostClient(hosts),
    concurrency: 3,
    pinTtlSeconds: 30 * 3600,
    onEvent: (event) => {
      if (event.type === 'aggregate.cache_images.progress') {
        say(`   progress ${String(event.index)}/${String(event.total)}: ${event.host} ${event.status}, images cached ${String(event.images_cached.length)}, failed ${String(event.images_failed.length)}`);
      }
    },
  });
  say(`   summary: ${JSON.stringify(summary.counts)} in ${ms(summary.durationMs)} ms\n`);

  say(`4. the ${BASE.name} instances on compute-1 are deleted; a day later the periodic pass runs`);
  await deleteInstancesOf(compute1, BASE.id);
  clock.advance(DAY + 60);
  const pass = await compute1.update();
  say(`   removed ${pass.removed.map((r) => `${r.name.slice(0, 12)}… (${r.reason})`).join(', ') || 'nothing'}; kept ${pass.kept.map((k) => `${k.name.slice(0, 12)}… (${k.reason})`).join(', ') || 'nothing'}\n`);

  clock.advance(12 * 3600);
  say(`5. twelve hours later the hotfix pin has expired; compute-2 (maxCacheBytes ${formatBytes(80 * MiB)}) spawns ${TOOLS.name}`);
  const tools = await spawn(compute2, TOOLS.id);
  say(`   ${tools.status} in ${ms(tools.ms)} ms; cache now ${(await compute2.list()).map((e) => `${e.name.slice(0, 12)}… ${formatBytes(e.sizeBytes)}`).join(', ')}\n`);

  say(`6. edge site "${SITE.name}": ${SITE.hosts.join(', ')}, each serving its cache to the site's peers through its host agent on 127.0.0.1; pre-cache ${EDGE.name} site-aware`);
  const agents = await Promise.all(SITE.hosts.map((host) => startAgent(new LibvirtFileImageManager({ host, instancesPath: path.join(work, host), source }))));
  try {
    const edge = await precacheImages({
      aggregate: { id: 2, name: SITE.name, hosts: SITE.hosts.map((name) => ({ name, site: SITE.name })) },
      imageIds: [EDGE.id],
      source,
      client: new HttpHostClient({ endpoints: Object.fromEntries(agents.map((agent) => [agent.host, agent.url])), token: AGENT_TOKEN }),
      concurrency: SITE.hosts.length,
    });
    for (const host of edge.hosts) {
      const from = host.bytesFrom.map((part) => `${formatBytes(part.bytes)} from ${part.from}`).join(', ');
      say(`   ${host.host}${host.seed ? ' (seed)' : ''} ${host.images.map((image) => image.status).join(', ')}: ${from || 'nothing downloaded'}`);
    }
    // Glance's own byte counter, beside what the hosts reported in the summary.
    const fromGlance = glance.bytesServed(EDGE.id);
    const peers = edge.sites.reduce((sum, site) => sum + site.bytesFromPeers, 0);
    const saved = edge.sites.reduce((sum, site) => sum + site.bytesSaved, 0);
    say(
      `   in ${ms(edge.durationMs)} ms, Glance served ${formatBytes(fromGlance)} for ${String(SITE.hosts.length)} hosts (${(fromGlance / EDGE.size).toFixed(2)}x the image); ` +
        `peers served ${formatBytes(peers)}: ${formatBytes(saved)} saved on the site's link to Glance\n`,
    );
  } finally {
    await Promise.all(agents.map((agent) => agent.stop()));
  }

  const pulled = [BASE, ROLLOUT, TOOLS].reduce((sum, image) => sum + glance.bytesServed(image.id), 0);
  // Without a cache every spawn pulls its image, and pre-caching does not exist.
  const withoutCache = 11 * BASE.size + TOOLS.size;
  console.table({
    'first spawn (download + verify + overlay)': { ms: Number(ms(first.ms)) },
    'cached spawn (median of 10)': { ms: Number(ms(cachedMedian)) },
  });
  say(`bytes pulled from the image service: ${formatBytes(pulled)} (a deploy without a cache: ${formatBytes(withoutCache)}, ${(withoutCache / pulled).toFixed(1)}x more)`);
  say('cleaned, and why:');
  for (const { host, entry, trigger } of cleaned) {
    say(`  ${host}: ${entry.name.slice(0, 12)}… ${formatBytes(entry.bytes)} [${trigger}: ${entry.reason}] ${entry.detail ?? `unused for ${(entry.ageSeconds / 3600).toFixed(1)} h`}`);
  }
  const stats = compute1.getStats();
  say(`compute-1 stats: ${String(stats.hits)} hits, ${String(stats.misses)} misses, ${formatBytes(stats.bytesServedFromCache)} served from the cache instead of downloaded`);
} finally {
  await rm(work, { recursive: true, force: true });
}
say(`\nwork dir removed; nothing left behind.`);

/** Serves `manager`'s host agent on 127.0.0.1 (pre-cache requests, and its cache to its site's peers). */
async function startAgent(manager: LibvirtFileImageManager): Promise<{ host: string; url: string; stop: () => Promise<void> }> {
  const server: Server = createServer(createHostAgent(manager, { token: AGENT_TOKEN }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => {
        resolve();
      });
    });
  return { host: manager.host, url: `http://127.0.0.1:${String((server.address() as AddressInfo).port)}`, stop };
}
