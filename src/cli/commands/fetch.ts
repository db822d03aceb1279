/**
 * `virt-imagecache fetch <image-id>`: download and verify an image into the cache (or touch it if
 * present), with a progress bar.
 *
 * @module
 */
import { InvalidConfigError } from '../../errors.js';
import { createProgressBar } from '../progress-bar.js';
import { ExitCode, emit } from '../context.js';
import type { CliCommand } from '../context.js';
import { openCache } from '../open-cache.js';

/** The `fetch` command. */
export const fetchCommand: CliCommand = {
  name: 'fetch',
  summary: 'download and verify an image into the cache (touch it if present)',
  usage: 'fetch <image-id> [--pin-hours N] [--quiet]',
  options: {
    'pin-hours': { type: 'string' },
    quiet: { type: 'boolean' },
  },
  async run({ values, positionals }, io) {
    const [imageId, ...extra] = positionals;
    if (imageId === undefined || extra.length > 0) throw new InvalidConfigError('fetch', 'exactly one image id', positionals.join(' '));
    const { manager, settings } = await openCache(values, io, { needsSource: true });
    const bar = values.quiet === true || settings.json ? null : createProgressBar({ stream: io.stderr, label: imageId });
    try {
      const result = await manager.cacheImage(imageId, { signal: io.signal, onProgress: bar?.update });
      bar?.done();
      let pinnedUntil: number | null = null;
      if (typeof values['pin-hours'] === 'string') {
        const hours = Number(values['pin-hours']);
        pinnedUntil = await manager.pinImage(imageId, hours * 3600);
      }
      emit(io, settings.json, { ...result, pinnedUntil }, () =>
        [
          `${result.status} ${imageId} as ${result.name}` +
            (result.status === 'cached' ? ` (${String(result.bytes)} bytes, ${result.algorithm ?? 'no'} digest verified)` : ''),
          pinnedUntil === null ? '' : `pinned until ${new Date(pinnedUntil).toISOString()}`,
        ]
          .filter((line) => line !== '')
          .join('\n'),
      );
      return ExitCode.ok;
    } finally {
      bar?.done();
    }
  },
};
