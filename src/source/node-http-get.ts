/**
 * Requests over node:http / node:https: {@link HttpGet} (one GET with the connect and idle
 * timeouts armed, used for metadata and bodies) and {@link NodeHttpExchange} (a body read through
 * it, for `https:` endpoints, a custom agent, or a response the raw client does not read).
 *
 * @module
 */
import { request as httpRequest } from 'node:http';
import type { ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { BodyExchange, ResponseHead } from './body-exchange.js';
import { checkRequestHead } from './header-value.js';
import type { ResolvedOptions } from './glance-options.js';
import { TransportError } from './http-failures.js';
import { readerFromReadable } from './image-reader.js';
import type { ImageReader } from './image-reader.js';

/**
 * One GET with the connect and idle timeouts armed. The first failure wins: it rejects
 * {@link HttpGet.response} if the headers have not arrived yet, or is reported once to the
 * {@link HttpGet.onFailure} listener afterwards; later echoes of the same teardown are ignored.
 */
export class HttpGet {
  readonly url: string;
  readonly response: Promise<IncomingMessage>;
  readonly #req: ClientRequest;
  #failure: Error | undefined;
  #closed = false;
  /** Whether the failure was already handed to someone (the response promise or the listener). */
  #reported = false;
  #listener: ((error: Error) => void) | undefined;
  #rejectResponse: ((error: Error) => void) | undefined;

  /** @throws `InvalidConfigError` when the URL or a header cannot be written as is (before connecting) */
  constructor(url: URL, headers: Readonly<Record<string, string>>, options: ResolvedOptions) {
    checkRequestHead(url, headers);
    this.url = url.href;
    let resolveResponse!: (res: IncomingMessage) => void;
    this.response = new Promise<IncomingMessage>((resolve, reject) => {
      resolveResponse = resolve;
      this.#rejectResponse = reject;
    });
    const requestOptions: RequestOptions & { ca?: string | Buffer } = { method: 'GET', headers };
    if (options.agent !== undefined) requestOptions.agent = options.agent;
    if (options.ca !== undefined) requestOptions.ca = options.ca;
    const req = (options.secure ? httpsRequest : httpRequest)(url, requestOptions);
    this.#req = req;
    req.on('socket', (socket) => {
      // A pooled keep-alive socket is already connected; only a fresh one needs the guard.
      if (!socket.connecting) return;
      const timer = setTimeout(() => {
        this.fail(new TransportError('ERR_CONNECT_TIMEOUT', `no connection to ${this.url} within ${options.connectTimeoutMs} ms`));
      }, options.connectTimeoutMs);
      const clear = (): void => {
        clearTimeout(timer);
      };
      socket.once('connect', clear);
      req.once('close', clear);
    });
    // Node arms this after connect and keeps it on the socket while the body streams, so one
    // socket timer covers both the wait for headers and every gap between body chunks.
    req.setTimeout(options.idleTimeoutMs, () => {
      this.fail(new TransportError('ERR_IDLE_TIMEOUT', `no data from ${this.url} for ${options.idleTimeoutMs} ms`));
    });
    req.on('error', (error) => {
      this.fail(error);
    });
    req.on('response', (res) => {
      this.#rejectResponse = undefined;
      res.on('error', (error) => {
        this.fail(error);
      });
      res.on('close', () => {
        if (!res.complete) {
          this.fail(new TransportError('ERR_STREAM_PREMATURE_CLOSE', `${this.url} closed the connection mid-body`));
        }
      });
      resolveResponse(res);
    });
    req.end();
  }

  /** Tears the exchange down because of `error`, which is reported unless another came first. */
  fail(error: Error): void {
    if (this.#failure !== undefined || this.#closed) return;
    this.#failure = error;
    this.#req.destroy();
    const reject = this.#rejectResponse;
    this.#rejectResponse = undefined;
    if (reject !== undefined) {
      this.#reported = true;
      reject(error);
    } else if (this.#listener !== undefined) {
      this.#reported = true;
      this.#listener(error);
    }
  }

  /** Tears the exchange down without reporting anything (the caller has moved on). */
  close(): void {
    this.#closed = true;
    this.#req.destroy();
  }

  /** Registers the listener of failures after the headers arrived; reports one that already happened. */
  onFailure(listener: (error: Error) => void): void {
    this.#listener = listener;
    if (this.#failure !== undefined && !this.#reported) {
      this.#reported = true;
      listener(this.#failure);
    }
  }

  /** Reads the whole body, at most `limit` bytes. */
  async body(res: IncomingMessage, limit: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let length = 0;
      this.onFailure(reject);
      res.on('data', (chunk: Buffer) => {
        length += chunk.length;
        if (length > limit) {
          this.close();
          reject(new TransportError('ERR_STREAM_PREMATURE_CLOSE', `${this.url} sent more than ${limit} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => {
        if (res.complete) resolve(Buffer.concat(chunks, length));
      });
    });
  }
}

/** A response body read through an {@link HttpGet}. */
export class NodeHttpExchange implements BodyExchange {
  readonly url: string;
  readonly head: Promise<ResponseHead>;
  readonly #get: HttpGet;
  #res: IncomingMessage | undefined;
  #reader: ImageReader | undefined;
  #failure: Error | undefined;
  #received = 0;
  readonly #rejectClosed: (error: Error) => void;

  constructor(get: HttpGet) {
    this.#get = get;
    this.url = get.url;
    let rejectClosed!: (error: Error) => void;
    // HttpGet reports nothing once closed; this settles a head still awaited at that point.
    const closed = new Promise<never>((_resolve, reject) => {
      rejectClosed = reject;
    });
    closed.catch(() => undefined);
    this.#rejectClosed = rejectClosed;
    const response = get.response.then((res) => {
      this.#res = res;
      const reader = readerFromReadable(res);
      this.#reader = reader;
      get.onFailure((error) => {
        this.#failure = error;
        reader.destroy();
      });
      return {
        status: res.statusCode ?? 0,
        header: (name: string) => {
          const value = res.headers[name];
          return Array.isArray(value) ? value.join(', ') : value;
        },
      };
    });
    this.head = Promise.race([response, closed]);
    this.head.catch(() => undefined);
  }

  /** Counted as read: a read here returns as soon as anything is buffered, so nothing waits uncounted. */
  get received(): number {
    return this.#received;
  }

  async read(into: Uint8Array): Promise<number> {
    const reader = this.#reader;
    const res = this.#res;
    if (reader === undefined || res === undefined) throw new Error(`read from ${this.url} before its response head`);
    let n: number;
    try {
      n = await reader.read(into);
    } catch (error) {
      throw this.#reported(error);
    }
    if (n === 0 && !res.complete) {
      throw this.#reported(new TransportError('ERR_STREAM_PREMATURE_CLOSE', `${this.url} closed the connection mid-body`));
    }
    this.#received += n;
    return n;
  }

  /** The failure the request reported (a timeout, a reset), which says more than the stream's echo of it. */
  #reported(fallback: unknown): unknown {
    return this.#failure ?? fallback;
  }

  close(): void {
    this.#get.close();
    this.#reader?.destroy();
    this.#rejectClosed(new TransportError('ERR_STREAM_PREMATURE_CLOSE', `the request to ${this.url} was closed`));
  }
}
