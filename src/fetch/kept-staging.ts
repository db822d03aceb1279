/**
 * Finding the staging file an interrupted download kept for an image (see resume-sidecar.ts),
 * under the image's lock: every `<final>.<pid>-<random>.staging` beside the final name is a
 * candidate; the one with the longest trustworthy prefix is chosen, every other one (and every
 * orphan sidecar) is removed, since the lock means none of them has a live writer.
 *
 * A candidate is trusted only when its sidecar parses, names the same image with the same size,
 * algorithm and expected digest as the image service says now (otherwise the image changed), and
 * the staging file is a regular file with one link (not a symbolic link, not a hard link to a
 * file elsewhere) holding at least the counted bytes. Its prefix is then still re-hashed by the
 * adopting download before a byte of it is used.
 *
 * @module
 */
import { lstat, readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { createLogger } from '../log.js';
import { readResumeRecord, removeResumeFiles } from './resume-sidecar.js';
import type { ResumeKey, ResumePoint } from './resume-sidecar.js';
import { isOwnStagingName, sidecarStagingName, stagingFinalName } from './staging-names.js';

const log = createLogger('fetch');

/** A staging file kept by an earlier download, with the prefix its sidecar vouches for. */
export interface KeptStaging extends ResumePoint {
  /** The staging file. */
  readonly path: string;
}

/** Why the kept `file` does not fit `key` (a changed image, a bad count), or null when it does. */
async function checkCandidate(file: string, key: ResumeKey): Promise<KeptStaging | string> {
  const record = await readResumeRecord(file);
  if (typeof record === 'string') return record;
  if (record.imageId !== key.imageId) return `the sidecar is for image ${record.imageId}`;
  if (record.size !== key.size || record.algorithm !== key.algorithm || record.digest !== key.digest) {
    return 'the image changed since (size or digest)';
  }
  if (record.bytes === 0) return 'nothing was kept';
  let stats;
  try {
    stats = await lstat(file);
  } catch (err) {
    return `the staging file cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`;
  }
  if (!stats.isFile()) return 'the staging file is not a regular file';
  if (stats.nlink !== 1) return `the staging file has ${stats.nlink} links`;
  if (stats.size < record.bytes) return `the staging file has ${stats.size} of the ${record.bytes} bytes its sidecar counts`;
  return { path: file, bytes: record.bytes, prefixDigest: record.prefixDigest };
}

/**
 * The best staging file kept for `finalPath` holding `key`'s image, or null. Call it under the
 * image's lock. Every other staging file of `finalPath` but `except` (the caller's own), with its
 * sidecar, and every sidecar without its staging file, is removed.
 */
export async function findKeptStaging(finalPath: string, key: ResumeKey, except: string): Promise<KeptStaging | null> {
  const dir = path.dirname(finalPath);
  const finalName = path.basename(finalPath);
  const isStagingOfFinal = (name: string): boolean => isOwnStagingName(name) && stagingFinalName(name) === finalName;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    log('cannot list %s for kept staging: %O', dir, err);
    return null;
  }
  const present = new Set(names);
  const candidates = names.filter((name) => isStagingOfFinal(name) && path.join(dir, name) !== except);
  let best: KeptStaging | null = null;
  const rejected: string[] = [];
  for (const name of candidates) {
    const file = path.join(dir, name);
    const checked = await checkCandidate(file, key);
    if (typeof checked === 'string') {
      log('kept staging %s of image %s is not resumable: %s', name, key.imageId, checked);
      rejected.push(file);
    } else if (best === null || checked.bytes > best.bytes) {
      if (best !== null) rejected.push(best.path);
      best = checked;
    } else {
      rejected.push(file);
    }
  }
  for (const file of rejected) await removeStagingFiles(file);
  // Sidecars (or their temporary files) whose staging file is gone: a crash between the publish
  // and the sidecar's removal, or while a sidecar was written.
  const orphans = new Set<string>();
  for (const name of names) {
    const staging = sidecarStagingName(name);
    if (staging !== null && isStagingOfFinal(staging) && !present.has(staging)) orphans.add(staging);
  }
  for (const staging of orphans) await removeResumeFiles(path.join(dir, staging));
  return best;
}

/** Removes a staging file and its resume files; missing ones are fine. */
export async function removeStagingFiles(stagingPath: string): Promise<void> {
  await unlink(stagingPath).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  });
  await removeResumeFiles(stagingPath);
}
