/**
 * What may go into an HTTP/1.1 request head, judged as the bytes that are written. Both clients
 * write a head as latin1, which keeps only the low byte of each UTF-16 unit: U+010D goes out as
 * CR and U+010A as LF, so a check of the JavaScript string for CR and LF lets a header, or a whole
 * second request, through. Every request head of this package is checked here, just before it is
 * built ({@link checkRequestHead}); values that are not acceptable are refused, never re-encoded
 * (a re-encoded token is another token).
 *
 * @module
 */
import { InvalidConfigError } from '../errors.js';

/**
 * A field value as RFC 9110 section 5.5 has it, without obs-text: visible ASCII, with spaces and
 * tabs only between visible characters (a parser trims them at the ends, so the peer would see
 * another value).
 */
const FIELD_VALUE = /^(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?$/;

/** A field name (RFC 9110 section 5.6.2, a token). */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** An origin-form request target: a path and query of visible ASCII (no space: it ends the target). */
const ORIGIN_FORM = /^\/[\x21-\x7e]*$/;

/** What {@link isHeaderValue} accepts, for messages. */
export const HEADER_VALUE_RULE = 'visible ASCII (0x21-0x7E), with spaces or tabs only between visible characters';

/** True when `value` can be written as a header value as is: see {@link HEADER_VALUE_RULE}. */
export function isHeaderValue(value: string): boolean {
  return FIELD_VALUE.test(value);
}

/**
 * The option a head value comes from, for the error: the token, the endpoint (host and path), or
 * the header itself.
 */
function optionOf(header: string): string {
  const name = header.toLowerCase();
  if (name === 'x-auth-token') return 'token';
  if (name === 'host' || name === 'request target') return 'endpoint';
  return `${name} header`;
}

/**
 * Checks everything a request head will hold: the request target (path and query of `url`), the
 * `Host` (`url.host`), and each header's name and value.
 *
 * @throws `InvalidConfigError` naming the option the bad value came from; a header value itself is
 *   never shown (it may be a secret)
 */
export function checkRequestHead(url: URL, headers: Readonly<Record<string, string>>): void {
  if (!ORIGIN_FORM.test(`${url.pathname}${url.search}`)) {
    throw new InvalidConfigError('endpoint', 'a URL whose path and query are visible ASCII', '(a path that cannot be sent)');
  }
  if (url.host === '' || !isHeaderValue(url.host)) {
    throw new InvalidConfigError('endpoint', 'a URL whose host is visible ASCII', '(a host that cannot be sent)');
  }
  for (const [name, value] of Object.entries(headers)) {
    if (!FIELD_NAME.test(name)) throw new InvalidConfigError(optionOf(name), 'a header name that is an HTTP token', '(a name that cannot be sent)');
    if (typeof value !== 'string' || !isHeaderValue(value)) {
      throw new InvalidConfigError(optionOf(name), HEADER_VALUE_RULE, '(a value that cannot be sent)');
    }
  }
}
