/**
 * The one path through which every image enters any cache.
 *
 * ```
 * ensure(imageId, target)
 *   └ single flight (this process: concurrent callers share one run)
 *      └ per-image lock (other processes and hosts: lock dir on the shared storage)
 *         ├ target exists → onExisting (touch) → 'existing'
 *         └ describe → limits → download slot (p-limit) → stream, hash, count → staging
 *                    → verify → fsync → rename → 'cached'
 * ```
 *
 * The last step is `verifyAndPublish` (publish.ts), which a local fill (a link from an image store)
 * goes through too.
 *
 * The existence test is repeated inside the lock, so N callers in M processes download once.
 *
 * A download that fails verification is downloaded again from the start only when its source
 * blames one of its origins for it (`ImageSource.verificationFailed`: a `PeerImageSource` blames
 * the peers that served bytes, and skips them from then on); otherwise the failure is the fetch's.
 *
 * @module
 */
import pLimit from 'p-limit';
import type { LimitFunction } from 'p-limit';
import { raceAbort, throwIfAborted } from '../abort.js';
import { ChecksumMismatchError, SizeMismatchError } from '../errors.js';
import { checkImageId, vouchFor } from '../image-id.js';
import type { ImageId } from '../image-id.js';
import { createLogger } from '../log.js';
import type { BytesFrom } from '../peer/types.js';
import type { ImageInfo, ImageSource } from '../source/image-source.js';
import { downloadToSink } from './download.js';
import type { DownloadProgress, DownloadResult, ProgressListener } from './download.js';
import type { LockManager } from './lock-manager.js';
import { SingleFlight } from './single-flight.js';
import { assertImageSize } from './verifier.js';
import type { StagingSink } from './staging.js';

const log = createLogger('fetch');

/**
 * Downloads again after a verification failure its source blamed on an origin (a peer). The
 * source blames each origin once and then skips it, so it runs out of origins to blame (at most
 * one retry per peer); this bound holds whatever a source answers.
 */
const MAX_BLAMED_RETRIES = 16;

/**
 * True when `error` is a verification failure and `source` blamed it on one of its origins (which
 * it will not use again for the image): a fresh download may then succeed.
 */
function blamedAnOrigin(source: ImageSource, imageId: string, error: unknown): boolean {
  if (!(error instanceof ChecksumMismatchError || error instanceof SizeMismatchError)) return false;
  return source.verificationFailed?.(imageId, error) === true;
}

/** Where one image is published. Backends provide one per image. */
export interface FetchTarget {
  /** Name of the entry in its cache; also the lock name. Must be safe as a file name. */
  readonly name: string;
  /** True when the complete image is already published under the final name. */
  exists(): Promise<boolean>;
  /** Creates a staging sink for the image described by `info`; `signal` cancels the fetch. */
  createSink(info: ImageInfo, signal?: AbortSignal): Promise<StagingSink>;
  /**
   * The final file path, when the target publishes the image as a file: a template image handler
   * may then link the image into place instead of copying it.
   */
  readonly filePath?: string | undefined;
  /** Removes the published image; false when there was none. Call it under the target's lock. */
  remove?(): Promise<boolean>;
}

/** What a {@link LocalFill} may use. */
export interface LocalFillContext {
  /** Cancels the fill. */
  readonly signal: AbortSignal;
  /**
   * Streams the image from `source` into the target's staging sink, verified (size, digest) and
   * published exactly as a download is, with the fetcher's limits and progress listeners.
   */
  downloadFrom(source: ImageSource): Promise<DownloadResult>;
}

/**
 * Publishes an image at its target by other means than a download from the image source (a link
 * from a local image store, a read of a local copy). Runs under the image's lock once the image is
 * described; resolves to what it verified, or null to let the download happen.
 */
export type LocalFill = (info: ImageInfo, context: LocalFillContext) => Promise<DownloadResult | null>;

