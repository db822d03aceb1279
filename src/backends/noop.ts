/**
 * The no-op backend, for storage that caches images itself: a PowerVM shared storage pool, with
 * an image LU per image and instance disks as linked clones refcounted by the storage
 * (docs/nova-parity.md, powervm ssp), or Ceph rbd (clones of a protected snapshot). Like
 * nova-powervm's SSP adapter it reports
 * `hasImageCache: false`; the periodic pass does nothing; `cacheImage` is unsupported, so
 * pre-caching reports `unsupported` as Nova does.
 *
 * An instance disk is made by the storage-level linked clone hook when there is one, which may use
 * the verified download to fill its storage-level image once; otherwise the image is streamed,
 * verified, into the disk the driver opens (nova in-tree PowerVM: a fresh upload per instance).
 *
 * @module
 */
import pLimit from 'p-limit';
import type { LimitFunction } from 'p-limit';
import type { BaseImageScan } from '../cache-entry.js';
import { UnsupportedError } from '../errors.js';
import { downloadToSink } from '../fetch/download.js';
import type { DownloadResult, ProgressListener } from '../fetch/download.js';
import type { FetchTarget } from '../fetch/image-fetcher.js';
import type { StagingSink } from '../fetch/staging.js';
import { assertValidImageId } from '../image-id.js';
import { ImageManager } from '../manager.js';
import type { CacheImageOptions, CacheImageResult, ImageManagerOptions } from '../manager.js';
import type { ImageInfo } from '../source/image-source.js';

/** What a linked clone or a copy is asked to produce. */
export interface NoopDiskRequest {
  /** The image. */
  readonly imageId: string;
  /** The instance the disk is for. */
  readonly instanceUuid: string;
  /** The disk's size in bytes (the flavor's root disk); 0 or omitted: the image's size. */
  readonly sizeBytes?: number | undefined;
  /** Cancels the call. */
  readonly signal?: AbortSignal | undefined;
  /** Download progress of a copy or of a storage-level image fill. */
  readonly onProgress?: ProgressListener | undefined;
}

/** What the linked clone hook receives. */
export interface LinkedCloneRequest extends NoopDiskRequest {
  /** The image's metadata (size, checksum, name): the key of a storage-level image. */
  readonly info: ImageInfo;
  /**
   * Streams the image, verified (size and digest), into `sink`: the way to fill the storage-level
   * image (an SSP image LU, an rbd base image) the first time, before cloning from it.
   */
  readonly download: (sink: StagingSink) => Promise<DownloadResult>;
}

/**
 * Creates the instance disk as a storage-level linked clone (SSP `crt_lu(..., clone=image_lu)`,
 * `rbd clone`) and resolves to its name, or to null when it cannot (the storage cannot clone this
 * image here): the image is then copied.
 */
export type LinkedCloneHook = (request: LinkedCloneRequest) => Promise<string | null>;

/** Opens the instance disk a copy is streamed into; the sink is committed only when verified. */
export type OpenInstanceDisk = (request: NoopDiskRequest, info: ImageInfo) => Promise<StagingSink>;

/** Options of {@link NoopImageManager}. */
export interface NoopImageManagerOptions extends ImageManagerOptions {
  /** The storage-level linked clone; tried first. */
  readonly linkedClone?: LinkedCloneHook | undefined;
  /** Where a copy goes when there is no linked clone. */
  readonly openInstanceDisk?: OpenInstanceDisk | undefined;
}

/** How an instance disk was made by {@link NoopImageManager.createInstanceDisk}. */
export interface NoopDiskResult {
  /** `linked-clone`: by the hook; `copy`: streamed from the image source into the opened disk. */
  readonly method: 'linked-clone' | 'copy';
  /** The disk's name as the hook returned it; null for a copy (the driver opened it). */
  readonly disk: string | null;
  /** Bytes streamed for a copy (0 for a linked clone). */
  readonly bytes: number;
  /** The verified digest of a copy, when the image service published one. */
  readonly digest: string | null;
}

/** The image manager of storage that needs no image cache. */
export class NoopImageManager extends ImageManager<never> {
  /** No cache: Nova's periodic pass returns early for such drivers. */
  override readonly hasImageCache = false;
  readonly #linkedClone: LinkedCloneHook | undefined;
  readonly #openInstanceDisk: OpenInstanceDisk | undefined;
  readonly #limit: LimitFunction;

  /** @param options - host, image source, hooks and cache options */
  constructor(options: NoopImageManagerOptions) {
    const { linkedClone, openInstanceDisk, ...rest } = options;
    super(rest, {}, 'noop');
    this.#linkedClone = linkedClone;
    this.#openInstanceDisk = openInstanceDisk;
    this.#limit = rest.downloadLimiter ?? pLimit(this.options.maxConcurrentDownloads);
  }

  /** There is never a cache to scan, so a pass reports `skipped: 'no-base'` and lists no instances. */
  getBase(): Promise<null> {
    return Promise.resolve(null);
  }

  /** Nothing is cached. */
  scanBaseImages(): Promise<BaseImageScan> {
    return Promise.resolve({ entries: [], staging: [] });
  }

  /**
   * Always rejects with `UnsupportedError` (code `ERR_UNSUPPORTED`): there is no cache to fill, and
   * Nova's pre-caching reports such a host's images as `unsupported`.
   */
  override cacheImage(imageId: string, _options?: CacheImageOptions): Promise<CacheImageResult> {
    return Promise.resolve().then(() => {
      assertValidImageId(imageId);
      throw new UnsupportedError(
        'Caching an image',
        'this backend keeps no image cache (the storage clones images itself, like a shared storage pool or rbd); pre-caching reports it as unsupported.',
        imageId,
      );
    });
  }

  /**
   * Creates an instance disk: the linked clone hook first; when there is none or it declines, the
   * image is streamed from the source, verified, into the disk `openInstanceDisk` opens.
   *
   * @throws `UnsupportedError` when neither way is available; the image source's and the
   *   verification's typed errors
   */
  async createInstanceDisk(request: NoopDiskRequest): Promise<NoopDiskResult> {
    const { imageId, signal } = request;
    assertValidImageId(imageId);
    const source = this.fetcher.source;
    const info = await source.describe(imageId, { signal });
    const download = (sink: StagingSink): Promise<DownloadResult> =>
      this.#limit(() =>
        downloadToSink({
          imageId,
          info,
          source,
          sink,
          signal,
          onProgress: request.onProgress,
          bytesPerSecond: this.options.downloadBytesPerSecond,
          maxImageSizeBytes: this.options.maxImageSizeBytes,
          requireChecksum: this.options.requireChecksum,
        }),
      );
    if (this.#linkedClone !== undefined) {
      const disk = await this.#linkedClone({ ...request, info, download });
      if (disk !== null) {
        this.log('linked clone %s of %s for %s', disk, imageId, request.instanceUuid);
        return { method: 'linked-clone', disk, bytes: 0, digest: null };
      }
    }
    if (this.#openInstanceDisk === undefined) {
      throw new UnsupportedError(
        'Creating an instance disk',
        'the linked clone hook declined and no `openInstanceDisk` was given to copy the image into; give one of them.',
        imageId,
      );
    }
    const copied = await download(await this.#openInstanceDisk(request, info));
    return { method: 'copy', disk: null, bytes: copied.bytes, digest: copied.digest };
  }

  /** Never called: there is no cache to publish into. */
  protected fetchTargetFor(imageId: string): FetchTarget {
    throw new UnsupportedError('Publishing an image', 'this backend keeps no image cache.', imageId);
  }
}
