// Resumable downloads: an aborted or transport-failed download keeps its staging file and a
// sidecar; the next ensure() re-hashes the kept prefix and fetches only the rest with Range (the
// fake Glance's byte counter shows it). Anything untrustworthy (a corrupted prefix, a changed
// image, a bad or symlinked sidecar, a staging file shorter than its count) restarts from zero;
// verification failures discard. The final name always holds the verified image.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, symlink, truncate, unlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import {
  AbortedError,
  ChecksumMismatchError,
  DiskFullError,
  ImageNotFoundError,
  ImageServiceUnavailableError,
  ImageTooLargeError,
  LibvirtFileImageManager,
  SizeMismatchError,
} from '../../src/index.js';
import { LockManager, fileFetchTarget } from '../../src/backend-kit/index.js';
import { ImageFetcher } from '../../src/fetch/image-fetcher.js';
import type { FetchTarget } from '../../src/fetch/image-fetcher.js';
import { keepsStaging } from '../../src/fetch/resume.js';
import { readResumeRecord, writeResumeRecord } from '../../src/fetch/resume-sidecar.js';
import { isStagingName, stagingPathFor } from '../../src/fetch/staging-names.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import { startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';
import { listDir, makeTempDir, seededBytes } from '../helpers/tmp.js';
import { code } from '../helpers/error-code.js';

const MiB = 1024 * 1024;
/** Large enough for the worker hasher (its prefix is re-hashed off the main thread). */
const LARGE = 'a1b2c3d4-0000-4000-8000-00000000000a';
const LARGE_DATA = seededBytes(40 * MiB + 12_345, 11);
/** Small: hashed inline. */
const SMALL = 'a1b2c3d4-0000-4000-8000-00000000000b';
const SMALL_DATA = seededBytes(13 * MiB + 7, 12);

const sha512 = (data: Uint8Array): string => createHash('sha512').update(data).digest('hex');

/** Runs `start` with a signal that fires once `atBytes` are written, and expects `ERR_ABORTED`. */
async function abortedAfter(
  atBytes: number,
  start: (options: { signal: AbortSignal; onProgress: (progress: { bytesDone: number }) => void }) => Promise<unknown>,
): Promise<void> {
  const controller = new AbortController();
  const onProgress = (progress: { bytesDone: number }): void => {
    if (progress.bytesDone >= atBytes) controller.abort();
  };
  await assert.rejects(start({ signal: controller.signal, onProgress }), (err) => code(err) === 'ERR_ABORTED');
}