/** Options of {@link ImageFetcher.ensure}. */
export interface EnsureOptions {
  /** Cancels this caller's wait (and the download, once every caller has aborted). */
  readonly signal?: AbortSignal | undefined;
  /** Download progress. Every concurrent caller of the same image receives it. */
  readonly onProgress?: ProgressListener | undefined;
  /** Runs under the lock when the image is already present (the hit path: touch it). */
  readonly onExisting?: (() => Promise<void>) | undefined;
  /**
   * Runs under the lock before a download starts, once the size is known: the place to check
   * free space and reclaim (throwing aborts the fetch before a byte is written). `signal` is the
   * download's own: it aborts only once every caller sharing the download has given up.
   */
  readonly beforeDownload?: ((info: ImageInfo, signal: AbortSignal) => Promise<void>) | undefined;
  /** Tried before a download; see {@link LocalFill}. */
  readonly fillLocally?: LocalFill | undefined;
  /** Runs under the lock right after the image was published. */
  readonly afterDownload?: ((info: ImageInfo) => Promise<void>) | undefined;
  /** Overrides the fetcher's speed cap for this image, bytes per second. */
  readonly bytesPerSecond?: number | undefined;
  /**
   * The image source for this call instead of the fetcher's (e.g. a `PeerImageSource` over it):
   * it describes and downloads the image. Callers joining a fetch already in flight for the same
   * image share that fetch, and so the first caller's source.
   */
  readonly source?: ImageSource | undefined;
}

/** The outcome of {@link ImageFetcher.ensure}. */
export interface EnsureResult {
  /** `cached`: downloaded now; `existing`: was already present (and was touched). */
  readonly status: 'cached' | 'existing';
  /** True when this caller joined a fetch another caller in this process had started. */
  readonly shared: boolean;
  /** Bytes downloaded (0 for `existing`). */
  readonly bytes: number;
  /** The verified digest's algorithm, null for `existing` or when none was published. */
  readonly algorithm: string | null;
  /** The verified digest, null for `existing` or when none was published. */
  readonly digest: string | null;
  /**
   * Bytes of the image an interrupted earlier download had kept and this one resumed from (not
   * fetched again: `bytes` minus this is what came over the wire); 0 when it started from zero.
   */
  readonly resumedFromBytes: number;
  /** Time from the call to the outcome, ms. */
  readonly durationMs: number;
  /** Where the downloaded bytes came from, per origin (empty for `existing` and a local fill). */
  readonly bytesFrom: readonly BytesFrom[];
}

/** Options of {@link ImageFetcher}. */
export interface ImageFetcherOptions {
  /** Where images come from. */
  readonly source: ImageSource;
  /** Per-image locks (with a lock directory for cross-process exclusion). */
  readonly locks: LockManager;
  /** Downloads running at once (ignored when `limiter` is given). Default 4. */
  readonly maxConcurrentDownloads?: number | undefined;
  /** A limiter shared with other fetchers, so one process-wide limit holds. */
  readonly limiter?: LimitFunction | undefined;
  /** Size limit, bytes. Default: none. */
  readonly maxImageSizeBytes?: number | undefined;
  /** Speed cap per download, bytes per second. Default: none. */
  readonly bytesPerSecond?: number | undefined;
  /** Fail when the image service publishes no checksum. Default false. */
  readonly requireChecksum?: boolean | undefined;
}

type Outcome = Omit<EnsureResult, 'shared' | 'durationMs'>;

/** Fetches images into caches: single flight, locked, verified, atomic. */
export class ImageFetcher {
  /** The image source. */
  readonly source: ImageSource;
  /** The lock manager. */
  readonly locks: LockManager;
  readonly #limit: LimitFunction;
  readonly #options: ImageFetcherOptions;
  readonly #flights = new SingleFlight<Outcome>();
  readonly #listeners = new Map<string, Set<ProgressListener>>();

  /** @param options - source, locks and limits */
  constructor(options: ImageFetcherOptions) {
    this.source = options.source;
    this.locks = options.locks;
    this.#options = options;
    this.#limit = options.limiter ?? pLimit(options.maxConcurrentDownloads ?? 4);
  }

  /** Downloads running or queued for a download slot right now. */
  get activeDownloads(): number {
    return this.#limit.activeCount + this.#limit.pendingCount;
  }

