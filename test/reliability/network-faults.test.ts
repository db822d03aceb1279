// Network faults from the fake Glance server, over real loopback sockets: resets at random
// offsets, stalls that fire the idle timeout, 5xx bursts, a wrong length, a wrong checksum, and
// servers that ignore Range. Whatever the mix, `cacheImage` ends in one of two ways: the exact
// image under its final name after bounded retries, or a typed error with nothing under the final
// name and no staging file left. Which one is predicted from the faults, by a model of the retry
// rules (GlanceImageSource: a failure that delivered new bytes resets the retry count).
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { isImageCacheError } from '../../src/errors.js';
import { isStagingName } from '../../src/fetch/staging-names.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import { startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance, FakeImageFaults } from '../../src/testing/fake-glance.js';
import { listDir, makeMemoryTempDir, seededBytes } from '../helpers/tmp.js';
import { withSeed } from './seed.js';

const RETRIES = 5;
const IDLE_TIMEOUT_MS = 100;
const RUNS = Number(process.env.RELIABILITY_NETWORK_RUNS ?? 120);

interface FaultCase {
  readonly size: number;
  readonly hashAlgo: 'sha512' | 'sha256' | null;
  readonly resetOffsets: readonly number[];
  readonly stall: { readonly after: number; readonly count: number } | undefined;
  readonly burst: { readonly count: number; readonly status: number } | undefined;
  readonly wrongLength: number | undefined;
  readonly wrongChecksum: boolean;
  readonly honourRange: boolean;
}

type Outcome = 'ok' | 'ERR_IMAGE_SERVICE_UNAVAILABLE' | 'ERR_SIZE_MISMATCH' | 'ERR_CHECKSUM_MISMATCH';

/**
 * Whether the body arrives whole despite the resets and stalls: replays the responses the fake
 * sends and the client's rule (give up after RETRIES failures in a row without new bytes).
 */
function bodyArrives(c: FaultCase): boolean {
  const length = c.wrongLength ?? c.size;
  let delivered = 0;
  let atLastFailure = 0;
  let failures = 0;
  for (let response = 0; ; response++) {
    if (c.honourRange && delivered === length) return true; // 416 at the very end: complete
    const cut = Math.min(
      c.resetOffsets[response] ?? Number.POSITIVE_INFINITY,
      c.stall !== undefined && response < c.stall.count ? c.stall.after : Number.POSITIVE_INFINITY,
    );
    const start = c.honourRange ? delivered : 0;
    if (cut > length - start) return true; // sent to the end, then closed properly
    delivered = Math.max(delivered, start + cut);
    if (delivered > atLastFailure) {
      failures = 0;
      atLastFailure = delivered;
    }
    if (++failures > RETRIES) return false;
  }
}

/** The outcomes the faults allow; the first is required whenever the body can arrive. */
function expected(c: FaultCase): Outcome[] {
  if (c.burst !== undefined && c.burst.count > RETRIES) return ['ERR_IMAGE_SERVICE_UNAVAILABLE'];
  const arrives = bodyArrives(c);
  if (c.wrongLength !== undefined) return ['ERR_SIZE_MISMATCH', 'ERR_IMAGE_SERVICE_UNAVAILABLE'];
  if (!arrives) return ['ERR_IMAGE_SERVICE_UNAVAILABLE'];
  return c.wrongChecksum ? ['ERR_CHECKSUM_MISMATCH'] : ['ok'];
}

function faultsOf(c: FaultCase): FakeImageFaults {
  return {
    resetOffsets: c.resetOffsets,
    stallAfterBytes: c.stall?.after,
    stalls: c.stall?.count,
    failFirst: c.burst?.count,
    failStatus: c.burst?.status,
    wrongLength: c.wrongLength,
    wrongChecksum: c.wrongChecksum,
    honourRange: c.honourRange,
  };
}

