/**
 * The template image handler interfaces (types only): what a handler is, and what it needs from
 * the cache it fills. The implementations import these; the factory (template-image-handler.ts)
 * imports the implementations.
 *
 * @module
 */
import type { PassFailure } from '../cache-entry.js';
import type { EnsureOptions, EnsureResult, FetchTarget, ImageFetcher } from '../fetch/image-fetcher.js';
import type { LockManager } from '../fetch/lock-manager.js';
import type { TemplateImageHandlerKind } from '../options.js';

/** What a handler needs from the cache it fills; a manager provides it. */
export interface TemplateHandlerContext {
  /** The cache's per-image locks (the fetch takes them too). */
  readonly locks: LockManager;
  /** The verified fetch pipeline; throws `UnsupportedError` when the cache has no image source. */
  fetcher(): ImageFetcher;
  /** Where `imageId` is published in the cache. */
  targetFor(imageId: string): FetchTarget;
  /**
   * Removes every staging leftover whose writer is gone (its lock is free), each under its lock;
   * leftovers of unknown origin (no lock name) are left to the periodic pass's age rule.
   */
  sweepStaging(options?: TemplateInitOptions): Promise<StagingSweepReport>;
}

/** What a staging sweep did: the leftovers removed, the ones a live writer holds, the failures. */
export interface StagingSweepReport {
  /** Leftovers removed (also counted in the manager's stats and emitted as `removed`). */
  readonly removed: readonly string[];
  /** Leftovers kept because a live writer holds their lock. */
  readonly busy: readonly string[];
  /** Removals that failed. */
  readonly failures: readonly PassFailure[];
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