  /**
   * Makes sure `imageId` is published at `target`: downloads it if missing, or runs
   * `onExisting` (touch) if present. Resolves only once the image is complete and verified.
   *
   * @throws `InvalidImageIdError` before anything touches the filesystem; the source's typed errors;
   *   `InvalidImageMetadataError`, `ChecksumMismatchError`, `SizeMismatchError`, `ImageTooLargeError`, `DiskFullError`,
   *   `AbortedError`, `LockTimeoutError`
   */
  async ensure(imageId: string, target: FetchTarget, options: EnsureOptions = {}): Promise<EnsureResult> {
    checkImageId(imageId, options);
    const started = performance.now();
    const { signal, onProgress } = options;
    throwIfAborted(signal, 'Caching', imageId);
    let listeners = this.#listeners.get(target.name);
    if (listeners === undefined) {
      listeners = new Set();
      this.#listeners.set(target.name, listeners);
    }
    const listenerSet = listeners;
    if (onProgress !== undefined) listenerSet.add(onProgress);
    try {
      const { value, shared } = await this.#flights.run(
        target.name,
        (flightSignal) => this.#ensureLocked(imageId, target, options, flightSignal, listenerSet),
        signal,
        `Caching image ${imageId}`,
      );
      return { ...value, shared, durationMs: performance.now() - started };
    } finally {
      if (onProgress !== undefined) listenerSet.delete(onProgress);
      if (listenerSet.size === 0 && !this.#flights.has(target.name)) this.#listeners.delete(target.name);
    }
  }

  async #ensureLocked(
    imageId: ImageId,
    target: FetchTarget,
    options: EnsureOptions,
    signal: AbortSignal,
    listeners: Set<ProgressListener>,
  ): Promise<Outcome> {
    return this.locks.withLock(
      target.name,
      async () => {
        if (await target.exists()) {
          await options.onExisting?.();
          log('image %s already cached as %s', imageId, target.name);
          return { status: 'existing', bytes: 0, algorithm: null, digest: null, bytesFrom: [], resumedFromBytes: 0 };
        }
        const source = options.source ?? this.source;
        const info = await source.describe(imageId, vouchFor(imageId, { signal }));
        // Any source may be wrong about the size; check before a byte is written.
        if (info.size !== null) assertImageSize(imageId, info.size);
        await options.beforeDownload?.(info, signal);
        const downloadFrom = async (from: ImageSource): Promise<DownloadResult> => {
          for (let retry = 0; ; retry++) {
            const sink = await target.createSink(info, signal);
            try {
              return await downloadToSink(
                vouchFor(imageId, {
                  imageId,
                  info,
                  source: from,
                  sink,
                  signal,
                  onProgress: (progress: DownloadProgress) => {
                    for (const listener of listeners) listener(progress);
                  },
                  bytesPerSecond: options.bytesPerSecond ?? this.#options.bytesPerSecond,
                  maxImageSizeBytes: this.#options.maxImageSizeBytes,
                  requireChecksum: this.#options.requireChecksum,
                }),
              );
            } catch (error) {
              if (retry >= MAX_BLAMED_RETRIES || !blamedAnOrigin(from, imageId, error)) throw error;
              log('image %s failed verification and its source blamed an origin: downloading again from the start', imageId);
            }
          }
        };
        let running: Promise<DownloadResult> | undefined;
        let result: DownloadResult;
        try {
          result =
            (await options.fillLocally?.(info, { signal, downloadFrom })) ??
            (await raceAbort(
              this.#limit(async () => {
                throwIfAborted(signal, 'Download', imageId);
                log('downloading image %s (%s bytes) into %s', imageId, info.size ?? '?', target.name);
                running = downloadFrom(source);
                return running;
              }),
              signal,
              'Download',
              imageId,
            ));
        } catch (err) {
          // The lock stays held until the aborted download has kept or discarded its staging, so
          // the next holder never adopts a staging file that is still being written.
          await running?.catch(() => undefined);
          throw err;
        }
        await options.afterDownload?.(info);
        const { resumedFromBytes = 0, ...verified } = result;
        log('cached image %s as %s: %d bytes (%d kept from an interrupted download), %s %s', imageId, target.name, result.bytes, resumedFromBytes, result.algorithm, result.digest);
        return { status: 'cached', ...verified, resumedFromBytes };
      },
      { signal, imageId },
    );
  }
}
