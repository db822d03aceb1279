/**
 * Nova's libvirt cache file names (docs/nova-parity.md, names) and its scan classification
 * (docs/nova-parity.md, scan), reproduced exactly, edge cases included: `<sha1>_5` (42 characters)
 * is invisible, `<sha1>_10` is seen.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import type { CacheEntryKind } from '../../cache-entry.js';

/** Hex length of a SHA-1 digest: the length of an original's name. */
export const FINGERPRINT_LENGTH = 40;

/** The cache file name of an image: `sha1(utf8(imageId))` in lower-case hex (Nova's `get_cache_fname`). */
export function cacheFileName(imageId: string): string {
  return createHash('sha1').update(imageId, 'utf8').digest('hex');
}

/**
 * Python's `str.isdigit()` on what Nova's scan splits out of a name: any decimal digit, not only
 * ASCII (`swap_١٢` is a swap base to Nova). Python also counts a few non-decimal digits
 * (superscripts, circled digits), which JavaScript cannot name; no writer makes such names.
 */
const DIGITS = /^\p{Nd}+$/u;

/** Surrogate pairs: where JavaScript's `length` (UTF-16 units) and Python's `len` (code points) differ. */
const ASTRAL = /[\uD800-\uDBFF][\uDC00-\uDFFF]/;

/** True for `swap_<digits>` (Nova's `_store_swap_image`). */
export function isSwapName(name: string): boolean {
  const parts = name.split('_');
  return parts.length === 2 && parts[0] === 'swap' && DIGITS.test(parts[1] ?? '');
}

/** True for `ephemeral_<digits>_<7 characters>` (Nova's `_store_ephemeral_image`; characters are code points). */
export function isEphemeralName(name: string): boolean {
  const parts = name.split('_');
  return parts.length === 3 && parts[0] === 'ephemeral' && DIGITS.test(parts[1] ?? '') && codePoints(parts[2] ?? '').length === 7;
}

function codePoints(text: string): string | string[] {
  return ASTRAL.test(text) ? Array.from(text) : text;
}

/**
 * Classifies a base-directory entry name the way Nova's scan does, or null when Nova ignores it.
 * Originals are exactly 40 characters (not checked to be hex); anything longer than 42 with `_`
 * at position 40 is a resized (non-original) base. Characters are code points, as in Python.
 */
export function classifyBaseFileName(name: string): CacheEntryKind | null {
  // A name of fewer than 40 UTF-16 units has fewer than 40 code points: the usual swap, ephemeral
  // and odd names skip the code point split.
  const chars = name.length < FINGERPRINT_LENGTH ? name : codePoints(name);
  if (chars.length === FINGERPRINT_LENGTH) return 'original';
  if (chars.length > FINGERPRINT_LENGTH + 2 && chars[FINGERPRINT_LENGTH] === '_') return 'resized';
  if (isSwapName(name)) return 'swap';
  if (isEphemeralName(name)) return 'ephemeral';
  return null;
}
