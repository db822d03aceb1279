/**
 * Options shared by every backend, with Nova's `[image_cache]` names in camelCase and Nova's
 * defaults, validated at the edge: a bad value throws {@link InvalidConfigError} naming the option
 * and the accepted range.
 *
 * @module
 */
import { InvalidConfigError } from './errors.js';
import { METADATA_IO_VALUES } from './fs/choose-metadata-fs.js';
import type { MetadataIo } from './fs/choose-metadata-fs.js';
import { MAX_TIMER_MS } from './timer.js';

/**
 * The cache options every {@link ImageManager} understands. Nova option names are given for each.
 */
export interface ImageCacheOptions {
  /**
   * Seconds between periodic passes (`[image_cache]manager_interval`). `0` means the periodic
   * default of 60 s, a negative value disables the pass. Default 2400.
   */
  readonly managerInterval?: number;
  /** Cache folder name under the instances path (`[image_cache]subdirectory_name`). Default `_base`. */
  readonly subdirectoryName?: string;
  /** Remove unused cached images at all (`[image_cache]remove_unused_base_images`). Default true. */
  readonly removeUnusedBaseImages?: boolean;
  /**
   * Unused original images younger than this many seconds are kept
   * (`[image_cache]remove_unused_original_minimum_age_seconds`). Also applies to swap and ephemeral
   * bases. Default 86400.
   */
  readonly removeUnusedOriginalMinimumAgeSeconds?: number;
  /**
   * Unused resized (derived) images younger than this many seconds are kept
   * (`[image_cache]remove_unused_resized_minimum_age_seconds`). Default 3600.
   */
  readonly removeUnusedResizedMinimumAgeSeconds?: number;
  /** Hosts pre-cached in parallel (`[image_cache]precache_concurrency`). Default 1. */
  readonly precacheConcurrency?: number;
  /** Downloads running at once in this process, across all images. Default 4. */
  readonly maxConcurrentDownloads?: number;
  /** Largest image accepted, in bytes; larger ones fail with `ImageTooLargeError`. Default: no limit. */
  readonly maxImageSizeBytes?: number;
  /** Cap on download speed, bytes per second (at least 1), per download. Default: no cap. */
  readonly downloadBytesPerSecond?: number;
  /** Fail when the image service publishes no checksum at all. Default false (size is still verified). */
  readonly requireChecksum?: boolean;
  /**
   * Staging files older than this many seconds are leftovers of a crash and are removed; a staging
   * file kept for resume (with its sidecar) is kept this long, even by `init()`. Default 3600.
   */
  readonly staleStagingAgeSeconds?: number;
  /**
   * Keep the staging file of a download interrupted by an abort, a transport failure or a crash
   * (with a small sidecar recording the verified prefix), and have the next download of the image
   * re-hash that prefix and fetch only the rest. File caches only; the final digest is checked as
   * always. Default true.
   */
  readonly resumeDownloads?: boolean;
  /** How long to wait for another process's lock on an image before giving up, ms. Default 1800000 (30 min). */
  readonly lockTimeoutMs?: number;
  /**
   * A lock whose holder stopped refreshing it for this long (a killed process) is taken over, ms.
   * From 2000 to 2147483647 (the holder's refresh is a timer). Default 10000.
   */
  readonly lockStaleMs?: number;
  /**
   * Size cap of the cache, bytes. Each pass, and each download before it starts (room is made for
   * the image; right after it when its size was not announced), evicts unused entries (never one
   * in use, pinned, or younger than its minimum age) least recently used first until the cache is
   * under it. Default Infinity: no cap.
   */
  readonly maxCacheBytes?: number;
  /**
   * Turns on kubelet's disk watermarks: when the cache's filesystem is at or above
   * `highWatermarkPercent` full, unused entries are evicted (least recently used first, same rules
   * as the cap) until it is down to `lowWatermarkPercent`. Default false. The two percentages may
   * only be set together with `diskWatermarks: true`, so a forgotten switch fails loudly.
   */
  readonly diskWatermarks?: boolean;
  /** Usage, percent of the filesystem, at or above which watermark eviction starts. Default 85 (kubelet). */
  readonly highWatermarkPercent?: number;
  /** Usage, percent, that watermark eviction frees down to; below `highWatermarkPercent`. Default 80 (kubelet). */
  readonly lowWatermarkPercent?: number;
  /**
   * Free space a download must leave behind, bytes, on top of the image's own size (room for the
   * instances' disks to grow). A download that does not fit even after reclaiming fails with
   * `DiskFullError` before writing a byte. Default 0.
   */
  readonly downloadReserveBytes?: number;
  /**
   * How images enter the cache (Nova blueprint `template_image_handler`): `download` them from the
   * image service (default), or `link` them zero-copy from the locally attached image store at
   * {@link ImageCacheOptions.templateImageStorePath}, downloading whatever cannot be linked.
   */
  readonly templateImageHandler?: TemplateImageHandlerKind;
  /**
   * The image store `link` reads: an absolute directory holding one file per image, named by the
   * image id (a Glance file store on shared storage, an attached volume's mount). Default null;
   * required with `link`.
   */
  readonly templateImageStorePath?: string | null;
  /**
   * What `link` checks on a linked image against the image service's metadata: `size` (default, one
   * stat) or `checksum` (also hashes the linked file once: a full read, which zero copy otherwise
   * avoids).
   */
  readonly templateImageLinkVerification?: 'size' | 'checksum';
  /**
   * How the metadata calls on the cache, lock and instance directories are made (stats, touches,
   * links, lock files, qcow2 headers): `sync` (synchronous system calls, several times cheaper on a
   * local disk, but a hung file server freezes the event loop), `async` (libuv's thread pool), or
   * `auto` (default): `async` when `statfs` says the directory is on a network or cluster file
   * system (NFS, SMB, CephFS, FUSE, 9p, AFS, Lustre, GPFS, GFS2, OCFS2), `sync` otherwise.
   */
  readonly metadataIo?: MetadataIo;
}

