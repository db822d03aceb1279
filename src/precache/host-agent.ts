/**
 * {@link createHostAgent}: the compute-host side of pre-caching over HTTP (Nova's compute RPC
 * `cache_images`), as a plain `node:http` request handler, so the host's service decides where it
 * listens (address, port, TLS via `node:https`) and `HttpHostClient` can reach it from another
 * process or machine.
 *
 * It serves two routes behind one bearer token compared in constant time: `POST /v1/cache-images`
 * (see `./wire.ts` for the shapes) and, for the site's peers, `HEAD`/`GET /v1/images/{id}`
 * (the cached image's bytes, with `Range`: src/peer/image-route.ts). The token is checked before
 * the body is read; the body is size-limited and validated like Nova's API schema (typed 4xx
 * answers); a client that disconnects cancels the work in progress (nothing partial is kept).
 *
 * @module
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { HostUnauthorizedError, HostUnavailableError, InvalidPrecacheRequestError, isImageCacheError } from '../errors.js';
import { createLogger } from '../log.js';
import type { ImageManager } from '../manager.js';
import { integerFrom } from '../options.js';
import { IMAGES_PATH, imageSegmentOf } from '../peer/image-path.js';
import { checkImageMethod, serveCachedImage } from '../peer/image-route.js';
import { HttpAnswer, send, sendError } from './agent-http.js';
import { cacheImages } from './cache-images.js';
import { CACHE_IMAGES_PATH, bearerTokenOf, checkAgentToken, parseCacheImagesRequest } from './wire.js';

const log = createLogger('precache:agent');

/** Default body limit: room for thousands of image ids, nothing like an upload. */
export const DEFAULT_AGENT_MAX_BODY_BYTES = 1024 * 1024;

/** Codes that mean "your request is wrong" (400), as opposed to "I failed" (500). */
const BAD_REQUEST_CODES: ReadonlySet<string> = new Set(['ERR_INVALID_REQUEST', 'ERR_INVALID_IMAGE_ID', 'ERR_INVALID_CONFIG']);

/** Options of {@link createHostAgent}. */
export interface HostAgentOptions {
  /**
   * The bearer token clients must send (`Authorization: Bearer <token>`). Required: 1 to 4096
   * visible ASCII characters, no space (what `HttpHostClient` accepts too).
   */
  readonly token: string;
  /** Largest accepted request body, bytes; larger ones get 413. Default 1 MiB. */
  readonly maxBodyBytes?: number | undefined;
  /**
   * The token this host sends to its site's peers when a pre-cache request names peers to read
   * from (their agents' token). Default `token`: the agents of one deployment share a token.
   */
  readonly peerToken?: string | undefined;
}

/** A `node:http` request handler: pass it to `http.createServer` (or call it from your router). */
export type HostAgentHandler = (request: IncomingMessage, response: ServerResponse) => void;

/**
 * Creates the host agent for `manager`: `POST /v1/cache-images` runs {@link cacheImages} on it and
 * answers the report (200); `HEAD`/`GET /v1/images/{id}` serves the cached image's bytes to a
 * peer (200, or 206 for a `Range`; 404 when it is not cached here, 416 for a range past its end,
 * 501 for a backend without a cache). Other answers: 400 (malformed JSON or request, bad image id
 * or option), 401 (missing or wrong token), 404 (other paths), 405 (other methods), 413 (body too
 * large), 415 (not JSON), 500 (unexpected failure); each with `{"error": {name, code, message}}`.
 *
 * @example
 * ```ts
 * const server = http.createServer(createHostAgent(manager, { token: process.env.PRECACHE_TOKEN! }));
 * server.listen(8775, '10.0.0.5');
 * ```
 * @throws `InvalidConfigError` for a missing token or a bad `maxBodyBytes`
 */
