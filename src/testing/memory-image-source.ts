/**
 * {@link MemoryImageSource}: an {@link ImageSource} serving in-memory buffers, with call and byte
 * counters, for unit tests that need no sockets.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  AbortedError,
  ImageNotActiveError,
  ImageNotFoundError,
  ImageServiceUnavailableError,
  InvalidConfigError,
} from '../errors.js';
import { assertValidImageId } from '../image-id.js';
import type { ImageInfo, ImageSource, OpenImageOptions, SourceCallOptions } from '../source/image-source.js';

/** Slices pushed at a time: big enough to be cheap, small enough that aborts land mid-stream. */
const CHUNK_BYTES = 256 * 1024;

/** An image held by a {@link MemoryImageSource}. */
export interface MemoryImage {
  /** The image id. */
  readonly id: string;
  /** The image's bytes. They are not copied: do not modify them while the source is in use. */
  readonly data: Uint8Array;
  /** Glance status. Default `active`. */
  readonly status?: string | undefined;
  /** `disk_format`. Default `raw`. */
  readonly diskFormat?: string | undefined;
  /** `os_hash_algo`, any algorithm node:crypto knows. Default `sha512`; `null` for md5 only. */
  readonly hashAlgo?: string | null | undefined;
  /** Display name. Default: the id. */
  readonly name?: string | undefined;
}

interface Entry {
  readonly image: MemoryImage;
  readonly info: ImageInfo;
}

interface Counters {
  describe: number;
  open: number;
  bytes: number;
}

/**
 * Serves images from memory. `describe` and `open` fail like a real image service would:
 * `ImageNotFoundError` for an unknown id, `ImageNotActiveError` for a non-`active` image,
 * `AbortedError` when the signal fires.
 *
 * @example
 * ```ts
 * const source = new MemoryImageSource([{ id, data: Buffer.from('disk bytes') }]);
 * const info = await source.describe(id); // checksum and os_hash_value computed from data
 * ```
 */
export class MemoryImageSource implements ImageSource {
  readonly #images = new Map<string, Entry>();
  readonly #counters = new Map<string, Counters>();

  /** @param images - images served from the start */
  constructor(images: Iterable<MemoryImage> = []) {
    for (const image of images) this.add(image);
  }

  /**
   * Adds an image, or replaces the one with the same id; its md5 `checksum` and `os_hash_value`
   * are computed from `data` now.
   */
  add(image: MemoryImage): void {
    assertValidImageId(image.id);
    if (!(image.data instanceof Uint8Array)) {
      throw new InvalidConfigError('data', 'a Uint8Array', typeof image.data);
    }
    const hashAlgo = image.hashAlgo === undefined ? 'sha512' : image.hashAlgo;
    const diskFormat = image.diskFormat ?? 'raw';
    const info: ImageInfo = {
      id: image.id,
      status: image.status ?? 'active',
      size: image.data.length,
      checksum: createHash('md5').update(image.data).digest('hex'),
      hashAlgo,
      hashValue: hashAlgo === null ? null : createHash(hashAlgo).update(image.data).digest('hex'),
      diskFormat,
      containerFormat: 'bare',
      name: image.name ?? image.id,
      virtualSize: diskFormat === 'raw' ? image.data.length : null,
    };
    this.#images.set(image.id, { image, info });
  }

  /** Removes an image; true when it existed. Later calls for it fail with `ImageNotFoundError`. */
  remove(imageId: string): boolean {
    return this.#images.delete(imageId);
  }

  /** How many times `describe` was called for the image, failed calls included. */
  describeCalls(imageId: string): number {
    return this.#counters.get(imageId)?.describe ?? 0;
  }

  /** How many times `open` was called for the image, failed calls included. */
  openCalls(imageId: string): number {
    return this.#counters.get(imageId)?.open ?? 0;
  }

  /** Bytes of the image pushed into streams returned by `open` (read or buffered by consumers). */
  bytesServed(imageId: string): number {
    return this.#counters.get(imageId)?.bytes ?? 0;
  }

  /** Describes an active image. */
  describe(imageId: string, options: SourceCallOptions = {}): Promise<ImageInfo> {
    // A throw inside the executor becomes the rejection, so validation errors are async too.
    return new Promise((resolve) => {
      assertValidImageId(imageId);
      this.#count(imageId).describe++;
      if (options.signal?.aborted === true) throw new AbortedError('Describe', imageId, options.signal.reason);
      resolve(this.#active(imageId).info);
    });
  }

  /**
   * Streams the image's bytes from `offset`. An offset past the end fails with
   * `ImageServiceUnavailableError`, as a 416 from Glance would.
   */
  open(imageId: string, options: OpenImageOptions = {}): Promise<Readable> {
    return new Promise((resolve) => {
      assertValidImageId(imageId);
      const counters = this.#count(imageId);
      counters.open++;
      const { signal } = options;
      if (signal?.aborted === true) throw new AbortedError('Download', imageId, signal.reason);
      const offset = options.offset ?? 0;
      if (!Number.isSafeInteger(offset) || offset < 0) {
        throw new InvalidConfigError('offset', 'an integer from 0 up', offset);
      }
      const { data } = this.#active(imageId).image;
      if (offset > data.length) {
        throw new ImageServiceUnavailableError(imageId, 1, new RangeError(`offset ${offset} is past the end (${data.length} bytes)`));
      }
      resolve(this.#stream(imageId, data, offset, counters, signal));
    });
  }

  #stream(imageId: string, data: Uint8Array, offset: number, counters: Counters, signal: AbortSignal | undefined): Readable {
    let position = offset;
    const onAbort = (): void => {
      stream.destroy(new AbortedError('Download', imageId, signal?.reason));
    };
    const stream = new Readable({
      highWaterMark: CHUNK_BYTES,
      read() {
        while (position < data.length) {
          const chunk = data.subarray(position, Math.min(position + CHUNK_BYTES, data.length));
          position += chunk.length;
          counters.bytes += chunk.length;
          if (!this.push(chunk)) return;
        }
        this.push(null);
      },
      destroy(error, callback) {
        signal?.removeEventListener('abort', onAbort);
        callback(error);
      },
    });
    signal?.addEventListener('abort', onAbort, { once: true });
    return stream;
  }

  #active(imageId: string): Entry {
    const entry = this.#images.get(imageId);
    if (entry === undefined) throw new ImageNotFoundError(imageId);
    if (entry.info.status !== 'active') throw new ImageNotActiveError(imageId, entry.info.status);
    return entry;
  }

  #count(imageId: string): Counters {
    let counters = this.#counters.get(imageId);
    if (counters === undefined) {
      counters = { describe: 0, open: 0, bytes: 0 };
      this.#counters.set(imageId, counters);
    }
    return counters;
  }
}
