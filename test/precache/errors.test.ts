// The pre-caching errors: stable codes, messages that name the host or image and say what to do,
// and a JSON form that survives the trip through a host agent.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ImageCacheError } from '../../src/index.js';
import {
  CacheImageFailedError,
  HostTimeoutError,
  HostUnauthorizedError,
  HostUnavailableError,
  ImageNotFoundError,
  InvalidPrecacheRequestError,
  PrecacheWindowClosedError,
  RemoteImageCacheError,
  isImageCacheError,
} from '../../src/index.js';
import { decodeErrorJSON } from '../../src/precache/index.js';

describe('pre-caching errors', () => {
  const cases: [ImageCacheError, string, RegExp][] = [
    [new InvalidPrecacheRequestError('image x is listed more than once; list each image once.', 'x'), 'ERR_INVALID_REQUEST', /list each image once/],
    [new CacheImageFailedError('image-9', new Error('EIO')), 'ERR_CACHE_FAILED', /image image-9 failed: EIO\. Check/],
    [new HostUnauthorizedError('edge-1', 401), 'ERR_HOST_UNAUTHORIZED', /host edge-1 .*HTTP 401.*give the client the token/],
    [new HostUnavailableError('edge-2', 'connection refused', { statusCode: null }), 'ERR_HOST_UNAVAILABLE', /Host edge-2 .*connection refused\. Check/],
    [new HostTimeoutError('edge-3', 5000), 'ERR_HOST_TIMEOUT', /Host edge-3 did not finish .* 5000 ms: raise the timeout/],
    [
      new PrecacheWindowClosedError(Date.UTC(2026, 0, 5, 5), 'edge-4'),
      'ERR_PRECACHE_WINDOW_CLOSED',
      /host edge-4 was paused: the pre-cache window closed at 2026-01-05T05:00:00\.000Z\. It resumes in the next window/,
    ],
    [new PrecacheWindowClosedError(null), 'ERR_PRECACHE_WINDOW_CLOSED', /no pre-cache window is left/],
  ];
  for (const [error, code, message] of cases) {
    it(`${error.name} has code ${code} and a message that says what to do`, () => {
      assert.ok(isImageCacheError(error));
      assert.equal(error.code, code);
      assert.match(error.message, message);
      assert.deepEqual(JSON.parse(JSON.stringify(error)), error.toJSON());
      assert.equal(error.toJSON().name, error.name);
    });
  }

  it('an error crosses the wire as JSON and comes back as a RemoteImageCacheError with the same code, message and image', () => {
    const original = new ImageNotFoundError('image-1');
    const json = decodeErrorJSON(JSON.parse(JSON.stringify(original)));
    assert.ok(json !== null);
    const remote = new RemoteImageCacheError('edge-1', json);
    assert.deepEqual([remote.code, remote.message, remote.imageId, remote.host, remote.remoteName], [
      'ERR_IMAGE_NOT_FOUND',
      original.message,
      'image-1',
      'edge-1',
      'ImageNotFoundError',
    ]);
    assert.deepEqual(remote.toJSON(), original.toJSON());
  });

  it('decodeErrorJSON refuses what is not an error object', () => {
    assert.equal(decodeErrorJSON({ code: 'not a code', name: 'X', message: 'm' }), null);
    assert.equal(decodeErrorJSON({ code: 'ERR_X', name: 'X' }), null);
    assert.equal(decodeErrorJSON('ERR_X'), null);
    assert.equal(decodeErrorJSON({ code: 'ERR_X', name: 'X', message: 'm', imageId: 5 }), null);
  });
});
