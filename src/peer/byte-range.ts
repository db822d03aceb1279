/**
 * The `Range` requests the host agent's image route answers: one range of bytes (RFC 9110
 * section 14.1.2), `bytes=N-`, `bytes=N-M` or `bytes=-K` (the last K bytes).
 *
 * @module
 */

/** What to send for a `Range` header: the whole file, one part of it, or 416. */
export type RangeAnswer =
  | { readonly kind: 'whole' }
  | { readonly kind: 'part'; readonly first: number; readonly last: number }
  | { readonly kind: 'unsatisfiable' };

const ONE_RANGE = /^bytes=(\d*)-(\d*)$/i;

/**
 * The part of a `size`-byte file a `Range` header asks for. A header this route does not read (a
 * list of ranges, another unit, bad syntax) is ignored, as RFC 9110 allows: the whole file is
 * sent. A last position past the end is clamped to the end.
 */
export function rangeOf(header: string | undefined, size: number): RangeAnswer {
  const match = ONE_RANGE.exec(header?.trim() ?? '');
  if (match === null) return { kind: 'whole' };
  const [, from = '', to = ''] = match;
  if (from === '' && to === '') return { kind: 'whole' };
  if (from === '') {
    // A suffix: the last `to` bytes.
    const length = Number(to);
    if (!Number.isSafeInteger(length)) return { kind: 'whole' };
    if (length === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'part', first: Math.max(0, size - length), last: size - 1 };
  }
  const first = Number(from);
  const last = to === '' ? Number.POSITIVE_INFINITY : Number(to);
  if (!Number.isSafeInteger(first) || (to !== '' && (!Number.isSafeInteger(last) || last < first))) return { kind: 'whole' };
  if (first >= size) return { kind: 'unsatisfiable' };
  return { kind: 'part', first, last: Math.min(last, size - 1) };
}
