// The `virt-imagecache` operator CLI, run as a real process (the built bin) against a real
// loopback Glance: output for people and for scripts, documented exit codes, clean interruption.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ChildProcessByStdio } from 'node:child_process';
import { readdir, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { makeTempDir, seededBytes } from '../helpers/tmp.js';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli/bin.js');
const IMAGE = '6f1f3c1e-0c7a-4b8e-9a3e-3f5b8d9c2a10';
const BIG = '7a2b4c6d-1e3f-4a5b-8c7d-9e0f1a2b3c4d';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: readonly string[], options: { env?: NodeJS.ProcessEnv; onStderr?: (text: string, kill: () => void) => void } = {}): Promise<Run> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    options.onStderr?.(stderr, () => child.kill('SIGINT'));
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      resolve({ code, stdout, stderr });
    });
  });
}

interface SpawnedAgent {
  readonly host: string;
  readonly child: ChildProcessByStdio<null, Readable, Readable>;
  /** Its URL, once it listens. */
  readonly url: Promise<string>;
}

/** Starts `virt-imagecache agent` for `host` with its cache under `dir/host`. */
function spawnAgent(dir: string, glanceUrl: string, host: string): SpawnedAgent {
  const child = spawn(process.execPath, [BIN, 'agent', '--instances-path', path.join(dir, host), '--host', host, '--glance', glanceUrl, '--agent-token', 's3cret'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const url = new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const match = /listening on (http:\/\/\S+)/.exec(out);
      if (match?.[1] !== undefined) resolve(match[1]);
    });
    child.once('exit', (code) => {
      reject(new Error(`agent exited ${String(code)}`));
    });
  });
  return { host, child, url };
}

/** Stops the agents with SIGINT; resolves to their exit codes. */
async function stopAgents(agents: readonly SpawnedAgent[]): Promise<(number | null)[]> {
  const exits = agents.map((agent) => new Promise<number | null>((resolve) => agent.child.once('exit', resolve)));
  for (const agent of agents) agent.child.kill('SIGINT');
  return Promise.all(exits);
}

