// Aggregate pre-caching over HTTP host agents, across real processes:
//   node --import tsx examples/precache-http.ts
// The parent plays the API service (Nova's `POST /os-aggregates/{id}/images`): it asks every host
// of an aggregate to cache two images. Each "compute host" is a child Node process running this
// same file with `--agent <json>`: a libvirt-file cache over its own instances path, downloading
// from a loopback Glance (our fake), served by the pre-cache host agent on 127.0.0.1. A fourth
// host is marked down and has no process: it is skipped, not waited for.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { GlanceImageSource, HttpHostClient, LibvirtFileImageManager, createHostAgent, precacheImages } from 'virt-imagecache';
import { formatBytes } from 'virt-imagecache/cli';
import type { PrecacheEvent, PrecacheHost, PrecacheSummary } from 'virt-imagecache';
import { startFakeGlance } from 'virt-imagecache/testing';

/** What the parent tells each host agent on its command line. */
interface AgentArgs {
  readonly host: string;
  readonly instancesPath: string;
  readonly glanceUrl: string;
  readonly token: string;
}

const agentFlag = process.argv.indexOf('--agent');
if (agentFlag === -1) await runApiService();
else runHostAgent(JSON.parse(process.argv[agentFlag + 1] ?? '{}') as AgentArgs);

/**
 * One compute host: what a driver runs beside its compute service. It answers `POST
 * /v1/cache-images` for its own cache only, and stops when its parent closes its stdin (so it
 * never outlives the parent, even one that crashed).
 */
function runHostAgent(args: AgentArgs): void {
  const manager = new LibvirtFileImageManager({
    host: args.host,
    instancesPath: args.instancesPath,
    source: new GlanceImageSource({ endpoint: args.glanceUrl }),
  });
  const server = createServer(createHostAgent(manager, { token: args.token }));
  server.listen(0, '127.0.0.1', () => {
    console.log(`LISTENING ${String((server.address() as AddressInfo).port)}`);
  });
  process.stdin.resume();
  process.stdin.on('end', () => {
    server.closeAllConnections();
    server.close();
  });
}

