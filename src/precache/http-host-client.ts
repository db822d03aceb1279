/**
 * {@link HttpHostClient}: a {@link HostClient} that asks each host's agent (`createHostAgent`)
 * over HTTP(S). No retries: a failed host is reported as such and pre-caching is idempotent, so
 * the operator (or a scheduler) simply asks again; a blind retry of a long download could double
 * the load the request was meant to schedule.
 *
 * @module
 */
import { request as httpRequest } from 'node:http';
import type { Agent, IncomingMessage, RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import {
  AbortedError,
  HostTimeoutError,
  HostUnauthorizedError,
  HostUnavailableError,
  InvalidConfigError,
  RemoteImageCacheError,
} from '../errors.js';
import type { ImageCacheError } from '../errors.js';
import { createLogger } from '../log.js';
import type { PeerEndpoint } from '../peer/types.js';
import { setLongTimeout } from '../timer.js';
import { startDeadline, validateTimeoutMs } from './deadline.js';
import type { HostCacheOptions, HostClient, PrecacheHost } from './host-client.js';
import { DEFAULT_PRECACHE_HOST_TIMEOUT_MS } from './precache-images.js';
import type { HostCacheReport } from './results.js';
import { CACHE_IMAGES_PATH, checkAgentToken, decodeErrorJSON, decodeHostCacheReport, encodeCacheImagesRequest } from './wire.js';
import { httpUrlOf } from '../source/http-url.js';

const log = createLogger('precache:http');

/** A report for thousands of images is well under this; more is not an agent talking. */
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/** Keep-alive probes on the idle connection while a host downloads (NAT and firewalls drop silent flows). */
const KEEPALIVE_DELAY_MS = 30_000;

/** Options of {@link HttpHostClient}. */
export interface HttpHostClientOptions {
  /**
   * Each host's agent base URL, `http://` or `https://` (e.g. `http://10.0.0.5:8775`): a map by
   * host name, or a function of the host. It is also where the host serves its site's peers
   * ({@link HttpHostClient.peerEndpointOf}).
   */
  readonly endpoints: Readonly<Record<string, string>> | ((host: PrecacheHost) => string);
  /**
   * The agents' bearer token; a function is called before every request (rotation). 1 to 4096
   * visible ASCII characters, no space (the agent's rule); a function's token is checked each time.
   */
  readonly token: string | (() => string | Promise<string>);
  /** Longest time one host may take, ms (`Infinity`: none). Default 1800000 (Nova's `long_rpc_timeout`). */
  readonly timeoutMs?: number | undefined;
  /** Time allowed to establish the TCP connection, ms. Default 10000. */
  readonly connectTimeoutMs?: number | undefined;
  /** Connection pool; an `https.Agent` for `https` endpoints. Default: node's global agent. */
  readonly agent?: Agent | undefined;
  /** CA certificate(s), PEM, to trust for `https` endpoints. */
  readonly ca?: string | Buffer | undefined;
}

/** An HTTP answer: status and body. */
interface RawAnswer {
  readonly statusCode: number;
  readonly body: string;
}

/** Asks host agents over HTTP; maps every failure to a typed error naming the host. */
export class HttpHostClient implements HostClient {
  readonly #endpoints: HttpHostClientOptions['endpoints'];
  readonly #token: HttpHostClientOptions['token'];
  readonly #timeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #agent: Agent | undefined;
  readonly #ca: string | Buffer | undefined;

  /** @param options - endpoints, token, timeouts, TLS */
  constructor(options: HttpHostClientOptions) {
    const { endpoints, token } = options;
    if (typeof endpoints !== 'function') {
      if (typeof endpoints !== 'object') throw new InvalidConfigError('endpoints', 'a host → URL map or a function', endpoints);
      for (const [host, url] of Object.entries(endpoints)) parseEndpoint(`endpoints.${host}`, url);
    }
    if (typeof token !== 'function') checkAgentToken('token', token);
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_PRECACHE_HOST_TIMEOUT_MS;
    validateTimeoutMs('timeoutMs', this.#timeoutMs);
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    validateTimeoutMs('connectTimeoutMs', this.#connectTimeoutMs);
    this.#endpoints = endpoints;
    this.#token = token;
    this.#agent = options.agent;
    this.#ca = options.ca;
  }

  /** POSTs the request to `host`'s agent and returns its report. */
  async cacheImages(host: PrecacheHost, imageIds: readonly string[], options: HostCacheOptions): Promise<HostCacheReport> {
    const base = this.#endpointOf(host);
    // An agent mounted under a path prefix (behind a reverse proxy) keeps its prefix.
    const url = new URL(`${base.pathname.replace(/\/+$/, '')}${CACHE_IMAGES_PATH}`, base);
    const token = typeof this.#token === 'function' ? checkAgentToken('token (as returned by the token function)', await this.#token()) : this.#token;
    const body = JSON.stringify(encodeCacheImagesRequest(imageIds, options));
    const deadline = startDeadline(options.signal, this.#timeoutMs);
    let answer: RawAnswer;
    try {
      answer = await this.#post(url, body, token, deadline.signal);
    } catch (thrown) {
      if (deadline.timedOut) throw new HostTimeoutError(host.name, this.#timeoutMs);
      if (options.signal.aborted) throw new AbortedError(`Pre-caching on host ${host.name}`, undefined, options.signal.reason);
      const code = (thrown as NodeJS.ErrnoException).code;
      throw new HostUnavailableError(host.name, `POST ${url.href} failed (${code ?? (thrown as Error).message})`, { cause: thrown });
    } finally {
      deadline.clear();
    }
    log('%s answered HTTP %d', host.name, answer.statusCode);
    if (answer.statusCode === 200) {
      try {
        return decodeHostCacheReport(host.name, JSON.parse(answer.body));
      } catch (malformed) {
        throw new HostUnavailableError(host.name, `its agent's answer is malformed: ${(malformed as Error).message}`, {
          statusCode: 200,
          cause: malformed,
        });
      }
    }
    throw answerError(host.name, url, answer);
  }

  /** `host`'s agent, as its site's peers reach it: its endpoint, or undefined when none is configured or it is malformed. */
  peerEndpointOf(host: PrecacheHost): PeerEndpoint | undefined {
    try {
      return { name: host.name, url: this.#endpointOf(host).href };
    } catch {
      return undefined;
    }
  }

  #endpointOf(host: PrecacheHost): URL {
    const endpoints = this.#endpoints;
    let raw: string | undefined;
    if (typeof endpoints === 'function') raw = endpoints(host);
    else if (Object.hasOwn(endpoints, host.name)) raw = endpoints[host.name];
    if (raw === undefined) throw new HostUnavailableError(host.name, 'no agent endpoint is configured for it');
    try {
      return parseEndpoint(`endpoint of ${host.name}`, raw);
    } catch (error) {
      throw new HostUnavailableError(host.name, `its endpoint ${JSON.stringify(raw)} is not an http(s) URL`, { cause: error });
    }
  }

  #post(url: URL, body: string, token: string, signal: AbortSignal): Promise<RawAnswer> {
    const options: RequestOptions & { ca?: string | Buffer } = {
      method: 'POST',
      signal,
      headers: {
        Authorization: `Bearer ${token}`,
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
        Accept: 'application/json',
      },
    };
    if (this.#agent !== undefined) options.agent = this.#agent;
    if (this.#ca !== undefined) options.ca = this.#ca;
    return new Promise((resolve, reject) => {
      const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, options, (response: IncomingMessage) => {
        readAnswer(response).then(resolve, reject);
      });
      request.on('error', reject);
      request.on('socket', (socket) => {
        socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
        if (!socket.connecting) return;
        const timer = setLongTimeout(() => {
          request.destroy(Object.assign(new Error(`no connection within ${this.#connectTimeoutMs} ms`), { code: 'ERR_CONNECT_TIMEOUT' }));
        }, this.#connectTimeoutMs);
        const clear = (): void => {
          timer.clear();
        };
        socket.once('connect', clear);
        socket.once('close', clear);
      });
      request.end(body);
    });
  }
}

/** A URL check for endpoints: absolute, http or https. */
function parseEndpoint(option: string, raw: unknown): URL {
  const url = httpUrlOf(raw);
  if (url === null) throw new InvalidConfigError(option, 'an http:// or https:// URL', raw);
  return url;
}

function readAnswer(response: IncomingMessage): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    response.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_RESPONSE_BYTES) {
        response.destroy(new Error(`the answer is larger than ${MAX_RESPONSE_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    response.once('end', () => {
      resolve({ statusCode: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
    });
    response.once('error', reject);
  });
}

/** The typed error for a non-200 answer. */
function answerError(host: string, url: URL, answer: RawAnswer): ImageCacheError {
  const { statusCode } = answer;
  if (statusCode === 401 || statusCode === 403) return new HostUnauthorizedError(host, statusCode);
  let remote: RemoteImageCacheError | null = null;
  try {
    const json = decodeErrorJSON((JSON.parse(answer.body) as { error?: unknown }).error);
    if (json !== null) remote = new RemoteImageCacheError(host, json);
  } catch {
    // Not our agent's JSON (a proxy's HTML page, say): the status alone tells.
  }
  if (statusCode >= 400 && statusCode < 500 && statusCode !== 404 && statusCode !== 405 && remote !== null) return remote;
  const what = statusCode === 404 || statusCode === 405 ? `no pre-cache agent answers at ${url.href}` : `its agent answered HTTP ${statusCode}`;
  return new HostUnavailableError(host, remote === null ? what : `${what}: ${remote.message}`, { statusCode, cause: remote ?? undefined });
}
