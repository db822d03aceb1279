/**
 * A real Glance v2 HTTP server for tests and benchmarks: {@link startFakeGlance} listens on
 * 127.0.0.1 on a random port and serves `GET /v2/images/{id}` and `GET /v2/images/{id}/file`,
 * with per-image fault knobs (latency, resets, stalls, 503s, throttling, wrong checksums or
 * lengths, ignored `Range`) so the retry and resume paths can be exercised over real sockets.
 *
 * Large images need no memory: {@link GeneratedContent} describes bytes that are computed on the
 * fly from one seeded 1 MiB block, and {@link generatedImageChunks} reproduces them exactly.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../log.js';
import type { FakeGlance, FakeGlanceOptions, FakeRequestRecord } from './fake-glance-types.js';
import { serveFile } from './glance-file.js';
import { GlanceLink } from './glance-link.js';
import { pause } from './glance-pause.js';
import { checkCount, checkFaults, newState, serveMetadata } from './glance-images.js';
import type { ImageState } from './glance-images.js';
import { sendCrash, sendError, sendJson } from './glance-responses.js';

export type {
  FakeGlance,
  FakeGlanceOptions,
  FakeImage,
  FakeImageContent,
  FakeImageFaults,
  FakeRequestCounts,
  FakeRequestRecord,
  GeneratedContent,
} from './fake-glance-types.js';
export { generatedImageBytes, generatedImageChunks } from './generated-content.js';

const log = createLogger('fake-glance');

interface MutableCounts {
  metadata: number;
  file: number;
  bytes: number;
}

interface MutableRecord {
  imageId: string | undefined;
  kind: FakeRequestRecord['kind'];
  readonly range: string | undefined;
  /** Read when the log is, so the status is whatever was answered by then. */
  readonly res: ServerResponse;
}

/**
 * Starts a fake Glance v2 on `http://127.0.0.1:<random port>`.
 *
 * It answers as Glance 25 does (pinned by test/integration/fake-vs-real-glance.test.ts): unknown
 * paths, unknown and `deleted` images 404; a `token` mismatch 401 (as Keystone's middleware); a
 * `forbidden` image 403; `failFirst` 503. Errors carry webob's bodies: HTML, JSON or plain text
 * after the `Accept` header. A `queued`, `saving`, `uploading`, `importing` or `killed` image has
 * null size and digests, and its data is 204 No Content (500 with a `Range`, as Glance fails on
 * it); a `deactivated` image keeps them, and its data is 403 (what a non-admin user gets). File
 * responses have `Content-Length`, `Content-MD5` (the whole image's) and no `Accept-Ranges`.
 * `Range: bytes=N-`, `N-M` or `-N` gets 206 with `Content-Range`; a start at or past the end, or
 * a range webob cannot parse, 416 without `Content-Range`; several ranges 400.
 *
 * @example
 * ```ts
 * await using glance = await startFakeGlance({ images: [{ id, content: { size: 64 << 20 } }] });
 * const source = new GlanceImageSource({ endpoint: glance.url });
 * ```
 */