/** The template image handlers (`templateImageHandler`). */
export type TemplateImageHandlerKind = 'download' | 'link';

/** {@link ImageCacheOptions} with every default filled in. */
export type ResolvedImageCacheOptions = {
  readonly [K in keyof ImageCacheOptions]-?: Exclude<ImageCacheOptions[K], undefined>;
};

/** Nova's defaults, plus this library's for the options Nova does not have. */
export const DEFAULT_OPTIONS: ResolvedImageCacheOptions = Object.freeze({
  managerInterval: 2400,
  subdirectoryName: '_base',
  removeUnusedBaseImages: true,
  removeUnusedOriginalMinimumAgeSeconds: 86400,
  removeUnusedResizedMinimumAgeSeconds: 3600,
  precacheConcurrency: 1,
  maxConcurrentDownloads: 4,
  maxImageSizeBytes: Number.POSITIVE_INFINITY,
  downloadBytesPerSecond: Number.POSITIVE_INFINITY,
  requireChecksum: false,
  staleStagingAgeSeconds: 3600,
  resumeDownloads: true,
  lockTimeoutMs: 1_800_000,
  lockStaleMs: 10_000,
  maxCacheBytes: Number.POSITIVE_INFINITY,
  diskWatermarks: false,
  highWatermarkPercent: 85,
  lowWatermarkPercent: 80,
  downloadReserveBytes: 0,
  templateImageHandler: 'download',
  templateImageStorePath: null,
  templateImageLinkVerification: 'size',
  metadataIo: 'auto',
});

/** Checks one option's value; throws {@link InvalidConfigError} when it does not fit. */
export type OptionCheck = (name: string, value: unknown) => void;

/** An integer check with an inclusive lower bound. */
export function integerFrom(min: number): OptionCheck {
  return (name, value) => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
      throw new InvalidConfigError(name, `an integer from ${min} up`, value);
    }
  };
}

/** A positive number check that also accepts `Infinity` ("no limit"). */
export const positiveOrInfinity: OptionCheck = (name, value) => {
  if (typeof value !== 'number' || Number.isNaN(value) || value <= 0) {
    throw new InvalidConfigError(name, 'a number above 0 (Infinity for no limit)', value);
  }
};

/** An integer check with inclusive bounds. */
export function integerBetween(min: number, max: number): OptionCheck {
  return (name, value) => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
      throw new InvalidConfigError(name, `an integer from ${min} to ${max}`, value);
    }
  };
}

/** The slowest speed cap accepted, bytes per second. */
export const MIN_BYTES_PER_SECOND = 1;

/**
 * A speed cap check: at least {@link MIN_BYTES_PER_SECOND}, or `Infinity` ("no cap"). A slower cap
 * is no cap an operator means (a 64 KiB chunk would wait 18 hours) and is refused, not ignored.
 */
export const bytesPerSecondOrInfinity: OptionCheck = (name, value) => {
  if (typeof value !== 'number' || Number.isNaN(value) || value < MIN_BYTES_PER_SECOND) {
    throw new InvalidConfigError(name, `a number of bytes per second from ${MIN_BYTES_PER_SECOND} up (Infinity for no cap)`, value);
  }
};

/** A percentage check: a number from `min` to `max`, both included. */
export function percentBetween(min: number, max: number): OptionCheck {
  return (name, value) => {
    if (typeof value !== 'number' || Number.isNaN(value) || value < min || value > max) {
      throw new InvalidConfigError(name, `a percentage from ${min} to ${max}`, value);
    }
  };
}

/** A boolean check. */
export const isBoolean: OptionCheck = (name, value) => {
  if (typeof value !== 'boolean') throw new InvalidConfigError(name, 'true or false', value);
};

/** A plain directory name: non-empty, no path separator, not `.` or `..`, at most 255 bytes. */
export const directoryName: OptionCheck = (name, value) => {
  if (
    typeof value !== 'string' ||
    value === '' ||
    value === '.' ||
    value === '..' ||
    /[/\\\0]/.test(value) ||
    Buffer.byteLength(value) > 255
  ) {
    throw new InvalidConfigError(name, 'a plain directory name (no "/", not "." or "..")', value);
  }
};

