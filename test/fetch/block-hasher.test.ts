import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { BlockRing, InlineBlockHasher, WorkerBlockHasher } from '../../src/fetch/block-hasher.js';
import { seededBytes } from '../helpers/tmp.js';

describe('block hashers', () => {
  const data = seededBytes(3 * 64 * 1024 + 1234, 5);
  for (const [name, make] of [
    ['inline', (a: string, r: BlockRing) => new InlineBlockHasher(a, r)],
    ['worker', (a: string, r: BlockRing) => new WorkerBlockHasher(a, r)],
  ] as const) {
    for (const algorithm of ['sha512', 'sha256', 'md5']) {
      it(`${name} ${algorithm} equals node:crypto over the same bytes, through a reused ring`, async () => {
        const ring = new BlockRing(2, 64 * 1024);
        const hasher = make(algorithm, ring);
        try {
          for (let offset = 0, i = 0; offset < data.length; offset += ring.blockSize, i = (i + 1) % 2) {
            const chunk = data.subarray(offset, offset + ring.blockSize);
            (ring.blocks[i] as Buffer).set(chunk);
            await hasher.update(i, chunk.length);
          }
          assert.equal(await hasher.digest(), createHash(algorithm).update(data).digest('hex'));
        } finally {
          await hasher.close();
        }
      });
    }
  }

  it('a failed worker rejects pending and later updates instead of hanging', async () => {
    const ring = new BlockRing(1, 1024);
    const hasher = new WorkerBlockHasher('no-such-algorithm', ring);
    await assert.rejects(hasher.update(0, 10));
    await hasher.close();
  });
});