describe('resumable downloads', () => {
  let glance: FakeGlance;
  let dir: string;
  let cleanup: () => Promise<void>;
  let cacheDir: string;
  let lockDir: string;

  before(async () => {
    glance = await startFakeGlance({ images: [{ id: LARGE, content: LARGE_DATA }, { id: SMALL, content: SMALL_DATA }] });
  });
  after(async () => {
    await glance.close();
  });
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-resume-'));
    cacheDir = path.join(dir, '_base');
    lockDir = path.join(dir, 'locks');
    glance.addImage({ id: LARGE, content: LARGE_DATA });
    glance.addImage({ id: SMALL, content: SMALL_DATA });
    glance.resetStats();
  });
  afterEach(async () => {
    await cleanup();
  });

  function fetcher(retries = 3): ImageFetcher {
    return new ImageFetcher({
      source: new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1, backoffMaxMs: 5, idleTimeoutMs: 2000, retries }),
      locks: new LockManager({ lockDir, staleMs: 2000 }),
    });
  }
  const finalPath = (id: string): string => path.join(cacheDir, id);
  const target = (id: string): FetchTarget => fileFetchTarget(id, finalPath(id));

  /** Waits until `f` has no download running (an aborted one keeps its staging in the background). */
  async function idle(f: ImageFetcher): Promise<void> {
    for (let i = 0; f.activeDownloads > 0; i++) {
      assert.ok(i < 500, 'the aborted download settled');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** The kept staging files of the cache (with their sidecars' counts). */
  async function kept(): Promise<{ staging: string; bytes: number }[]> {
    const names = await listDir(cacheDir);
    const out: { staging: string; bytes: number }[] = [];
    for (const name of names.filter((n) => n.endsWith('.staging'))) {
      const record = await readResumeRecord(path.join(cacheDir, name));
      assert.ok(typeof record !== 'string', `${name}: ${typeof record === 'string' ? record : ''}`);
      assert.ok(names.includes(`${name}.resume`));
      out.push({ staging: name, bytes: record.bytes });
    }
    return out;
  }

  /** Aborts a download of `id` once `atBytes` are written; resolves once it has settled. */
  async function abortAt(id: string, atBytes: number): Promise<void> {
    glance.setFaults(id, { throttleBytesPerSecond: 40 * MiB });
    const f = fetcher();
    await abortedAfter(atBytes, (options) => f.ensure(id, target(id), options));
    await idle(f);
    glance.setFaults(id, {});
  }

  /** Plants a kept staging of `id` holding `data[0, bytes)` with a matching sidecar. */
  async function plant(id: string, data: Uint8Array, bytes: number, overrides: Record<string, unknown> = {}): Promise<string> {
    await mkdir(cacheDir, { recursive: true });
    const staging = stagingPathFor(finalPath(id));
    await writeFile(staging, data.subarray(0, bytes));
    await writeResumeRecord(staging, {
      imageId: id, size: data.length, algorithm: 'sha512', digest: sha512(data), bytes, prefixDigest: sha512(data.subarray(0, bytes)), ...overrides,
    });
    return staging;
  }

  async function assertCached(id: string, data: Uint8Array): Promise<void> {
    assert.deepEqual(await readFile(finalPath(id)), data);
    assert.deepEqual(await listDir(cacheDir), [id], 'no staging file or sidecar is left');
  }

  it('an aborted download keeps its staging and sidecar; the next ensure fetches only the rest with Range', async () => {
    await abortAt(LARGE, 12 * MiB);
    const [keptFile, ...others] = await kept();
    assert.ok(keptFile !== undefined && others.length === 0, 'one staging file kept');
    assert.ok(keptFile.bytes >= 12 * MiB && keptFile.bytes < LARGE_DATA.length, `kept ${keptFile.bytes} bytes`);
    assert.ok(!(await listDir(cacheDir)).includes(LARGE), 'no final name');
    glance.resetStats();
    const result = await fetcher().ensure(LARGE, target(LARGE));
    assert.equal(result.status, 'cached');
    assert.equal(result.resumedFromBytes, keptFile.bytes);
    assert.equal(result.bytes, LARGE_DATA.length);
    assert.equal(result.digest, sha512(LARGE_DATA));
    assert.equal(glance.bytesServed(LARGE), LARGE_DATA.length - keptFile.bytes, 'only the remainder came from Glance');
    assert.deepEqual(glance.log.filter((r) => r.kind === 'file').map((r) => r.range), [`bytes=${keptFile.bytes}-`]);
    await assertCached(LARGE, LARGE_DATA);
  });

  it('a running download records checkpoints beside it (every 2 s on a slow link), and removes the sidecar once published', async () => {
    glance.setFaults(LARGE, { throttleBytesPerSecond: 10 * MiB });
    const seen: number[] = [];
    const running = fetcher().ensure(LARGE, target(LARGE));
    const watch = setInterval(() => {
      void listDir(cacheDir).then(async (names) => {
        const staging = names.find((n) => n.endsWith('.staging'));
        if (staging === undefined || !names.includes(`${staging}.resume`)) return;
        const record = await readResumeRecord(path.join(cacheDir, staging));
        if (typeof record !== 'string') seen.push(record.bytes);
      });
    }, 100);
    const result = await running.finally(() => {
      clearInterval(watch);
    });
    assert.equal(result.resumedFromBytes, 0);
    assert.ok(seen.length > 0 && seen.every((bytes) => bytes > 0 && bytes % (4 * MiB) === 0 && bytes < LARGE_DATA.length), `checkpoints seen: ${seen.join(', ')}`);
    await assertCached(LARGE, LARGE_DATA);
  });

  it('a transport failure mid-body keeps the staging (inline hash), and the next ensure resumes it', async () => {
    // Range ignored and the body cut at the same place every time: the retries cannot progress.
    glance.setFaults(SMALL, { honourRange: false, resetAfterBytes: 9 * MiB, resets: 100 });
    await assert.rejects(fetcher(2).ensure(SMALL, target(SMALL)), (err) => code(err) === 'ERR_IMAGE_SERVICE_UNAVAILABLE');
    const [keptFile] = await kept();
    assert.equal(keptFile?.bytes, 8 * MiB, 'the whole 4 MiB blocks written before the cut are kept');
    glance.setFaults(SMALL, {});
    glance.resetStats();
    const result = await fetcher().ensure(SMALL, target(SMALL));
    assert.equal(result.resumedFromBytes, 8 * MiB);
    assert.equal(glance.bytesServed(SMALL), SMALL_DATA.length - 8 * MiB);
    await assertCached(SMALL, SMALL_DATA);
  });

  it('a kept prefix corrupted on disk restarts from zero and still ends verified', async () => {
    const staging = await plant(LARGE, LARGE_DATA, 16 * MiB);
    const handle = await open(staging, 'r+');
    await handle.write(Buffer.from('corrupt'), 0, 7, 5 * MiB);
    await handle.close();
    const result = await fetcher().ensure(LARGE, target(LARGE));
    assert.equal(result.resumedFromBytes, 0);
    assert.equal(glance.bytesServed(LARGE), LARGE_DATA.length, 'everything fetched again');
    await assertCached(LARGE, LARGE_DATA);
  });

  it('an image changed in Glance (new digest and size) restarts from zero', async () => {
    await plant(SMALL, SMALL_DATA, 8 * MiB);
    const changed = seededBytes(SMALL_DATA.length + 4096, 99);
    glance.addImage({ id: SMALL, content: changed });
    const result = await fetcher().ensure(SMALL, target(SMALL));
    assert.equal(result.resumedFromBytes, 0);
    assert.equal(glance.bytesServed(SMALL), changed.length);
    await assertCached(SMALL, changed);
  });

  for (const [what, spoil] of [
    ['a garbage sidecar', async (staging: string) => writeFile(`${staging}.resume`, '{"version":1,"imageId":')],
    ['a sidecar of another version', async (staging: string) => {
      const text = await readFile(`${staging}.resume`, 'utf8');
      await writeFile(`${staging}.resume`, text.replace('"version":1', '"version":2'));
    }],
    ['a staging file shorter than its count', async (staging: string) => truncate(staging, 3 * MiB)],
    ['a symlinked sidecar', async (staging: string) => {
      const real = path.join(dir, 'elsewhere.json');
      await writeFile(real, await readFile(`${staging}.resume`));
      await unlink(`${staging}.resume`);
      await symlink(real, `${staging}.resume`);
    }],
    ['a sidecar counting more than the image', async (staging: string) => {
      const text = await readFile(`${staging}.resume`, 'utf8');
      await writeFile(`${staging}.resume`, text.replace(/"bytes":\d+/, `"bytes":${SMALL_DATA.length + 1}`));
    }],
    ['a sidecar of another image', async (staging: string) => {
      const text = await readFile(`${staging}.resume`, 'utf8');
      await writeFile(`${staging}.resume`, text.replace(SMALL, LARGE));
    }],
  ] as const) {
    it(`${what} is not trusted: the download restarts from zero`, async () => {
      const staging = await plant(SMALL, SMALL_DATA, 8 * MiB);
      await spoil(staging);
      const result = await fetcher().ensure(SMALL, target(SMALL));
      assert.equal(result.resumedFromBytes, 0);
      assert.equal(glance.bytesServed(SMALL), SMALL_DATA.length);
      await assertCached(SMALL, SMALL_DATA);
    });
  }

  it('of several kept staging files the longest is adopted and the others (and orphan sidecars) removed', async () => {
    await plant(SMALL, SMALL_DATA, 4 * MiB);
    await plant(SMALL, SMALL_DATA, 12 * MiB);
    await plant(SMALL, SMALL_DATA, 8 * MiB);
    await writeFile(`${stagingPathFor(finalPath(SMALL))}.resume`, '{}');
    const result = await fetcher().ensure(SMALL, target(SMALL));
    assert.equal(result.resumedFromBytes, 12 * MiB);
    assert.equal(glance.bytesServed(SMALL), SMALL_DATA.length - 12 * MiB);
    await assertCached(SMALL, SMALL_DATA);
  });

  it('a checksum mismatch discards the staging and its sidecar', async () => {
    await plant(SMALL, SMALL_DATA, 4 * MiB);
    glance.setFaults(SMALL, { wrongChecksum: true });
    await assert.rejects(fetcher().ensure(SMALL, target(SMALL)), (err) => code(err) === 'ERR_CHECKSUM_MISMATCH');
    assert.deepEqual(await listDir(cacheDir), [], 'no staging file, no sidecar, no final name');
  });

  it('a resume that ends with a wrong digest discards, and never publishes', async () => {
    // A sidecar whose prefix digest was computed over wrong bytes that are on disk (a writer bug):
    // the prefix check passes, the full digest does not.
    const wrong = Buffer.from(SMALL_DATA);
    wrong.fill(0, 0, 1024);
    await mkdir(cacheDir, { recursive: true });
    const staging = stagingPathFor(finalPath(SMALL));
    await writeFile(staging, wrong.subarray(0, 8 * MiB));
    await writeResumeRecord(staging, {
      imageId: SMALL, size: SMALL_DATA.length, algorithm: 'sha512', digest: sha512(SMALL_DATA), bytes: 8 * MiB, prefixDigest: sha512(wrong.subarray(0, 8 * MiB)),
    });
    await assert.rejects(fetcher().ensure(SMALL, target(SMALL)), (err) => code(err) === 'ERR_CHECKSUM_MISMATCH');
    assert.deepEqual(await listDir(cacheDir), [], 'discarded; nothing under the final name');
    const result = await fetcher().ensure(SMALL, target(SMALL));
    assert.equal(result.resumedFromBytes, 0);
    await assertCached(SMALL, SMALL_DATA);
  });

  it('resumeDownloads: false keeps nothing', async () => {
    glance.setFaults(SMALL, { throttleBytesPerSecond: 40 * MiB });
    const f = fetcher();
    const noResume = fileFetchTarget(SMALL, finalPath(SMALL), undefined, { resume: false });
    await abortedAfter(4 * MiB, (options) => f.ensure(SMALL, noResume, options));
    await idle(f);
    assert.deepEqual(await listDir(cacheDir), []);
  });

  it('which failures keep the staging: aborts and source failures; never a wrong or too large image or a full disk', () => {
    const aborted = AbortSignal.abort();
    const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    assert.equal(keepsStaging(new AbortedError('Download', SMALL), undefined, false), true);
    assert.equal(keepsStaging(reset, aborted, false), true, 'anything once the signal fired');
    assert.equal(keepsStaging(new ImageServiceUnavailableError(SMALL, 3, reset), undefined, true), true);
    assert.equal(keepsStaging(reset, undefined, true), true, "an untyped failure of a source's stream");
    assert.equal(keepsStaging(reset, undefined, false), false, 'an untyped failure elsewhere (a write)');
    assert.equal(keepsStaging(new ImageNotFoundError(SMALL), undefined, true), false, 'the image is gone');
    for (const wrong of [
      new ChecksumMismatchError(SMALL, 'sha512', 'aa', 'bb'),
      new SizeMismatchError(SMALL, 10, 11),
      new ImageTooLargeError(SMALL, 11, 10),
      new DiskFullError(SMALL, 10, 0, '/x'),
    ]) {
      assert.equal(keepsStaging(wrong, aborted, true), false, wrong.code);
    }
  });

  it('the manager option resumeDownloads: false keeps nothing; a non-boolean is refused', async () => {
    const source = new GlanceImageSource({ endpoint: glance.url });
    assert.throws(() => new LibvirtFileImageManager({ host: 'h', instancesPath: dir, source, resumeDownloads: 'yes' as unknown as boolean }), { code: 'ERR_INVALID_CONFIG' });
    const manager = new LibvirtFileImageManager({ host: 'h', instancesPath: dir, source, resumeDownloads: false });
    glance.setFaults(SMALL, { throttleBytesPerSecond: 40 * MiB });
    await abortedAfter(4 * MiB, (options) => manager.cacheImage(SMALL, options));
    for (let i = 0; i < 100 && (await listDir(manager.baseDir)).length > 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(await listDir(manager.baseDir), []);
  });

  describe('the staging sweep', () => {
    it('init() and the pass keep a young resumable staging, and remove it with its sidecar past staleStagingAgeSeconds', async () => {
      const source = new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1, backoffMaxMs: 5 });
      const manager = new LibvirtFileImageManager({ host: 'host1', instancesPath: dir, source, lockStaleMs: 2000, staleStagingAgeSeconds: 600 });
      glance.setFaults(SMALL, { throttleBytesPerSecond: 40 * MiB });
      await abortedAfter(4 * MiB, (options) => manager.cacheImage(SMALL, options));
      glance.setFaults(SMALL, {});
      // The kept staging appears once the aborted download settled.
      let names: string[] = [];
      for (let i = 0; i < 500 && !names.some((n) => n.endsWith('.resume')); i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        names = await listDir(manager.baseDir);
      }
      assert.equal(names.length, 2, names.join(', '));
      assert.ok(names.every(isStagingName), 'the sidecar is a staging name, never an entry');
      const scan = await manager.scanBaseImages(manager.baseDir);
      assert.deepEqual(scan.entries, []);
      assert.equal(scan.staging.length, 1, 'the sidecar goes with its staging file');
      assert.equal(scan.staging[0]?.resumable, true);

      const init = await manager.templateImageHandler.init();
      assert.deepEqual(init.removedStaging, [], 'init() keeps a young resumable staging');
      const pass = await manager.update([]);
      assert.deepEqual(pass.removed, []);
      assert.deepEqual(await listDir(manager.baseDir), names);

      const old = new Date(Date.now() - 601_000);
      for (const name of names) await utimes(path.join(manager.baseDir, name), old, old);
      const later = await manager.templateImageHandler.init();
      assert.deepEqual(later.removedStaging, names.filter((n) => n.endsWith('.staging')));
      assert.deepEqual(await listDir(manager.baseDir), [], 'the sidecar went with it');
    });

    it('the pass removes an old resumable staging with its sidecar, and an old orphan sidecar', async () => {
      const source = new GlanceImageSource({ endpoint: glance.url });
      const manager = new LibvirtFileImageManager({ host: 'host1', instancesPath: dir, source, lockStaleMs: 2000, staleStagingAgeSeconds: 600 });
      cacheDir = manager.baseDir;
      const staging = await plant(SMALL, SMALL_DATA, 4 * MiB);
      const orphan = `${stagingPathFor(finalPath(LARGE))}.resume`;
      await writeFile(orphan, '{}');
      const old = new Date(Date.now() - 3_600_000);
      for (const file of [staging, `${staging}.resume`, orphan]) await utimes(file, old, old);
      const pass = await manager.update([]);
      assert.deepEqual(pass.removed.map((r) => r.name).sort(), [path.basename(orphan), path.basename(staging)].sort());
      assert.deepEqual(await listDir(manager.baseDir), []);
    });
  });
});
