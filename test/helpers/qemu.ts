/**
 * Test helpers around the real `qemu-img`: the disk code is checked against QEMU itself, not
 * against our own reading of the qcow2 spec.
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import assert from 'node:assert/strict';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Large enough for `qemu-img info` of any image the tests make. */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

/** The subset of `qemu-img info --output=json` the tests read. */
export interface QemuImgInfo {
  /** `qcow2`, `raw`, ... */
  readonly format: string;
  /** Guest-visible size in bytes. */
  readonly 'virtual-size': number;
  /** Cluster size, for formats that have one. */
  readonly 'cluster-size'?: number;
  /** The backing file name as stored. */
  readonly 'backing-filename'?: string;
  /** The backing file's recorded format. */
  readonly 'backing-filename-format'?: string;
  /** The backing file name resolved against the image's directory. */
  readonly 'full-backing-filename'?: string;
  /** Format-specific details (for qcow2: compat, refcount-bits, lazy-refcounts, ...). */
  readonly 'format-specific'?: { readonly type: string; readonly data: Readonly<Record<string, unknown>> };
}

/** The subset of `qemu-img check --output=json` the tests read. */
export interface QemuImgCheck {
  /** Corruptions found. */
  readonly 'check-errors': number;
  /** Leaked clusters, when any. */
  readonly leaks?: number;
  /** Corruptions, when any. */
  readonly corruptions?: number;
  /** Offset just past the last allocated cluster. */
  readonly 'image-end-offset'?: number;
}

let cached: string | null | undefined;

/** The `qemu-img` executable on `PATH`, or null. */
export function findQemuImg(): string | null {
  if (cached !== undefined) return cached;
  cached = null;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, 'qemu-img');
    try {
      accessSync(candidate, constants.X_OK);
      cached = candidate;
      break;
    } catch {
      // not in this directory
    }
  }
  return cached;
}

/**
 * The `qemu-img` path. When it is missing the test is skipped (the caller must then return), except
 * on CI, where a missing qemu-img would silently skip the disk tests, so it fails instead.
 */
export function requireQemuImg(t: TestContext): string | undefined {
  const found = findQemuImg();
  if (found !== null) return found;
  if (process.env.CI === 'true') {
    throw new Error('qemu-img is required in CI: install the qemu-utils package');
  }
  t.skip('qemu-img not installed');
  return undefined;
}

/** Runs `qemu-img` with `args` and returns its output; rejects on a non-zero exit. */
export async function runQemuImg(args: readonly string[]): Promise<{ stdout: string; stderr: string }> {
  const qemuImg = findQemuImg();
  if (qemuImg === null) throw new Error('qemu-img is not installed');
  return run(qemuImg, [...args], { maxBuffer: MAX_OUTPUT_BYTES, encoding: 'utf8' });
}

/** `qemu-img info --output=json`, parsed. */
export async function qemuImgInfo(file: string): Promise<QemuImgInfo> {
  const { stdout } = await runQemuImg(['info', '--output=json', file]);
  return JSON.parse(stdout) as QemuImgInfo;
}

/** `qemu-img check --output=json`, parsed; fails the test unless QEMU found no error and no leak. */
export async function qemuImgCheck(file: string): Promise<QemuImgCheck> {
  try {
    const { stdout } = await runQemuImg(['check', '--output=json', file]);
    return JSON.parse(stdout) as QemuImgCheck;
  } catch (err) {
    const { stdout, stderr, code } = err as { stdout?: string; stderr?: string; code?: unknown };
    assert.fail(`qemu-img check ${file} exited with ${String(code)}:\n${stdout ?? ''}${stderr ?? ''}`);
  }
}

/** Converts `src` (any format, backing chain followed) to the raw file `dst`. */
export async function qemuImgConvertToRaw(src: string, dst: string): Promise<void> {
  await runQemuImg(['convert', '-O', 'raw', src, dst]);
}
