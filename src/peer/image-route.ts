/**
 * The host agent's image route, `HEAD`/`GET /v1/images/{id}`: a host serves the images its cache
 * holds to its site's peers, read-only, with `Range` (a peer resumes where another left off).
 *
 * What is served, and what never is:
 * - only a complete, verified entry: the manager's final file of the image
 *   (`ImageManager.cachedImageFile`), which a fill names only once it is verified; never a
 *   staging file, and nothing for a backend that keeps no files (404) or no cache (501);
 * - only a regular file inside the cache: the id is checked like every image id (no separator, no
 *   `..`), the path is the backend's own for that id, and the file is opened with `O_NOFOLLOW`
 *   (a symbolic link planted under the entry's name is not followed) and checked to be a regular
 *   file on the open descriptor;
 * - nothing is touched: a peer's read is not a use of the image on this host.
 *
 * No lock is held while streaming, on purpose: a read that holds the image's lock would stall this
 * host's spawns of the image for the whole transfer. The open descriptor is enough on Linux: a
 * removal (the periodic pass, an eviction) unlinks the name, the inode lives on until the
 * descriptor is closed, so the peer still receives the complete image; the next request gets 404.
 * A client that disconnects ends the stream and closes the file.
 *
 * @module
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { InvalidDiskImageError, InvalidImageIdError, InvalidPrecacheRequestError, PeerUnavailableError, isImageCacheError } from '../errors.js';
import { assertValidImageId } from '../image-id.js';
import { createLogger } from '../log.js';
import type { ImageManager } from '../manager.js';
import { HttpAnswer } from '../precache/agent-http.js';
import { rangeOf } from './byte-range.js';
import { IMAGES_PATH } from './image-path.js';

const log = createLogger('peer:serve');

/** The methods of the image route. */
const METHODS = 'GET, HEAD';

/** Bytes per read from the file: large reads, few syscalls; the socket's backpressure paces them. */
const READ_CHUNK_BYTES = 1024 * 1024;

/**
 * Checks the method of an image request (405 with `Allow` for any other than GET and HEAD).
 *
 * @throws {@link HttpAnswer} 405
 */
export function checkImageMethod(request: IncomingMessage, response: ServerResponse): void {
  if (request.method === 'GET' || request.method === 'HEAD') return;
  response.setHeader('Allow', METHODS);
  throw new HttpAnswer(405, new InvalidPrecacheRequestError(`${IMAGES_PATH}{id} takes ${METHODS}, not ${request.method ?? '?'}.`));
}

/** The image id of a path segment: percent-decoded, then checked as every image id is. */
function imageIdOf(segment: string): string {
  let imageId: string;
  try {
    imageId = decodeURIComponent(segment);
  } catch {
    throw new InvalidImageIdError(segment, 'it is not valid percent-encoding');
  }
  assertValidImageId(imageId);
  return imageId;
}

/** The manager's final file of the image, or a 404/501 answer. */
async function fileOf(manager: ImageManager, imageId: string): Promise<string> {
  let file: string | null;
  try {
    file = await manager.cachedImageFile(imageId);
  } catch (error) {
    if (isImageCacheError(error) && error.code === 'ERR_UNSUPPORTED') throw new HttpAnswer(501, error);
    // Something planted under the entry's name is not the image: nothing to serve.
    if (error instanceof InvalidDiskImageError) throw new HttpAnswer(404, error);
    throw error;
  }
  if (file === null) throw new HttpAnswer(404, new PeerUnavailableError(manager.host, imageId, 'not-found'));
  return file;
}

/**
 * Opens `file` for reading without following a symbolic link at its name (ELOOP), without
 * blocking on a FIFO planted there, and only when it is a regular file.
 */
async function openRegularFile(file: string, notServable: () => HttpAnswer): Promise<{ handle: FileHandle; size: number }> {
  let handle: FileHandle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // Gone since it was found (a removal), or a link or a special file planted under the name.
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENXIO' || code === 'EISDIR') throw notServable();
    throw error;
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw notServable();
    return { handle, size: stats.size };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/**
 * Answers `HEAD`/`GET /v1/images/{segment}` from `manager`'s cache (the method and the token are
 * checked by the agent first): 200 with the whole image, 206 with one range, 416 with
 * `Content-Range: bytes * /<size>` for a range past the end, 404 when the image is not cached
 * here (or cannot be served as a file), 400 for a bad id, 501 for a backend without a cache.
 *
 * @throws {@link HttpAnswer} for the error answers; the typed error of a bad id
 */
export async function serveCachedImage(manager: ImageManager, segment: string, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const imageId = imageIdOf(segment);
  const file = await fileOf(manager, imageId);
  const { handle, size } = await openRegularFile(file, () => new HttpAnswer(404, new PeerUnavailableError(manager.host, imageId, 'not-found')));
  let streaming = false;
  try {
    const range = rangeOf(request.headers.range, size);
    if (range.kind === 'unsatisfiable') {
      response.setHeader('Content-Range', `bytes */${size}`);
      throw new HttpAnswer(416, new InvalidPrecacheRequestError(`the range ${request.headers.range ?? ''} is outside image ${imageId}'s ${size} bytes.`, imageId));
    }
    const first = range.kind === 'part' ? range.first : 0;
    const last = range.kind === 'part' ? range.last : size - 1;
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Content-Length': last - first + 1,
      'Accept-Ranges': 'bytes',
    };
    if (range.kind === 'part') headers['Content-Range'] = `bytes ${first}-${last}/${size}`;
    response.writeHead(range.kind === 'part' ? 206 : 200, headers);
    if (request.method === 'HEAD' || size === 0) {
      response.end();
      return;
    }
    log('%s: serving image %s bytes %d-%d to %s', manager.host, imageId, first, last, request.socket.remoteAddress);
    // The stream owns the descriptor from here: it closes it at the end, on an error, and when the
    // response is destroyed (the peer went away), which `pipeline` propagates.
    streaming = true;
    const body = handle.createReadStream({ start: first, end: last, highWaterMark: READ_CHUNK_BYTES, autoClose: true });
    try {
      await pipeline(body, response);
    } catch (error) {
      // Headers are out: the only way to tell the peer is to cut the body short, which it detects.
      log('%s: stream of image %s to %s ended early: %s', manager.host, imageId, request.socket.remoteAddress, (error as Error).message);
    }
  } finally {
    if (!streaming) await handle.close();
  }
}
