/**
 * {@link DownloadingHandler}: the blueprint's "downloading" way, Nova's only way. Templates are
 * downloaded through the verified fetch pipeline (single flight, per-image lock, size and digest
 * checked, atomic publish).
 *
 * @module
 */
import { UnsupportedError } from '../errors.js';
import type { EnsureOptions, EnsureResult, FetchTarget } from '../fetch/image-fetcher.js';
import { assertValidImageId } from '../image-id.js';
import type { TemplateImageHandlerKind } from '../options.js';
import type {
  TemplateHandlerContext,
  TemplateImageHandler,
  TemplateInitOptions,
  TemplateInitReport,
} from './types.js';

/** Prepares templates by downloading them from the image source. */
export class DownloadingHandler implements TemplateImageHandler {
  /** {@inheritDoc TemplateImageHandler.kind} */
  readonly kind: TemplateImageHandlerKind = 'download';
  /** The cache this handler fills. */
  protected readonly context: TemplateHandlerContext;

  /** @param context - the cache's locks, fetcher, targets and staging */
  constructor(context: TemplateHandlerContext) {
    this.context = context;
  }

  /**
   * Removes every staging leftover whose lock is free. A download holds its image's lock from the
   * first byte to the publish, so a free lock means the writer died (a crash, SIGKILL); this holds
   * across processes and hosts sharing the lock directory. Leftovers of unknown origin (no lock
   * name) are left to the periodic pass's age rule, and so is a staging file an interrupted
   * download kept for resume (with its sidecar) until it is older than `staleStagingAgeSeconds`:
   * the next download of its image continues it. The sweep is the manager's one staging sweep.
   */
  async init(options: TemplateInitOptions = {}): Promise<TemplateInitReport> {
    const swept = await this.context.sweepStaging(options);
    return { removedStaging: swept.removed, busyStaging: swept.busy, failures: swept.failures, links: null };
  }

  /** {@inheritDoc TemplateImageHandler.fetchImage} */
  fetchImage(imageId: string, target?: FetchTarget, options: EnsureOptions = {}): Promise<EnsureResult> {
    return this.context.fetcher().ensure(imageId, target ?? this.context.targetFor(imageId), options);
  }

  /** {@inheritDoc TemplateImageHandler.removeImage} */
  async removeImage(imageId: string): Promise<boolean> {
    assertValidImageId(imageId);
    const target = this.context.targetFor(imageId);
    const remove = target.remove?.bind(target);
    if (remove === undefined) {
      throw new UnsupportedError('Removing a template', 'this cache cannot remove single images; let the periodic pass age it out.', imageId);
    }
    return this.context.locks.withLock(target.name, remove, { imageId });
  }
}
