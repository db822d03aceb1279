import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidImageIdError } from '../../src/index.js';
import { assertValidImageId } from '../../src/backend-kit/index.js';

describe('image id validation', () => {
  for (const good of ['fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0', '1', 'image.v2_final', 'ünïcødé-ok', 'a'.repeat(255)]) {
    it(`accepts ${JSON.stringify(good.slice(0, 40))}`, () => {
      assert.doesNotThrow(() => {
        assertValidImageId(good);
      });
    });
  }
  const bad: unknown[] = ['', '/', '../etc/passwd', 'a/b', 'a\\b', '..', '.', 'x..y', 'nul\0byte', 'tab\there', ' lead', 'trail ', 'a'.repeat(256), 'é'.repeat(128), '\ud800', 42, null, undefined];
  for (const value of bad) {
    it(`rejects ${(JSON.stringify(typeof value === 'string' ? value.slice(0, 40) : value) as string | undefined) ?? String(value)}`, () => {
      assert.throws(
        () => {
          assertValidImageId(value);
        },
        (err: unknown) => err instanceof InvalidImageIdError && err.code === 'ERR_INVALID_IMAGE_ID',
      );
    });
  }
});
