/**
 * How Glance 25 reads a request's `Range` (and its legacy `Content-Range`), errors and failures
 * included.
 *
 * @module
 */
import type { GlanceError } from './glance-responses.js';

/** Glance's (webob's) reading of `Range`; `crash` where Glance itself fails (a 500). */
export type RangeAnswer =
  | { readonly kind: 'none' }
  | { readonly kind: 'crash' }
  | { readonly kind: 'range'; readonly start: number; readonly end: number }
  | { readonly kind: 'error'; readonly error: GlanceError };

function unsatisfiable(detail: string): RangeAnswer {
  return { kind: 'error', error: { status: 416, explanation: 'The Range requested is not available.', detail } };
}

/**
 * Reads `Range` as Glance 25 does: several ranges are 400; a header webob cannot parse
 * (`bytes=5-2`, not `bytes=`) is 416 "Invalid Range header."; a start at or past the end is 416;
 * `bytes=-N` is the last N bytes (the whole image when N is not below the size); an end past the
 * image is cut to it; `bytes=-` makes Glance fail. Without `Range`, Glance still reads a request
 * `Content-Range` (its legacy form), see {@link parseGlanceContentRange}.
 */
export function parseGlanceRange(header: string | undefined, contentRange: string | undefined, size: number | null): RangeAnswer {
  if (header === undefined) return contentRange === undefined ? { kind: 'none' } : parseGlanceContentRange(contentRange, size);
  if (header.includes(',')) {
    return {
      kind: 'error',
      error: { status: 400, explanation: 'Requests with multiple ranges are not supported in Glance. You may make multiple single-range requests instead.' },
    };
  }
  const match = /^bytes *= *(\d*) *- *(\d*)/i.exec(header);
  if (match === null) return unsatisfiable('Invalid Range header.');
  const [, first = '', last = ''] = match;
  // webob reads `bytes=-N` as a start of -N to the end: `bytes=-` fails on `int('')`, and -0 is
  // a start of 0 (so it is checked against the size like any other start).
  if (first === '' && last === '') return { kind: 'crash' };
  const suffix = first === '' ? Number(last) : 0;
  if (suffix > 0) {
    if (size === null) return { kind: 'crash' };
    return { kind: 'range', start: suffix < size ? size - suffix : 0, end: size };
  }
  const start = Number(first);
  const open = first === '' || last === '';
  if (!open && Number(last) < start) return unsatisfiable('Invalid Range header.');
  // An image without data has no size yet, and Glance fails comparing with it.
  if (size === null) return { kind: 'crash' };
  if (start >= size) {
    return unsatisfiable(`Invalid start position in Range header. Start position MUST be in the inclusive range [0, ${size - 1}].`);
  }
  return { kind: 'range', start, end: open ? size : Math.min(Number(last) + 1, size) };
}

/**
 * Glance's legacy reading of a request `Content-Range: bytes F-L/(N|*)`: F..L when webob finds it
 * valid and it starts (and, without N, ends) within the image; 416 otherwise; `bytes * /N` makes
 * Glance fail. (With N given, Glance does not check L against the image and announces more bytes
 * than it has; the fake cuts the range to the image instead.)
 */
function parseGlanceContentRange(header: string, size: number | null): RangeAnswer {
  const match = /^bytes (?:(\d+)-(\d+)|\*)\/(?:(\d+)|\*)/.exec(header);
  if (match === null) return unsatisfiable('Invalid Content-Range header.');
  const [, first, last, total] = match;
  if (first === undefined || last === undefined) return { kind: 'crash' };
  const start = Number(first);
  const stop = Number(last) + 1;
  const length = total === undefined ? null : Number(total);
  const valid = start < stop && (length === null || (stop <= length && start < length));
  if (!valid) return unsatisfiable('Invalid Content-Range header.');
  if (size === null) return { kind: 'crash' };
  if (length === null && stop > size) {
    return unsatisfiable(`Invalid stop position in Content-Range header. The stop position MUST be in the inclusive range [0, ${size - 1}].`);
  }
  if (start >= size) {
    return unsatisfiable(`Invalid start position in Content-Range header. Start position MUST be in the inclusive range [0, ${size - 1}].`);
  }
  return { kind: 'range', start, end: Math.min(stop, size) };
}
