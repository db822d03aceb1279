/**
 * {@link RawHttpGet}: a lean HTTP/1.1 GET on a raw socket that reads a response body straight into
 * the caller's buffer (`net.connect` with `onread`), for `http:` image downloads.
 *
 * node:http hands every ~64 KiB socket read to llhttp and the stream machinery in a fresh Buffer,
 * which the download then copies into its ring: about a CPU-second per GiB, on compute hosts
 * with few cores to spare while the image is also hashed. Here the kernel copies the body once,
 * into the ring block being filled, and JavaScript only counts bytes.
 *
 * It reads what an image download needs, and only that: one request with `Connection: close`, a
 * response head of at most {@link MAX_HEAD_BYTES} with CRLF line ends, then a body delimited by
 * `Content-Length` or by the end of the connection. Anything else (a successful response with a
 * `Transfer-Encoding`, chunked or not; an odd `Content-Length`; a head it cannot parse) is handed
 * over: the request is made again through the `fallback` the caller provides (node:http), which
 * reads it or rejects it for this attempt.
 *
 * @module
 */
import net from 'node:net';
import { createLogger } from '../log.js';
import type { BodyExchange, ResponseHead } from './body-exchange.js';
import { checkRequestHead } from './header-value.js';
import { TransportError } from './http-failures.js';
import { CRLF_CRLF, LF_LF, parseHead } from './response-head.js';
import type { ParsedHead } from './response-head.js';

const log = createLogger('source');

/** Largest response head accepted: node:http's default `maxHeaderSize`. */
export const MAX_HEAD_BYTES = 16 * 1024;

/** The client's own buffer: the head, the body bytes that came with it, and reads while no caller waits. */
const SPARE_BYTES = 128 * 1024;

/** Largest read into the spare buffer (the rest keeps room for what is still unread there). */
const SPARE_READ_BYTES = 64 * 1024;

/** Options of {@link RawHttpGet}. */
export interface RawHttpGetOptions {
  /** Time allowed to establish the TCP connection, ms. */
  readonly connectTimeoutMs: number;
  /** Longest silence while a head or body bytes are awaited, ms. */
  readonly idleTimeoutMs: number;
  /** Makes the same request another way, for a successful response this client does not read. */
  readonly fallback: () => BodyExchange;
}

interface PendingRead {
  readonly into: Uint8Array;
  filled: number;
  readonly resolve: (n: number) => void;
  readonly reject: (error: Error) => void;
}

/** One GET over its own connection. */
export class RawHttpGet implements BodyExchange {
  readonly url: string;
  readonly head: Promise<ResponseHead>;
  readonly #socket: net.Socket;
  readonly #options: RawHttpGetOptions;
  readonly #spare = Buffer.allocUnsafe(SPARE_BYTES);
  /** Unread body bytes in the spare buffer: `[#spareStart, #spareEnd)`. */
  #spareStart = 0;
  #spareEnd = 0;
  /** Where the read in progress lands: the spare buffer or the pending read's memory. */
  #landing: 'spare' | 'caller' = 'spare';
  #headDone = false;
  #searchFrom = 0;
  /** Body bytes not yet received (Infinity: the body runs to the end of the connection). */
  #remaining = Number.POSITIVE_INFINITY;
  #complete = false;
  /** Set for a response whose body this client does not decode (reads fail). */
  #bodyUnread = false;
  #received = 0;
  #failure: Error | undefined;
  #closed = false;
  #paused = false;
  #idleArmed = false;
  #pending: PendingRead | undefined;
  #delegate: BodyExchange | undefined;
  #resolveHead!: (head: ResponseHead | Promise<ResponseHead>) => void;
  #rejectHead!: (error: Error) => void;
  readonly #connectTimer: NodeJS.Timeout;