export function createHostAgent(manager: ImageManager, options: HostAgentOptions): HostAgentHandler {
  const token = checkAgentToken('token', options.token);
  const peerToken = options.peerToken === undefined ? token : checkAgentToken('peerToken', options.peerToken);
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_AGENT_MAX_BODY_BYTES;
  integerFrom(1)('maxBodyBytes', maxBodyBytes);
  const expected = sha256(token);

  const authorised = (header: string | undefined): boolean => {
    const given = bearerTokenOf(header);
    // Hashing first makes the comparison constant-time whatever the lengths.
    return given !== null && timingSafeEqual(sha256(given), expected);
  };

  const requireToken = (request: IncomingMessage, response: ServerResponse): void => {
    if (authorised(request.headers.authorization)) return;
    response.setHeader('WWW-Authenticate', 'Bearer realm="virt-imagecache"');
    log('%s: refused a request from %s: missing or wrong token', manager.host, request.socket.remoteAddress);
    throw new HttpAnswer(401, new HostUnauthorizedError(manager.host, 401));
  };

  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const { pathname } = new URL(request.url ?? '/', 'http://agent');
    const imageSegment = imageSegmentOf(pathname);
    if (imageSegment !== undefined) {
      checkImageMethod(request, response);
      requireToken(request, response);
      await serveCachedImage(manager, imageSegment, request, response);
      return;
    }
    if (pathname !== CACHE_IMAGES_PATH) {
      throw new HttpAnswer(
        404,
        new InvalidPrecacheRequestError(`there is no ${pathname} here; the agent serves POST ${CACHE_IMAGES_PATH} and GET ${IMAGES_PATH}{id}.`),
      );
    }
    if (request.method !== 'POST') {
      response.setHeader('Allow', 'POST');
      throw new HttpAnswer(405, new InvalidPrecacheRequestError(`${CACHE_IMAGES_PATH} takes POST, not ${request.method ?? '?'}.`));
    }
    requireToken(request, response);
    const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (type !== 'application/json') {
      throw new HttpAnswer(415, new InvalidPrecacheRequestError(`the body must be application/json, not ${type === '' ? 'untyped' : type}.`));
    }
    const body = await readBody(request, maxBodyBytes);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw new HttpAnswer(400, new InvalidPrecacheRequestError('the body is not valid JSON.'));
    }
    const { imageIds, pinTtlSeconds, bytesPerSecond, peers } = parseCacheImagesRequest(parsed);
    log('%s: pre-cache request for %d image(s) from %s', manager.host, imageIds.length, request.socket.remoteAddress);

    const controller = new AbortController();
    response.on('close', () => {
      // 'close' before the answer was written: the client went away; stop working for it.
      if (!response.writableFinished) controller.abort(new Error('the client disconnected'));
    });
    const report = await cacheImages(manager, imageIds, { signal: controller.signal, pinTtlSeconds, bytesPerSecond, peers, peerToken });
    send(response, 200, report);
  };

  const answerFailure = (response: ServerResponse, thrown: unknown): void => {
    if (response.destroyed) {
      log('%s: client gone; request dropped (%s)', manager.host, thrown instanceof Error ? thrown.message : String(thrown));
      return;
    }
    if (thrown instanceof HttpAnswer) {
      sendError(response, thrown.statusCode, thrown.error);
    } else if (isImageCacheError(thrown) && BAD_REQUEST_CODES.has(thrown.code)) {
      sendError(response, 400, thrown);
    } else {
      log('%s: pre-cache request failed: %O', manager.host, thrown);
      const error = isImageCacheError(thrown)
        ? thrown
        : new HostUnavailableError(manager.host, `its agent failed unexpectedly (${String(thrown)})`, { statusCode: 500, cause: thrown });
      sendError(response, 500, error);
    }
  };

  return (request, response) => {
    handle(request, response)
      .catch((thrown: unknown) => {
        answerFailure(response, thrown);
      })
      .catch((unanswerable: unknown) => {
        // Even the error answer failed (the socket broke while writing it): log, never crash the host.
        log('%s: could not answer a request: %O', manager.host, unanswerable);
        response.destroy();
      });
  };
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Reads the body, answering 413 as soon as it is known to exceed `limit` (declared or received). */
function readBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = (): HttpAnswer =>
    new HttpAnswer(413, new InvalidPrecacheRequestError(`the body is larger than ${limit} bytes; send fewer images per request.`));
  const declared = Number(request.headers['content-length'] ?? Number.NaN);
  if (declared > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        request.off('data', onData);
        request.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    request.on('data', onData);
    request.once('end', () => {
      resolve(Buffer.concat(chunks));
    });
    request.once('error', reject);
    // A client that leaves mid-body: nothing to answer (a no-op once the body has ended).
    request.once('close', () => {
      reject(new Error('the client disconnected before sending the whole body'));
    });
  });
}