/** The API service's side: start the hosts, pre-cache three times, clean up. */
async function runApiService(): Promise<void> {
  const TOKEN = 'example-agent-token';
  const MiB = 1024 * 1024;
  const IMAGES = [
    { id: '5d3a7c1e-0b2f-4e6a-9c8d-1f2e3a4b5c01', name: 'ubuntu-24.04', content: { size: 24 * MiB, seed: 1 } },
    { id: '5d3a7c1e-0b2f-4e6a-9c8d-1f2e3a4b5c02', name: 'rescue', content: { size: 6 * MiB, seed: 2 } },
  ];
  const HOSTS: PrecacheHost[] = [
    { name: 'compute-1', cell: 'cell1' },
    { name: 'compute-2', cell: 'cell1' },
    { name: 'compute-3', cell: 'cell2' },
    { name: 'compute-4', cell: 'cell2', up: false }, // the service group says it is down: no process
  ];
  const imageIds = IMAGES.map((image) => image.id);
  const nameOf = new Map(IMAGES.map((image) => [image.id, image.name]));
  const say = (line: string): void => {
    console.log(line);
  };

  const root = await mkdtemp(path.join(os.tmpdir(), 'vic-example-precache-'));
  const children: ChildProcess[] = [];
  const glance = await startFakeGlance({ images: IMAGES });
  try {
    // Three compute hosts, each its own process with its own cache.
    const endpoints: Record<string, string> = {};
    await Promise.all(
      HOSTS.filter((host) => host.up !== false).map(async ({ name }) => {
        const args: AgentArgs = { host: name, instancesPath: path.join(root, name), glanceUrl: glance.url, token: TOKEN };
        const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--agent', JSON.stringify(args)], {
          stdio: ['pipe', 'pipe', 'inherit'],
          env: { ...process.env, NODE_OPTIONS: '' },
        });
        children.push(child);
        const port = await portOf(child, name);
        endpoints[name] = `http://127.0.0.1:${String(port)}`;
        say(`${name}: host agent (pid ${String(child.pid)}) listening on ${endpoints[name]}`);
      }),
    );

    const source = new GlanceImageSource({ endpoint: glance.url });
    const precache = (token: string, onEvent?: (event: PrecacheEvent) => void): Promise<PrecacheSummary> =>
      precacheImages({
        aggregate: { id: 7, name: 'edge-sites', hosts: HOSTS },
        imageIds,
        source,
        client: new HttpHostClient({ endpoints, token }),
        concurrency: 2,
        pinTtlSeconds: 6 * 3600, // keep them through the rollout window even before any instance uses them
        onEvent,
      });
    const served = (): number => imageIds.reduce((sum, id) => sum + glance.bytesServed(id), 0);

    // 1. The first pre-cache: every up host downloads both images; the down host is skipped.
    say(`\n1. pre-cache ${IMAGES.map((image) => image.name).join(', ')} onto aggregate edge-sites (concurrency 2, pinned 6 h)`);
    const first = await precache(TOKEN, (event) => {
      switch (event.type) {
        case 'aggregate.cache_images.start':
          say(`   start: ${String(event.imageIds.length)} images onto ${event.aggregate.hosts.join(', ')}`);
          break;
        case 'aggregate.cache_images.progress':
          // Nova's notification lists a skipped host's images under images_failed: say why instead.
          if (event.status === 'skipped') {
            say(`   progress ${String(event.index)}/${String(event.total)}: ${event.host} (${event.cell}) skipped: down, not asked`);
            break;
          }
          say(
            `   progress ${String(event.index)}/${String(event.total)}: ${event.host} (${event.cell}) ${event.status}` +
              `, cached [${event.images_cached.map((id) => nameOf.get(id)).join(', ')}]` +
              `, failed [${event.images_failed.map((id) => nameOf.get(id)).join(', ')}]`,
          );
          break;
        case 'aggregate.cache_images.end':
          say(`   end: ${String(event.summary.failedHosts)} failed hosts`);
          break;
      }
    });
    say(`   summary: ${JSON.stringify(first.counts)}`);
    for (const host of first.hosts) {
      say(`   ${host.host}: ${host.images.map((image) => `${nameOf.get(image.imageId) ?? image.imageId} ${image.status} ${formatBytes(image.bytes)}`).join(', ')}`);
    }
    say(`   Glance served ${formatBytes(served())} (both images once per up host)`);

    // 2. Pre-caching is idempotent: the second request finds everything and downloads nothing.
    say('\n2. the same request again');
    const before = served();
    const second = await precache(TOKEN);
    say(`   summary: ${JSON.stringify(second.counts)}; new bytes from Glance: ${String(served() - before)}`);

    // 3. The agents check the bearer token: a wrong one is a typed error per host, not a crash.
    say('\n3. the same request with a wrong token');
    const refused = await precache('not-the-token');
    say(`   summary: ${JSON.stringify(refused.counts)}, ${String(refused.failedHosts)} failed hosts`);
    for (const host of refused.hosts) say(`   ${host.host}: ${host.status}${host.error === null ? '' : ` ${host.error.code}: ${host.error.message}`}`);
  } finally {
    await Promise.all(children.map(stopAgent));
    await glance.close();
    await rm(root, { recursive: true, force: true });
  }
  const alive = children.filter((child) => child.exitCode === null && child.signalCode === null).length;
  say(`\nagents stopped (${String(alive)} still running), Glance closed, ${existsSync(root) ? 'temp dir LEFT at ' + root : 'nothing left behind'}`);
}

/** The port a host agent prints once it accepts requests. */
function portOf(child: ChildProcess, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    if (child.stdout === null) {
      reject(new Error(`${host}: no stdout`));
      return;
    }
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      const port = Number(/^LISTENING (\d+)$/.exec(line)?.[1]);
      if (Number.isInteger(port) && port > 0) resolve(port);
      else reject(new Error(`${host}: unexpected first line ${JSON.stringify(line)}`));
    });
    child.once('exit', (code, signal) => {
      reject(new Error(`${host}: host agent exited (${String(code ?? signal)}) before listening`));
    });
  });
}

/** Closes the agent's stdin (it then closes its server and exits) and waits for it to exit. */
function stopAgent(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => {
      resolve();
    });
    child.stdin?.end();
  });
}
