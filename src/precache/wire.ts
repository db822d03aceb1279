/**
 * The host agent's HTTP protocol, shared by `createHostAgent` and `HttpHostClient` so both ends
 * read and write the same shapes.
 *
 * `POST /v1/cache-images` with `Authorization: Bearer <token>` and a JSON body shaped like Nova's
 * `POST /os-aggregates/{id}/images` (`{"cache": [{"id": "..."}]}`, no other keys per item), plus the
 * per-request options Nova's spec left room for: `pinTtlSeconds`, `bytesPerSecond`, and `peers` (the
 * host's site peers to fetch the bytes from: `[{"name", "url"}]`). The answer is
 * the host's report as JSON (errors in their `toJSON` form); failures answer
 * `{"error": {"name", "code", "message"}}` with a 4xx or 5xx status.
 *
 * @module
 */
import { InvalidConfigError, InvalidPrecacheRequestError, RemoteImageCacheError } from '../errors.js';
import type { ImageCacheErrorCode, ImageCacheErrorJSON } from '../errors.js';
import type { ByteOrigin, BytesFrom, PeerEndpoint } from '../peer/types.js';
import { validateImageIds, validateRequestOptions } from './request.js';
import type { PrecacheRequestOptions } from './request.js';
import type { HostCacheReport, PrecacheImageResult, PrecacheImageStatus } from './results.js';
import { httpUrlOf } from '../source/http-url.js';

/** The agent's only route. */
export const CACHE_IMAGES_PATH = '/v1/cache-images';

/** One image of a {@link CacheImagesRequestBody} (Nova's item shape: nothing but the id). */
export interface CacheImagesRequestItem {
  /** The image id. */
  readonly id: string;
}

/** The request body of `POST /v1/cache-images`. */
export interface CacheImagesRequestBody {
  /** The images, in order (Nova's shape). */
  readonly cache: readonly CacheImagesRequestItem[];
  /** Pin each cached image this long, seconds. */
  readonly pinTtlSeconds?: number | undefined;
  /** Download speed cap, bytes per second. */
  readonly bytesPerSecond?: number | undefined;
  /** The site peers to fetch the bytes from, in order; at most {@link MAX_REQUEST_PEERS}. */
  readonly peers?: readonly PeerEndpoint[] | undefined;
}

/** A parsed, validated request. */
export interface CacheImagesRequest extends PrecacheRequestOptions {
  /** The images, in order, each once. */
  readonly imageIds: readonly string[];
  /** The site peers to fetch the bytes from, in order (empty: none). */
  readonly peers: readonly PeerEndpoint[];
}

/** Most peers one request may name: a site's hosts worth trying before the image service. */
export const MAX_REQUEST_PEERS = 64;

/** Longest bearer token, characters: far below node's 16 KiB limit on a request head. */
export const MAX_AGENT_TOKEN_LENGTH = 4096;

/**
 * The tokens both ends accept: 1 to {@link MAX_AGENT_TOKEN_LENGTH} visible ASCII characters
 * (`!` to `~`). No space (the agent could not tell it from the separator), no control character
 * (it could end the header), nothing outside ASCII (written as latin1, U+010A would become LF).
 */
const AGENT_TOKEN = new RegExp(`^[\\x21-\\x7e]{1,${MAX_AGENT_TOKEN_LENGTH}}$`);

/** `Authorization: Bearer <token>`, the token by the same rule. */
const BEARER = new RegExp(`^Bearer +([\\x21-\\x7e]{1,${MAX_AGENT_TOKEN_LENGTH}}) *$`, 'i');

/**
 * Checks an agent token (`createHostAgent`'s, or one `HttpHostClient` is about to send), so the
 * agent and its clients accept exactly the same tokens.
 *
 * @throws `InvalidConfigError` naming `option`
 */
export function checkAgentToken(option: string, value: unknown): string {
  if (typeof value !== 'string' || !AGENT_TOKEN.test(value)) {
    const shown = typeof value === 'string' && value !== '' ? '(a string with other characters, or too long)' : value;
    throw new InvalidConfigError(option, `a bearer token of 1 to ${MAX_AGENT_TOKEN_LENGTH} visible ASCII characters (no space)`, shown);
  }
  return value;
}

/** The token of an `Authorization` header, or null when there is none by {@link checkAgentToken}'s rule. */
export function bearerTokenOf(header: string | undefined): string | null {
  return BEARER.exec(header ?? '')?.[1] ?? null;
}

