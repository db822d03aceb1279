/**
 * {@link DownloadingHandler}: the blueprint's "downloading" way, Nova's only way. Templates are
 * downloaded through the verified fetch pipeline (single flight, per-image lock, size and digest
 * checked, atomic publish).
 *
 * @module
 */
import type { PassFailure } from '../cache-entry.js';
import { LockTimeoutError, UnsupportedError } from '../errors.js';
import type { EnsureOptions, EnsureResult, FetchTarget } from '../fetch/image-fetcher.js';
import { assertValidImageId } from '../image-id.js';
import { createLogger } from '../log.js';
import type { TemplateImageHandlerKind } from '../options.js';
import type {
  TemplateHandlerContext,
  TemplateImageHandler,
  TemplateInitOptions,
  TemplateInitReport,
} from './template-image-handler.js';

const log = createLogger('handler');

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
   * name) are left to the periodic pass's age rule.
   */
  async init(options: TemplateInitOptions = {}): Promise<TemplateInitReport> {
    const removedStaging: string[] = [];
    const busyStaging: string[] = [];
    const failures: PassFailure[] = [];
    for (const staging of await this.context.listStaging()) {
      if (staging.lockName === undefined) continue;
      let held;
      try {
        held = await this.context.locks.acquire(staging.lockName, { timeoutMs: 0, signal: options.signal });
      } catch (err) {
        if (!(err instanceof LockTimeoutError)) throw err;
        busyStaging.push(staging.name);
        continue;
      }
      try {
        await this.context.removeStaging(staging.name);
        removedStaging.push(staging.name);
        log('removed staging leftover %s', staging.name);
      } catch (error) {
        failures.push({ name: staging.name, operation: 'remove', error });
      } finally {
        await held.release();
      }
    }
    return { removedStaging, busyStaging, failures, links: null };
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
