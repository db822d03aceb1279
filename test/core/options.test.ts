import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_OPTIONS, InvalidConfigError, resolveImageCacheOptions } from '../../src/index.js';

describe('options', () => {
  it("test_configuration_defaults: Nova's [image_cache] defaults", () => {
    const options = resolveImageCacheOptions();
    assert.equal(options.managerInterval, 2400);
    assert.equal(options.subdirectoryName, '_base');
    assert.equal(options.removeUnusedBaseImages, true);
    assert.equal(options.removeUnusedOriginalMinimumAgeSeconds, 86400);
    assert.equal(options.removeUnusedResizedMinimumAgeSeconds, 3600);
    assert.equal(options.precacheConcurrency, 1);
    assert.ok(Object.isFrozen(options));
    assert.ok(Object.isFrozen(DEFAULT_OPTIONS));
  });

  it('accepts the boundary values Nova accepts', () => {
    const options = resolveImageCacheOptions({ managerInterval: -1, precacheConcurrency: 1, removeUnusedOriginalMinimumAgeSeconds: 0 });
    assert.equal(options.managerInterval, -1);
    assert.equal(options.removeUnusedOriginalMinimumAgeSeconds, 0);
  });

  const bad: [string, unknown][] = [
    ['managerInterval', -2],
    ['managerInterval', 1.5],
    ['managerInterval', '2400'],
    ['precacheConcurrency', 0],
    ['removeUnusedOriginalMinimumAgeSeconds', -1],
    ['removeUnusedResizedMinimumAgeSeconds', Number.NaN],
    ['removeUnusedBaseImages', 'yes'],
    ['subdirectoryName', ''],
    ['subdirectoryName', '../etc'],
    ['subdirectoryName', 'a/b'],
    ['subdirectoryName', '..'],
    ['maxConcurrentDownloads', 0],
    ['maxImageSizeBytes', -5],
    ['downloadBytesPerSecond', 0],
    ['lockStaleMs', 1000],
    ['removeUnusedBaseImage', true],
  ];
  for (const [option, value] of bad) {
    it(`rejects ${option}=${(JSON.stringify(value) as string | undefined) ?? String(value)} naming the option`, () => {
      assert.throws(
        () => resolveImageCacheOptions({ [option]: value }),
        (err: unknown) => err instanceof InvalidConfigError && err.code === 'ERR_INVALID_CONFIG' && err.option === option,
      );
    });
  }

  it('names the accepted range in the message', () => {
    assert.throws(() => resolveImageCacheOptions({ precacheConcurrency: 0 }), /`precacheConcurrency`.*integer from 1 up/);
  });
});
