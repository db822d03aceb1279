import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  AbortedError,
  ChecksumMismatchError,
  DiskFullError,
  ImageCacheError,
  ImageNotActiveError,
  ImageNotFoundError,
  ImageTooLargeError,
  InvalidConfigError,
  InvalidImageIdError,
  InvalidImageMetadataError,
  NotAuthorizedError,
  SizeMismatchError,
  UnsupportedError,
  VolumeGroupError,
  isImageCacheError,
} from '../../src/index.js';

describe('errors', () => {
  const id = 'fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0';
  const cases: [ImageCacheError, string, boolean][] = [
    [new ImageNotFoundError(id), 'ERR_IMAGE_NOT_FOUND', true],
    [new ImageNotActiveError(id, 'queued'), 'ERR_IMAGE_NOT_ACTIVE', true],
    [new NotAuthorizedError(id, 401), 'ERR_NOT_AUTHORIZED', true],
    [new NotAuthorizedError(id, 403), 'ERR_NOT_AUTHORIZED', true],
    [new ChecksumMismatchError(id, 'sha512', 'aa', 'bb'), 'ERR_CHECKSUM_MISMATCH', true],
    [new SizeMismatchError(id, 10, 9), 'ERR_SIZE_MISMATCH', true],
    [new ImageTooLargeError(id, 10, 5), 'ERR_IMAGE_TOO_LARGE', true],
    [new DiskFullError(id, 10, 5, '/var/lib/nova/instances/_base'), 'ERR_DISK_FULL', true],
    [new InvalidImageIdError('a/b', 'it contains a path separator'), 'ERR_INVALID_IMAGE_ID', false],
    [new InvalidConfigError('managerInterval', 'an integer from -1 up', 'x'), 'ERR_INVALID_CONFIG', false],
    [new AbortedError('Download', id), 'ERR_ABORTED', true],
    [new UnsupportedError('Pre-caching', 'this backend has no cache.', id), 'ERR_UNSUPPORTED', true],
    [new VolumeGroupError('clone', 'b_inst_0001', 'failed', { imageId: id, cause: new Error('HTTP 500') }), 'ERR_VOLUME_GROUP', true],
    [new InvalidImageMetadataError(id, 'size', -5, 'a whole number of bytes from 0 up'), 'ERR_INVALID_IMAGE_METADATA', true],
  ];
  for (const [error, code, namesImage] of cases) {
    it(`${error.name} has code ${code}, names the image and says what to do`, () => {
      assert.ok(error instanceof ImageCacheError);
      assert.ok(error instanceof Error);
      assert.ok(isImageCacheError(error));
      assert.equal(error.code, code);
      assert.equal(error.name, error.constructor.name);
      if (namesImage) {
        assert.ok(error.message.includes(id), error.message);
        assert.equal(error.imageId, id);
      }
      assert.match(error.message, /[:;.] .+/);
    });
  }

  it('keeps the cause', () => {
    const cause = new Error('ECONNRESET');
    assert.equal(new AbortedError('Download', id, cause).cause, cause);
  });

  it('isImageCacheError rejects look-alikes', () => {
    assert.equal(isImageCacheError({ code: 'ERR_ABORTED' }), false);
    assert.equal(isImageCacheError(new Error('x')), false);
    assert.equal(isImageCacheError(null), false);
  });
});