/** A check accepting exactly the given strings. */
export function oneOf(values: readonly string[]): OptionCheck {
  return (name, value) => {
    if (typeof value !== 'string' || !values.includes(value)) {
      throw new InvalidConfigError(name, `one of ${values.map((v) => `'${v}'`).join(', ')}`, value);
    }
  };
}

/** An absolute path, or null for "none". */
export const absolutePathOrNull: OptionCheck = (name, value) => {
  if (value === null) return;
  if (typeof value !== 'string' || !value.startsWith('/') || value.includes('\0')) {
    throw new InvalidConfigError(name, 'an absolute path, or null', value);
  }
};

const CHECKS: { readonly [K in keyof ImageCacheOptions]-?: OptionCheck } = {
  managerInterval: integerFrom(-1),
  subdirectoryName: directoryName,
  removeUnusedBaseImages: isBoolean,
  removeUnusedOriginalMinimumAgeSeconds: integerFrom(0),
  removeUnusedResizedMinimumAgeSeconds: integerFrom(0),
  precacheConcurrency: integerFrom(1),
  maxConcurrentDownloads: integerFrom(1),
  maxImageSizeBytes: positiveOrInfinity,
  downloadBytesPerSecond: bytesPerSecondOrInfinity,
  requireChecksum: isBoolean,
  staleStagingAgeSeconds: integerFrom(0),
  resumeDownloads: isBoolean,
  lockTimeoutMs: integerFrom(0),
  lockStaleMs: integerBetween(2000, MAX_TIMER_MS),
  maxCacheBytes: positiveOrInfinity,
  diskWatermarks: isBoolean,
  highWatermarkPercent: percentBetween(1, 100),
  lowWatermarkPercent: percentBetween(0, 99),
  downloadReserveBytes: integerFrom(0),
  templateImageHandler: oneOf(['download', 'link']),
  templateImageStorePath: absolutePathOrNull,
  templateImageLinkVerification: oneOf(['size', 'checksum']),
  metadataIo: oneOf(METADATA_IO_VALUES),
};

/**
 * Validates `options` against `checks` and fills in `defaults`. Unknown keys are rejected too,
 * so that a misspelt option fails loudly instead of being silently ignored.
 *
 * @param options - what the caller passed
 * @param defaults - the value of every option when not given
 * @param checks - one check per option
 * @returns a frozen object with every option set
 */
export function resolveWith<T extends object>(
  options: Partial<T> | undefined,
  defaults: T,
  checks: { readonly [K in keyof T]-?: OptionCheck },
): Readonly<T> {
  const resolved: Record<string, unknown> = { ...(defaults as Record<string, unknown>) };
  for (const [key, value] of Object.entries(options ?? {})) {
    if (!Object.hasOwn(checks, key)) {
      throw new InvalidConfigError(key, `one of the known options (${Object.keys(checks).join(', ')})`, value);
    }
    if (value === undefined) continue;
    (checks as Record<string, OptionCheck>)[key]?.(key, value);
    resolved[key] = value;
  }
  return Object.freeze(resolved) as Readonly<T>;
}

/**
 * Fills in defaults and validates the shared cache options.
 *
 * @throws {@link InvalidConfigError} naming the first bad option and its accepted range
 */
export function resolveImageCacheOptions(options?: ImageCacheOptions): ResolvedImageCacheOptions {
  const resolved = resolveWith<ResolvedImageCacheOptions>(options, DEFAULT_OPTIONS, CHECKS);
  checkWatermarks(options ?? {}, resolved);
  checkTemplateHandler(resolved);
  return resolved;
}

/** Watermark percentages only with the switch on, and low below high. */
function checkWatermarks(given: ImageCacheOptions, resolved: ResolvedImageCacheOptions): void {
  for (const name of ['highWatermarkPercent', 'lowWatermarkPercent'] as const) {
    if (given[name] !== undefined && !resolved.diskWatermarks) {
      throw new InvalidConfigError(name, 'to be set only together with `diskWatermarks: true` (watermarks are off)', given[name]);
    }
  }
  if (resolved.lowWatermarkPercent >= resolved.highWatermarkPercent) {
    throw new InvalidConfigError(
      'lowWatermarkPercent',
      `a percentage below highWatermarkPercent (${resolved.highWatermarkPercent})`,
      resolved.lowWatermarkPercent,
    );
  }
}

/** `link` needs a store to link from. */
function checkTemplateHandler(resolved: ResolvedImageCacheOptions): void {
  if (resolved.templateImageHandler === 'link' && resolved.templateImageStorePath === null) {
    throw new InvalidConfigError(
      'templateImageStorePath',
      "the image store's absolute path (required when templateImageHandler is 'link')",
      null,
    );
  }
}

/** The checks behind {@link resolveImageCacheOptions}, for backends that extend the options. */
export const IMAGE_CACHE_OPTION_CHECKS = CHECKS;
