/**
 * Options of `PeerImageSource`, the events it reports, and their validation.
 *
 * @module
 */
import { InvalidConfigError } from '../errors.js';
import type { PeerFailureReason, PeerUnavailableError } from '../errors.js';
import type { Logger } from '../log.js';
import { integerBetween } from '../options.js';
import { checkAgentToken } from '../precache/wire.js';
import type { ImageSource } from '../source/image-source.js';
import { MAX_TIMER_MS } from '../timer.js';
import type { PeerEndpoint } from './types.js';
import { httpUrlOf } from '../source/http-url.js';

/** Options of `PeerImageSource`. */
export interface PeerImageSourceOptions {
  /**
   * The image service: the trust anchor. Every `describe` (metadata, size, expected digest) goes
   * here, never to a peer; bytes come from here when no peer serves them.
   */
  readonly upstream: ImageSource;
  /**
   * The site's peers, tried in this order; a function is asked at every download (peers that
   * finish become sources for the others). A peer named like this host only answers 404.
   */
  readonly peers: readonly PeerEndpoint[] | (() => readonly PeerEndpoint[]);
  /** The bearer token of the peers' agents (`Authorization: Bearer <token>`). */
  readonly token: string;
  /** Time allowed to connect to a peer, ms. Default 2000 (peers are on the site's LAN). */
  readonly connectTimeoutMs?: number | undefined;
  /** Time a peer has to send its response head, ms. Default 5000. */
  readonly headTimeoutMs?: number | undefined;
  /** Longest silence of a peer while body bytes are awaited, ms: a stalled peer is left. Default 5000. */
  readonly stallTimeoutMs?: number | undefined;
  /**
   * Minimum transfer rate of a peer, bytes per second on average over each `minSpeedWindowMs` of
   * waiting for it: a slower peer is left for the next (or the image service), resuming where it
   * stopped. 0 turns the floor off. Default 1 MiB/s.
   */
  readonly minBytesPerSecond?: number | undefined;
  /** The window of `minBytesPerSecond`, ms. Default 5000. */
  readonly minSpeedWindowMs?: number | undefined;
  /** CA certificate(s), PEM, to trust for peers whose agents listen on `https://`. */
  readonly ca?: string | Buffer | undefined;
  /** Told what happens with each peer (read from, left and why, blamed for a bad digest). */
  readonly onPeerEvent?: ((event: PeerEvent) => void) | undefined;
}

/**
 * What happened with one peer for one image:
 * - `reading`: it answered, and the image's bytes from `offset` are read from it;
 * - `skipped`: it was left at `offset` (it does not hold the image, refused, timed out, stalled,
 *   was too slow, ended early, announced another size): the next peer, or the image service,
 *   continues from there;
 * - `blamed`: bytes it served were part of a download that failed verification (`reason`
 *   `bad-digest`); it is not asked for that image again by this source.
 */
export interface PeerEvent {
  /** What happened. */
  readonly type: 'reading' | 'skipped' | 'blamed';
  /** The image. */
  readonly imageId: string;
  /** The peer's name. */
  readonly peer: string;
  /** The image byte offset where reading started (`reading`) or stopped (`skipped`); 0 for `blamed`. */
  readonly offset: number;
  /** Why the peer was left or blamed; null for `reading`. */
  readonly reason: PeerFailureReason | null;
  /** The typed error, for `skipped` and `blamed`; null for `reading`. */
  readonly error: PeerUnavailableError | null;
}

/** Timeouts and the rate floor, checked, with defaults. */
export interface PeerSettings {
  readonly connectTimeoutMs: number;
  readonly headTimeoutMs: number;
  readonly stallTimeoutMs: number;
  readonly minBytesPerSecond: number;
  readonly minSpeedWindowMs: number;
  readonly ca: string | Buffer | undefined;
}

