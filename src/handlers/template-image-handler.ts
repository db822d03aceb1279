/**
 * Template image handlers: the one way images enter a cache (Nova blueprint "Using more effective
 * way to prepare template/base image"). A handler prepares an image's template (its cached base):
 * {@link DownloadingHandler} downloads it through the verified fetch pipeline, {@link LinkingHandler}
 * links it zero-copy from a locally attached image store and downloads only what it cannot link.
 *
 * The blueprint's three methods: `init()` after a restart, `fetchImage()` to prepare a template,
 * `removeImage()` to drop one. A manager builds its handler from the `templateImageHandler` option
 * and exposes it as `manager.templateImageHandler`; call its `init()` once when the service starts.
 *
 * @module
 */
import type { PassFailure, StagingEntry } from '../cache-entry.js';
import type { EnsureOptions, EnsureResult, FetchTarget, ImageFetcher } from '../fetch/image-fetcher.js';
import type { LockManager } from '../fetch/lock-manager.js';
import type { ResolvedImageCacheOptions, TemplateImageHandlerKind } from '../options.js';
import { DownloadingHandler } from './downloading-handler.js';
import { LinkingHandler } from './linking-handler.js';

/** What a handler needs from the cache it fills; a manager provides it. */
export interface TemplateHandlerContext {
  /** The cache's per-image locks (the fetch takes them too). */
  readonly locks: LockManager;
  /** The verified fetch pipeline; throws `UnsupportedError` when the cache has no image source. */
  fetcher(): ImageFetcher;
  /** Where `imageId` is published in the cache. */
  targetFor(imageId: string): FetchTarget;
  /** The staging leftovers in the cache right now. */
  listStaging(): Promise<readonly StagingEntry[]>;
  /** Removes one staging leftover (called with its lock held). */
  removeStaging(name: string): Promise<void>;
}

/** What `checkLinks` (the `link` handler) found, comparing the cache with the image store. */
export interface LinkCheckReport {
  /** False when the store directory cannot be read: every fetch then downloads. */
  readonly storeAvailable: boolean;
  /** Images whose cached file is the store's file (same inode): linked. */
  readonly linked: readonly string[];
  /** Images cached as a separate file of the same size (downloaded, copied or reflinked). */
  readonly copied: readonly string[];
  /**
   * Images whose cached file and store file differ in size: one of them is not the image. Reported
   * (and logged), never removed here: an instance may be using the cached one.
   */
  readonly mismatched: readonly string[];
}

/** The result of {@link TemplateImageHandler.init}. */
export interface TemplateInitReport {
  /** Staging leftovers removed: their writer is gone (their lock was free). */
  readonly removedStaging: readonly string[];
  /** Staging files kept because a live download holds their lock. */
  readonly busyStaging: readonly string[];
  /** Removals that failed. */
  readonly failures: readonly PassFailure[];
  /** For a linking handler, the re-check of links; null otherwise. */
  readonly links: LinkCheckReport | null;
}

/** Options of {@link TemplateImageHandler.init}. */
export interface TemplateInitOptions {
  /** Cancels the sweep between leftovers. */
  readonly signal?: AbortSignal | undefined;
}

/** Prepares the templates (cached bases) of a cache. */
export interface TemplateImageHandler {
  /** Which handler this is. */
  readonly kind: TemplateImageHandlerKind;
  /**
   * After a restart: removes the staging leftovers no live writer holds (a crash mid-download),
   * and, for a linking handler, re-checks cached templates against the image store.
   */
  init(options?: TemplateInitOptions): Promise<TemplateInitReport>;
  /**
   * Makes sure `imageId`'s template is published at `target` (default: the cache's target of the
   * image): single flight, under the image's lock, verified; touches it when present.
   */
  fetchImage(imageId: string, target?: FetchTarget, options?: EnsureOptions): Promise<EnsureResult>;
  /**
   * Removes `imageId`'s template under its lock; false when there was none. It does not check
   * whether instances use the image: the periodic pass does that; call this for images it found
   * unused, or from an operator's purge.
   */
  removeImage(imageId: string): Promise<boolean>;
}

/**
 * The handler the options ask for: `download` (default) or `link` from
 * `templateImageStorePath`, verifying linked files as `templateImageLinkVerification` says.
 */
export function createTemplateImageHandler(
  options: ResolvedImageCacheOptions,
  context: TemplateHandlerContext,
): TemplateImageHandler {
  if (options.templateImageHandler === 'link' && options.templateImageStorePath !== null) {
    return new LinkingHandler(context, {
      storePath: options.templateImageStorePath,
      verification: options.templateImageLinkVerification,
    });
  }
  return new DownloadingHandler(context);
}
