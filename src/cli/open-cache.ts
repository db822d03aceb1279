/**
 * Builds the cache a CLI command works on: a libvirt-file manager over the configured instances
 * path, with a Glance source when the command downloads.
 *
 * @module
 */
import { LibvirtFileImageManager } from '../backends/libvirt-file/libvirt-file-manager.js';
import { InvalidConfigError } from '../errors.js';
import { GlanceImageSource } from '../source/glance-image-source.js';
import { loadSettings } from './config.js';
import type { CliSettings } from './config.js';
import type { CliIo } from './context.js';

/** The flags shared by every command, for `parseArgs`. */
export const COMMON_OPTIONS = {
  config: { type: 'string' },
  'instances-path': { type: 'string' },
  host: { type: 'string' },
  glance: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** A manager and the settings it was made from. */
export interface OpenCache {
  /** The cache. */
  readonly manager: LibvirtFileImageManager;
  /** The merged settings. */
  readonly settings: CliSettings;
}

/** Loads the settings and opens the cache. */
export async function openCache(values: Record<string, unknown>, io: CliIo, options: { needsSource: boolean }): Promise<OpenCache> {
  const settings = await loadSettings(values, io.env);
  if (options.needsSource && settings.glanceUrl === undefined) {
    throw new InvalidConfigError('--glance', 'the image service URL (or VIRT_IMAGECACHE_GLANCE_URL)', undefined);
  }
  const source =
    settings.glanceUrl === undefined ? undefined : new GlanceImageSource({ endpoint: settings.glanceUrl, token: settings.token });
  const manager = new LibvirtFileImageManager({
    ...settings.cache,
    host: settings.host,
    instancesPath: settings.instancesPath,
    source,
  });
  return { manager, settings };
}
