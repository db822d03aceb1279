/**
 * Parsing an HTTP/1.x response head the way {@link RawHttpGet} reads it: a status line and header
 * lines of the bytes llhttp accepts, with each `Content-Length` kept as sent for framing.
 *
 * @module
 */
import type { ResponseHead } from './body-exchange.js';

/**
 * A header line: a token, a colon, the value (surrounding blanks trimmed), of the bytes llhttp
 * takes in a value (no control characters but tab).
 */
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*$/;

/** The status line of an HTTP/1.x response. */
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: [\t\x20-\x7e\x80-\xff]*)?$/;

/** The end of a head, and of one with bare LF line ends. */
export const CRLF_CRLF = Buffer.from('\r\n\r\n', 'latin1');
export const LF_LF = Buffer.from('\n\n', 'latin1');

/** A parsed head, with what framing needs that a joined header value hides. */
export interface ParsedHead extends ResponseHead {
  /** Each `Content-Length` line's value, as sent after the colon's blanks (trailing ones kept). */
  readonly contentLengths: readonly string[];
}

/** Status line and header fields of an HTTP/1.x head; undefined for anything else. */
export function parseHead(text: string): ParsedHead | undefined {
  const [statusLine = '', ...lines] = text.split('\r\n');
  const status = STATUS_LINE.exec(statusLine);
  if (status === null) return undefined;
  const headers = new Map<string, string>();
  const contentLengths: string[] = [];
  for (const line of lines) {
    const match = HEADER_LINE.exec(line);
    if (match === null) return undefined;
    const name = (match[1] ?? '').toLowerCase();
    const value = match[2] ?? '';
    if (name === 'content-length') contentLengths.push(line.slice(line.indexOf(':') + 1).replace(/^[ \t]+/, ''));
    const previous = headers.get(name);
    headers.set(name, previous === undefined ? value : `${previous}, ${value}`);
  }
  return { status: Number(status[1]), header: (name) => headers.get(name), contentLengths };
}
