/**
 * Options of {@link GlanceImageSource} and their validation.
 *
 * @module
 */
import { Agent } from 'node:http';
import { InvalidConfigError } from '../errors.js';
import { integerBetween } from '../options.js';
import { MAX_TIMER_MS } from '../timer.js';
import { HEADER_VALUE_RULE, isHeaderValue } from './header-value.js';
import type { SpeedFloorOptions } from './deadlines.js';
import type { BackoffOptions } from './retry.js';
import { httpUrlOf } from './http-url.js';

/** Options of {@link GlanceImageSource}. */
export interface GlanceImageSourceOptions {
  /** Base URL of the image service, `http://` or `https://`, e.g. `http://127.0.0.1:9292`. */
  readonly endpoint: string;
  /**
   * Keystone token sent as `X-Auth-Token`. A function is called before every request, so a
   * renewed token is picked up by retries and long downloads.
   */
  readonly token?: string | (() => string | Promise<string>) | undefined;
  /** Time allowed to establish the TCP connection, ms. Default 10000. */
  readonly connectTimeoutMs?: number | undefined;
  /** Longest socket inactivity while waiting for headers or body bytes, ms. Default 30000. */
  readonly idleTimeoutMs?: number | undefined;
  /**
   * Time allowed for an image download request to get its final response head (connecting
   * included; interim `1xx` heads do not extend it), ms. Default 60000.
   */
  readonly headTimeoutMs?: number | undefined;
  /** Time allowed for one metadata request, from connecting to the whole answer, ms. Default 60000. */
  readonly metadataTimeoutMs?: number | undefined;
  /**
   * Minimum transfer rate of an image body, bytes per second on average over each
   * `minSpeedWindowMs` of waiting for the server (curl's `--speed-limit`); 0 turns it off.
   * Default 1024.
   */
  readonly minBytesPerSecond?: number | undefined;
  /** The window of `minBytesPerSecond`, ms (curl's `--speed-time`). Default 30000. */
  readonly minSpeedWindowMs?: number | undefined;
  /** Retries after the first attempt (so `retries + 1` attempts). Default 5. */
  readonly retries?: number | undefined;
  /** Cap of the first backoff delay, ms (full jitter, doubling per retry). Default 200. */
  readonly backoffBaseMs?: number | undefined;
  /** Largest backoff delay, ms. Default 5000. */
  readonly backoffMaxMs?: number | undefined;
  /** Uniform random source in [0, 1) for the jitter; injectable for tests. Default `Math.random`. */
  readonly random?: (() => number) | undefined;
  /** Connection pool to use; an `https.Agent` for an `https` endpoint. Default: node's global agent. */
  readonly agent?: Agent | undefined;
  /** CA certificate(s), PEM, to trust for an `https` endpoint. */
  readonly ca?: string | Buffer | undefined;
  /**
   * How image bytes are read. `'auto'` (the default): for an `http://` endpoint without a custom
   * `agent`, a lean HTTP/1.1 client on a raw socket that reads the body straight into the
   * download's buffers (falling back to node:http for a response it does not read, such as a
   * chunked one); node:http otherwise. `'node-http'`: always node:http / node:https.
   */
  readonly transport?: 'auto' | 'node-http' | undefined;
}

const DEFAULTS = {
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  headTimeoutMs: 60_000,
  metadataTimeoutMs: 60_000,
  minBytesPerSecond: 1024,
  minSpeedWindowMs: 30_000,
  retries: 5,
  backoffBaseMs: 200,
  backoffMaxMs: 5_000,
} as const;

const KNOWN_OPTIONS: ReadonlySet<string> = new Set([
  'endpoint',
  'token',
  ...Object.keys(DEFAULTS),
  'random',
  'agent',
  'ca',
  'transport',
]);

/**
 * Checks a token to be sent as `X-Auth-Token`: a non-empty string that goes on the wire byte for
 * byte (see `isHeaderValue`). Called for every request when the token comes from a function.
 *
 * @throws `InvalidConfigError` for anything else (the token itself is not shown)
 */
export function checkToken(value: unknown, accepted: string): string {
  if (typeof value !== 'string' || value === '' || !isHeaderValue(value)) {
    throw new InvalidConfigError('token', accepted, typeof value === 'string' && value !== '' ? '(a string that is not a header value)' : value);
  }
  return value;
}

/** 1 GiB/s: a floor above any link a compute host downloads images over. */
const MAX_MIN_BYTES_PER_SECOND = 2 ** 30;

