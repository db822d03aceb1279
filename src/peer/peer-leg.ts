/**
 * One peer's share of a download: `GET /v1/images/{id}` from a byte position, read as an
 * {@link ImageReader} by the same state machine as a Glance body (`GlanceBodyReader`: the head
 * deadline, the idle timeout, the minimum transfer rate, `Range` checks, a body cut short), but
 * with no retry: whatever goes wrong with a peer, the peer source moves on to the next one. What
 * went wrong is reported as a {@link PeerUnavailableError} with a reason.
 *
 * @module
 */
import { PeerUnavailableError, isImageCacheError } from '../errors.js';
import type { PeerFailureReason } from '../errors.js';
import type { BodyExchange, ResponseHead } from '../source/body-exchange.js';
import { startBodyExchange } from '../source/body-transport.js';
import { GlanceBodyReader } from '../source/glance-download.js';
import { resolveOptions } from '../source/glance-options.js';
import type { ResolvedOptions } from '../source/glance-options.js';
import { HttpStatusError, parseContentRange } from '../source/http-failures.js';
import type { ImageReader } from '../source/image-source.js';
import { imagePathOf } from './image-path.js';
import type { PeerSettings } from './peer-options.js';
import type { PeerEndpoint } from './types.js';

/** A peer with its request options resolved (once per peer URL). */
export interface ResolvedPeer {
  /** The peer's name. */
  readonly name: string;
  /** Its agent's base URL and the timeouts, in the Glance client's resolved form. */
  readonly options: ResolvedOptions;
}

/** Resolves `peer`'s request options from the source's settings. */
export function resolvePeer(peer: PeerEndpoint, settings: PeerSettings): ResolvedPeer {
  return {
    name: peer.name,
    options: resolveOptions({
      endpoint: peer.url,
      connectTimeoutMs: settings.connectTimeoutMs,
      idleTimeoutMs: settings.stallTimeoutMs,
      headTimeoutMs: settings.headTimeoutMs,
      minBytesPerSecond: settings.minBytesPerSecond,
      minSpeedWindowMs: settings.minSpeedWindowMs,
      retries: 0,
      // Only an https:// agent has a certificate to check.
      ca: new URL(peer.url).protocol === 'https:' ? settings.ca : undefined,
    }),
  };
}

/** What a peer leg reads. */
export interface PeerLegRequest {
  readonly peer: ResolvedPeer;
  readonly token: string;
  readonly imageId: string;
  /** The image's size as the image service describes it: the peer must announce the same. */
  readonly size: number;
  /** First byte wanted. */
  readonly position: number;
  readonly signal: AbortSignal | undefined;
}

/** Socket failures before any answer: the peer could not be reached. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'EHOSTDOWN', 'ENETUNREACH', 'ENETDOWN', 'EAI_AGAIN', 'ENOTFOUND']);
const TIMEOUTS = new Set(['ERR_CONNECT_TIMEOUT', 'ERR_IDLE_TIMEOUT', 'ERR_HEAD_TIMEOUT', 'ETIMEDOUT']);
const CUT_SHORT = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);

/** Why a peer failed, from what its reader threw. */
function reasonOf(error: unknown): PeerFailureReason {
  if (isImageCacheError(error)) {
    if (error.code === 'ERR_IMAGE_NOT_FOUND') return 'not-found';
    if (error.code === 'ERR_NOT_AUTHORIZED') return 'unauthorized';
    // The Glance reader wraps the transport failure that ended its (only) attempt.
    if (error.code === 'ERR_IMAGE_SERVICE_UNAVAILABLE') return reasonOf(error.cause);
    return 'error';
  }
  if (error instanceof HttpStatusError) return 'error';
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return 'error';
  if (UNREACHABLE.has(code)) return 'refused';
  if (TIMEOUTS.has(code)) return 'timeout';
  if (code === 'ERR_TRANSFER_TOO_SLOW') return 'too-slow';
  if (CUT_SHORT.has(code)) return 'cut-short';
  return 'error';
}

/** `error`, from a peer leg, as the typed peer failure. */
export function peerFailure(peer: string, imageId: string, error: unknown): PeerUnavailableError {
  if (error instanceof PeerUnavailableError) return error;
  return new PeerUnavailableError(peer, imageId, reasonOf(error), error);
}

/** The image size a 200 or 206 announces; null when it says none. */
function announcedSize(head: ResponseHead): number | null {
  if (head.status === 206) return parseContentRange(head.header('content-range'))?.total ?? null;
  const length = Number(head.header('content-length') ?? Number.NaN);
  return Number.isSafeInteger(length) ? length : null;
}

/**
 * `exchange`, whose head is refused with `size-mismatch` when a 200 or 206 announces another
 * image size than `size` (or none): the bytes of another image, or of a truncated copy, are not
 * read at all.
 */
function sizeChecked(exchange: BodyExchange, request: PeerLegRequest): BodyExchange {
  const head = exchange.head.then((answer) => {
    if ((answer.status === 200 || answer.status === 206) && announcedSize(answer) !== request.size) {
      throw new PeerUnavailableError(request.peer.name, request.imageId, 'size-mismatch');
    }
    return answer;
  });
  head.catch(() => undefined);
  return {
    url: exchange.url,
    head,
    get received() {
      return exchange.received;
    },
    read: (into) => exchange.read(into),
    close: (options) => {
      exchange.close(options);
    },
  };
}

/**
 * Opens `request.peer`'s copy of the image from `request.position`: resolves once the peer
 * answered with usable bytes.
 *
 * @throws {@link PeerUnavailableError} when it did not; `AbortedError` when the signal fired
 */
export async function openPeerLeg(request: PeerLegRequest): Promise<ImageReader> {
  const { peer, token, imageId, position, signal } = request;
  const { options } = peer;
  const url = new URL(`${options.base}${imagePathOf(imageId)}`);
  const reader = new GlanceBodyReader({
    imageId,
    offset: position,
    signal,
    retries: 0,
    backoff: { baseMs: 0, maxMs: 0 },
    headTimeoutMs: options.headTimeoutMs,
    speedFloor: options.speedFloor,
    start: (at) => {
      const headers: Record<string, string> = { 'user-agent': 'virt-imagecache', authorization: `Bearer ${token}`, accept: 'application/octet-stream' };
      if (at > 0) headers.range = `bytes=${at}-`;
      // Our agents frame bodies with Content-Length: a fallback to node:http is never expected.
      return Promise.resolve(sizeChecked(startBodyExchange(url, headers, options, options.rawTransport, () => undefined), request));
    },
  });
  try {
    await reader.begin();
  } catch (error) {
    if (isImageCacheError(error) && error.code === 'ERR_ABORTED') throw error;
    throw peerFailure(peer.name, imageId, error);
  }
  return reader;
}
