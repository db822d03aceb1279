// The one publish path of every fill: staged bytes get their final name only when their size and
// digest are the image's, and not once the fill is cancelled; on a refusal the staging is left to
// the fill and nothing appears under the final name. Real files, published by the durable rename.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { publishFile } from '../../src/fetch/durable.js';
import { verifyAndPublish } from '../../src/fetch/publish.js';
import type { ExpectedImage, StagedImage } from '../../src/fetch/publish.js';
import { isImageCacheError } from '../../src/index.js';
import { listDir, makeTempDir, seededBytes } from '../helpers/tmp.js';

const IMAGE = 'image-1';
const DATA = seededBytes(64 * 1024 + 3, 5);
const SHA256 = createHash('sha256').update(DATA).digest('hex');

describe('verifyAndPublish', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let staging: string;
  let finalPath: string;
  let hashed: string[];

  /** The staged file as a fill hands it over, counting the digests asked of it. */
  const staged = (bytes = DATA.length): StagedImage => ({
    bytes,
    digest: async (algorithm) => {
      hashed.push(algorithm);
      return createHash(algorithm).update(await readFile(staging)).digest('hex');
    },
    publish: () => publishFile(staging, finalPath, { sync: true }),
  });
  const expected = (extra: Partial<ExpectedImage> = {}): ExpectedImage => ({
    imageId: IMAGE,
    size: DATA.length,
    digest: { algorithm: 'sha256', value: SHA256 },
    ...extra,
  });

  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-publish-'));
    staging = path.join(dir, 'base.1-0000abcd.staging');
    finalPath = path.join(dir, 'base');
    hashed = [];
    await writeFile(staging, DATA);
  });
  afterEach(() => cleanup());

  it('publishes the staged bytes of the right size and digest, and says what it verified', async () => {
    const result = await verifyAndPublish(staged(), expected(), { operation: 'Download' });
    assert.deepEqual(result, { bytes: DATA.length, algorithm: 'sha256', digest: SHA256, bytesFrom: [] });
    assert.deepEqual(await listDir(dir), ['base']);
    assert.deepEqual(await readFile(finalPath), DATA);
  });

  it('checks only the size when no digest is published: nothing is hashed', async () => {
    const result = await verifyAndPublish(staged(), expected({ digest: null }), { operation: 'Download' });
    assert.deepEqual(result, { bytes: DATA.length, algorithm: null, digest: null, bytesFrom: [] });
    assert.deepEqual(hashed, []);
    assert.deepEqual(await listDir(dir), ['base']);
  });

  it('refuses a wrong size before hashing: nothing under the final name, the staging left to the fill', async () => {
    await assert.rejects(verifyAndPublish(staged(DATA.length - 1), expected(), { operation: 'Download' }), (err: unknown) => {
      assert.ok(isImageCacheError(err));
      assert.equal(err.code, 'ERR_SIZE_MISMATCH');
      return true;
    });
    assert.deepEqual(hashed, []);
    assert.deepEqual(await listDir(dir), [path.basename(staging)]);
  });

  it('refuses a wrong digest: nothing under the final name', async () => {
    const wrong = expected({ digest: { algorithm: 'sha256', value: '0'.repeat(64) } });
    await assert.rejects(verifyAndPublish(staged(), wrong, { operation: 'Linking' }), (err: unknown) => {
      assert.ok(isImageCacheError(err));
      assert.equal(err.code, 'ERR_CHECKSUM_MISMATCH');
      return true;
    });
    assert.deepEqual(hashed, ['sha256']);
    assert.deepEqual(await listDir(dir), [path.basename(staging)]);
  });

  it('publishes nothing once the fill is cancelled, and names the fill in the error', async () => {
    const controller = new AbortController();
    controller.abort(new Error('spawn deleted'));
    await assert.rejects(verifyAndPublish(staged(), expected(), { signal: controller.signal, operation: 'Linking' }), (err: unknown) => {
      assert.ok(isImageCacheError(err));
      assert.equal(err.code, 'ERR_ABORTED');
      assert.match(err.message, /Linking/);
      return true;
    });
    assert.deepEqual(await listDir(dir), [path.basename(staging)]);
  });
});
