// bench/edge: edge sites on thin links. 3 sites x 10 hosts; each host is a real
// LibvirtFileImageManager (its own instances path under a temp dir) behind a real host agent
// (http.createServer(createHostAgent(...))) on loopback, asked through HttpHostClient. Each site
// reaches Glance over its own WAN link: one fake Glance per site, all serving the same image, each
// capped with the fake's `linkBytesPerSecond` (so a site's hosts share one link, fairly), while
// hosts reach each other over loopback uncapped (the LAN).
//
//   (a) site-unaware fan-out (today): every host pulls the image from its site's Glance, so each
//       link carries the image once per host;
//   (b) site-aware: the hosts carry their `site`; per site one seed pulls from Glance and the
//       others from their peers.
// Targets (issue 16): Glance bytes per site = 1.00 x the image in (b), by each fake's own byte
// counter; time of (b) <= 0.25 x (a). Every host must end with the image cached (verified).
//
// Knobs: BENCH_EDGE_IMAGE_MIB (32), BENCH_EDGE_WAN_MIBPS (per site link, 8), BENCH_EDGE_SITES (3),
// BENCH_EDGE_HOSTS_PER_SITE (10), BENCH_EDGE_CONCURRENCY (every host at once), BENCH_ROUNDS (rounds
// of (b), 3: its median counts; (a) runs once, its time is the links' and barely varies).
//
// Why a WAN of 8 MiB/s (64 Mbit/s, a thin edge link): the 30 hosts share this machine's cores, so
// the bench's LAN is its CPU (receive, sha512, write, serve): ~150-400 MiB/s for all sites together
// on the 2-core reference VM, depending on its load. Site-aware, a site takes about
// image / WAN + (hosts - 1) x image / (LAN / sites); against hosts x image / WAN today that is
// 0.1 + 0.9 x WAN / (LAN / 3) here, so the ratio shows only where the WAN is well below a site's
// share of the LAN, as on real sites (100 Mbit/s of WAN against 10 Gbit/s of LAN).
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { GlanceImageSource, HttpHostClient, LibvirtFileImageManager, createHostAgent, precacheImages } from '../src/index.js';
import type { PrecacheHost, PrecacheSummary } from '../src/index.js';
import { startFakeGlance } from '../src/testing/fake-glance.js';
import type { FakeGlance } from '../src/testing/fake-glance.js';
import { MiB, recordResult, timed } from './lib.js';

const SITES = Number(process.env.BENCH_EDGE_SITES ?? 3);
const HOSTS_PER_SITE = Number(process.env.BENCH_EDGE_HOSTS_PER_SITE ?? 10);
const IMAGE_BYTES = Number(process.env.BENCH_EDGE_IMAGE_MIB ?? 32) * MiB;
const WAN_BYTES_PER_SECOND = Number(process.env.BENCH_EDGE_WAN_MIBPS ?? 8) * MiB;
const CONCURRENCY = Number(process.env.BENCH_EDGE_CONCURRENCY ?? SITES * HOSTS_PER_SITE);
const IMAGE = 'bench-edge-image';
const TOKEN = 'bench-edge-agent-token';
const TIME_TARGET = 0.25;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

/** A site: its name and the Glance behind its WAN link. */
interface Site {
  readonly name: string;
  readonly glance: FakeGlance;
}

/** A compute host: its cache, behind its agent on loopback. */
interface Host {
  readonly name: string;
  readonly site: string;
  readonly url: string;
  readonly server: Server;
}

/** Where one fan-out's bytes came from, per site, and how long it took. */
interface Run {
  readonly ms: number;
  /** CPU time this process used meanwhile (every host, agent and fake is in it), ms. */
  readonly cpuMs: number;
  /** Bytes each site's Glance served, by its own counter, in site order. */
  readonly glanceBytes: readonly number[];
  /** What the hosts reported. */
  readonly summary: PrecacheSummary;
}

async function startSites(count: number, size: number, linkBytesPerSecond: number): Promise<Site[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const glance = await startFakeGlance({ images: [{ id: IMAGE, content: { size, seed: 16 } }], linkBytesPerSecond });
      // Warm the digests (computed once per fake) before anything is timed.
      await fetch(`${glance.url}/v2/images/${IMAGE}`);
      return { name: `site-${String(i + 1)}`, glance };
    }),
  );
}