/** {@link GlanceImageSourceOptions} checked, with defaults applied. */
export interface ResolvedOptions {
  readonly base: string;
  readonly secure: boolean;
  readonly token: GlanceImageSourceOptions['token'];
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly headTimeoutMs: number;
  readonly metadataTimeoutMs: number;
  /** The body's minimum transfer rate. */
  readonly speedFloor: SpeedFloorOptions;
  readonly retries: number;
  readonly backoff: BackoffOptions;
  readonly agent: Agent | undefined;
  readonly ca: string | Buffer | undefined;
  /** Whether bodies are read over the raw socket client (see `transport`). */
  readonly rawTransport: boolean;
}

/** `value` when it is an integer from `min` to `max` (the package's one integer check). */
function checkInteger(name: string, value: unknown, min: number, max: number): number {
  integerBetween(min, max)(name, value);
  return value as number;
}

/** A delay that becomes one timer: at most node's longest. */
function checkTimer(name: string, value: unknown, min: number): number {
  return checkInteger(name, value, min, MAX_TIMER_MS);
}

/**
 * Checks `options` and applies the defaults.
 *
 * @throws `InvalidConfigError` naming the first bad option
 */
export function resolveOptions(options: GlanceImageSourceOptions): ResolvedOptions {
  // Checked at run time too: JavaScript callers get a typed error rather than a TypeError.
  const raw: unknown = options;
  if (typeof raw !== 'object' || raw === null) {
    throw new InvalidConfigError('options', 'an object with at least `endpoint`', raw);
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) {
      throw new InvalidConfigError(key, `one of the known options (${[...KNOWN_OPTIONS].join(', ')})`, (options as unknown as Record<string, unknown>)[key]);
    }
  }
  const { endpoint, token, random, agent, ca, transport } = options;
  const url = httpUrlOf(endpoint, { base: true });
  if (url === null) throw new InvalidConfigError('endpoint', 'an http:// or https:// URL without query or fragment', endpoint);
  if (token !== undefined && typeof token !== 'function') checkToken(token, `a non-empty string of ${HEADER_VALUE_RULE}, or a function returning one`);
  if (!([undefined, 'auto', 'node-http'] as unknown[]).includes(transport)) {
    throw new InvalidConfigError('transport', "'auto' or 'node-http'", transport);
  }
  if (random !== undefined && typeof random !== 'function') {
    throw new InvalidConfigError('random', 'a function returning a number in [0, 1)', random);
  }
  if (agent !== undefined && !(agent instanceof Agent)) {
    throw new InvalidConfigError('agent', 'an http.Agent (an https.Agent for https)', String(agent));
  }
  if (ca !== undefined) {
    if (typeof ca !== 'string' && !Buffer.isBuffer(ca)) {
      throw new InvalidConfigError('ca', 'a PEM string or Buffer', typeof ca);
    }
    if (url.protocol !== 'https:') {
      throw new InvalidConfigError('ca', 'to be set only with an https:// endpoint', '(set)');
    }
  }
  const backoffBaseMs = checkTimer('backoffBaseMs', options.backoffBaseMs ?? DEFAULTS.backoffBaseMs, 0);
  const backoffMaxMs = checkTimer('backoffMaxMs', options.backoffMaxMs ?? DEFAULTS.backoffMaxMs, backoffBaseMs);
  const retries = checkInteger('retries', options.retries ?? DEFAULTS.retries, 0, 1000);
  // 0 turns the floor off.
  const minBytesPerSecond = checkInteger('minBytesPerSecond', options.minBytesPerSecond ?? DEFAULTS.minBytesPerSecond, 0, MAX_MIN_BYTES_PER_SECOND);
  return {
    base: url.href.replace(/\/+$/, ''),
    secure: url.protocol === 'https:',
    token,
    connectTimeoutMs: checkTimer('connectTimeoutMs', options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs, 1),
    idleTimeoutMs: checkTimer('idleTimeoutMs', options.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs, 1),
    headTimeoutMs: checkTimer('headTimeoutMs', options.headTimeoutMs ?? DEFAULTS.headTimeoutMs, 1),
    metadataTimeoutMs: checkTimer('metadataTimeoutMs', options.metadataTimeoutMs ?? DEFAULTS.metadataTimeoutMs, 1),
    speedFloor: { minBytesPerSecond, windowMs: checkTimer('minSpeedWindowMs', options.minSpeedWindowMs ?? DEFAULTS.minSpeedWindowMs, 1) },
    retries,
    backoff: { baseMs: backoffBaseMs, maxMs: backoffMaxMs, random },
    agent,
    ca,
    rawTransport: url.protocol === 'http:' && agent === undefined && transport !== 'node-http',
  };
}
