// Crashes: a worker process is SIGKILLed at a seeded random moment of a download, of instance-disk
// creation and of a cleanup pass (Nova's protocol: "file exists" must mean "file complete", and
// nothing in use may go). After each kill:
//   - no final-name base is incomplete or unverified (size and sha256 of every one);
//   - no instance disk has lost its backing file; complete disks pass our header check, a sample
//     passes `qemu-img check`, raw copies equal their base;
//   - the next call (the same download, the same disk, the next pass) succeeds, taking over the
//     dead process's lock once it is stale;
//   - once a pass has run, no staging file, registry temp file or lock directory is left.
// The three kinds run side by side, each in its own instances path. Kills of large downloads the
// next process resumes: resume-crashes.test.ts, with the same harness (crash-lanes.ts).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import type { InstanceRecord } from '../../src/instances.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import { ManualClock } from '../../src/testing/manual-clock.js';
import { generatedImageBytes, startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';
import { WorkerLane, killDuring } from './crash-lanes.js';
import { findQemuImg, qemuImgCheck } from '../helpers/qemu.js';
import { listDir, makeTempDir, seededBytes } from '../helpers/tmp.js';
import {
  ImageCatalog,
  disksWithoutBacking,
  instanceDisks,
  lockLeftovers,
  sha256,
  stagingLeftovers,
  unverifiedBases,
} from './invariants.js';
import { Rng, withSeed } from './seed.js';

const KILLS = Number(process.env.RELIABILITY_KILLS ?? 20);
const HOUR = 3600;
const DAY = 86400;
/** A lane takes about a minute on a loaded 2-core machine; the suite-wide 120 s default is too tight. */
const LANE_TIMEOUT_MS = 400_000;
/** Every manager and worker here uses the smallest staleness proper-lockfile allows. */
const LOCK_STALE_MS = 2000;

/** The units started but not finished, from the worker's START/DONE lines. */
function inProgress(stdout: string): string[][] {
  const started = new Map<string, string[]>();
  for (const line of stdout.split('\n')) {
    const [marker, key, ...rest] = line.trim().split(' ');
    if (key === undefined) continue;
    if (marker === 'START') started.set(key, [key, ...rest]);
    if (marker === 'DONE') started.delete(key);
  }
  return [...started.values()];
}

function startedUnits(stdout: string): string[][] {
  return stdout
    .split('\n')
    .filter((line) => line.startsWith('START '))
    .map((line) => line.trim().split(' ').slice(1));
}

function report(t: TestContext, kind: string, figures: Record<string, unknown>): void {
  const line = JSON.stringify({ kind, ...figures, losses: 0 });
  t.diagnostic(`crashes: ${line}`);
  console.log(`[reliability] crashes ${line}`);
}

describe('crashes: SIGKILL at random points', { concurrency: 3 }, () => {
  let glance: FakeGlance;
  const lanes: WorkerLane[] = [];

  before(async () => {
    glance = await startFakeGlance();
  });
  after(async () => {
    await Promise.all(lanes.map((lane) => lane.close()));
    await glance.close();
  });

  /** A manager in the parent: "the next call", with its clock `aheadSeconds` in the future. */
  const recoverer = (instancesPath: string, aheadSeconds: number, ages0: boolean): LibvirtFileImageManager =>
    new LibvirtFileImageManager({
      host: 'recovery',
      instancesPath,
      source: new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1, backoffMaxMs: 20 }),
      clock: new ManualClock(Date.now() + aheadSeconds * 1000),
      lockStaleMs: LOCK_STALE_MS,
      ...(ages0 ? { removeUnusedOriginalMinimumAgeSeconds: 0, removeUnusedResizedMinimumAgeSeconds: 0 } : {}),
    });

  it(`${KILLS} kills during downloads leave only complete, verified images under final names`, { timeout: LANE_TIMEOUT_MS }, async (t) => {
    await withSeed(t, async (seed) => {
      const rng = new Rng(seed);
      const { dir: instancesPath, cleanup } = await makeTempDir('vic-crash-dl-');
      const baseDir = path.join(instancesPath, '_base');
      const catalog = new ImageCatalog();
      const lane = new WorkerLane({ host: 'crash-download', instancesPath, url: glance.url });
      lanes.push(lane);
      let maxDelayMs = 250;
      let midDownload = 0;
      let recoveredDownloads = 0;
      let stagingRecovered = 0;
      try {
        for (let round = 0; round < KILLS; round++) {
          const ids: string[] = [];
          for (let k = 0; k < 10; k++) {
            const id = `dl-${round}-${k}`;
            const spec = { size: rng.int(16 * 1024, 1024 * 1024), seed: rng.int(1, 1e9) };
            glance.addImage({ id, content: spec });
            catalog.add(id, generatedImageBytes(spec));
            ids.push(id);
          }
          const delay = rng.int(0, maxDelayMs);
          const outcome = await killDuring(lane.take(), { kind: 'download', imageIds: ids }, delay);
          const where = `download round ${round} (kill after ${delay} ms)`;
          if (outcome.finished) maxDelayMs = Math.max(20, Math.floor(maxDelayMs * 0.7));
          if (inProgress(outcome.stdout).length > 0) midDownload++;
          assert.deepEqual(await unverifiedBases(baseDir, catalog), [], `after the kill of ${where}`);

          // The next call: every image of the round, the interrupted one included.
          const next = recoverer(instancesPath, 2 * HOUR, false);
          for (const id of ids) {
            const result = await next.cacheImage(id);
            if (result.status === 'cached') recoveredDownloads++;
          }
          assert.deepEqual(await unverifiedBases(baseDir, catalog), [], `after the next calls of ${where}`);
          // A pass an hour later removes the dead process's staging file.
          const pass = await next.update([]);
          assert.deepEqual(pass.failures, []);
          stagingRecovered += pass.removed.filter((r) => r.kind === 'staging').length;
          assert.deepEqual(await stagingLeftovers(instancesPath), [], `staging left after ${where}`);
          assert.deepEqual(await lockLeftovers(instancesPath), [], `locks left after ${where}`);
        }
        report(t, 'download', { kills: KILLS, killedMidDownload: midDownload, downloadsRecovered: recoveredDownloads, stagingFilesRecovered: stagingRecovered });
      } finally {
        await cleanup();
      }
    });
  });

  it(`${KILLS} kills during instance-disk creation leave complete disks whose bases exist`, { timeout: LANE_TIMEOUT_MS }, async (t) => {
    await withSeed(t, async (seed) => {
      const rng = new Rng(seed);
      const { dir: instancesPath, cleanup } = await makeTempDir('vic-crash-disk-');
      const baseDir = path.join(instancesPath, '_base');
      const catalog = new ImageCatalog();
      const imageIds = ['disk-image-0', 'disk-image-1', 'disk-image-2'];
      const setup = recoverer(instancesPath, 0, false);
      for (const [i, id] of imageIds.entries()) {
        const data = seededBytes(256 * 1024 * (i + 1), 40 + i);
        glance.addImage({ id, content: data });
        catalog.add(id, data);
        await setup.cacheImage(id);
      }
      if (findQemuImg() === null && process.env.CI === 'true') throw new Error('qemu-img is required in CI: install the qemu-utils package');
      const lane = new WorkerLane({ host: 'crash-disk', instancesPath, url: glance.url });
      lanes.push(lane);
      const records: InstanceRecord[] = [];
      let maxDelayMs = 120;
      let midCreation = 0;
      let disksCreated = 0;
      let qemuChecks = 0;
      let rawVerified = 0;
      let stagingRecovered = 0;
      try {
        for (let round = 0; round < KILLS; round++) {
          const delay = rng.int(0, maxDelayMs);
          const prefix = `r${String(round).padStart(2, '0')}`;
          const outcome = await killDuring(lane.take(), { kind: 'overlay', imageIds, prefix, count: 2000 }, delay);
          const where = `disk round ${round} (kill after ${delay} ms)`;
          if (outcome.finished) maxDelayMs = Math.max(20, Math.floor(maxDelayMs * 0.7));
          const units = startedUnits(outcome.stdout);
          const interrupted = inProgress(outcome.stdout);
          if (interrupted.length > 0) midCreation++;
          disksCreated += units.length - interrupted.length;

          assert.deepEqual(await disksWithoutBacking(instancesPath), [], `after the kill of ${where}`);
          assert.deepEqual(await unverifiedBases(baseDir, catalog), [], `after the kill of ${where}`);
          // Every qcow2 disk this round published, interrupted one included, passes qemu-img check.
          for (const [index, [uuid]] of units.entries()) {
            const disk = path.join(instancesPath, uuid ?? '', 'disk');
            if (index % 4 === 3 || !existsSync(disk) || findQemuImg() === null) continue;
            const check = await qemuImgCheck(disk);
            assert.equal(check['check-errors'], 0, `${disk} after ${where}`);
            qemuChecks++;
          }
          // Raw copies are all or nothing: any that exists equals its base.
          for (const [index, [uuid, imageId]] of units.entries()) {
            if (index % 4 !== 3) continue;
            const disk = path.join(instancesPath, uuid ?? '', 'disk');
            if (!existsSync(disk)) continue;
            assert.equal(sha256(await readFile(disk)), sha256(await readFile(path.join(baseDir, cacheFileName(imageId ?? '')))), `${disk} after ${where}`);
            rawVerified++;
          }

          // The next call: the interrupted disk again.
          const next = recoverer(instancesPath, 2 * HOUR, true);
          for (const [uuid, imageId] of interrupted) {
            const index = units.findIndex(([u]) => u === uuid);
            await next.createInstanceDisk({ imageId: imageId ?? '', instanceDir: path.join(instancesPath, uuid ?? ''), format: index % 4 === 3 ? 'raw' : 'qcow2' });
          }
          for (const [uuid, imageId] of units) records.push({ uuid: uuid ?? '', name: `instance-${uuid ?? ''}`, host: 'crash-disk', imageRef: imageId ?? null });
          // A pass an hour later (ages 0) keeps every base in use, and clears staging and locks.
          const pass = await next.update(records);
          assert.deepEqual(pass.failures, [], `pass after ${where}`);
          stagingRecovered += pass.removed.filter((r) => r.kind === 'staging').length;
          const used = new Set(records.map((r) => cacheFileName(r.imageRef ?? '')));
          assert.deepEqual(pass.removed.filter((r) => used.has(r.name)), [], `bases in use removed after ${where}`);
          assert.deepEqual(await disksWithoutBacking(instancesPath), [], `after the next calls of ${where}`);
          assert.deepEqual(await stagingLeftovers(instancesPath), [], `staging left after ${where}`);
          assert.deepEqual(await lockLeftovers(instancesPath), [], `locks left after ${where}`);
        }
        report(t, 'instance-disk', {
          kills: KILLS,
          killedMidCreation: midCreation,
          disksCreated,
          disksChecked: (await instanceDisks(instancesPath)).length,
          qemuImgChecks: qemuChecks,
          rawCopiesVerified: rawVerified,
          stagingFilesRecovered: stagingRecovered,
        });
      } finally {
        await cleanup();
      }
    });
  });

  it(`${KILLS} kills during a cleanup pass remove nothing in use and leave no partial state`, { timeout: LANE_TIMEOUT_MS }, async (t) => {
    await withSeed(t, async (seed) => {
      const rng = new Rng(seed);
      const { dir: instancesPath, cleanup } = await makeTempDir('vic-crash-pass-');
      const baseDir = path.join(instancesPath, '_base');
      const catalog = new ImageCatalog();
      // What stays in use: four images with overlays, two more referenced by records only.
      const setup = recoverer(instancesPath, 0, false);
      const instances: InstanceRecord[] = [];
      for (let i = 0; i < 6; i++) {
        const id = `kept-image-${i}`;
        const data = seededBytes(8 * 1024 + i, 70 + i);
        glance.addImage({ id, content: data });
        catalog.add(id, data);
        await setup.cacheImage(id);
        const uuid = `living-${i}`;
        if (i < 4) await setup.createInstanceDisk({ imageId: id, instanceDir: path.join(instancesPath, uuid) });
        instances.push({ uuid, name: `instance-${uuid}`, host: 'crash-pass', imageRef: id });
      }
      const inUse = instances.map((i) => cacheFileName(i.imageRef ?? ''));
      const lane = new WorkerLane({ host: 'crash-pass', instancesPath, url: glance.url });
      lanes.push(lane);
      const oldSeconds = (Date.now() - 2 * DAY * 1000) / 1000;
      const plantUnused = async (round: number): Promise<void> => {
        await mkdir(baseDir, { recursive: true });
        for (let k = 0; k < 80; k++) {
          const id = `unused-${round}-${k}`;
          const data = seededBytes(rng.int(512, 4096), rng.int(1, 1e9));
          catalog.add(id, data);
          const file = path.join(baseDir, cacheFileName(id));
          await writeFile(file, data);
          await utimes(file, oldSeconds, oldSeconds);
        }
      };
      let midPass = 0;
      let removedBeforeKill = 0;
      try {
        // Calibration: one pass that is not killed, to aim the kills inside a pass.
        await plantUnused(-1);
        const calibration = await killDuring(lane.take(), { kind: 'cleanup', instances }, 10_000);
        assert.ok(calibration.finished, 'the calibration pass finished');
        let maxDelayMs = Math.max(20, Math.ceil((calibration.value as { ms: number }).ms));
        const calibratedMs = maxDelayMs;
        for (let round = 0; round < KILLS; round++) {
          await plantUnused(round);
          const delay = rng.int(0, maxDelayMs);
          const outcome = await killDuring(lane.take(), { kind: 'cleanup', instances }, delay);
          const where = `pass round ${round} (kill after ${delay} ms)`;
          if (inProgress(outcome.stdout).length > 0) midPass++;
          else maxDelayMs = Math.max(20, Math.floor(maxDelayMs * 0.8));
          removedBeforeKill += 80 - (await listBases(baseDir)).filter((name) => !inUse.includes(name)).length;
          assert.deepEqual(inUse.filter((name) => !existsSync(path.join(baseDir, name))), [], `in-use bases removed by ${where}`);
          assert.deepEqual(await unverifiedBases(baseDir, catalog), [], `after the kill of ${where}`);
          assert.deepEqual(await disksWithoutBacking(instancesPath), [], `after the kill of ${where}`);

          // Once the dead pass's locks are stale, the next pass succeeds, takes them over, finishes
          // its work and removes the locks of entries it had removed itself.
          await waitUntilLocksStale(instancesPath);
          const pass = await recoverer(instancesPath, 0, true).update(instances);
          assert.deepEqual(pass.failures, [], `pass after ${where}`);
          const remaining = (await listBases(baseDir)).filter((name) => !inUse.includes(name));
          assert.deepEqual(remaining, [], `unused bases left after the recovery of ${where}`);
          assert.deepEqual(inUse.filter((name) => !existsSync(path.join(baseDir, name))), [], `in-use bases removed after ${where}`);
          assert.deepEqual(await stagingLeftovers(instancesPath), [], `staging left after ${where}`);
          assert.deepEqual(await lockLeftovers(instancesPath), [], `locks left after ${where}`);
        }
        report(t, 'cleanup-pass', { kills: KILLS, killedMidPass: midPass, unusedBasesPlanted: 80 * KILLS, removedBeforeTheKills: removedBeforeKill, calibratedPassMs: calibratedMs });
      } finally {
        await cleanup();
      }
    });
  });

});

/** Waits until every lock directory left is older than the lock staleness (2 s): its holder is dead. */
async function waitUntilLocksStale(instancesPath: string): Promise<void> {
  const lockDir = path.join(instancesPath, 'locks');
  let newest = 0;
  for (const name of await listDir(lockDir)) {
    try {
      newest = Math.max(newest, (await stat(path.join(lockDir, name))).mtimeMs);
    } catch {
      // released meanwhile
    }
  }
  const wait = newest + LOCK_STALE_MS + 100 - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}

async function listBases(baseDir: string): Promise<string[]> {
  return (await listDir(baseDir)).filter((name) => name.length === 40);
}