export async function startFakeGlance(options: FakeGlanceOptions = {}): Promise<FakeGlance> {
  const images = new Map<string, ImageState>();
  for (const image of options.images ?? []) images.set(image.id, newState(image));
  const { token } = options;
  checkCount('linkBytesPerSecond', options.linkBytesPerSecond, 1);
  const link = options.linkBytesPerSecond === undefined ? undefined : new GlanceLink(options.linkBytesPerSecond);
  let counts = new Map<string, MutableCounts>();
  let records: MutableRecord[] = [];
  let totalRequests = 0;

  const countsOf = (imageId: string): MutableCounts => {
    let entry = counts.get(imageId);
    if (entry === undefined) {
      entry = { metadata: 0, file: 0, bytes: 0 };
      counts.set(imageId, entry);
    }
    return entry;
  };

  const stateOf = (imageId: string): ImageState => {
    const state = images.get(imageId);
    if (state === undefined) throw new RangeError(`fake glance: no image ${imageId}`);
    return state;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    totalRequests++;
    let isClosedFlag = false;
    const closed = new Promise<void>((resolve) => {
      res.once('close', () => {
        isClosedFlag = true;
        resolve();
      });
    });
    const isClosed = (): boolean => isClosedFlag;
    const record: MutableRecord = { imageId: undefined, kind: 'other', range: req.headers.range, res };
    res.setHeader('x-openstack-request-id', `req-${randomUUID()}`);
    records.push(record);

    const match = /^\/v2\/images\/([^/?]+)(\/file)?(?:\?.*)?$/.exec(req.url ?? '');
    let imageId: string | undefined;
    try {
      imageId = match?.[1] === undefined ? undefined : decodeURIComponent(match[1]);
    } catch {
      imageId = undefined;
    }
    if (match === null || imageId === undefined) {
      sendError(req, res, { status: 404, explanation: 'The resource could not be found.' });
      return;
    }
    const kind = match[2] === undefined ? 'metadata' : 'file';
    record.imageId = imageId;
    record.kind = kind;
    countsOf(imageId)[kind]++;
    log('%s %s (range %s)', req.method ?? '?', req.url ?? '?', req.headers.range ?? 'none');

    if (req.method !== 'GET') {
      // What Glance allows on these paths; the fake itself serves GET only.
      const allow = kind === 'file' ? 'GET, PUT' : 'GET, PATCH, DELETE';
      sendError(req, res, { status: 405, explanation: `The method ${req.method ?? ''} is not allowed for this resource. `, headers: { allow } });
      return;
    }
    if (token !== undefined && req.headers['x-auth-token'] !== token) {
      // Keystone's auth_token middleware answers before Glance sees the request.
      res.setHeader('www-authenticate', `Keystone uri="${url}/identity"`);
      sendJson(res, 401, { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } });
      return;
    }
    const state = images.get(imageId);
    // Glance hides deleted images.
    if (state === undefined || state.status === 'deleted') {
      sendError(req, res, { status: 404, explanation: `No image found with ID ${imageId}` });
      return;
    }
    const latency = state.faults.latencyMs ?? 0;
    if (latency > 0) await pause(latency, closed);
    if (isClosed()) return;
    if (state.image.forbidden === true) {
      sendError(req, res, { status: 403, explanation: `You are not authorized to complete ${kind === 'file' ? 'download_image' : 'get_image'} action.` });
      return;
    }
    if (state.failuresUsed < (state.faults.failFirst ?? 0)) {
      state.failuresUsed++;
      const status = state.faults.failStatus ?? 503;
      sendError(req, res, { status, explanation: status === 503 ? 'The server is currently unavailable. Please try again at a later time.' : 'Injected failure.' });
      return;
    }
    if (kind === 'metadata') await serveMetadata(res, state);
    else await serveFile(req, res, state, closed, isClosed, countsOf, link);
  };

  const server: Server = createServer((req, res) => {
    // A write racing the client's disconnect must not crash the test process.
    res.on('error', (error) => {
      log('response error: %s', error.message);
    });
    handle(req, res).catch((error: unknown) => {
      log('handler failed: %O', error);
      if (!res.headersSent) sendCrash(res);
      else res.destroy();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  log('listening on %s', url);

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      server.close(() => {
        resolve();
      });
      // close() alone waits for keep-alive and stalled connections; end them now.
      server.closeAllConnections();
    });
    return closing;
  };

  return {
    url,
    get totalRequests() {
      return totalRequests;
    },
    get log(): readonly FakeRequestRecord[] {
      return records.map(({ imageId, kind, range, res }) => ({
        imageId,
        kind,
        range,
        status: res.headersSent ? res.statusCode : 0,
      }));
    },
    addImage(image) {
      images.set(image.id, newState(image));
    },
    removeImage(imageId) {
      return images.delete(imageId);
    },
    setStatus(imageId, status) {
      stateOf(imageId).status = status;
    },
    setFaults(imageId, faults) {
      checkFaults(faults);
      const state = stateOf(imageId);
      state.faults = { ...faults };
      state.failuresUsed = 0;
      state.resetsUsed = 0;
      state.stallsUsed = 0;
    },
    requests(imageId) {
      const entry = counts.get(imageId);
      return { metadata: entry?.metadata ?? 0, file: entry?.file ?? 0 };
    },
    bytesServed(imageId) {
      return counts.get(imageId)?.bytes ?? 0;
    },
    get totalBytesServed() {
      let total = 0;
      for (const entry of counts.values()) total += entry.bytes;
      return total;
    },
    resetStats() {
      counts = new Map();
      records = [];
      totalRequests = 0;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