/** `arbitrary` one time in `1 + odds`, else undefined. */
function sometimes<T>(arbitrary: fc.Arbitrary<T>, odds: number): fc.Arbitrary<T | undefined> {
  return fc.oneof({ weight: odds, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary });
}

const faultCase: fc.Arbitrary<FaultCase> = fc
  .record({
    size: fc.integer({ min: 1024, max: 320 * 1024 }),
    hashAlgo: fc.constantFrom<FaultCase['hashAlgo']>('sha512', 'sha256', null),
    resetOffsets: fc.array(fc.integer({ min: 0, max: 200 * 1024 }), { maxLength: 7 }),
    stall: sometimes(fc.record({ after: fc.integer({ min: 0, max: 200 * 1024 }), count: fc.integer({ min: 1, max: 2 }) }), 3),
    burst: sometimes(fc.record({ count: fc.integer({ min: 1, max: 8 }), status: fc.constantFrom(500, 502, 503, 504, 429) }), 3),
    wrongLength: sometimes(fc.integer({ min: 0, max: 400 * 1024 }), 6),
    wrongChecksum: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    honourRange: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  })
  .map((c) => ({ ...c, wrongLength: c.wrongLength === c.size ? undefined : c.wrongLength }));

describe('network faults: a typed error or the exact image, never a corrupt entry', () => {
  let glance: FakeGlance;
  let dir: string;
  let cleanup: () => Promise<void>;
  let manager: LibvirtFileImageManager;
  let next = 0;

  before(async () => {
    glance = await startFakeGlance();
    ({ dir, cleanup } = await makeMemoryTempDir('vic-net-'));
    manager = new LibvirtFileImageManager({
      host: 'net',
      instancesPath: dir,
      source: new GlanceImageSource({ endpoint: glance.url, retries: RETRIES, backoffBaseMs: 1, backoffMaxMs: 10, idleTimeoutMs: IDLE_TIMEOUT_MS }),
      lockStaleMs: 2000,
    });
  });
  after(async () => {
    await glance.close();
    await cleanup();
  });

  /** Caches a fresh image served with `c`'s faults; returns the outcome after checking the cache. */
  async function attempt(c: FaultCase): Promise<Outcome> {
    const id = `net-${next++}`;
    const data = seededBytes(c.size, next);
    glance.addImage({ id, content: data, hashAlgo: c.hashAlgo, faults: faultsOf(c) });
    let outcome: Outcome;
    let timer: NodeJS.Timeout | undefined;
    try {
      const hang = new Promise<never>((_, reject) => {
        timer = setTimeout(() => { reject(new Error('cacheImage hung for 15 s')); }, 15_000);
      });
      await Promise.race([manager.cacheImage(id), hang]);
      outcome = 'ok';
    } catch (err) {
      assert.ok(isImageCacheError(err), `an untyped error escaped: ${String(err)}`);
      outcome = err.code as Outcome;
    } finally {
      clearTimeout(timer);
    }
    const finalPath = manager.cachePathFor(id);
    // A transport failure keeps a staging file for resume only with a sidecar recording whole
    // written blocks (4 MiB; these images are smaller, so none is ever recorded); every other
    // failure discards it.
    const staging = (await listDir(manager.baseDir)).filter(isStagingName);
    if (outcome === 'ERR_IMAGE_SERVICE_UNAVAILABLE') {
      assert.ok(staging.every((name) => name.endsWith('.staging') ? staging.includes(`${name}.resume`) : name.endsWith('.staging.resume')), `unresumable staging left: ${staging.join(', ')}`);
    } else assert.deepEqual(staging, [], 'staging files left behind');
    if (outcome === 'ok') assert.ok((await readFile(finalPath)).equals(data), 'the cached image differs from the served one');
    else assert.ok(!(await listDir(manager.baseDir)).includes(path.basename(finalPath)), 'a failed download left a final-name file');
    assert.deepEqual(await listDir(path.join(dir, 'locks')), [], 'a lock was left held');
    return outcome;
  }

  it('resets at random offsets are resumed (and restarted when Range is ignored) to the exact image', async () => {
    assert.equal(await attempt({ size: 300_000, hashAlgo: 'sha512', resetOffsets: [1, 65_536, 4_000, 99_999, 7], stall: undefined, burst: undefined, wrongLength: undefined, wrongChecksum: false, honourRange: true }), 'ok');
    assert.equal(await attempt({ size: 300_000, hashAlgo: 'sha256', resetOffsets: [50_000, 120_000, 250_000], stall: undefined, burst: undefined, wrongLength: undefined, wrongChecksum: false, honourRange: false }), 'ok');
  });

  it('a stall fires the idle timeout and the download resumes', async () => {
    const started = performance.now();
    assert.equal(await attempt({ size: 200_000, hashAlgo: null, resetOffsets: [], stall: { after: 70_000, count: 2 }, burst: undefined, wrongLength: undefined, wrongChecksum: false, honourRange: true }), 'ok');
    assert.ok(performance.now() - started >= 2 * IDLE_TIMEOUT_MS, 'two stalls, each ended by the idle timeout');
  });

  it('a 5xx burst within the retry budget succeeds; one beyond it is ERR_IMAGE_SERVICE_UNAVAILABLE', async () => {
    const base = { size: 10_000, hashAlgo: 'sha512', resetOffsets: [], stall: undefined, wrongLength: undefined, wrongChecksum: false, honourRange: true } as const;
    assert.equal(await attempt({ ...base, burst: { count: RETRIES, status: 502 } }), 'ok');
    assert.equal(await attempt({ ...base, burst: { count: RETRIES + 1, status: 500 } }), 'ERR_IMAGE_SERVICE_UNAVAILABLE');
  });

  it('a wrong length is ERR_SIZE_MISMATCH and a wrong checksum ERR_CHECKSUM_MISMATCH, both after resets', async () => {
    const base = { size: 150_000, hashAlgo: 'sha512', resetOffsets: [10_000, 20_000], stall: undefined, burst: undefined, wrongChecksum: false, honourRange: true } as const;
    assert.equal(await attempt({ ...base, wrongLength: 149_999 }), 'ERR_SIZE_MISMATCH');
    assert.equal(await attempt({ ...base, wrongLength: 150_001 }), 'ERR_SIZE_MISMATCH');
    assert.equal(await attempt({ ...base, wrongLength: undefined, wrongChecksum: true }), 'ERR_CHECKSUM_MISMATCH');
  });

  it(`${RUNS} random fault mixes: the predicted outcome, and never a corrupt entry`, async (t) => {
    await withSeed(t, async (seed) => {
      const tally = new Map<string, number>();
      let faultsInjected = 0;
      await fc.assert(
        fc.asyncProperty(faultCase, async (c) => {
          const allowed = expected(c);
          const outcome = await attempt(c);
          assert.ok(allowed.includes(outcome), `faults ${JSON.stringify(c)}: got ${outcome}, expected ${allowed.join(' or ')}`);
          if (allowed.length > 1 && bodyArrives(c) && c.wrongLength !== undefined && c.wrongLength < c.size) {
            assert.equal(outcome, 'ERR_SIZE_MISMATCH', `faults ${JSON.stringify(c)}`);
          }
          tally.set(outcome, (tally.get(outcome) ?? 0) + 1);
          faultsInjected += c.resetOffsets.length + (c.stall?.count ?? 0) + (c.burst?.count ?? 0) + (c.wrongLength === undefined ? 0 : 1) + (c.wrongChecksum ? 1 : 0) + (c.honourRange ? 0 : 1);
        }),
        { seed, numRuns: RUNS, endOnFailure: true },
      );
      const figures = { cases: RUNS, faultsInjected, outcomes: Object.fromEntries(tally), corruptEntries: 0 };
      t.diagnostic(`network faults: ${JSON.stringify(figures)}`);
      console.log(`[reliability] network-faults ${JSON.stringify(figures)}`);
    });
  });
});