const BODY_KEYS: ReadonlySet<string> = new Set(['cache', 'pinTtlSeconds', 'bytesPerSecond', 'peers']);
const STATUSES: ReadonlySet<string> = new Set<PrecacheImageStatus>(['cached', 'existing', 'unsupported', 'error']);

/** The body for `imageIds` and `options` (JSON has no `Infinity`: an uncapped speed is left out). */
export function encodeCacheImagesRequest(
  imageIds: readonly string[],
  options: PrecacheRequestOptions & { readonly peers?: readonly PeerEndpoint[] | undefined },
): CacheImagesRequestBody {
  return {
    cache: imageIds.map((id) => ({ id })),
    ...(options.pinTtlSeconds === undefined ? {} : { pinTtlSeconds: options.pinTtlSeconds }),
    ...(options.bytesPerSecond === undefined || !Number.isFinite(options.bytesPerSecond) ? {} : { bytesPerSecond: options.bytesPerSecond }),
    ...(options.peers === undefined || options.peers.length === 0 ? {} : { peers: options.peers.map(({ name, url }) => ({ name, url })) }),
  };
}

/**
 * Validates a parsed JSON body as Nova validates its schema: `cache` required, at least one item,
 * each item exactly `{ "id": string }`, no unknown keys; then the image ids and options; `peers`,
 * when present, a list of at most {@link MAX_REQUEST_PEERS} `{ "name", "url" }` (a non-empty name,
 * an http(s) URL, each name once).
 *
 * @throws `InvalidPrecacheRequestError`, `InvalidImageIdError` or `InvalidConfigError`
 */
export function parseCacheImagesRequest(body: unknown): CacheImagesRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new InvalidPrecacheRequestError('the body must be a JSON object like {"cache": [{"id": "<image id>"}]}.');
  }
  const unknownKey = Object.keys(body).find((key) => !BODY_KEYS.has(key));
  if (unknownKey !== undefined) {
    throw new InvalidPrecacheRequestError(`unknown field ${JSON.stringify(unknownKey)}; accepted: ${[...BODY_KEYS].join(', ')}.`);
  }
  const { cache, pinTtlSeconds, bytesPerSecond, peers } = body as Record<string, unknown>;
  if (!Array.isArray(cache)) {
    throw new InvalidPrecacheRequestError('"cache" is required: a list of {"id": "<image id>"}.');
  }
  const imageIds = (cache as unknown[]).map((item, i) => {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw new InvalidPrecacheRequestError(`cache[${i}] must be an object {"id": "<image id>"}.`);
    }
    const keys = Object.keys(item);
    if (keys.length !== 1 || keys[0] !== 'id') {
      throw new InvalidPrecacheRequestError(`cache[${i}] must have exactly one field, "id" (it has ${keys.join(', ') || 'none'}).`);
    }
    return (item as { id: unknown }).id as string;
  });
  const request = {
    imageIds: validateImageIds(imageIds),
    pinTtlSeconds: pinTtlSeconds as number | undefined,
    bytesPerSecond: bytesPerSecond as number | undefined,
    peers: parsePeers(peers),
  };
  try {
    validateRequestOptions(request);
  } catch (error) {
    // Out of range in a request is the request's fault (400 ERR_INVALID_REQUEST), not a config's.
    if (error instanceof InvalidConfigError) throw new InvalidPrecacheRequestError(error.message.replace(/^Invalid option /, 'field '));
    throw error;
  }
  return request;
}

/** Checks the request's `peers`: absent is none. */
function parsePeers(value: unknown): PeerEndpoint[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_REQUEST_PEERS) {
    throw new InvalidPrecacheRequestError(`"peers" must be a list of at most ${MAX_REQUEST_PEERS} {"name", "url"}.`);
  }
  const names = new Set<string>();
  return (value as unknown[]).map((item, i) => {
    const fields = (typeof item === 'object' && item !== null && !Array.isArray(item) ? item : null) as Record<string, unknown> | null;
    const keys = fields === null ? [] : Object.keys(fields).sort();
    if (fields === null || keys.length !== 2 || keys[0] !== 'name' || keys[1] !== 'url') {
      throw new InvalidPrecacheRequestError(`peers[${i}] must be an object with exactly "name" and "url".`);
    }
    const { name, url } = fields;
    if (typeof name !== 'string' || name === '' || names.has(name)) {
      throw new InvalidPrecacheRequestError(`peers[${i}].name must be a non-empty host name, each peer once.`);
    }
    if (typeof url !== 'string' || httpUrlOf(url) === null) {
      throw new InvalidPrecacheRequestError(`peers[${i}].url must be an http:// or https:// URL.`);
    }
    names.add(name);
    return { name, url };
  });
}


