/**
 * File operations shared by the file-backed backends: touching with Nova's error policy, and disk
 * usage counted in allocated blocks.
 *
 * Touch and stat go through the cache directory's {@link MetadataFs}: synchronous system calls on
 * a local file system (a few microseconds of metadata work each, while a trip through libuv's
 * thread pool costs 100 µs or more, and a cached spawn is a handful of them), the thread pool on a
 * network one (see fs/metadata-fs.ts).
 *
 * @module
 */
import { lstat, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../clock.js';
import { syncMetadataFs } from '../fs/metadata-fs.js';
import type { MetadataFs } from '../fs/metadata-fs.js';
import type { Logger } from '../log.js';

/**
 * Sets `file`'s atime and mtime to `clock.now()`. A missing file throws (Nova's `FileNotFound`).
 * With `tolerateEacces`, a refused touch is logged and ignored: the spawn path when the base
 * belongs to another user, e.g. on NFS or after libvirt's dynamic ownership (docs/nova-parity.md, bug 10).
 * Nova's `utime(path, None)` is refused with EACCES there; we set explicit times (the injected
 * clock), which the kernel refuses to a non-owner with EPERM, so both count as refused.
 * A symbolic link at `file` is never followed (`lutimes`): a link planted in the cache must not
 * let a touch change the mtime of a file elsewhere (and so its owner's aging decisions).
 */
export async function touchFile(file: string, clock: Clock, tolerateEacces: boolean, log?: Logger, mfs: MetadataFs = syncMetadataFs): Promise<void> {
  const seconds = clock.now() / 1000;
  try {
    await mfs.lutimes(file, seconds, seconds);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (tolerateEacces && (code === 'EACCES' || code === 'EPERM')) {
      log?.('could not touch %s (%s); ignored on the spawn path', file, code);
      return;
    }
    throw err;
  }
}

/** The file's mtime in ms, or null when it does not exist. Symlinks are not followed. */
export async function mtimeOf(file: string, mfs: MetadataFs = syncMetadataFs): Promise<number | null> {
  return (await mfs.lstatIfAny(file))?.mtimeMs ?? null;
}

/**
 * Nova's `get_disk_usage`: allocated bytes (`st_blocks * 512`) of the regular files directly in
 * `cacheDir`; 0 when the cache is on another device than `instancesPath` (it does not eat
 * instance space) and 0 on any error, such as a fresh host without a cache dir (docs/nova-parity.md, bug 11).
 */
export async function cacheDiskUsage(instancesPath: string, cacheDir: string): Promise<number> {
  try {
    const [instances, cache] = await Promise.all([stat(instancesPath), stat(cacheDir)]);
    if (instances.dev !== cache.dev) return 0;
    let total = 0;
    for (const entry of await readdir(cacheDir, { withFileTypes: true })) {
      if (!entry.isFile()) continue;
      total += (await lstat(path.join(cacheDir, entry.name))).blocks * 512;
    }
    return total;
  } catch {
    return 0;
  }
}

/** Inputs of {@link reservedDiskGb}. */
export interface ReservedDiskInputs {
  /** `[DEFAULT]reserved_host_disk_mb`. */
  readonly reservedHostDiskMb: number;
  /** The cache's usage from `getDiskUsage()`, bytes. */
  readonly cacheUsageBytes: number;
  /** `[workarounds]reserve_disk_resource_for_image_cache`. */
  readonly reserveForImageCache: boolean;
}

/**
 * Nova's `DISK_GB` reserved amount: `ceil(reserved_host_disk_mb / 1024)` plus, with the workaround
 * on, `ceil(cache bytes / GiB)`; each term rounded up on its own (1024 MB + 1000 bytes gives 2).
 */
export function reservedDiskGb(inputs: ReservedDiskInputs): number {
  const host = Math.ceil(inputs.reservedHostDiskMb / 1024);
  const cache = inputs.reserveForImageCache ? Math.ceil(inputs.cacheUsageBytes / 1024 / 1024 / 1024) : 0;
  return host + cache;
}
