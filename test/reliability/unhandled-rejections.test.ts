// Class 6 of issue 13: no failure and no abort, wherever it lands, leaves a rejection nobody
// handles (Node ends the process on one). On main, a caller that aborted during the free-space
// check left the download slot's rejection unhandled (`raceAbort` returned early without
// subscribing to it), so every client that left a host agent at that moment could end the agent.
//   - in process: mixes of slow and failing metadata, free-space checks, lock waits, streams and
//     disk writes, with 1 to 3 callers per image each aborting at a random point (a random delay,
//     or exactly inside the free-space check, the metadata call or the lock wait);
//   - the pre-cache fan-out, with per-host deadlines and a caller abort at random delays;
//   - a real host agent in a child process, whose HTTP clients leave mid-request again and again:
//     it must still be alive and serving at the end.
// An `unhandledRejection` or `uncaughtException` anywhere fails the test.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { abortableSleep } from '../../src/abort.js';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { statfsProbe } from '../../src/capacity/statfs.js';
import type { FilesystemUsage } from '../../src/capacity/statfs.js';
import { ImageNotFoundError, ImageServiceUnavailableError, isImageCacheError } from '../../src/errors.js';
import { LockManager } from '../../src/fetch/lock-manager.js';
import { InProcessHostClient } from '../../src/precache/in-process-host-client.js';
import { precacheImages } from '../../src/precache/precache-images.js';
import type { ImageInfo, ImageSource, OpenImageOptions, SourceCallOptions } from '../../src/source/image-source.js';
import { startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';
import { MemoryImageManager, MemoryImageSource } from '../../src/testing/index.js';
import { startChild, waitForLine } from '../helpers/child.js';
import { errnoError, failFileHandleWrites } from '../helpers/fs-faults.js';
import { makeMemoryTempDir, seededBytes } from '../helpers/tmp.js';
import { Rng, withSeed } from './seed.js';

const CASES = Number(process.env.RELIABILITY_REJECTION_CASES ?? 240);
const FANOUTS = Number(process.env.RELIABILITY_REJECTION_FANOUTS ?? 40);
const DISCONNECTS = Number(process.env.RELIABILITY_REJECTION_DISCONNECTS ?? 40);
const TOKEN = 'agent-token';

function figures(t: { diagnostic: (message: string) => void }, what: string, values: Record<string, unknown>): void {
  const line = JSON.stringify(values);
  t.diagnostic(`${what}: ${line}`);
  console.log(`[reliability] unhandled-rejections ${what} ${line}`);
}

/** What one call of the scripted source does. */
interface Behaviour {
  describeDelayMs: number;
  describeFails: 'no' | 'not-found' | 'unavailable' | 'untyped';
  openDelayMs: number;
  openFails: boolean;
  /** The stream breaks after this many bytes. */
  breakAt: number | undefined;
  chunkDelayMs: number;
}

/** An image source that is slow and fails as it is told, over a MemoryImageSource's images. */
class ScriptedSource implements ImageSource {
  readonly #inner: MemoryImageSource;
  behaviour: Behaviour = { describeDelayMs: 0, describeFails: 'no', openDelayMs: 0, openFails: false, breakAt: undefined, chunkDelayMs: 0 };
  /** Called inside `describe`, before it answers: a place to abort. */
  onDescribe: (() => void) | undefined;

  constructor(inner: MemoryImageSource) {
    this.#inner = inner;
  }

  async describe(imageId: string, options: SourceCallOptions = {}): Promise<ImageInfo> {
    const b = this.behaviour;
    this.onDescribe?.();
    await abortableSleep(b.describeDelayMs, options.signal, 'Describe', imageId);
    if (b.describeFails === 'not-found') throw new ImageNotFoundError(imageId);
    if (b.describeFails === 'unavailable') throw new ImageServiceUnavailableError(imageId, 1, new Error('503'));
    if (b.describeFails === 'untyped') throw new TypeError('a broken source');
    return this.#inner.describe(imageId, options);
  }

  async open(imageId: string, options: OpenImageOptions = {}): Promise<Readable> {
    const b = this.behaviour;
    await abortableSleep(b.openDelayMs, options.signal, 'Download', imageId);
    if (b.openFails) throw new ImageServiceUnavailableError(imageId, 1, new Error('reset'));
    const inner = await this.#inner.open(imageId, options);
    const { signal } = options;
    async function* paced(): AsyncGenerator<Uint8Array> {
      let sent = 0;
      for await (const chunk of inner as AsyncIterable<Uint8Array>) {
        if (b.breakAt !== undefined && sent + chunk.length > b.breakAt) {
          throw new ImageServiceUnavailableError(imageId, 1, new Error(`reset after ${sent} bytes`));
        }
        if (b.chunkDelayMs > 0) await abortableSleep(b.chunkDelayMs, signal, 'Download', imageId);
        sent += chunk.length;
        yield chunk;
      }
    }
    return Readable.from(paced(), { objectMode: false });
  }
}

describe('class 6: no failure or abort leaves an unhandled rejection', () => {
  const unhandled: unknown[] = [];
  const onRejection = (reason: unknown): void => {
    unhandled.push(reason);
  };
  const onException = (error: Error): void => {
    unhandled.push(error);
  };
  before(() => {
    process.on('unhandledRejection', onRejection);
    process.on('uncaughtException', onException);
  });
  after(() => {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  });
  beforeEach(() => {
    unhandled.length = 0;
  });
  afterEach(async () => {
    // Rejections are reported after the microtask queue drains: give them a moment.
    await sleep(50);
    assert.deepEqual(
      unhandled.map((reason) => (reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason))),
      [],
      'unhandled rejections or uncaught exceptions',
    );
  });

  let dir: string;
  let cleanup: () => Promise<void>;
  before(async () => {
    ({ dir, cleanup } = await makeMemoryTempDir('vic-rejections-'));
  });
  after(async () => {
    await cleanup();
  });

  it('aborts at random points of failing and slow caching (metadata, free space, lock wait, stream, disk)', async (t) => {
    await withSeed(t, async (seed) => {
      const rng = new Rng(seed);
      const images = Array.from({ length: 6 }, (_, i) => ({ id: `image-${i}`, data: seededBytes(64 * 1024 + i * 4099, i + 1) }));
      const source = new ScriptedSource(new MemoryImageSource(images));
      let probe: (directory: string) => Promise<FilesystemUsage> = statfsProbe;
      const manager = new LibvirtFileImageManager({
        host: 'rejections',
        instancesPath: dir,
        source,
        lockStaleMs: 2000,
        filesystemProbe: (directory) => probe(directory),
      });
      const other = new LockManager({ lockDir: manager.lockDir, staleMs: 2000 });
      const tally = { cases: 0, calls: 0, cached: 0, existing: 0, typedErrors: 0, otherErrors: 0, aborted: 0 };
      for (let c = 0; c < CASES; c += 1) {
        const image = rng.pick(images);
        // Mostly downloads: remove what an earlier case cached.
        if (rng.chance(0.8)) await manager.remove(image.id, { instances: [] }).catch(() => undefined);
        source.behaviour = {
          describeDelayMs: rng.int(0, 4),
          describeFails: rng.weighted([
            { weight: 8, value: 'no' as const },
            { weight: 1, value: 'not-found' as const },
            { weight: 1, value: 'unavailable' as const },
            { weight: 1, value: 'untyped' as const },
          ]),
          openDelayMs: rng.int(0, 3),
          openFails: rng.chance(0.1),
          breakAt: rng.chance(0.15) ? rng.int(0, image.data.length - 1) : undefined,
          chunkDelayMs: rng.chance(0.5) ? rng.int(0, 2) : 0,
        };
        const callers = rng.int(1, 3);
        const controllers = Array.from({ length: callers }, () => new AbortController());
        const abortOne = (): void => {
          for (const controller of controllers) if (!controller.signal.aborted && rng.chance(0.7)) controller.abort(new Error('the caller left'));
        };
        // Where the abort lands.
        const where = rng.pick(['delay', 'delay', 'probe', 'describe', 'lock', 'none'] as const);
        const probeDelayMs = rng.int(0, 4);
        const probeFails = rng.chance(0.1);
        const diskFull = rng.chance(0.05);
        probe = async (directory) => {
          if (where === 'probe') abortOne();
          await sleep(probeDelayMs);
          if (probeFails) throw errnoError('EIO', 'statfs', directory);
          const usage = await statfsProbe(directory);
          return diskFull ? { ...usage, freeBytes: 1024 } : usage;
        };
        source.onDescribe = where === 'describe' ? abortOne : undefined;
        const held = where === 'lock' ? await other.acquire(cacheFileName(image.id)) : undefined;
        const restoreDisk = rng.chance(0.1)
          ? await failFileHandleWrites((file) => file.startsWith(dir), rng.pick(['EIO', 'ENOSPC']), rng.int(0, image.data.length))
          : undefined;
        try {
          const calls = Promise.allSettled(controllers.map((controller) => manager.cacheImage(image.id, { signal: controller.signal })));
          if (where === 'delay') setTimeout(abortOne, rng.int(0, 12));
          if (held !== undefined) {
            await sleep(rng.int(1, 10));
            abortOne();
            await sleep(rng.int(0, 5));
            await held.release();
          }
          // A hang guard that fails the test: every call settles.
          const settled = await Promise.race([calls, sleep(30_000, null, { ref: false })]);
          assert.ok(settled !== null, `case ${c}: a call did not settle within 30 s`);
          for (const outcome of settled) {
            tally.calls += 1;
            if (outcome.status === 'fulfilled') {
              tally[outcome.value.status] += 1;
            } else if (isImageCacheError(outcome.reason)) {
              tally.typedErrors += 1;
              if (outcome.reason.code === 'ERR_ABORTED') tally.aborted += 1;
            } else {
              assert.ok(outcome.reason instanceof Error, `case ${c}: rejected with a non-error ${String(outcome.reason)}`);
              tally.otherErrors += 1;
            }
          }
        } finally {
          restoreDisk?.();
          await held?.release();
        }
        tally.cases += 1;
      }
      figures(t, 'in-process mixes', tally);
      assert.equal(tally.cases, CASES);
      assert.ok(tally.aborted > 0 && tally.cached > 0, 'the mix reached both aborts and downloads');
    });
  });

  it('a lock waiter that leaves (abort or timeout) never makes a held lock look free', async () => {
    const locks = new LockManager();
    for (const leave of ['abort', 'timeout'] as const) {
      const holder = await locks.acquire('image');
      const controller = new AbortController();
      const leaving = locks.acquire('image', leave === 'abort' ? { signal: controller.signal } : { timeoutMs: 1 });
      controller.abort();
      await assert.rejects(leaving, { code: leave === 'abort' ? 'ERR_ABORTED' : 'ERR_LOCK_TIMEOUT' });
      // Main forgot the queue when its last waiter left: the next caller got the lock at once.
      let next = false;
      const after = locks.acquire('image').then((lock) => {
        next = true;
        return lock;
      });
      await sleep(30);
      assert.equal(next, false, `after a waiter's ${leave}, a second caller got the lock while it was held`);
      await holder.release();
      await (await after).release();
    }
  });

  it('pre-cache fan-outs with per-host deadlines and caller aborts at random delays', async (t) => {
    await withSeed(t, async (seed) => {
      const rng = new Rng(seed);
      const images = Array.from({ length: 3 }, (_, i) => ({ id: `image-${i}`, data: seededBytes(32 * 1024, i + 7) }));
      const inner = new MemoryImageSource(images);
      const tally = { fanouts: 0, abortedFanouts: 0, hosts: 0, timedOut: 0, aborted: 0, answered: 0 };
      for (let f = 0; f < FANOUTS; f += 1) {
        const source = new ScriptedSource(inner);
        source.behaviour = { describeDelayMs: rng.int(0, 5), describeFails: 'no', openDelayMs: rng.int(0, 5), openFails: rng.chance(0.2), breakAt: undefined, chunkDelayMs: rng.int(0, 2) };
        const managers = Array.from({ length: rng.int(2, 6) }, (_, h) => new MemoryImageManager({ host: `compute${h}`, source }));
        const controller = new AbortController();
        if (rng.chance(0.5)) setTimeout(() => { controller.abort(new Error('operator gave up')); }, rng.int(0, 15));
        const run = precacheImages({
          aggregate: { id: f, name: `agg-${f}`, hosts: managers.map((m) => ({ name: m.host })) },
          imageIds: images.slice(0, rng.int(1, 3)).map((i) => i.id),
          source: inner,
          client: new InProcessHostClient(managers),
          timeoutMs: rng.int(1, 20),
          concurrency: rng.int(1, 4),
          signal: controller.signal,
        });
        tally.fanouts += 1;
        let summary: Awaited<typeof run>;
        try {
          summary = await run;
        } catch (error) {
          // The operator's abort ends the fan-out itself with ERR_ABORTED (the hosts' work is let go).
          assert.ok(controller.signal.aborted && isImageCacheError(error) && error.code === 'ERR_ABORTED', String(error));
          tally.abortedFanouts += 1;
          continue;
        }
        for (const host of summary.hosts) {
          tally.hosts += 1;
          if (host.error?.code === 'ERR_HOST_TIMEOUT') tally.timedOut += 1;
          else if (host.error?.code === 'ERR_ABORTED') tally.aborted += 1;
          else tally.answered += 1;
        }
      }
      figures(t, 'fan-outs', tally);
      assert.equal(tally.fanouts, FANOUTS);
    });
  });

  describe('a host agent in its own process', () => {
    let glance: FakeGlance;
    let child: ChildProcess;
    let port: number;
    let stderr = '';
    const IMAGES = Array.from({ length: 4 }, (_, i) => `agent-image-${i}`);

    before(async () => {
      glance = await startFakeGlance({
        images: IMAGES.map((id, i) => ({ id, content: seededBytes(1024 * 1024, i + 11), faults: { throttleBytesPerSecond: 8 * 1024 * 1024 } })),
      });
      child = startChild('host-agent-worker.ts', { host: 'agent-host', instancesPath: path.join(dir, 'agent'), glanceUrl: glance.url, token: TOKEN, probeDelayMs: 15 });
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      port = Number((await waitForLine(child, 'LISTENING')).split(' ')[1]);
    });
    after(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await new Promise((resolve) => child.once('exit', resolve));
      }
      await glance.close();
    });

    /** POSTs a request; `leaveAfterMs` destroys it that long after it was sent. */
    const post = (imageIds: readonly string[], leaveAfterMs?: number): Promise<number | 'left'> =>
      new Promise((resolve, reject) => {
        const body = JSON.stringify({ cache: imageIds.map((id) => ({ id })) });
        const req = request(
          { host: '127.0.0.1', port, method: 'POST', path: '/v1/cache-images', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } },
          (res) => {
            res.resume();
            res.on('end', () => {
              resolve(res.statusCode ?? 0);
            });
            res.on('error', () => {
              resolve('left');
            });
          },
        );
        req.on('error', (err) => {
          if (leaveAfterMs === undefined) reject(err);
          else resolve('left');
        });
        req.end(body);
        if (leaveAfterMs !== undefined) setTimeout(() => req.destroy(), leaveAfterMs);
      });

    it(`survives ${DISCONNECTS} clients leaving mid-request, and still serves`, async (t) => {
      await withSeed(t, async (seed) => {
        const rng = new Rng(seed);
        const tally = { disconnects: 0, answeredBeforeLeaving: 0 };
        for (let i = 0; i < DISCONNECTS; i += 1) {
          // Leave at delays that land before the download ends (1 MiB at 8 MiB/s): during the
          // metadata, the 15 ms free-space check, the lock, the first bytes.
          const outcome = await post([rng.pick(IMAGES)], rng.int(0, 40));
          if (outcome === 'left') tally.disconnects += 1;
          else tally.answeredBeforeLeaving += 1;
          assert.equal(child.exitCode, null, `the agent exited after ${i + 1} disconnects: ${stderr.slice(-2000)}`);
        }
        // Let whatever the last disconnects left behind play out in the agent.
        await sleep(200);
        assert.equal(child.exitCode, null, `the agent exited: ${stderr.slice(-2000)}`);
        assert.equal(await post(IMAGES), 200, 'the agent still answers a whole request');
        assert.equal(child.exitCode, null);
        figures(t, 'agent disconnects', { ...tally, alive: true });
      });
    });
  });
});
