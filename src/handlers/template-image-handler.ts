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
import type { ResolvedImageCacheOptions } from '../options.js';
import { DownloadingHandler } from './downloading-handler.js';
import { LinkingHandler } from './linking-handler.js';
import type { TemplateHandlerContext, TemplateImageHandler } from './types.js';

export type * from './types.js';

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