/** Reads an error's JSON form, or null when `value` is not one. */
export function decodeErrorJSON(value: unknown): ImageCacheErrorJSON | null {
  if (typeof value !== 'object' || value === null) return null;
  const { name, code, message, imageId } = value as Record<string, unknown>;
  if (typeof name !== 'string' || typeof message !== 'string' || typeof code !== 'string' || !/^ERR_[A-Z0-9_]+$/.test(code)) return null;
  if (imageId !== undefined && typeof imageId !== 'string') return null;
  // A newer agent may send a code this version does not list; it is still a stable code to branch on.
  return { name, code: code as ImageCacheErrorCode, message, imageId };
}

/**
 * Reads a host's JSON report; errors become `RemoteImageCacheError`s keeping the remote code.
 *
 * @throws Error describing what is malformed (the client turns it into `HostUnavailableError`)
 */
export function decodeHostCacheReport(host: string, value: unknown): HostCacheReport {
  if (typeof value !== 'object' || value === null) throw new Error('the answer is not a JSON object');
  const { host: answeredBy, images, durationMs } = value as Record<string, unknown>;
  if (answeredBy !== host) {
    // A mixed-up endpoint map would otherwise credit one host with another's cache.
    throw new Error(`the agent at this address serves host ${JSON.stringify(answeredBy)}, not ${host}`);
  }
  if (!Array.isArray(images)) throw new Error('the answer has no "images" list');
  const decoded = (images as unknown[]).map((item, i): PrecacheImageResult => {
    const fields = (typeof item === 'object' && item !== null ? item : {}) as Record<string, unknown>;
    const { imageId, status, error, bytes, pinnedUntil, bytesFrom, blamedPeers } = fields;
    if (typeof imageId !== 'string' || typeof status !== 'string' || !STATUSES.has(status)) {
      throw new Error(`images[${i}] has no valid imageId and status`);
    }
    let typed: RemoteImageCacheError | null = null;
    if (error !== null && error !== undefined) {
      const json = decodeErrorJSON(error);
      if (json === null) throw new Error(`images[${i}].error is not an error object`);
      typed = new RemoteImageCacheError(host, json);
    }
    return {
      imageId,
      status: status as PrecacheImageStatus,
      error: typed,
      bytes: typeof bytes === 'number' ? bytes : 0,
      durationMs: typeof fields.durationMs === 'number' ? fields.durationMs : 0,
      pinnedUntil: typeof pinnedUntil === 'number' ? pinnedUntil : null,
      bytesFrom: decodeBytesFrom(bytesFrom),
      blamedPeers: decodeBlamedPeers(blamedPeers),
    };
  });
  return { host, images: decoded, durationMs: typeof durationMs === 'number' ? durationMs : 0 };
}

/**
 * Reads a result's `bytesFrom`, tolerantly: an older agent sends none (an empty list), and an entry
 * that is not `{from: 'glance' | 'peer:<host>', bytes: <count>}` is dropped.
 */
function decodeBytesFrom(value: unknown): BytesFrom[] {
  if (!Array.isArray(value)) return [];
  return (value as unknown[]).flatMap((entry): BytesFrom[] => {
    const { from, bytes } = (typeof entry === 'object' && entry !== null ? entry : {}) as Record<string, unknown>;
    const origin = typeof from === 'string' && (from === 'glance' || /^peer:.+/.test(from)) ? (from as ByteOrigin) : undefined;
    return origin !== undefined && typeof bytes === 'number' && Number.isSafeInteger(bytes) && bytes >= 0 ? [{ from: origin, bytes }] : [];
  });
}

/**
 * Reads a result's `blamedPeers`, tolerantly: an older agent sends none (an empty list), and an
 * entry that is not a non-empty host name is dropped (a repeated one too).
 */
function decodeBlamedPeers(value: unknown): string[] {
  if (!Array.isArray(value)) return [];
  return [...new Set((value as unknown[]).filter((entry): entry is string => typeof entry === 'string' && entry !== ''))];
}
