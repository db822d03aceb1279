/**
 * Pull-style reading of an image's bytes: the consumer hands over the memory the bytes must land
 * in, so a source that can read straight into it (a socket with a caller-supplied read buffer)
 * does no per-chunk allocation and no second copy. {@link readerFromReadable} adapts any
 * `Readable` (what {@link ImageSource.open} returns) to the same shape.
 *
 * @module
 */
import { Readable } from 'node:stream';
import { AbortedError } from '../errors.js';
import type { ImageReader, ImageSource, OpenImageOptions } from './image-source.js';

export type { ImageReader } from './image-source.js';

/** Options of {@link readerFromReadable}. */
export interface ReadableReaderOptions {
  /** Rejects a pending read with `AbortedError` and destroys the stream when it fires. */
  readonly signal?: AbortSignal | undefined;
  /** The image, for the `AbortedError`. */
  readonly imageId?: string | undefined;
}

/** A stream that ended before its end: what a `Readable` destroyed mid-way reports. */
function prematureClose(): Error {
  return Object.assign(new Error('the image stream closed before its end'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}

/**
 * An {@link ImageReader} over a byte `Readable`. Each read copies what the stream has buffered
 * into `into` (chunks are taken with `stream.read()`, not through an async iterator, which is
 * cheaper per chunk) and resolves as soon as `into` is full or the stream's buffer is empty;
 * it waits for `'readable'` only when nothing is buffered. A chunk larger than the room left is
 * split, its rest kept for the next read.
 */
export function readerFromReadable(stream: Readable, options: ReadableReaderOptions = {}): ImageReader {
  return new ReadableImageReader(stream, options);
}

class ReadableImageReader implements ImageReader {
  readonly #stream: Readable;
  readonly #options: ReadableReaderOptions;
  /** The unread rest of the last chunk taken from the stream. */
  #leftover: Uint8Array | undefined;
  #failure: Error | undefined;
  #ended = false;
  #wake: (() => void) | undefined;
  readonly #onEvent = (): void => {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  };
  readonly #onError = (error: Error): void => {
    this.#failure ??= error;
    this.#onEvent();
  };
  readonly #onAbort = (): void => {
    const { signal, imageId } = this.#options;
    this.#failure ??= new AbortedError('Download', imageId, signal?.reason);
    this.#stream.destroy();
    this.#onEvent();
  };

  constructor(stream: Readable, options: ReadableReaderOptions) {
    this.#stream = stream;
    this.#options = options;
    stream.on('readable', this.#onEvent);
    stream.on('end', this.#onEvent);
    stream.on('close', this.#onEvent);
    stream.on('error', this.#onError);
    if (options.signal?.aborted === true) this.#onAbort();
    else options.signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  async read(into: Uint8Array): Promise<number> {
    for (;;) {
      if (this.#failure !== undefined) throw this.#failure;
      const n = this.#take(into);
      if (n > 0) return n;
      if (this.#ended || this.#stream.readableEnded) {
        this.#ended = true;
        this.#release();
        return 0;
      }
      if (this.#stream.destroyed) {
        this.#failure = this.#stream.errored ?? prematureClose();
        continue;
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  destroy(): void {
    this.#failure ??= prematureClose();
    this.#release();
    this.#stream.destroy();
    this.#onEvent();
  }

  /** Copies what is buffered into `into`; returns the byte count. */
  #take(into: Uint8Array): number {
    let n = 0;
    while (n < into.length) {
      let chunk = this.#leftover;
      this.#leftover = undefined;
      chunk ??= (this.#stream.read() as Uint8Array | null) ?? undefined;
      if (chunk === undefined) break;
      const count = Math.min(chunk.length, into.length - n);
      into.set(count === chunk.length ? chunk : chunk.subarray(0, count), n);
      if (count < chunk.length) this.#leftover = chunk.subarray(count);
      n += count;
    }
    return n;
  }

  #release(): void {
    this.#options.signal?.removeEventListener('abort', this.#onAbort);
  }
}

/**
 * Opens `imageId` of `source` as an {@link ImageReader}: through {@link ImageSource.openReader}
 * when the source has it, otherwise over the stream {@link ImageSource.open} returns.
 */
export async function openImageReader(source: ImageSource, imageId: string, options: OpenImageOptions = {}): Promise<ImageReader> {
  if (source.openReader !== undefined) return source.openReader(imageId, options);
  return readerFromReadable(await source.open(imageId, options), { signal: options.signal, imageId });
}

/** Bytes per chunk of {@link readableFromReader}: small enough to flow at once from a slow server. */
const READABLE_CHUNK_BYTES = 64 * 1024;

/**
 * A byte `Readable` over an {@link ImageReader} (for `ImageSource.open` of a source whose native
 * shape is the reader). Destroying the stream destroys the reader; the signal, when it fires,
 * destroys the stream with `AbortedError` at once, even while nothing is being read.
 */
export function readableFromReader(reader: ImageReader, options: ReadableReaderOptions = {}): Readable {
  const { signal, imageId } = options;
  const onAbort = (): void => {
    stream.destroy(new AbortedError('Download', imageId, signal?.reason));
  };
  const stream = new Readable({
    highWaterMark: 16 * READABLE_CHUNK_BYTES,
    read() {
      const chunk = Buffer.allocUnsafe(READABLE_CHUNK_BYTES);
      reader.read(chunk).then(
        (n) => {
          this.push(n === 0 ? null : chunk.subarray(0, n));
        },
        (error: unknown) => {
          this.destroy(error instanceof Error ? error : new Error(String(error)));
        },
      );
    },
    destroy(error, callback) {
      signal?.removeEventListener('abort', onAbort);
      reader.destroy();
      callback(error);
    },
  });
  signal?.addEventListener('abort', onAbort, { once: true });
  // Start filling the buffer now, as a response stream does, not on the first read.
  stream.read(0);
  return stream;
}