/** Starts `perSite` hosts per site, each with a fresh cache under `root`, its agent on 127.0.0.1. */
async function startHosts(root: string, sites: readonly Site[], perSite: number): Promise<Host[]> {
  const specs = sites.flatMap((site) => Array.from({ length: perSite }, (_, i) => ({ site, name: `${site.name}-host-${String(i + 1).padStart(2, '0')}` })));
  return Promise.all(
    specs.map(async ({ site, name }) => {
      const manager = new LibvirtFileImageManager({
        host: name,
        instancesPath: path.join(root, name),
        source: new GlanceImageSource({ endpoint: site.glance.url }),
      });
      const server = createServer(createHostAgent(manager, { token: TOKEN }));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const { port } = server.address() as AddressInfo;
      return { name, site: site.name, url: `http://127.0.0.1:${String(port)}`, server };
    }),
  );
}

async function stopHosts(hosts: readonly Host[]): Promise<void> {
  await Promise.all(
    hosts.map(
      ({ server }) =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => {
            resolve();
          });
        }),
    ),
  );
}

/**
 * Pre-caches the image on every host (fresh caches), site-aware (hosts carry their site) or not,
 * and measures the time and each site's Glance bytes.
 */
async function fanOut(sites: readonly Site[], perSite: number, siteAware: boolean): Promise<Run> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'vic-bench-edge-'));
  const hosts = await startHosts(root, sites, perSite);
  try {
    for (const site of sites) site.glance.resetStats();
    const aggregateHosts: PrecacheHost[] = hosts.map(({ name, site }) => ({ name, cell: 'edge', site: siteAware ? site : undefined }));
    const first = sites[0];
    if (first === undefined) throw new Error('no sites');
    const cpu = process.cpuUsage();
    const { ms, value: summary } = await timed(() =>
      precacheImages({
        aggregate: { id: 16, name: 'edge', hosts: aggregateHosts },
        imageIds: [IMAGE],
        source: new GlanceImageSource({ endpoint: first.glance.url }),
        client: new HttpHostClient({ endpoints: Object.fromEntries(hosts.map((host) => [host.name, host.url])), token: TOKEN }),
        concurrency: Math.min(CONCURRENCY, hosts.length),
      }),
    );
    const { user, system } = process.cpuUsage(cpu);
    if (summary.counts.cached !== hosts.length) {
      throw new Error(`expected ${String(hosts.length)} hosts cached, got ${JSON.stringify(summary.counts)}: ${JSON.stringify(summary.hosts.filter((h) => h.error !== null).slice(0, 3))}`);
    }
    return { ms, cpuMs: (user + system) / 1000, glanceBytes: sites.map((site) => site.glance.bytesServed(IMAGE)), summary };
  } finally {
    await stopHosts(hosts);
    await rm(root, { recursive: true, force: true });
  }
}

