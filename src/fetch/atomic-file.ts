/**
 * Small state files (the shared-storage registry, pins) replaced atomically: a reader sees the old
 * file or the new one, never a mix, and a crash never leaves half a file under the final name.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { open, unlink } from 'node:fs/promises';
import path from 'node:path';
import { makeDirectory, publishFile } from './durable.js';
import { CACHE_FILE_MODE } from './staging.js';

/**
 * Writes `data` to `filePath` through a hidden temp file beside it, published durably
 * ({@link publishFile}): fsynced, renamed over the old file, the directory fsynced (and a new
 * directory's own entry too).
 */
export async function writeFileAtomically(filePath: string, data: string): Promise<void> {
  const dir = path.dirname(filePath);
  await makeDirectory(dir, true);
  // Unique per process and call, so racing writers (a Nova host ignoring our lock) never share a
  // temp file.
  const temp = path.join(dir, `.${path.basename(filePath)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const handle = await open(temp, 'wx', CACHE_FILE_MODE);
    try {
      await handle.writeFile(data, 'utf8');
      await publishFile(temp, filePath, { sync: true, file: handle });
    } finally {
      await handle.close();
    }
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
}