const DEFAULTS: Omit<PeerSettings, 'ca'> = {
  connectTimeoutMs: 2000,
  headTimeoutMs: 5000,
  stallTimeoutMs: 5000,
  minBytesPerSecond: 1024 * 1024,
  minSpeedWindowMs: 5000,
};

/** 1 GiB/s: above any link between two hosts of a site. */
const MAX_MIN_BYTES_PER_SECOND = 2 ** 30;

/**
 * Checks the options (the peers themselves are checked as they are used: see `checkPeer`).
 *
 * @throws `InvalidConfigError` naming the first bad option
 */
export function resolvePeerSettings(options: PeerImageSourceOptions): PeerSettings {
  const raw: unknown = options;
  if (typeof raw !== 'object' || raw === null) throw new InvalidConfigError('options', 'an object with `upstream`, `peers` and `token`', raw);
  // Checked as unknowns: JavaScript callers get a typed error rather than a TypeError later.
  const { upstream, peers, onPeerEvent } = raw as Record<string, unknown>;
  const { describe, open } = (typeof upstream === 'object' && upstream !== null ? upstream : {}) as Record<string, unknown>;
  if (typeof describe !== 'function' || typeof open !== 'function') {
    throw new InvalidConfigError('upstream', 'an ImageSource (the image service)', typeof upstream);
  }
  if (typeof peers !== 'function' && !Array.isArray(peers)) throw new InvalidConfigError('peers', 'a list of {name, url}, or a function returning one', typeof peers);
  if (onPeerEvent !== undefined && typeof onPeerEvent !== 'function') throw new InvalidConfigError('onPeerEvent', 'a function', typeof onPeerEvent);
  checkAgentToken('token', options.token);
  const { ca } = options;
  if (ca !== undefined && typeof ca !== 'string' && !Buffer.isBuffer(ca)) throw new InvalidConfigError('ca', 'a PEM string or Buffer', typeof ca);
  const timer = (name: 'connectTimeoutMs' | 'headTimeoutMs' | 'stallTimeoutMs' | 'minSpeedWindowMs'): number => {
    const value = options[name] ?? DEFAULTS[name];
    integerBetween(1, MAX_TIMER_MS)(name, value);
    return value;
  };
  const minBytesPerSecond = options.minBytesPerSecond ?? DEFAULTS.minBytesPerSecond;
  integerBetween(0, MAX_MIN_BYTES_PER_SECOND)('minBytesPerSecond', minBytesPerSecond);
  return {
    connectTimeoutMs: timer('connectTimeoutMs'),
    headTimeoutMs: timer('headTimeoutMs'),
    stallTimeoutMs: timer('stallTimeoutMs'),
    minBytesPerSecond,
    minSpeedWindowMs: timer('minSpeedWindowMs'),
    ca,
  };
}

/**
 * Checks one peer: a non-empty name and an `http:`/`https:` URL without query or fragment.
 *
 * @throws `InvalidConfigError` naming `peers`
 */
export function checkPeer(peer: unknown): PeerEndpoint {
  const { name, url } = (typeof peer === 'object' && peer !== null ? peer : {}) as Record<string, unknown>;
  if (typeof name !== 'string' || name === '') throw new InvalidConfigError('peers', 'peers with a non-empty `name`', name);
  if (httpUrlOf(url, { base: true }) === null) {
    throw new InvalidConfigError('peers', `an http:// or https:// agent URL for peer ${name}`, url);
  }
  return { name, url: url as string };
}

/** Calls an event listener; one that throws is logged, never let through to the download. */
export function emitPeerEvent(listener: ((event: PeerEvent) => void) | undefined, event: PeerEvent, log: Logger): void {
  try {
    listener?.(event);
  } catch (error) {
    log('onPeerEvent listener threw: %O', error);
  }
}

/** Builds a `skipped` or `blamed` event from the typed error. */
export function failureEvent(type: 'skipped' | 'blamed', error: PeerUnavailableError, offset: number): PeerEvent {
  return { type, imageId: error.imageId ?? '', peer: error.peer, offset, reason: error.reason, error };
}