const round2 = (n: number): number => Number(n.toFixed(2));
const mib = (bytes: number): string => `${(bytes / MiB).toFixed(0)} MiB`;
/** CPU use over a run, in cores: near the machine's count means the run was CPU-bound. */
const cores = (run: Run): string => `CPU ${(run.cpuMs / 1000).toFixed(1)} s, ${(run.cpuMs / run.ms).toFixed(2)} cores`;
const hosts = SITES * HOSTS_PER_SITE;
console.log(
  `edge: ${String(SITES)} sites x ${String(HOSTS_PER_SITE)} hosts, image ${mib(IMAGE_BYTES)}, ` +
    `WAN ${mib(WAN_BYTES_PER_SECOND)}/s per site, LAN uncapped loopback, concurrency ${String(Math.min(CONCURRENCY, hosts))}`,
);
const sites = await startSites(SITES, IMAGE_BYTES, WAN_BYTES_PER_SECOND);
try {
  // (a) today: every host pulls from its site's Glance. Each link carries the image once per
  // host: no faster than perSite x image / WAN.
  const floorMs = ((HOSTS_PER_SITE * IMAGE_BYTES) / WAN_BYTES_PER_SECOND) * 1000;
  const unaware = await fanOut(sites, HOSTS_PER_SITE, false);
  const unawareGlance = unaware.glanceBytes.map((bytes) => round2(bytes / IMAGE_BYTES));
  console.log(
    `  (a) site-unaware: ${(unaware.ms / 1000).toFixed(1)} s (the links' floor ${(floorMs / 1000).toFixed(1)} s), ` +
      `Glance bytes per site ${unawareGlance.map((r) => `${String(r)}x`).join(', ')} the image; ${cores(unaware)}`,
  );

  // (b) site-aware: per site, Glance once (the seed), the rest from peers over the LAN.
  // Fresh caches each round; the median round by time is reported (the peers' phase is bound by
  // this machine's CPU, which a busy moment takes away).
  const rounds: Run[] = [];
  for (let round = 0; round < ROUNDS; round++) rounds.push(await fanOut(sites, HOSTS_PER_SITE, true));
  const aware = [...rounds].sort((x, y) => x.ms - y.ms)[Math.floor(rounds.length / 2)];
  if (aware === undefined) throw new Error('BENCH_ROUNDS must be at least 1');
  const awareGlance = aware.glanceBytes.map((bytes) => round2(bytes / IMAGE_BYTES));
  const reported = aware.summary.sites;
  const peerBytes = reported.reduce((sum, site) => sum + site.bytesFromPeers, 0);
  // Seeds are asked first, at once; the last seed's answer ends the WAN phase.
  const seedsMs = Math.max(...aware.summary.hosts.filter((host) => host.seed).map((host) => host.durationMs));
  const lanMs = aware.ms - seedsMs;
  const ratio = aware.ms / unaware.ms;
  const glanceRatio = Math.max(...rounds.flatMap((run) => run.glanceBytes)) / IMAGE_BYTES;
  const timePass = ratio <= TIME_TARGET;
  // Every round, not only the median one, must pull the image exactly once per site.
  const glancePass = rounds.every((run) => run.glanceBytes.every((bytes) => bytes === IMAGE_BYTES));
  console.log(
    `  (b) site-aware (median of ${rounds.map((run) => (run.ms / 1000).toFixed(1)).join(', ')} s): ${(aware.ms / 1000).toFixed(1)} s: seeds from Glance in ${(seedsMs / 1000).toFixed(1)} s ` +
      `(image / WAN = ${(IMAGE_BYTES / WAN_BYTES_PER_SECOND).toFixed(1)} s), then ${mib(peerBytes)} from peers in ${(lanMs / 1000).toFixed(1)} s ` +
      `(${mib((peerBytes / lanMs) * 1000)}/s across sites); Glance bytes per site ${awareGlance.map((r) => `${String(r)}x`).join(', ')} the image ` +
      `(the hosts reported ${reported.map((site) => `${site.site} ${String(round2(site.bytesFromGlance / IMAGE_BYTES))}x`).join(', ')}); ${cores(aware)}\n` +
      `  time ratio ${ratio.toFixed(3)} (target <= ${String(TIME_TARGET)}) -> ${timePass ? 'PASS' : 'MISS'}; ` +
      `Glance per site ${glanceRatio.toFixed(2)}x (target 1.00x) -> ${glancePass ? 'PASS' : 'MISS'}`,
  );
  await recordResult('edge', {
    sites: SITES,
    hostsPerSite: HOSTS_PER_SITE,
    imageBytes: IMAGE_BYTES,
    wanBytesPerSecond: WAN_BYTES_PER_SECOND,
    concurrency: Math.min(CONCURRENCY, hosts),
    unawareMs: Math.round(unaware.ms),
    unawareFloorMs: Math.round(floorMs),
    unawareGlanceBytesPerSite: unaware.glanceBytes,
    unawareCpuMs: Math.round(unaware.cpuMs),
    awareCpuMs: Math.round(aware.cpuMs),
    awareMs: Math.round(aware.ms),
    awareRoundsMs: rounds.map((run) => Math.round(run.ms)),
    awareSeedsMs: Math.round(seedsMs),
    awarePeerBytes: peerBytes,
    awarePeerBytesPerSecond: Math.round((peerBytes / lanMs) * 1000),
    awareGlanceBytesPerSite: aware.glanceBytes,
    ratio: Number(ratio.toFixed(3)),
    target: `ratio <= ${String(TIME_TARGET)}`,
    pass: timePass,
    rows: [{ label: 'Glance bytes per site / image', ratio: Number(glanceRatio.toFixed(2)), target: '= 1.00', pass: glancePass }],
  });
} finally {
  await Promise.all(sites.map((site) => site.glance.close()));
}
