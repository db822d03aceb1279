/**
 * Scanning the base directory: Nova's classification, regular files only. Symlinks and
 * directories are never entries, so a link planted in the cache can never make us delete (or
 * touch) what it points to.
 *
 * @module
 */
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import type { BaseImageScan, CacheEntry, StagingEntry } from '../../cache-entry.js';
import { isStagingName } from '../../fetch/staging.js';
import { classifyBaseFileName } from './naming.js';

/** lstat calls in flight during a scan: enough to keep the thread pool busy, few enough to stay polite. */
const STAT_CONCURRENCY = 16;

/** Lists and classifies `baseDir`. Entries vanishing during the scan are simply left out. */
export async function scanBaseDirectory(baseDir: string): Promise<BaseImageScan> {
  const dirents = await readdir(baseDir, { withFileTypes: true });
  const limit = pLimit(STAT_CONCURRENCY);
  const entries: CacheEntry[] = [];
  const staging: StagingEntry[] = [];
  await Promise.all(
    dirents.map((dirent) =>
      limit(async () => {
        if (!dirent.isFile()) return;
        const { name } = dirent;
        // Leftovers: interrupted downloads, and the checksum `.info` files Nova stopped writing in
        // Newton and never cleans (gap D). Both are removed once stale.
        const staged = isStagingName(name) || name.endsWith('.info');
        const kind = staged ? null : classifyBaseFileName(name);
        if (!staged && kind === null) return;
        let st;
        try {
          st = await lstat(path.join(baseDir, name));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
          throw err;
        }
        if (!st.isFile()) return;
        if (kind === null) staging.push({ name, lastModifiedMs: st.mtimeMs });
        else entries.push({ name, kind, imageId: null, sizeBytes: st.blocks * 512, lastUsedMs: st.mtimeMs });
      }),
    ),
  );
  // listdir order is filesystem-dependent; a sorted scan makes passes reproducible.
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  staging.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { entries, staging };
}
