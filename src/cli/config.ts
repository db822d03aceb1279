/**
 * The CLI's settings: flags, a JSON file (`--config`), and environment, merged in that order of
 * precedence, then validated with the library's own option checks.
 *
 * @module
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { InvalidConfigError } from '../errors.js';
import type { ImageCacheOptions } from '../options.js';
import { resolveImageCacheOptions } from '../options.js';

/** Where and how the CLI's cache lives. */
export interface CliSettings {
  /** `instances_path` of the libvirt-file cache. */
  readonly instancesPath: string;
  /** This host's name. */
  readonly host: string;
  /** Glance endpoint, when a command downloads. */
  readonly glanceUrl: string | undefined;
  /** Keystone token for Glance and host agents. */
  readonly token: string | undefined;
  /** Cache options (Nova's `[image_cache]` and ours). */
  readonly cache: ImageCacheOptions;
  /** Output JSON instead of text. */
  readonly json: boolean;
}

/** The JSON config file's shape: the same keys as the flags (camelCase), plus `cache`. */
interface ConfigFile {
  readonly instancesPath?: unknown;
  readonly host?: unknown;
  readonly glanceUrl?: unknown;
  readonly token?: unknown;
  readonly cache?: unknown;
}

const FILE_KEYS = new Set(['instancesPath', 'host', 'glanceUrl', 'token', 'cache']);

/** The flags every command accepts. */
export interface CommonFlags {
  readonly config?: string | undefined;
  readonly 'instances-path'?: string | undefined;
  readonly host?: string | undefined;
  readonly glance?: string | undefined;
  readonly token?: string | undefined;
  readonly json?: boolean | undefined;
}

function optionalString(name: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw new InvalidConfigError(name, 'a non-empty string', value);
  return value;
}

async function readConfigFile(file: string): Promise<ConfigFile> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new InvalidConfigError('--config', `a readable JSON file (${(err as Error).message})`, file);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InvalidConfigError('--config', 'a JSON object', file);
  }
  for (const key of Object.keys(parsed)) {
    if (!FILE_KEYS.has(key)) throw new InvalidConfigError(`${file}: ${key}`, `one of ${[...FILE_KEYS].join(', ')}`, key);
  }
  return parsed;
}

/**
 * Merges flags over the config file over the environment (`VIRT_IMAGECACHE_INSTANCES_PATH`,
 * `VIRT_IMAGECACHE_GLANCE_URL`, `OS_AUTH_TOKEN`).
 *
 * @throws `InvalidConfigError` naming the bad setting
 */
export async function loadSettings(
  flags: CommonFlags,
  env: NodeJS.ProcessEnv = process.env,
  { needsInstancesPath = true }: { readonly needsInstancesPath?: boolean } = {},
): Promise<CliSettings> {
  const file = flags.config === undefined ? {} : await readConfigFile(flags.config);
  const instancesPath =
    flags['instances-path'] ?? optionalString('instancesPath', file.instancesPath) ?? env.VIRT_IMAGECACHE_INSTANCES_PATH;
  if (needsInstancesPath && (instancesPath === undefined || instancesPath === '')) {
    throw new InvalidConfigError('--instances-path', 'the instances path holding the cache (or VIRT_IMAGECACHE_INSTANCES_PATH)', instancesPath);
  }
  const raw: unknown = file.cache ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new InvalidConfigError('cache', 'an object of cache options', raw);
  }
  const cache = raw as ImageCacheOptions;
  // Validate now, so a typo in the file fails before any work starts.
  resolveImageCacheOptions(cache);
  return {
    instancesPath: path.resolve(instancesPath ?? '.'),
    host: flags.host ?? optionalString('host', file.host) ?? os.hostname(),
    glanceUrl: flags.glance ?? optionalString('glanceUrl', file.glanceUrl) ?? env.VIRT_IMAGECACHE_GLANCE_URL,
    token: flags.token ?? optionalString('token', file.token) ?? env.OS_AUTH_TOKEN,
    cache,
    json: flags.json ?? false,
  };
}
