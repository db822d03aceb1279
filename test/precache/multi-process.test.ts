// Pre-caching across real processes: four compute hosts, each a child process with its own
// libvirt-file cache and host agent on 127.0.0.1, one fake Glance in this process, the fan-out
// talking HTTP to the agents. Nova's functional test checks the cache is populated; here the
// Glance byte counters prove each image crossed the wire exactly once per host.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PIN_FILE } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { GlanceImageSource, HttpHostClient, precacheImages } from '../../src/index.js';
import type { PrecacheEvent, PrecacheHost, PrecacheImagesOptions } from '../../src/index.js';
import { generatedImageChunks, startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance, GeneratedContent } from '../../src/testing/index.js';
import { startChild, waitForLine } from '../helpers/child.js';
import { makeTempDir } from '../helpers/tmp.js';

const TOKEN = 'edge-precache-token';
const IMAGES: { id: string; content: GeneratedContent }[] = [
  { id: '6b1c1f4e-27a1-4c35-9a52-0d1f1e0a7c01', content: { size: 1024 * 1024 + 13, seed: 11 } },
  { id: '6b1c1f4e-27a1-4c35-9a52-0d1f1e0a7c02', content: { size: 700_001, seed: 12 } },
  { id: '6b1c1f4e-27a1-4c35-9a52-0d1f1e0a7c03', content: { size: 2 * 1024 * 1024 + 7, seed: 13 } },
];
const HOSTS: PrecacheHost[] = [
  { name: 'edge-1', cell: 'cell-a' },
  { name: 'edge-2', cell: 'cell-a' },
  { name: 'edge-3', cell: 'cell-b' },
  { name: 'edge-4', cell: 'cell-b' },
];

function sha256OfSpec(spec: GeneratedContent): string {
  const hash = createHash('sha256');
  for (const chunk of generatedImageChunks(spec)) hash.update(chunk);
  return hash.digest('hex');
}

async function sha256OfFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

describe('pre-caching onto 4 host-agent child processes over HTTP', () => {
  let glance: FakeGlance;
  let root: { dir: string; cleanup: () => Promise<void> };
  const children: ChildProcess[] = [];
  const endpoints: Record<string, string> = {};
  const instancesPathOf = (host: string): string => path.join(root.dir, host);

  const run = (extra: Partial<PrecacheImagesOptions> = {}): ReturnType<typeof precacheImages> =>
    precacheImages({
      aggregate: { id: 42, name: 'edge-sites', hosts: HOSTS },
      imageIds: IMAGES.map((image) => image.id),
      source: new GlanceImageSource({ endpoint: glance.url }),
      client: new HttpHostClient({ endpoints, token: TOKEN }),
      concurrency: 2,
      ...extra,
    });

  before(async () => {
    glance = await startFakeGlance({ images: IMAGES });
    root = await makeTempDir('vic-precache-procs-');
    await Promise.all(
      HOSTS.map(async ({ name }) => {
        const child = startChild('host-agent-worker.ts', { host: name, instancesPath: instancesPathOf(name), glanceUrl: glance.url, token: TOKEN });
        children.push(child);
        const line = await waitForLine(child, 'LISTENING');
        endpoints[name] = `http://127.0.0.1:${line.trim().split(' ')[1] ?? ''}`;
      }),
    );
  });

  after(async () => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) {
              resolve();
              return;
            }
            child.once('exit', () => {
              resolve();
            });
            child.kill('SIGTERM');
          }),
      ),
    );
    await glance.close();
    await root.cleanup();
  });

  it('every image lands on every host, downloaded exactly once per host (bytes served = size x 4), verified and pinned', async () => {
    const events: PrecacheEvent[] = [];
    const summary = await run({ pinTtlSeconds: 6 * 3600, onEvent: (event) => events.push(event) });

    assert.deepEqual(summary.counts, { cached: 12, existing: 0, error: 0, unsupported: 0, skipped: 0, deferred: 0 });
    assert.equal(summary.failedHosts, 0);
    for (const image of IMAGES) {
      assert.equal(glance.bytesServed(image.id), image.content.size * 4, `bytes served for ${image.id}`);
      assert.equal(glance.requests(image.id).file, 4, `file requests for ${image.id}`);
    }
    for (const { name } of HOSTS) {
      const instancesPath = instancesPathOf(name);
      for (const image of IMAGES) {
        assert.equal(await sha256OfFile(path.join(instancesPath, '_base', cacheFileName(image.id))), sha256OfSpec(image.content));
      }
      const pins = JSON.parse(await readFile(path.join(instancesPath, PIN_FILE), 'utf8')) as Record<string, number>;
      assert.deepEqual(Object.keys(pins).sort(), IMAGES.map((image) => image.id).sort());
    }
    const progress = events.filter((event) => event.type === 'aggregate.cache_images.progress');
    assert.deepEqual(progress.map((event) => event.index), [1, 2, 3, 4]);
    assert.deepEqual(summary.hosts.map((host) => [host.host, host.cell, host.status]), HOSTS.map((h) => [h.name, h.cell, 'done']));
  });

  it('a second pre-cache finds every image existing on every host and downloads nothing', async () => {
    const before = IMAGES.map((image) => glance.bytesServed(image.id));
    const summary = await run();
    assert.deepEqual(summary.counts, { cached: 0, existing: 12, error: 0, unsupported: 0, skipped: 0, deferred: 0 });
    assert.deepEqual(IMAGES.map((image) => glance.bytesServed(image.id)), before);
  });

  it('a wrong token is refused with 401 by every agent and reported as a typed error per host in the summary', async () => {
    const answer = await fetch(`${endpoints['edge-1'] ?? ''}/v1/cache-images`, {
      method: 'POST',
      headers: { Authorization: 'Bearer not-the-token', 'Content-Type': 'application/json' },
      body: JSON.stringify({ cache: [{ id: IMAGES[0]?.id }] }),
    });
    assert.equal(answer.status, 401);

    const summary = await run({ client: new HttpHostClient({ endpoints, token: 'not-the-token' }) });
    assert.equal(summary.failedHosts, 4);
    assert.deepEqual(summary.counts, { cached: 0, existing: 0, error: 12, unsupported: 0, skipped: 0, deferred: 0 });
    for (const host of summary.hosts) {
      assert.equal(host.error?.code, 'ERR_HOST_UNAUTHORIZED');
      assert.match(host.error.message, new RegExp(`host ${host.host} refused the request \\(HTTP 401\\)`));
    }
  });
});
