/**
 * The fill (`ImageManager.cacheImage`): the template handler fetches the image into its target,
 * while capacity follows the call (protection from eviction, room before the download, counters,
 * the watermarks after it); the entry is touched whether it was there or has just arrived.
 *
 * @module
 */
import type { CapacityController } from '../capacity/controller.js';
import { InvalidConfigError } from '../errors.js';
import type { EnsureResult } from '../fetch/image-fetcher.js';
import type { TemplateImageHandler } from '../handlers/types.js';
import { checkImageId, vouchFor } from '../image-id.js';
import { bytesPerSecondOrInfinity } from '../options.js';
import type { CacheImageOptions, CacheImageResult } from './manager-types.js';
import type { StoreView } from './store-view.js';

/** Fills one manager's cache. */
export class CacheFill<TBase> {
  readonly #view: StoreView<TBase>;
  readonly #capacity: CapacityController<TBase>;
  readonly #handler: () => TemplateImageHandler;

  /**
   * @param view - the manager's view
   * @param capacity - the manager's capacity rules
   * @param handler - the manager's template image handler (built on first use)
   */
  constructor(view: StoreView<TBase>, capacity: CapacityController<TBase>, handler: () => TemplateImageHandler) {
    this.#view = view;
    this.#capacity = capacity;
    this.#handler = handler;
  }

  /** `ImageManager.cacheImage`. */
  async cacheImage(imageId: string, options: CacheImageOptions): Promise<CacheImageResult> {
    const view = this.#view;
    checkImageId(imageId, options);
    if (options.bytesPerSecond !== undefined) bytesPerSecondOrInfinity('bytesPerSecond', options.bytesPerSecond);
    if (options.source !== undefined) checkSource(options.source);
    const target = view.fetchTargetFor(imageId);
    const tolerate = options.tolerateTouchErrors ?? false;
    const fill = this.#capacity.beginFill(imageId, target.name);
    const touch = async (): Promise<void> => view.touchEntry(await view.entryNameOf(imageId, target), tolerate);
    let result: EnsureResult;
    try {
      result = await this.#handler().fetchImage(imageId, fill.track(target), vouchFor(imageId, {
        signal: options.signal,
        bytesPerSecond: options.bytesPerSecond,
        source: options.source,
        onProgress: (progress) => {
          options.onProgress?.(progress);
          view.emit('progress', progress);
        },
        onExisting: touch,
        beforeDownload: (info, downloadSignal) => fill.admit(info, downloadSignal),
        afterDownload: touch,
      }));
      await fill.finish(result, options.signal);
    } catch (error) {
      throw await fill.failed(error);
    } finally {
      fill.end();
    }
    const outcome: CacheImageResult = {
      status: result.status,
      imageId,
      name: await view.entryNameOf(imageId, target),
      bytes: result.bytes,
      shared: result.shared,
      algorithm: result.algorithm,
      digest: result.digest,
      durationMs: result.durationMs,
      bytesFrom: result.bytesFrom,
      resumedFromBytes: result.resumedFromBytes,
    };
    if (outcome.status === 'cached' && !outcome.shared) view.emit('cached', outcome);
    return outcome;
  }
}

/** Checks a per-call `source` option: something with `describe` and `open`. */
function checkSource(source: unknown): void {
  const { describe, open } = (typeof source === 'object' && source !== null ? source : {}) as Record<string, unknown>;
  if (typeof describe !== 'function' || typeof open !== 'function') {
    throw new InvalidConfigError('source', 'an ImageSource (with describe and open)', typeof source);
  }
}