  /**
   * Connects and sends the request at once.
   *
   * @param url - an `http:` URL
   * @param headers - request headers besides `Host` and `Connection`
   * @throws `InvalidConfigError` when the URL or a header cannot be written as is (before connecting)
   */
  constructor(url: URL, headers: Readonly<Record<string, string>>, options: RawHttpGetOptions) {
    checkRequestHead(url, headers);
    this.url = url.href;
    this.#options = options;
    this.head = new Promise<ResponseHead>((resolve, reject) => {
      this.#resolveHead = resolve;
      this.#rejectHead = reject;
    });
    this.head.catch(() => undefined);
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const socket = net.connect({
      host,
      port: url.port === '' ? 80 : Number(url.port),
      noDelay: true,
      onread: { buffer: () => this.#nextBuffer(), callback: (n: number) => this.#onRead(n) },
    });
    this.#socket = socket;
    this.#connectTimer = setTimeout(() => {
      this.#fail(new TransportError('ERR_CONNECT_TIMEOUT', `no connection to ${this.url} within ${options.connectTimeoutMs} ms`));
    }, options.connectTimeoutMs);
    socket.once('connect', () => {
      clearTimeout(this.#connectTimer);
      this.#setIdleTimer(true);
    });
    socket.on('timeout', () => {
      this.#fail(new TransportError('ERR_IDLE_TIMEOUT', `no data from ${this.url} for ${options.idleTimeoutMs} ms`));
    });
    socket.on('error', (error) => {
      this.#fail(error);
    });
    socket.on('end', () => {
      this.#onEnd();
    });
    socket.on('close', () => {
      clearTimeout(this.#connectTimer);
      this.#fail(new TransportError('ERR_STREAM_PREMATURE_CLOSE', `${this.url} closed the connection mid-response`));
    });
    let request = `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n`;
    for (const [name, value] of Object.entries(headers)) request += `${name}: ${value}\r\n`;
    // write, not end: a server may take a half-closed connection for a client that went away.
    socket.write(`${request}Connection: close\r\n\r\n`, 'latin1');
  }

  get received(): number {
    return this.#delegate?.received ?? this.#received;
  }

  read(into: Uint8Array): Promise<number> {
    if (this.#delegate !== undefined) return this.#delegate.read(into);
    if (this.#closed) return Promise.reject(this.#closedError());
    if (!this.#headDone) return Promise.reject(new Error(`read from ${this.url} before its response head`));
    if (this.#bodyUnread) return Promise.reject(new TransportError('ERR_BODY_NOT_READ', `${this.url} sent an error status with a Transfer-Encoding, whose body is not read`));
    if (this.#pending !== undefined) return Promise.reject(new Error(`concurrent reads from ${this.url}`));
    if (into.length === 0) return Promise.reject(new RangeError('read into an empty buffer'));
    return new Promise<number>((resolve, reject) => {
      this.#pending = { into, filled: 0, resolve, reject };
      this.#drainSpare();
      if (this.#settleIfDone()) return;
      this.#setIdleTimer(true);
      if (this.#paused) {
        this.#paused = false;
        this.#socket.resume();
      }
    });
  }

  close(options: { readonly keepReceived?: boolean } = {}): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#delegate?.close(options);
    this.#teardown();
    const error = this.#closedError();
    this.#rejectHead(error);
    const pending = this.#pending;
    this.#pending = undefined;
    if (pending !== undefined && pending.filled > 0 && options.keepReceived === true) pending.resolve(pending.filled);
    else pending?.reject(error);
  }

  #closedError(): TransportError {
    return new TransportError('ERR_STREAM_PREMATURE_CLOSE', `the request to ${this.url} was closed`);
  }

  /** The memory the next socket read lands in (called by node after every read). */
  #nextBuffer(): Uint8Array {
    const pending = this.#pending;
    if (pending !== undefined && this.#headDone && this.#spareStart === this.#spareEnd) {
      // Capped at the body's end: bytes past it must not reach the caller's memory.
      const room = Math.min(pending.into.length - pending.filled, this.#remaining);
      if (room > 0) {
        this.#landing = 'caller';
        return pending.into.subarray(pending.filled, pending.filled + room);
      }
    }
    this.#landing = 'spare';
    if (this.#spareStart === this.#spareEnd) {
      this.#spareStart = 0;
      this.#spareEnd = 0;
    } else if (this.#headDone && this.#spareStart > 0) {
      this.#spare.copyWithin(0, this.#spareStart, this.#spareEnd);
      this.#spareEnd -= this.#spareStart;
      this.#spareStart = 0;
    }
    // Unread bytes never exceed a head plus one read, so there is always room here.
    return this.#spare.subarray(this.#spareEnd, Math.min(this.#spareEnd + SPARE_READ_BYTES, SPARE_BYTES));
  }

  /** Accounts for `n` bytes just read; false pauses the socket. */
  #onRead(n: number): boolean {
    if (!this.#live()) return false;
    const pending = this.#pending;
    if (this.#landing === 'caller' && pending !== undefined) {
      pending.filled += n;
      this.#received += n;
      this.#remaining -= n;
      if (this.#remaining === 0) this.#finishBody();
      this.#settleIfDone();
      return !this.#complete;
    }
    if (this.#headDone) {
      this.#takeBody(this.#spareEnd, n);
    } else {
      this.#spareEnd += n;
      // Until the head is complete, keep reading (unless it was refused or handed over).
      if (!this.#parseHeads()) return this.#live();
      // What followed the head is the body's start.
      this.#takeBody(this.#spareStart, this.#spareEnd - this.#spareStart);
    }
    if (this.#remaining === 0) this.#finishBody();
    this.#drainSpare();
    this.#settleIfDone();
    if (!this.#live()) return false;
    if (this.#pending === undefined) {
      // Nobody is reading: stop taking bytes (TCP pushes back), and do not count the wait as
      // the server's silence.
      this.#paused = true;
      this.#setIdleTimer(false);
      return false;
    }
    return true;
  }

  /** Keeps the `n` bytes read at `from` in the spare buffer, less any past the body's end. */
  #takeBody(from: number, n: number): void {
    const body = Math.min(n, this.#remaining);
    this.#spareEnd = from + body;
    this.#received += body;
    this.#remaining -= body;
  }

  /**
   * Parses the response head at the spare's start once it is complete (interim 1xx heads
   * skipped); true when the body can now be read here.
   */
  #parseHeads(): boolean {
    for (;;) {
      const received = this.#spare.subarray(0, this.#spareEnd);
      const end = received.indexOf(CRLF_CRLF, this.#searchFrom);
      const bareEnd = received.indexOf(LF_LF, this.#searchFrom);
      if (bareEnd >= 0 && (end < 0 || bareEnd < end)) {
        // Lines ended by a bare LF: tolerated by some parsers, not read here.
        return this.#handOver('a head with bare LF line ends');
      }
      if (end < 0 || end + CRLF_CRLF.length > MAX_HEAD_BYTES) {
        if (this.#spareEnd <= MAX_HEAD_BYTES) {
          this.#searchFrom = Math.max(0, this.#spareEnd - CRLF_CRLF.length + 1);
          return false;
        }
        this.#fail(new TransportError('ERR_HTTP_HEADER_OVERFLOW', `${this.url} sent a response head over ${MAX_HEAD_BYTES} bytes`));
        return false;
      }
      const head = parseHead(this.#spare.toString('latin1', 0, end));
      if (head === undefined) return this.#handOver('a head this client does not read');
      const length = end + CRLF_CRLF.length;
      if (head.status >= 100 && head.status < 200 && head.status !== 101) {
        // An interim response (103 Early Hints, an unasked 100 Continue): the real one follows.
        this.#spare.copyWithin(0, length, this.#spareEnd);
        this.#spareEnd -= length;
        this.#searchFrom = 0;
        continue;
      }
      this.#spareStart = length;
      return this.#frame(head);
    }
  }

  /**
   * Decides how the body is delimited, or hands the request over when it is not read here. Read
   * here: at most one plain decimal `Content-Length` and no `Transfer-Encoding`, whatever the
   * status (node:http refuses a 304 with two, a 5xx with both); node:http judges anything else,
   * except the common chunked error answer: its head is taken here, its body not read at all.
   */
  #frame(head: ParsedHead): boolean {
    const { status } = head;
    if (status === 101) return this.#handOver('a protocol switch');
    const bodiless = status === 204 || status === 304;
    let length = Number.POSITIVE_INFINITY;
    if (head.contentLengths.length > 0) {
      // Nothing around the digits: node:http refuses a repeated one (even the same value), a
      // sign, a list, a tab after it.
      const [value = ''] = head.contentLengths;
      length = Number(value);
      if (head.contentLengths.length !== 1 || !/^\d+$/.test(value) || !Number.isSafeInteger(length)) return this.#handOver('an odd Content-Length');
    }
    if (head.header('transfer-encoding') !== undefined) {
      const success = status >= 200 && status < 300 && status !== 204;
      if (success || head.contentLengths.length > 0) return this.#handOver('a Transfer-Encoding');
      // The body of an error status is never read: asking node:http again for it would only
      // cost a request (and this endpoint the raw client).
      this.#bodyUnread = !bodiless;
    }
    this.#remaining = bodiless ? 0 : length;
    this.#headDone = true;
    this.#resolveHead(head);
    return true;
  }

  /** Makes this attempt again through the fallback transport, which answers for it from now on. */
  #handOver(why: string): boolean {
    log('%s sent %s: this attempt goes through node:http', this.url, why);
    const delegate = this.#options.fallback();
    this.#delegate = delegate;
    this.#teardown();
    this.#resolveHead(delegate.head);
    return false;
  }

  /** Moves unread spare bytes into the pending read. */
  #drainSpare(): void {
    const pending = this.#pending;
    if (pending === undefined || this.#spareStart === this.#spareEnd) return;
    const count = Math.min(this.#spareEnd - this.#spareStart, pending.into.length - pending.filled);
    pending.into.set(this.#spare.subarray(this.#spareStart, this.#spareStart + count), pending.filled);
    pending.filled += count;
    this.#spareStart += count;
  }

  /** Resolves the pending read when it is full, the body is complete, or a failure cut it short. */
  #settleIfDone(): boolean {
    const pending = this.#pending;
    if (pending === undefined) return true;
    const drained = this.#spareStart === this.#spareEnd;
    const full = pending.filled === pending.into.length;
    if (!full && !(this.#complete && drained) && this.#failure === undefined) return false;
    this.#pending = undefined;
    if (pending.filled === 0 && this.#failure !== undefined) {
      pending.reject(this.#failure);
    } else {
      // Bytes that arrived before a failure are delivered; the failure comes with the next read.
      pending.resolve(pending.filled);
    }
    return true;
  }

  #finishBody(): void {
    this.#complete = true;
    this.#teardown();
  }

  #onEnd(): void {
    if (this.#headDone && this.#remaining === Number.POSITIVE_INFINITY) {
      this.#finishBody();
      this.#settleIfDone();
      return;
    }
    const where = this.#headDone ? 'mid-body' : 'before the response head';
    this.#fail(new TransportError('ERR_STREAM_PREMATURE_CLOSE', `${this.url} closed the connection ${where}`));
  }

  /** True while this exchange still reads from its socket. */
  #live(): boolean {
    return !this.#closed && !this.#complete && this.#failure === undefined && this.#delegate === undefined;
  }

  #fail(error: Error): void {
    if (!this.#live()) return;
    this.#failure = error;
    this.#teardown();
    if (!this.#headDone) this.#rejectHead(error);
    this.#settleIfDone();
  }

  #setIdleTimer(on: boolean): void {
    if (on === this.#idleArmed) return;
    this.#idleArmed = on;
    this.#socket.setTimeout(on ? this.#options.idleTimeoutMs : 0);
  }

  #teardown(): void {
    clearTimeout(this.#connectTimer);
    this.#setIdleTimer(false);
    // Not from inside node's read callback: let it finish first.
    process.nextTick(() => this.#socket.destroy());
  }
}
