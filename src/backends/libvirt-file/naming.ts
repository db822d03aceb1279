/**
 * Nova's libvirt cache file names and its scan classification (nova.md 2.2 and 2.3), reproduced
 * exactly, edge cases included: `<sha1>_5` (42 characters) is invisible, `<sha1>_10` is seen.
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

/** True for `swap_<digits>` (Nova's `_store_swap_image`). */
export function isSwapName(name: string): boolean {
  const parts = name.split('_');
  return parts.length === 2 && parts[0] === 'swap' && /^\d+$/.test(parts[1] ?? '');
}

/** True for `ephemeral_<digits>_<7 characters>` (Nova's `_store_ephemeral_image`). */
export function isEphemeralName(name: string): boolean {
  const parts = name.split('_');
  return parts.length === 3 && parts[0] === 'ephemeral' && /^\d+$/.test(parts[1] ?? '') && parts[2]?.length === 7;
}

/**
 * Classifies a base-directory entry name the way Nova's scan does, or null when Nova ignores it.
 * Originals are exactly 40 characters (not checked to be hex); anything longer than 42 with `_`
 * at position 40 is a resized (non-original) base.
 */
export function classifyBaseFileName(name: string): CacheEntryKind | null {
  if (name.length === FINGERPRINT_LENGTH) return 'original';
  if (name.length > FINGERPRINT_LENGTH + 2 && name[FINGERPRINT_LENGTH] === '_') return 'resized';
  if (isSwapName(name)) return 'swap';
  if (isEphemeralName(name)) return 'ephemeral';
  return null;
}
