import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { LockManager, fileFetchTarget } from '../../src/backend-kit/index.js';
import { ImageFetcher } from '../../src/fetch/image-fetcher.js';
import type { DownloadProgress, FetchTarget, ImageSource } from '../../src/index.js';
import type { EnsureResult } from '../../src/fetch/image-fetcher.js';
import { isStagingName } from '../../src/fetch/staging-names.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import { startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';
import { runChild, startChild, waitForLine } from '../helpers/child.js';
import { listDir, makeTempDir, seededBytes } from '../helpers/tmp.js';
import { code } from '../helpers/error-code.js';

const IMAGE = 'fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0';
const SMALL = seededBytes(3 * 1024 * 1024 + 17, 7);

describe('the fetch pipeline', () => {
  let glance: FakeGlance;
  let dir: string;
  let cleanup: () => Promise<void>;
  let cacheDir: string;
  let lockDir: string;

  before(async () => {
    glance = await startFakeGlance({ images: [{ id: IMAGE, content: SMALL }] });
  });
  after(async () => {
    await glance.close();
  });
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir());
    cacheDir = path.join(dir, '_base');
    lockDir = path.join(dir, 'locks');
    glance.resetStats();
    glance.setFaults(IMAGE, {});
  });
  afterEach(async () => {
    await cleanup();
  });

  function fetcher(options: { maxConcurrentDownloads?: number; bytesPerSecond?: number; maxImageSizeBytes?: number } = {}): ImageFetcher {
    return new ImageFetcher({
      source: new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1, backoffMaxMs: 20, idleTimeoutMs: 2000 }),
      locks: new LockManager({ lockDir, staleMs: 2000 }),
      ...options,
    });
  }
  const target = (id = IMAGE): FetchTarget => fileFetchTarget(id, path.join(cacheDir, id));

  it('downloads, verifies the multihash, and publishes under the final name', async () => {
    const progress: DownloadProgress[] = [];
    const result = await fetcher().ensure(IMAGE, target(), { onProgress: (p) => progress.push(p) });
    assert.equal(result.status, 'cached');
    assert.equal(result.bytes, SMALL.length);
    assert.equal(result.algorithm, 'sha512');
    assert.equal(result.digest, createHash('sha512').update(SMALL).digest('hex'));
    assert.deepEqual(await readFile(path.join(cacheDir, IMAGE)), SMALL);
    assert.deepEqual(await listDir(cacheDir), [IMAGE], 'no staging file is left');
    assert.ok(progress.length >= 1);
    for (let i = 1; i < progress.length; i++) assert.ok((progress[i]?.bytesDone ?? 0) >= (progress[i - 1]?.bytesDone ?? 0));
    assert.deepEqual(progress.at(-1), { imageId: IMAGE, bytesDone: SMALL.length, totalBytes: SMALL.length });
    assert.equal(((await stat(path.join(cacheDir, IMAGE))).mode & 0o777).toString(8), '644');
  });

  it('verifies a large image hashed on a worker thread', async () => {
    const id = 'large-generated';
    glance.addImage({ id, content: { size: 48 * 1024 * 1024 + 5, seed: 9 } });
    const info = await new GlanceImageSource({ endpoint: glance.url }).describe(id);
    const result = await fetcher().ensure(id, target(id));
    assert.equal(result.digest, info.hashValue);
    assert.equal((await stat(path.join(cacheDir, id))).size, 48 * 1024 * 1024 + 5);
  });

  it('a checksum mismatch on a worker-hashed image leaves nothing', async () => {
    const id = 'large-corrupt';
    glance.addImage({ id, content: { size: 40 * 1024 * 1024, seed: 10 }, faults: { wrongChecksum: true } });
    await assert.rejects(fetcher().ensure(id, target(id)), (err) => code(err) === 'ERR_CHECKSUM_MISMATCH');
    assert.deepEqual(await listDir(cacheDir), []);
  });

  it('a second call finds the image, runs onExisting and downloads nothing', async () => {
    const f = fetcher();
    await f.ensure(IMAGE, target());
    let touched = 0;
    const again = await f.ensure(IMAGE, target(), {
      onExisting: () => {
        touched += 1;
        return Promise.resolve();
      },
    });
    assert.equal(again.status, 'existing');
    assert.equal(touched, 1);
    assert.equal(glance.bytesServed(IMAGE), SMALL.length);
    assert.equal(glance.requests(IMAGE).file, 1);
  });

  it('falls back to the md5 checksum when the image has no multihash', async () => {
    const glanceSource = new GlanceImageSource({ endpoint: glance.url });
    const legacy: ImageSource = {
      describe: async (id, o) => ({ ...(await glanceSource.describe(id, o)), hashAlgo: null, hashValue: null }),
      open: (id, o) => glanceSource.open(id, o),
    };
    const f = new ImageFetcher({ source: legacy, locks: new LockManager({ lockDir }) });
    const result = await f.ensure(IMAGE, target());
    assert.equal(result.algorithm, 'md5');
    assert.equal(result.digest, createHash('md5').update(SMALL).digest('hex'));
  });

  it('a checksum mismatch is a typed error and leaves no file under the final name, nor any staging file', async () => {
    glance.setFaults(IMAGE, { wrongChecksum: true });
    await assert.rejects(fetcher().ensure(IMAGE, target()), (err) => code(err) === 'ERR_CHECKSUM_MISMATCH');
    assert.deepEqual(await listDir(cacheDir), []);
    assert.deepEqual(await listDir(lockDir), [], 'the lock was released');
  });

  it('a body shorter than the announced size is ERR_SIZE_MISMATCH and leaves nothing', async () => {
    glance.setFaults(IMAGE, { wrongLength: SMALL.length - 100 });
    await assert.rejects(fetcher().ensure(IMAGE, target()), (err) => code(err) === 'ERR_SIZE_MISMATCH');
    assert.deepEqual(await listDir(cacheDir), []);
  });

  it('a reset mid-body is resumed with a Range request: one image, byte for byte', async () => {
    glance.setFaults(IMAGE, { resetAfterBytes: 1024 * 1024, resets: 1 });
    const result = await fetcher().ensure(IMAGE, target());
    assert.equal(result.status, 'cached');
    assert.deepEqual(await readFile(path.join(cacheDir, IMAGE)), SMALL);
    assert.equal(glance.requests(IMAGE).file, 2);
    assert.ok(glance.bytesServed(IMAGE) < SMALL.length + 1024 * 1024, 'resumed, not restarted');
  });

  it('a reset is restarted from zero when the server ignores Range, and still verifies', async () => {
    glance.setFaults(IMAGE, { resetAfterBytes: 1024 * 1024, resets: 1, honourRange: false });
    await fetcher().ensure(IMAGE, target());
    assert.deepEqual(await readFile(path.join(cacheDir, IMAGE)), SMALL);
    assert.equal(glance.requests(IMAGE).file, 2);
  });

  it('5xx on the first calls is retried with backoff', async () => {
    glance.setFaults(IMAGE, { failFirst: 3 });
    const result = await fetcher().ensure(IMAGE, target());
    assert.equal(result.status, 'cached');
  });

  it('32 concurrent calls in one process download exactly once', async () => {
    const f = fetcher();
    const results = await Promise.all(Array.from({ length: 32 }, () => f.ensure(IMAGE, target())));
    assert.equal(glance.bytesServed(IMAGE), SMALL.length);
    assert.equal(glance.requests(IMAGE).file, 1);
    assert.equal(results.filter((r) => !r.shared).length, 1);
    assert.ok(results.every((r) => r.status === 'cached'));
    assert.deepEqual(await readFile(path.join(cacheDir, IMAGE)), SMALL);
  });

  it('4 processes x 8 calls each download exactly once', async () => {
    const args = { url: glance.url, cacheDir, lockDir, imageId: IMAGE, calls: 8 };
    const all = await Promise.all(Array.from({ length: 4 }, () => runChild<Pick<EnsureResult, 'status' | 'shared'>[]>('fetch-worker.ts', args)));
    assert.equal(glance.bytesServed(IMAGE), SMALL.length);
    assert.equal(glance.requests(IMAGE).file, 1);
    const flat = all.flat();
    assert.equal(flat.length, 32);
    assert.equal(flat.filter((r) => r.status === 'cached' && !r.shared).length, 1);
    assert.deepEqual(await readFile(path.join(cacheDir, IMAGE)), SMALL);
  });

  it('a process killed with SIGKILL mid-download leaves no final-name file, and the next call succeeds', async () => {
    const child = startChild('fetch-worker.ts', {
      url: glance.url, cacheDir, lockDir, imageId: IMAGE, calls: 1, bytesPerSecond: 512 * 1024, lockStaleMs: 2000,
    });
    await waitForLine(child, 'DOWNLOADING');
    const exited = new Promise((resolve) => child.on('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    const leftovers = await listDir(cacheDir);
    assert.ok(!leftovers.includes(IMAGE), 'no final-name file after the kill');
    assert.ok(leftovers.every(isStagingName), `only staging files (and resume sidecars): ${leftovers.join(', ')}`);
    assert.equal((await listDir(lockDir)).length, 1, 'the dead process still holds its lock');
    // The dead holder's lock goes stale after 2 s and is taken over.
    const result = await fetcher().ensure(IMAGE, target());
    assert.equal(result.status, 'cached');
    assert.deepEqual(await readFile(path.join(cacheDir, IMAGE)), SMALL);
  });

  it('rejects bad ids before touching the filesystem or the network', async () => {
    for (const bad of ['', '../../etc/passwd', 'a/b', 'nul\0', 'x'.repeat(4096)]) {
      await assert.rejects(fetcher().ensure(bad, fileFetchTarget('x', path.join(cacheDir, 'x'))), (err) => code(err) === 'ERR_INVALID_IMAGE_ID');
    }
    assert.deepEqual(await listDir(dir), []);
    assert.equal(glance.totalRequests, 0);
  });

  it('an image over maxImageSizeBytes fails before any byte is downloaded', async () => {
    await assert.rejects(fetcher({ maxImageSizeBytes: 1024 }).ensure(IMAGE, target()), (err) => code(err) === 'ERR_IMAGE_TOO_LARGE');
    assert.equal(glance.requests(IMAGE).file, 0);
    assert.deepEqual(await listDir(cacheDir), []);
  });

  it('an unknown image is ERR_IMAGE_NOT_FOUND and creates nothing', async () => {
    await assert.rejects(fetcher().ensure('no-such-image', target('no-such-image')), (err) => code(err) === 'ERR_IMAGE_NOT_FOUND');
    assert.deepEqual(await listDir(cacheDir), []);
  });

  it('aborting mid-download rejects with ERR_ABORTED, publishes nothing, and keeps the staging with its sidecar for a resume', async () => {
    const controller = new AbortController();
    const f = fetcher({ bytesPerSecond: 1024 * 1024 });
    const pending = f.ensure(IMAGE, target(), {
      signal: controller.signal,
      onProgress: () => {
        controller.abort();
      },
    });
    await assert.rejects(pending, (err) => code(err) === 'ERR_ABORTED');
    // The shared download is aborted once its only caller left; give it a moment to keep its staging.
    for (let i = 0; i < 250 && f.activeDownloads > 0; i++) await new Promise((r) => setTimeout(r, 20));
    const left = await listDir(cacheDir);
    assert.ok(!left.includes(IMAGE), 'nothing under the final name');
    assert.equal(left.length, 2, left.join(', '));
    assert.match(left[0] ?? '', new RegExp(`^${IMAGE}\\.\\d+-[0-9a-f]{8}\\.staging$`));
    assert.equal(left[1], `${left[0]}.resume`, 'the staging and its sidecar are kept for the next download (test/fetch/resume.test.ts)');
  });

  it('one caller aborting does not abort the download the others still wait for', async () => {
    const f = fetcher({ bytesPerSecond: 2 * 1024 * 1024 });
    const controller = new AbortController();
    const quitter = f.ensure(IMAGE, target(), { signal: controller.signal });
    const stayer = f.ensure(IMAGE, target());
    controller.abort();
    await assert.rejects(quitter, (err) => code(err) === 'ERR_ABORTED');
    assert.equal((await stayer).status, 'cached');
    assert.equal(glance.bytesServed(IMAGE), SMALL.length);
  });

  it('the global download limit holds across images', async () => {
    const ids = ['img-a', 'img-b', 'img-c'];
    for (const [i, id] of ids.entries()) glance.addImage({ id, content: seededBytes(1024 * 1024, i + 11) });
    let active = 0;
    let peak = 0;
    const counting = (id: string): FetchTarget => {
      const inner = target(id);
      return {
        name: inner.name,
        exists: () => inner.exists(),
        createSink: async (info) => {
          const sink = await inner.createSink(info);
          active += 1;
          peak = Math.max(peak, active);
          const done = (): void => {
            active -= 1;
          };
          return {
            write: (chunk) => sink.write(chunk),
            commit: () => sink.commit().finally(done),
            discard: () => sink.discard(),
          };
        },
      };
    };
    const f = fetcher({ maxConcurrentDownloads: 1 });
    await Promise.all(ids.map((id) => f.ensure(id, counting(id))));
    assert.equal(peak, 1);
  });

  it('bytesPerSecond caps the download speed', async () => {
    const started = performance.now();
    await fetcher({ bytesPerSecond: 4 * 1024 * 1024 }).ensure(IMAGE, target());
    // 3 MiB at 4 MiB/s (with a one-second burst allowance of 0) cannot finish in under ~0.6 s.
    assert.ok(performance.now() - started >= 600);
  });
});
