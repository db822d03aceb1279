// The capacity options, validated like the others: a bad value or a contradictory pair fails at
// construction with InvalidConfigError naming the option, never silently later.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidConfigError, resolveImageCacheOptions } from '../../src/index.js';

describe('capacity options', () => {
  it('defaults: no cap, watermarks off (85/80 once on, as kubelet), no reserve', () => {
    const options = resolveImageCacheOptions();
    assert.equal(options.maxCacheBytes, Number.POSITIVE_INFINITY);
    assert.equal(options.diskWatermarks, false);
    assert.equal(options.highWatermarkPercent, 85);
    assert.equal(options.lowWatermarkPercent, 80);
    assert.equal(options.downloadReserveBytes, 0);
    const on = resolveImageCacheOptions({ diskWatermarks: true });
    assert.deepEqual([on.highWatermarkPercent, on.lowWatermarkPercent], [85, 80]);
  });

  it('accepts a cap, a reserve and custom watermarks with the switch on', () => {
    const options = resolveImageCacheOptions({ maxCacheBytes: 10 * 2 ** 30, downloadReserveBytes: 2 ** 30, diskWatermarks: true, highWatermarkPercent: 90, lowWatermarkPercent: 70 });
    assert.equal(options.maxCacheBytes, 10 * 2 ** 30);
    assert.equal(options.highWatermarkPercent, 90);
  });

  const bad: [string, Record<string, unknown>][] = [
    ['maxCacheBytes', { maxCacheBytes: 0 }],
    ['maxCacheBytes', { maxCacheBytes: -1 }],
    ['maxCacheBytes', { maxCacheBytes: '10G' }],
    ['downloadReserveBytes', { downloadReserveBytes: -1 }],
    ['downloadReserveBytes', { downloadReserveBytes: 1.5 }],
    ['diskWatermarks', { diskWatermarks: 'yes' }],
    ['highWatermarkPercent', { diskWatermarks: true, highWatermarkPercent: 101 }],
    ['highWatermarkPercent', { diskWatermarks: true, highWatermarkPercent: Number.NaN }],
    ['lowWatermarkPercent', { diskWatermarks: true, lowWatermarkPercent: -1 }],
    // kubelet's validation: low must be below high.
    ['lowWatermarkPercent', { diskWatermarks: true, highWatermarkPercent: 80, lowWatermarkPercent: 80 }],
    ['lowWatermarkPercent', { diskWatermarks: true, lowWatermarkPercent: 90 }],
    // Percentages without the switch would silently do nothing.
    ['highWatermarkPercent', { highWatermarkPercent: 90 }],
    ['lowWatermarkPercent', { lowWatermarkPercent: 70 }],
  ];
  for (const [option, given] of bad) {
    it(`rejects ${JSON.stringify(given)} naming ${option}`, () => {
      assert.throws(() => resolveImageCacheOptions(given), (err: unknown) => err instanceof InvalidConfigError && err.option === option);
    });
  }
});
