/**
 * Where images come from. {@link GlanceImageSource} speaks Glance v2; `MemoryImageSource` (in
 * `virt-imagecache/testing`) serves buffers; a driver may bring its own.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import type { ImageCacheError } from '../errors.js';
import type { BytesFrom } from '../peer/types.js';

/** What the image service says about an image (Glance v2 `GET /v2/images/{id}`). */
export interface ImageInfo {
  /** The image id. */
  readonly id: string;
  /** Image status; only `active` images have data. */
  readonly status: string;
  /** Size of the image data in bytes; null when the service does not know it. */
  readonly size: number | null;
  /** Legacy md5 checksum (hex), null when absent. */
  readonly checksum: string | null;
  /** Multihash algorithm (`os_hash_algo`, e.g. `sha512`), null when absent. */
  readonly hashAlgo: string | null;
  /** Multihash value (`os_hash_value`, hex), null when absent. */
  readonly hashValue: string | null;
  /** `disk_format` (`qcow2`, `raw`, ...), null when absent. */
  readonly diskFormat: string | null;
  /** `container_format`, null when absent. */
  readonly containerFormat: string | null;
  /** Display name, null when absent. */
  readonly name: string | null;
  /** `virtual_size` in bytes, null when absent. */
  readonly virtualSize: number | null;
}

/** Options common to every source call. */
export interface SourceCallOptions {
  /** Cancels the call; the promise rejects with `AbortedError` and sockets are closed. */
  readonly signal?: AbortSignal | undefined;
}

/** Options of {@link ImageSource.open}. */
export interface OpenImageOptions extends SourceCallOptions {
  /** First byte to read; default 0. */
  readonly offset?: number | undefined;
}

/**
 * An image service. Implementations map failures to the typed errors: `ImageNotFoundError`,
 * `NotAuthorizedError`, `ImageNotActiveError`, `ImageServiceUnavailableError`, `AbortedError`.
 */
export interface ImageSource {
  /**
   * Describes an image. Rejects with `ImageNotFoundError` for an unknown id and with
   * `ImageNotActiveError` when its status is not `active` (it has no data to read).
   */
  describe(imageId: string, options?: SourceCallOptions): Promise<ImageInfo>;
  /**
   * Opens the image's bytes from `offset` to the end, as one continuous byte stream. A source that
   * can recover from interruptions (resume, restart and skip) does so inside the stream; an
   * unrecoverable failure is emitted as the stream's error.
   */
  open(imageId: string, options?: OpenImageOptions): Promise<Readable>;
  /**
   * Optional: opens the same bytes as {@link open} as a pull-style {@link ImageReader}, which
   * reads straight into the caller's memory. The download pipeline prefers it; sources without it
   * are read through `readerFromReadable` over {@link open}. Same errors and recovery as
   * {@link open}: resolves once the first response is usable.
   */
  openReader?(imageId: string, options?: OpenImageOptions): Promise<ImageReader>;
  /**
   * Optional: told that a download of `imageId` from this source failed verification
   * (`ChecksumMismatchError`, `SizeMismatchError`). A source that reads from several origins
   * (`PeerImageSource`: the site's peers, then the image service) blames the origins other than
   * the image service that contributed bytes, stops using them for the image, and returns true:
   * the fetcher then downloads the image again from the start. False (or no hook): the error is
   * the download's.
   */
  verificationFailed?(imageId: string, error: ImageCacheError): boolean;
}

/**
 * The bytes of one image, read on demand into memory the caller provides. One `read` at a time.
 */
export interface ImageReader {
  /**
   * Reads the next bytes into `into`, resolving with how many landed there (from 1 to
   * `into.length`), or 0 once the image has ended. Bytes are only written to `into[0, n)`, and
   * nothing touches `into` after the promise settles, so the caller may then reuse it. A reader
   * may wait to fill `into` completely before resolving.
   *
   * @throws the source's typed error (e.g. `ImageServiceUnavailableError`, `AbortedError`) when
   *   the bytes cannot be had; every later call rejects too
   */
  read(into: Uint8Array): Promise<number>;
  /** Releases the connection or stream behind the reader; a pending `read` rejects. Idempotent. */
  destroy(): void;
  /**
   * Optional: the bytes each origin delivered through this reader so far (`glance` for the image
   * service, `peer:<host>` for a site peer). A reader without it delivers the image service's
   * bytes only.
   */
  bytesFrom?(): readonly BytesFrom[];
}
