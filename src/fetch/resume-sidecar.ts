/**
 * The resume sidecar: a small JSON file beside a staging file (`<staging>.resume`) that lets a
 * later download continue the staging file instead of starting over. It records which image the
 * bytes are (id, size, digest algorithm and expected digest) and how many of them are durable,
 * with the digest of exactly that prefix, so that the adopting download can re-hash the prefix
 * from disk and prove it is still those bytes before it trusts a single one of them.
 *
 * The sidecar is written only after the staging file's bytes up to its count were made durable
 * (`fdatasync`), through a temporary name (`<sidecar>.tmp`, fsynced, renamed over): a crash
 * leaves the previous sidecar, the new one, or a temporary file, never half a sidecar under the
 * sidecar's name. Nothing in it is trusted blindly: the adopter checks every field, the file's
 * type and size, and re-hashes the prefix; the full digest is checked at the end as always.
 *
 * @module
 */
import { constants } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { createLogger } from '../log.js';

const log = createLogger('fetch');

/** Suffix of a staging file's resume sidecar: `<final>.<pid>-<random>.staging.resume`. */
export const RESUME_SIDECAR_SUFFIX = '.resume';

/** Suffix of a sidecar being written: `<sidecar>.tmp`. */
export const RESUME_TEMP_SUFFIX = '.tmp';

/** Format version of the sidecar; another version is not trusted (the download restarts). */
export const RESUME_SIDECAR_VERSION = 1;

/** A sidecar is a few hundred bytes; anything larger was not written by us. */
const MAX_SIDECAR_BYTES = 4096;

/** Mode of the sidecar, as the staging file's. */
const SIDECAR_MODE = 0o644;

/** Which image a staging file holds: what must still match for its bytes to be worth keeping. */
export interface ResumeKey {
  /** The image id. */
  readonly imageId: string;
  /** The image's size, bytes, as the image service announced it; null when it did not. */
  readonly size: number | null;
  /** The digest algorithm (node:crypto name). */
  readonly algorithm: string;
  /** The image's expected digest, lower-case hex. */
  readonly digest: string;
}

/** A verified, durable prefix of a staging file. */
export interface ResumePoint {
  /** Bytes from the start of the staging file that are durable. */
  readonly bytes: number;
  /** Hex digest (in the key's algorithm) of exactly those bytes. */
  readonly prefixDigest: string;
}

/** What a sidecar records. */
export interface ResumeRecord extends ResumeKey, ResumePoint {
  /** Always {@link RESUME_SIDECAR_VERSION}. */
  readonly version: number;
}

/** The sidecar path of the staging file `stagingPath`. */
export function resumeSidecarPathFor(stagingPath: string): string {
  return `${stagingPath}${RESUME_SIDECAR_SUFFIX}`;
}

/** The paths a staging file's resume state may occupy: the sidecar and its temporary file. */
export function resumeFilesOf(stagingPath: string): readonly string[] {
  const sidecar = resumeSidecarPathFor(stagingPath);
  return [sidecar, `${sidecar}${RESUME_TEMP_SUFFIX}`];
}

/**
 * Writes `record` as `stagingPath`'s sidecar through a temporary file, fsynced then renamed over
 * the old sidecar. The caller made the staging file's first `record.bytes` durable first. The
 * temporary file is opened without following a link planted at its name.
 */
export async function writeResumeRecord(stagingPath: string, record: ResumeKey & ResumePoint): Promise<void> {
  const sidecar = resumeSidecarPathFor(stagingPath);
  const temp = `${sidecar}${RESUME_TEMP_SUFFIX}`;
  const body: ResumeRecord = { version: RESUME_SIDECAR_VERSION, ...pick(record) };
  // One writer per staging file (its image's lock holder): a fixed temporary name is enough.
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, SIDECAR_MODE);
  try {
    await handle.writeFile(`${JSON.stringify(body)}\n`, 'utf8');
    await handle.datasync();
  } finally {
    await handle.close();
  }
  // No directory fsync: a lost rename leaves the previous sidecar, whose shorter prefix is as
  // durable; a lost sidecar only costs the bytes it would have saved.
  await rename(temp, sidecar);
}

function pick(record: ResumeKey & ResumePoint): Omit<ResumeRecord, 'version'> {
  const { imageId, size, algorithm, digest, bytes, prefixDigest } = record;
  return { imageId, size, algorithm, digest, bytes, prefixDigest };
}

/** Why a sidecar cannot be trusted, in words; null when it can. */
export type RecordProblem = string;

/**
 * Reads `stagingPath`'s sidecar. Resolves to the record, or to a string saying why it cannot be
 * trusted: missing, not a regular file (a symbolic link is not followed), too large, not JSON,
 * another version, a field of the wrong type.
 */
export async function readResumeRecord(stagingPath: string): Promise<ResumeRecord | RecordProblem> {
  const sidecar = resumeSidecarPathFor(stagingPath);
  let text: string;
  try {
    // O_NONBLOCK: a FIFO planted at the name must not hang the open.
    const handle = await open(sidecar, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const stats = await handle.stat();
      if (!stats.isFile()) return 'the sidecar is not a regular file';
      if (stats.size > MAX_SIDECAR_BYTES) return `the sidecar has ${stats.size} bytes`;
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'no sidecar';
    if (code === 'ELOOP') return 'the sidecar is a symbolic link';
    return `the sidecar cannot be read (${code ?? String(err)})`;
  }
  return parseResumeRecord(text);
}

/** Parses and checks a sidecar's text; a string says what is wrong with it. */
export function parseResumeRecord(text: string): ResumeRecord | RecordProblem {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'the sidecar is not JSON';
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'the sidecar is not an object';
  const r = value as Record<string, unknown>;
  if (r['version'] !== RESUME_SIDECAR_VERSION) return `the sidecar has version ${JSON.stringify(r['version'])}`;
  const { imageId, size, algorithm, digest, bytes, prefixDigest } = r;
  if (typeof imageId !== 'string' || imageId === '') return 'the sidecar names no image';
  if (size !== null && !isByteCount(size)) return 'the sidecar has no valid size';
  if (typeof algorithm !== 'string' || !/^[a-z0-9-]+$/.test(algorithm)) return 'the sidecar has no valid algorithm';
  if (!isHex(digest) || !isHex(prefixDigest)) return 'the sidecar has no valid digests';
  if (!isByteCount(bytes)) return 'the sidecar has no valid byte count';
  if (size !== null && bytes > size) return `the sidecar counts ${bytes} bytes of a ${size}-byte image`;
  return { version: RESUME_SIDECAR_VERSION, imageId, size, algorithm, digest, bytes, prefixDigest };
}

function isByteCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isHex(value: unknown): value is string {
  return typeof value === 'string' && /^[0-9a-f]+$/.test(value);
}

/** Removes `stagingPath`'s sidecar and its temporary file; missing ones are fine. */
export async function removeResumeFiles(stagingPath: string): Promise<void> {
  for (const file of resumeFilesOf(stagingPath)) {
    await unlink(file).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log('could not remove %s: %O', file, err);
    });
  }
}
