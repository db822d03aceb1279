/**
 * Scanning the base directory: Nova's classification, regular files only. Symlinks and
 * directories are never entries, so a link planted in the cache can never make us delete (or
 * touch) what it points to.
 *
 * @module
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { BaseImageScan, CacheEntry, StagingEntry } from '../../cache-entry.js';
import { RESUME_SIDECAR_SUFFIX } from '../../fetch/resume-sidecar.js';
import { isStagingName, sidecarStagingName, stagingFinalName } from '../../fetch/staging-names.js';
import { syncMetadataFs } from '../../fs/metadata-fs.js';
import type { MetadataFs } from '../../fs/metadata-fs.js';
import { classifyBaseFileName } from './naming.js';

/** Entries stat'ed between two yields to the event loop. */
const YIELD_EVERY = 256;

/**
 * Lists and classifies `baseDir`. Entries vanishing during the scan are simply left out. Each
 * entry is stat'ed through `mfs` (default synchronous: see fs/metadata-fs.ts).
 */
export async function scanBaseDirectory(baseDir: string, mfs: MetadataFs = syncMetadataFs): Promise<BaseImageScan> {
  const dirents = await readdir(baseDir, { withFileTypes: true });
  const entries: CacheEntry[] = [];
  const staging: StagingEntry[] = [];
  const names = new Set(dirents.map((dirent) => dirent.name));
  let sinceYield = 0;
  for (const dirent of dirents) {
    if (!dirent.isFile()) continue;
    const { name } = dirent;
    // A resume sidecar goes with its staging file (removed with it, keeping it resumable): only
    // an orphan is a leftover of its own.
    const sidecarOf = sidecarStagingName(name);
    if (sidecarOf !== null && names.has(sidecarOf)) continue;
    // Leftovers: interrupted downloads, and the checksum `.info` files Nova stopped writing in
    // Newton and never cleans (docs/nova-parity.md, gap D). Both are removed once stale.
    const staged = isStagingName(name) || name.endsWith('.info');
    const kind = staged ? null : classifyBaseFileName(name);
    if (!staged && kind === null) continue;
    // On a local file system the lstats are synchronous, in batches: cheaper than a thread-pool
    // round trip per file, and the yields keep the event loop responsive.
    if (++sinceYield >= YIELD_EVERY) {
      sinceYield = 0;
      await new Promise((resolve) => setImmediate(resolve));
    }
    const st = await mfs.lstatIfAny(path.join(baseDir, name));
    if (st === undefined || !st.isFile()) continue;
    if (kind === null) {
      // `.info` files have no writer; their lock is the base's, like a staging file's.
      const lockName = stagingFinalName(name) ?? (name.endsWith('.info') ? name.slice(0, -'.info'.length) : undefined);
      const sidecar = names.has(`${name}${RESUME_SIDECAR_SUFFIX}`) ? await mfs.lstatIfAny(path.join(baseDir, `${name}${RESUME_SIDECAR_SUFFIX}`)) : undefined;
      if (sidecar?.isFile() === true) {
        // Its age is its last sign of life: the last write or the last checkpoint.
        staging.push({ name, lastModifiedMs: Math.max(st.mtimeMs, sidecar.mtimeMs), lockName, resumable: true });
      } else staging.push({ name, lastModifiedMs: st.mtimeMs, lockName });
    }
    else entries.push({ name, kind, imageId: null, sizeBytes: st.blocks * 512, lastUsedMs: st.mtimeMs });
  }
  // listdir order is filesystem-dependent; a sorted scan makes passes reproducible.
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  staging.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { entries, staging };
}
