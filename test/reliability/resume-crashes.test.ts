// Crashes and resume (issue 16): a worker process downloading a large image at a WAN-like rate is
// SIGKILLed at a seeded random moment (crash-lanes.ts, as in crashes.test.ts). After each kill the
// next process caches the same image and:
//   - ends with the complete, verified image under its final name (sha256 checked here);
//   - pulls from Glance exactly the bytes the dead process's sidecar did not record (the fake's
//     byte counter), which is less than what it had not received plus one checkpoint interval
//     (plus the ring and socket buffers);
//   - pulls less than twice the image in all;
//   - leaves no staging file or sidecar behind.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { CHECKPOINT_BYTES } from '../../src/fetch/resume.js';
import { readResumeRecord } from '../../src/fetch/resume-sidecar.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import { generatedImageBytes, startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';
import { listDir, makeTempDir } from '../helpers/tmp.js';
import { WorkerLane, killDuring } from './crash-lanes.js';
import { sha256, stagingLeftovers } from './invariants.js';
import { Rng, withSeed } from './seed.js';

const KILLS = Number(process.env.RELIABILITY_RESUME_KILLS ?? 5);
const MiB = 1024 * 1024;
const SIZE = 96 * MiB + 12_345;
/** The worker's download rate: the image takes about 3 s, so kills land mid-body. */
const RATE = 32 * MiB;
/**
 * Bytes the dead process may have received but not yet recorded: a checkpoint interval, the ring
 * (16 MiB) and socket buffers.
 */
const SLACK = CHECKPOINT_BYTES + 32 * MiB;

describe('crashes: SIGKILL at random offsets of large downloads, then resume', () => {
  let glance: FakeGlance;
  let lane: WorkerLane | undefined;

  before(async () => {
    glance = await startFakeGlance();
  });
  after(async () => {
    await lane?.close();
    await glance.close();
  });

  it(`${KILLS} kills: the next process resumes the kept staging, pulling only the rest, and ends verified`, { timeout: 300_000 }, async (t) => {
    await withSeed(t, async (seed) => {
      const rng = new Rng(seed);
      const { dir: instancesPath, cleanup } = await makeTempDir('vic-crash-resume-');
      const baseDir = path.join(instancesPath, '_base');
      lane = new WorkerLane({ host: 'crash-resume', instancesPath, url: glance.url });
      // One content for every round (hashed once here; the fake is given its digests), each round
      // under a fresh image id.
      const spec = { size: SIZE, seed: rng.int(1, 1e9) };
      const bytes = generatedImageBytes(spec);
      const digests = { checksum: createHash('md5').update(bytes).digest('hex'), hashValue: createHash('sha512').update(bytes).digest('hex') };
      const expected = sha256(bytes);
      let resumed = 0;
      let pulledAgain = 0;
      const offsets: number[] = [];
      try {
        for (let round = 0; round < KILLS; round++) {
          const id = `resume-${round}`;
          glance.addImage({ id, content: spec, ...digests, faults: { throttleBytesPerSecond: RATE } });
          const delay = rng.int(1200, 2800);
          const outcome = await killDuring(lane.take(), { kind: 'download', imageIds: [id] }, delay);
          const where = `round ${round} (kill after ${delay} ms)`;
          const servedBeforeKill = glance.bytesServed(id);
          offsets.push(Number((servedBeforeKill / SIZE).toFixed(2)));
          const sidecar = (await listDir(baseDir)).find((name) => name.endsWith('.staging.resume'));
          const record = sidecar === undefined ? null : await readResumeRecord(path.join(baseDir, sidecar.slice(0, -'.resume'.length)));
          const keptBytes = record !== null && typeof record !== 'string' ? record.bytes : 0;

          glance.setFaults(id, {});
          const next = new LibvirtFileImageManager({
            host: 'recovery',
            instancesPath,
            source: new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1, backoffMaxMs: 20 }),
            lockStaleMs: 2000,
          });
          const result = await next.cacheImage(id);
          const again = glance.bytesServed(id) - servedBeforeKill;
          const finalPath = path.join(baseDir, cacheFileName(id));
          assert.equal(sha256(await readFile(finalPath)), expected, `the verified image after ${where}`);
          assert.deepEqual(await stagingLeftovers(instancesPath), [], `staging left after the resume of ${where}`);
          await unlink(finalPath);
          if (outcome.finished) {
            assert.equal(result.status, 'existing');
            continue;
          }
          assert.equal(again, SIZE - keptBytes, `only what the sidecar did not record is pulled again after ${where}`);
          assert.ok(again < SIZE - servedBeforeKill + SLACK, `${again} bytes pulled again after ${where} (${servedBeforeKill} served before the kill)`);
          assert.ok(glance.bytesServed(id) < 2 * SIZE, `${glance.bytesServed(id)} bytes pulled in all for ${where}`);
          if (keptBytes > 0) resumed++;
          pulledAgain += again / SIZE;
        }
        assert.ok(resumed > 0, 'at least one download was resumed');
        const figures = { kills: KILLS, killedAtFractions: offsets, resumed, meanFractionPulledAgain: Number((pulledAgain / KILLS).toFixed(3)), losses: 0 };
        t.diagnostic(`resume-crashes: ${JSON.stringify(figures)}`);
        console.log(`[reliability] resume-crashes ${JSON.stringify(figures)}`);
      } finally {
        await cleanup();
      }
    });
  });
});
