/**
 * The names of staging files and their resume sidecars: which names are ours, which are Nova's
 * leftovers, and which final name each one would be published as. Scans, sweeps and every fill
 * use these, so a staging file or sidecar is never mistaken for a cache entry.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';

/** Suffix of this library's staging files. */
export const STAGING_SUFFIX = '.staging';

/**
 * True for names of staging files: ours (`*.staging`, with the resume sidecar `*.staging.resume`
 * and its temporary `*.staging.resume.tmp`) and Nova's leftovers (`*.part`, `*.converted`), which
 * Nova itself never cleans (docs/nova-parity.md, gap D). None of them is ever a cache entry.
 */
export function isStagingName(name: string): boolean {
  return STAGING_NAME.test(name);
}

/** Names {@link isStagingName} accepts. */
export const STAGING_NAME = /(\.staging(\.resume(\.tmp)?)?|\.part|\.converted)$/;

/** Names of resume sidecars (and their temporary files) of our staging files. */
export const RESUME_SIDECAR_NAME = /\.\d+-[^.]+\.staging\.resume(\.tmp)?$/;

/** True for a resume sidecar of one of our staging files, or its temporary file (see fetch/resume-sidecar.ts). */
export function isResumeSidecarName(name: string): boolean {
  return RESUME_SIDECAR_NAME.test(name);
}

/** The staging file name a resume sidecar name belongs to; null for any other name. */
export function sidecarStagingName(name: string): string | null {
  if (!isResumeSidecarName(name)) return null;
  return name.slice(0, name.lastIndexOf('.staging') + '.staging'.length);
}

/** Names {@link isOwnStagingName} accepts. */
export const OWN_STAGING_NAME = /\.\d+-[0-9a-f]{8}\.staging$/;

/**
 * The name a staging file would be published as: `<final>` for our `<final>.<pid>-<random>.staging`
 * (and its resume sidecar) and for Nova's `<final>.part` / `<final>.converted`; null for any other name.
 */
export function stagingFinalName(name: string): string | null {
  // A resume sidecar is published as nothing, but its lock is its staging file's.
  const ours = /^(.+)\.\d+-[^.]+\.staging(\.resume(\.tmp)?)?$/.exec(name);
  if (ours !== null) return ours[1] ?? null;
  for (const suffix of ['.part', '.converted']) {
    if (name.endsWith(suffix) && name.length > suffix.length) return name.slice(0, -suffix.length);
  }
  return null;
}

/** A fresh staging path beside `finalPath`: `<final>.<pid>-<random>.staging`. */
export function stagingPathFor(finalPath: string): string {
  return `${finalPath}.${process.pid}-${randomBytes(4).toString('hex')}${STAGING_SUFFIX}`;
}

/** True for names {@link stagingPathFor} makes (and only those: not Nova's `.part` files). */
export function isOwnStagingName(name: string): boolean {
  return OWN_STAGING_NAME.test(name);
}
