/**
 * One GET of an image's bytes, whatever moves them: node:http (`NodeHttpExchange`) or the
 * raw socket client (`RawHttpGet`). The download state machine (`GlanceBodyReader`) sees only
 * this shape, so retries, resume and status handling exist once for both transports.
 *
 * @module
 */

/** The status line and headers of a response. */
export interface ResponseHead {
  /** The HTTP status code. */
  readonly status: number;
  /** A header's value (`name` in lower case); repeated headers joined with `, `. */
  header(name: string): string | undefined;
}

/** One request for an image's bytes, and its response. */
export interface BodyExchange {
  /** The URL requested, for messages. */
  readonly url: string;
  /** The final response head; rejects with the transport failure (refused, reset, timeout, ...). */
  readonly head: Promise<ResponseHead>;
  /** Body bytes received from the server so far, read or not (what a transfer rate is judged on). */
  readonly received: number;
  /**
   * Reads body bytes into `into` (at least one, or 0 once the whole body arrived); rejects with
   * the transport failure, a body cut short included. One call at a time, after `head` resolved.
   */
  read(into: Uint8Array): Promise<number>;
  /**
   * Closes the connection; a pending `head` or `read` rejects. Idempotent. With `keepReceived`, a
   * pending read that already holds bytes resolves with them instead (the next read rejects), so
   * a request cut for being too slow loses nothing it received; a transport that cannot tell
   * rejects as without it.
   */
  close(options?: { readonly keepReceived?: boolean }): void;
}