describe('virt-imagecache CLI', () => {
  let glance: FakeGlance;
  let dir: string;
  let cleanup: () => Promise<void>;
  const data = seededBytes(3 * 1024 * 1024 + 17, 7);

  before(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-cli-'));
    glance = await startFakeGlance({
      images: [
        { id: IMAGE, content: data },
        { id: BIG, content: { size: 64 * 1024 * 1024, seed: 9 }, faults: { throttleBytesPerSecond: 8 * 1024 * 1024 } },
      ],
    });
  });
  after(async () => {
    await glance.close();
    await cleanup();
  });

  it('--help lists every command and the exit codes; no command is a usage error (2)', async () => {
    const help = await cli(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /fetch/);
    assert.match(help.stdout, /Exit codes: 0 done; 1 failed; 2 bad usage/);
    assert.equal((await cli([])).code, 2);
    const unknown = await cli(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command 'frobnicate'/);
    assert.equal((await cli(['fetch', '--no-such-flag', IMAGE])).code, 2);
  });

  it('fetch without an image service is a usage error naming the flag', async () => {
    const run = await cli(['fetch', IMAGE, '--instances-path', dir]);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /--glance/);
  });

  it('fetch downloads and verifies once, prints progress lines when not a TTY, then reports existing', async () => {
    const first = await cli(['fetch', IMAGE, '--instances-path', dir, '--glance', glance.url]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, new RegExp(`^cached ${IMAGE} as ${cacheFileName(IMAGE)} \\(${String(data.length)} bytes, sha512 digest verified\\)`));
    assert.match(first.stderr, /100% /);
    const second = await cli(['fetch', IMAGE, '--instances-path', dir, '--glance', glance.url, '--json']);
    assert.equal(second.code, 0);
    const result = JSON.parse(second.stdout) as { status: string; name: string };
    assert.equal(result.status, 'existing');
    assert.equal(glance.bytesServed(IMAGE), data.length);
  });

  it('options come from a JSON file; a bad option there is a usage error naming it', async () => {
    const good = path.join(dir, 'good.json');
    await writeFile(good, JSON.stringify({ instancesPath: dir, glanceUrl: glance.url, cache: { maxConcurrentDownloads: 2 } }));
    assert.equal((await cli(['fetch', IMAGE, '--config', good, '--json'])).code, 0);
    const bad = path.join(dir, 'bad.json');
    await writeFile(bad, JSON.stringify({ instancesPath: dir, cache: { managerInterval: 'often' } }));
    const run = await cli(['fetch', IMAGE, '--config', bad]);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /managerInterval/);
  });

  it('a failed fetch exits 1 with the typed error code in --json', async () => {
    const run = await cli(['fetch', 'no-such-image', '--instances-path', dir, '--glance', glance.url, '--json']);
    assert.equal(run.code, 1);
    assert.equal((JSON.parse(run.stdout) as { error: { code: string } }).error.code, 'ERR_IMAGE_NOT_FOUND');
  });

  it('SIGINT mid-download exits 130, leaves nothing under the final name, and the next fetch resumes the kept staging', async () => {
    let killed = false;
    const run = await cli(['fetch', BIG, '--instances-path', dir, '--glance', glance.url], {
      onStderr: (text, kill) => {
        if (!killed && /\d+%/.test(text)) {
          killed = true;
          kill();
        }
      },
    });
    assert.ok(killed, 'no progress was printed before the download finished');
    assert.equal(run.code, 130, run.stderr);
    const files = (await readdir(path.join(dir, '_base'))).filter((name) => name.startsWith(cacheFileName(BIG))).sort();
    assert.ok(!files.includes(cacheFileName(BIG)), 'nothing under the final name');
    // The interrupted download kept its staging file (with its resume sidecar) when it had
    // written a whole block: nothing else is left.
    if (files.length > 0) {
      assert.equal(files.length, 2, files.join(', '));
      assert.equal(files[1], `${files[0] ?? ''}.resume`);
    }
    const again = await cli(['fetch', BIG, '--instances-path', dir, '--glance', glance.url]);
    assert.equal(again.code, 0, again.stderr);
    const left = (await readdir(path.join(dir, '_base'))).filter((name) => name.startsWith(cacheFileName(BIG)));
    assert.deepEqual(left, [cacheFileName(BIG)]);
    // The tests after this one see the cache as it was before it.
    await unlink(path.join(dir, '_base', cacheFileName(BIG)));
  });

  it('status lists entries (JSON for scripts); prune refuses without the instances and dry-runs with them', async () => {
    const status = await cli(['status', '--instances-path', dir, '--json']);
    assert.equal(status.code, 0, status.stderr);
    const listed = JSON.parse(status.stdout) as { entries: { name: string; sizeBytes: number }[] };
    assert.deepEqual(listed.entries.map((e) => e.name), [cacheFileName(IMAGE)]);
    assert.ok((listed.entries[0]?.sizeBytes ?? 0) >= data.length, 'allocated bytes');
    const text = await cli(['status', '--instances-path', dir]);
    assert.match(text.stdout, /NAME\s+KIND\s+IMAGE\s+SIZE/);

    const blind = await cli(['prune', '--instances-path', dir]);
    assert.equal(blind.code, 1);
    assert.match(blind.stderr, /ERR_UNSUPPORTED/);

    // Nothing uses the image, but it is younger than a day: nothing goes.
    const none = path.join(dir, 'none.json');
    await writeFile(none, '[]');
    const young = await cli(['prune', '--dry-run', '--instances-path', dir, '--instances', none]);
    assert.equal(young.code, 0, young.stderr);
    assert.match(young.stdout, /0 to remove/);
    // With a minimum age of 0 (from the config file) it would go; the dry run removes nothing.
    const config = path.join(dir, 'age0.json');
    await writeFile(config, JSON.stringify({ instancesPath: dir, cache: { removeUnusedOriginalMinimumAgeSeconds: 0 } }));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const dry = await cli(['prune', '--dry-run', '--config', config, '--instances', none]);
    assert.match(dry.stdout, new RegExp(`would remove ${cacheFileName(IMAGE)} .*unused`));
    assert.ok((await readdir(path.join(dir, '_base'))).includes(cacheFileName(IMAGE)));
    const bad = path.join(dir, 'bad-instances.json');
    await writeFile(bad, '[{"uuid": 1}]');
    assert.equal((await cli(['prune', '--instances-path', dir, '--instances', bad])).code, 2);
  });

  it('agent serves a host\'s cache until SIGINT; precache fans out to the agents, skips a down host and exits 3 (partly done)', async () => {
    const agents = ['agent-a', 'agent-b'].map((host) => spawnAgent(dir, glance.url, host));
    try {
      const endpoints = await Promise.all(agents.map(async (agent) => `${agent.host}=${await agent.url}`));
      const args = ['precache', '--glance', glance.url, '--images', IMAGE, ...endpoints.flatMap((e) => ['--agent', e]), '--concurrency', '2'];
      const before = glance.bytesServed(IMAGE);
      const run = await cli([...args, '--down', 'agent-c', '--agent-token', 's3cret', '--json']);
      assert.equal(run.code, 3, run.stderr);
      const summary = JSON.parse(run.stdout) as { counts: Record<string, number> };
      assert.deepEqual(summary.counts, { cached: 2, existing: 0, error: 0, unsupported: 0, skipped: 1, deferred: 0 });
      assert.equal(glance.bytesServed(IMAGE) - before, 2 * data.length);
      const again = await cli([...args, '--agent-token', 's3cret']);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /2 hosts, 1 images .*2 existing/);
      assert.match(again.stderr, /\[2\/2\] agent-\w: done/);
      const denied = await cli([...args, '--agent-token', 'wrong', '--json']);
      assert.equal(denied.code, 3);
      assert.match(denied.stdout, /ERR_HOST_UNAUTHORIZED/);
    } finally {
      assert.deepEqual(await stopAgents(agents), [0, 0]);
    }
  });

  // Fails if the text summary leaves out a peer the host's report blamed for bad bytes.
  it('precache names a peer blamed for bad bytes in its summary (from the agent report\'s blamedPeers)', async () => {
    const agent = createServer((request, response) => {
      request.resume();
      request.on('end', () => {
        const image = { imageId: IMAGE, status: 'cached', error: null, bytes: 5, durationMs: 1, pinnedUntil: null, bytesFrom: [{ from: 'glance', bytes: 5 }], blamedPeers: ['liar'] };
        response.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ host: 'fake-1', images: [image], durationMs: 1 }));
      });
    });
    await new Promise<void>((resolve) => agent.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${String((agent.address() as AddressInfo).port)}`;
      const run = await cli(['precache', '--glance', glance.url, '--images', IMAGE, '--agent', `fake-1=${url}`, '--agent-token', 's3cret']);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, new RegExp(`^ {2}Peer liar served bad bytes for image ${IMAGE} to host fake-1; check its cache$`, 'm'));
    } finally {
      agent.closeAllConnections();
      await new Promise((resolve) => agent.close(resolve));
    }
  });

  it('precache --site/HOST@SITE: the seed first, a progress line per host with its site and byte origins, per-site totals; windows', async () => {
    const agents = ['site-1', 'site-2', 'site-3'].map((host) => spawnAgent(dir, glance.url, host));
    try {
      const [one, two, three] = await Promise.all(agents.map((agent) => agent.url));
      const base = ['precache', '--glance', glance.url, '--images', IMAGE, '--agent-token', 's3cret', '--concurrency', '3'];
      const hosts = ['--agent', `site-1@edge=${one ?? ''}`, '--agent', `site-2=${two ?? ''}`, '--agent', `site-3=${three ?? ''}`, '--site', 'site-2=edge', '--site', 'site-3=edge'];

      // A window already over: nobody is asked, every host deferred, exit 3.
      const past = await cli([...base, ...hosts, '--window', '2020-01-01T01:00:00Z/2020-01-01T05:00:00Z', '--json']);
      assert.equal(past.code, 3, past.stderr);
      const deferred = JSON.parse(past.stdout) as { counts: Record<string, number>; hosts: { status: string }[] };
      assert.deepEqual(deferred.counts, { cached: 0, existing: 0, error: 0, unsupported: 0, skipped: 0, deferred: 3 });

      const now = Date.now();
      const window = `${new Date(now - 3_600_000).toISOString()}/${new Date(now + 3_600_000).toISOString()}`;
      const run = await cli([...base, ...hosts, '--window', window]);
      assert.equal(run.code, 0, run.stderr);
      const lines = run.stderr.split('\n');
      assert.match(run.stderr, /^window open until \S+ \(3 hosts to go\)$/m);
      assert.match(lines.find((line) => line.startsWith('[1/3]')) ?? '', /^\[1\/3\] site-1: done, site edge \(seed\); 3\.0 MiB from glance$/);
      for (const host of ['site-2', 'site-3']) {
        assert.match(run.stderr, new RegExp(`^\\[[23]/3\\] ${host}: done, site edge; .*3\\.0 MiB from (glance|peer:site-1)`, 'm'));
      }
      assert.match(run.stdout, /^ {2}site edge \(3 hosts, seed site-1\): .* from glance, .* from peers \(.* saved\)$/m);

      for (const bad of [['--window', 'tonight'], ['--daily', '1-5'], ['--daily', '01:00-05:00', '--window', window], ['--site', 'nowhere=edge']]) {
        const refused = await cli([...base, ...hosts, ...bad]);
        assert.equal(refused.code, 2, `${bad.join(' ')}: ${refused.stderr}`);
      }
    } finally {
      assert.deepEqual(await stopAgents(agents), [0, 0, 0]);
    }
  });
});
