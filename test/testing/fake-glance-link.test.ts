// The fake Glance's WAN link (`linkBytesPerSecond`): one cap on the image data of every response
// together, shared fairly between concurrent downloads. Measured from the server's own byte
// counter, sampled over time: the cap is an upper bound a busy machine cannot break (load only
// slows the sender), so the bytes-over-time check is strict; the duration checks are loose (a
// fraction of the ideal) yet fail without a shared link, where 4 downloads would take 1/4 the time.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generatedImageBytes, startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** The link's cap in these tests. */
const CAP = 2 * MiB;
/** What the link may send ahead of the clock: its idle burst (20 ms) and one slice, with margin. */
const SLACK = CAP * 0.05 + 64 * KiB;

interface Sample {
  readonly ms: number;
  readonly bytes: number;
}

/** Samples the fake's total body bytes every 25 ms while `work` runs; times from `work`'s start. */
async function sampled<T>(glance: FakeGlance, work: () => Promise<T>): Promise<{ value: T; samples: Sample[]; ms: number }> {
  const started = performance.now();
  const samples: Sample[] = [];
  const timer = setInterval(() => {
    samples.push({ ms: performance.now() - started, bytes: glance.totalBytesServed });
  }, 25);
  try {
    const value = await work();
    const ms = performance.now() - started;
    samples.push({ ms, bytes: glance.totalBytesServed });
    return { value, samples, ms };
  } finally {
    clearInterval(timer);
  }
}

/** Downloads an image's file on a connection of its own; resolves with its bytes and its duration. */
async function download(glance: FakeGlance, imageId: string, started: number): Promise<{ body: Buffer; ms: number }> {
  const res = await fetch(`${glance.url}/v2/images/${imageId}/file`);
  assert.equal(res.status, 200);
  const body = Buffer.from(await res.arrayBuffer());
  return { body, ms: performance.now() - started };
}

/** Fails when, at any sample, the bytes sent so far exceed what the cap allows by then. */
function assertUnderCap(samples: readonly Sample[]): void {
  for (const { ms, bytes } of samples) {
    const allowed = (CAP * ms) / 1000 + SLACK;
    assert.ok(bytes <= allowed, `${bytes} bytes after ${ms.toFixed(0)} ms: more than the cap allows (${allowed.toFixed(0)})`);
  }
}

describe('startFakeGlance: linkBytesPerSecond', () => {
  it('caps one download at the link rate and counts its bytes', async () => {
    const size = MiB;
    await using glance = await startFakeGlance({ images: [{ id: 'one', content: { size, seed: 1 } }], linkBytesPerSecond: CAP });
    const { value, samples, ms } = await sampled(glance, () => download(glance, 'one', performance.now()));
    assert.ok(value.body.equals(generatedImageBytes({ size, seed: 1 })));
    assertUnderCap(samples);
    const ideal = (size / CAP) * 1000;
    assert.ok(ms >= 0.8 * ideal, `took ${ms.toFixed(0)} ms, the cap allows no less than ~${ideal} ms`);
    assert.ok(ms <= 4 * ideal + 1000, `took ${ms.toFixed(0)} ms: the link is far slower than its cap`);
    assert.equal(glance.totalBytesServed, size);
    assert.equal(glance.bytesServed('one'), size);
  });

  it('shares the cap fairly between 4 concurrent downloads of different images', async () => {
    const size = 512 * KiB;
    const ids = ['a', 'b', 'c', 'd'];
    await using glance = await startFakeGlance({
      images: ids.map((id, i) => ({ id, content: { size, seed: i + 1 } })),
      linkBytesPerSecond: CAP,
    });
    const { value, samples, ms } = await sampled(glance, () => {
      const started = performance.now();
      return Promise.all(ids.map((id) => download(glance, id, started)));
    });
    ids.forEach((id, i) => {
      assert.ok(value[i]?.body.equals(generatedImageBytes({ size, seed: i + 1 })), `${id}'s bytes`);
      assert.equal(glance.bytesServed(id), size);
    });
    assertUnderCap(samples);
    const ideal = ((ids.length * size) / CAP) * 1000;
    assert.ok(ms >= 0.8 * ideal, `4 downloads took ${ms.toFixed(0)} ms, the shared cap allows no less than ~${ideal} ms`);
    assert.ok(ms <= 4 * ideal + 1000, `took ${ms.toFixed(0)} ms: the link is far slower than its cap`);
    // Fair turns: none finishes early at the others' expense (first come, first served whole
    // would finish the first after ~1/4 of the time).
    for (const [i, { ms: own }] of value.entries()) {
      assert.ok(own >= 0.6 * ideal, `download ${ids[i] ?? i} finished after ${own.toFixed(0)} ms of ~${ideal} ms: not a fair share`);
    }
    assert.equal(glance.totalBytesServed, ids.length * size);
    glance.resetStats();
    assert.equal(glance.totalBytesServed, 0);
  });

  it('is one link per fake: another fake is not slowed by this one', async () => {
    const size = 256 * KiB;
    await using capped = await startFakeGlance({ images: [{ id: 'x', content: { size } }], linkBytesPerSecond: 64 * KiB });
    await using free = await startFakeGlance({ images: [{ id: 'x', content: { size } }] });
    const slow = download(capped, 'x', performance.now());
    const fast = await download(free, 'x', performance.now());
    assert.ok(fast.ms < 1000, `the uncapped fake took ${fast.ms.toFixed(0)} ms`);
    assert.ok(capped.totalBytesServed < size, 'the capped download is still running');
    await capped.close();
    await slow.catch(() => undefined);
  });

  it('rejects a cap below 1 byte per second or not an integer', async () => {
    await assert.rejects(startFakeGlance({ linkBytesPerSecond: 0 }), RangeError);
    await assert.rejects(startFakeGlance({ linkBytesPerSecond: 1.5 }), RangeError);
  });
});
