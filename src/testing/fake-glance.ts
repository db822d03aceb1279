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
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import { createLogger } from '../log.js';

const log = createLogger('fake-glance');

/** Generated content is built from blocks of this many bytes. */
const BLOCK_SIZE = 1024 * 1024;
/** Odd, so consecutive blocks get distinct rotations for 2^20 blocks (1 TiB). */
const ROTATION_STEP = 4099;
/** Hashing yields to the event loop this often, so a 1 GiB digest does not freeze the server. */
const HASH_YIELD_BYTES = 16 * 1024 * 1024;

/**
 * Image bytes computed on demand, for images too large to hold in memory. Block `k` (of 1 MiB) is
 * a seeded pseudo-random 1 MiB block rotated left by `(k * 4099) % 1 MiB` bytes, so blocks differ
 * from each other and any misplaced byte range shows up in a comparison.
 */
export interface GeneratedContent {
  /** Size in bytes. */
  readonly size: number;
  /** Seed of the pseudo-random block. Default 1. */
  readonly seed?: number | undefined;
  /** All bytes are zero instead (a sparse-looking raw image). */
  readonly zero?: boolean | undefined;
}

/** An image's bytes: a buffer, or a {@link GeneratedContent} description. */
export type FakeImageContent = Uint8Array | GeneratedContent;

/**
 * Misbehaviours of one image. Each counted fault (`resets`, `stalls`, `failFirst`) is used up by
 * the first matching responses; {@link FakeGlance.setFaults} replaces the set and starts the counts
 * afresh.
 */
export interface FakeImageFaults {
  /** Delay before every response about this image, ms. */
  readonly latencyMs?: number | undefined;
  /** Close the connection abruptly after this many body bytes of a file response. */
  readonly resetAfterBytes?: number | undefined;
  /** How many file responses `resetAfterBytes` applies to. Default 1. */
  readonly resets?: number | undefined;
  /** Publish an md5 `checksum` and `os_hash_value` that do not match the data. */
  readonly wrongChecksum?: boolean | undefined;
  /**
   * Answer 503 (or `failStatus`) to the first this-many requests about the image (metadata and
   * file together).
   */
  readonly failFirst?: number | undefined;
  /** Stop sending after this many body bytes of a file response, keeping the connection open. */
  readonly stallAfterBytes?: number | undefined;
  /** How many file responses `stallAfterBytes` applies to. Default 1. */
  readonly stalls?: number | undefined;
  /** Send file bodies at about this many bytes per second. */
  readonly throttleBytesPerSecond?: number | undefined;
  /**
   * Serve this many bytes (with a matching `Content-Length`) while the metadata still announces
   * the real size, to test size verification. Bytes past the real content are zeros.
   */
  readonly wrongLength?: number | undefined;
  /** Honour `Range: bytes=N-` with 206; when false, answer 200 with the whole body. Default true. */
  readonly honourRange?: boolean | undefined;
  /** The status `failFirst` answers: any 4xx or 5xx. Default 503. */
  readonly failStatus?: number | undefined;
  /**
   * Close the connection abruptly after `resetOffsets[i]` body bytes of the i-th file response
   * (counted from 0, after this fault set was installed); later responses are not reset. Takes
   * precedence over `resetAfterBytes`. Lets a test reset at a different offset each time.
   */
  readonly resetOffsets?: readonly number[] | undefined;
  /**
   * Fields merged into the metadata document as served (after the real ones), e.g.
   * `{ size: -1 }` or `{ os_hash_algo: 'sha3-1024' }`: hostile or malformed metadata, to test how
   * a client validates what the image service says.
   */
  readonly metadataOverrides?: Readonly<Record<string, unknown>> | undefined;
}

/** An image served by the fake. */
export interface FakeImage {
  /** The image id, as it appears in URLs. */
  readonly id: string;
  /** The bytes. */
  readonly content: FakeImageContent;
  /** Glance status. Default `active`; any other status has no data (see {@link startFakeGlance}). */
  readonly status?: string | undefined;
  /** Display name. Default: the id. */
  readonly name?: string | undefined;
  /** `disk_format`. Default `raw`. */
  readonly diskFormat?: string | undefined;
  /** `container_format`. Default `bare`. */
  readonly containerFormat?: string | undefined;
  /**
   * `os_hash_algo`, any algorithm node:crypto knows. Default `sha512`; `null` publishes no
   * multihash at all (only the md5 `checksum`), like images uploaded before Glance had one.
   */
  readonly hashAlgo?: string | null | undefined;
  /** `virtual_size`. Default: the size for `raw`, null otherwise. */
  readonly virtualSize?: number | undefined;
  /** Precomputed md5 `checksum` (hex), to skip hashing large content. */
  readonly checksum?: string | undefined;
  /** Precomputed `os_hash_value` (hex) for `hashAlgo`, to skip hashing large content. */
  readonly hashValue?: string | undefined;
  /** Answer 403 to every request about this image. */
  readonly forbidden?: boolean | undefined;
  /** Initial faults. */
  readonly faults?: FakeImageFaults | undefined;
}

/** Options of {@link startFakeGlance}. */
export interface FakeGlanceOptions {
  /** Images served from the start. */
  readonly images?: Iterable<FakeImage> | undefined;
  /** When set, requests whose `X-Auth-Token` is not exactly this get 401. */
  readonly token?: string | undefined;
}

/** Requests received about one image. */
export interface FakeRequestCounts {
  /** `GET /v2/images/{id}` requests. */
  readonly metadata: number;
  /** `GET /v2/images/{id}/file` requests. */
  readonly file: number;
}

/** One request, as the fake saw it, in arrival order. */
export interface FakeRequestRecord {
  /** The image the URL names; undefined for any other path. */
  readonly imageId: string | undefined;
  /** Which endpoint was hit. */
  readonly kind: 'metadata' | 'file' | 'other';
  /** The `Range` header, if any. */
  readonly range: string | undefined;
  /** The status answered (0 until the response head is sent). */
  readonly status: number;
}

/** A running fake Glance. `await using fake = await startFakeGlance(...)` closes it at scope end. */
export interface FakeGlance extends AsyncDisposable {
  /** Base URL, e.g. `http://127.0.0.1:41234`; use it as the Glance endpoint. */
  readonly url: string;
  /** Every request received since start or {@link FakeGlance.resetStats}. */
  readonly totalRequests: number;
  /** The requests received since start or {@link FakeGlance.resetStats}, oldest first. */
  readonly log: readonly FakeRequestRecord[];
  /** Adds an image, replacing (and resetting the faults and cached digests of) one with the same id. */
  addImage(image: FakeImage): void;
  /** Removes an image; true when it existed. */
  removeImage(imageId: string): boolean;
  /** Changes an image's status. */
  setStatus(imageId: string, status: string): void;
  /** Replaces an image's faults and restarts their counts. */
  setFaults(imageId: string, faults: FakeImageFaults): void;
  /** Requests received about an image since start or {@link FakeGlance.resetStats}. */
  requests(imageId: string): FakeRequestCounts;
  /** File body bytes written for an image since start or {@link FakeGlance.resetStats}. */
  bytesServed(imageId: string): number;
  /** Zeroes request counts, bytes served and the log (fault counts are kept). */
  resetStats(): void;
  /** Stops the server and closes every connection, keep-alive and stalled ones included. Idempotent. */
  close(): Promise<void>;
}

interface Digests {
  readonly md5: string;
  /** Null when the image publishes no multihash. */
  readonly hash: string | null;
}

interface ImageState {
  readonly image: FakeImage;
  readonly size: number;
  status: string;
  faults: FakeImageFaults;
  failuresUsed: number;
  resetsUsed: number;
  stallsUsed: number;
  digests: Promise<Digests> | undefined;
}

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

// --- Generated content -------------------------------------------------------------------------

/** Doubled blocks (the block followed by itself) so that any rotation is one contiguous slice. */
const doubledBlocks = new Map<number, Buffer>();
let zeroBlock: Buffer | undefined;

function doubledBlock(seed: number): Buffer {
  let block = doubledBlocks.get(seed);
  if (block !== undefined) return block;
  block = Buffer.allocUnsafeSlow(2 * BLOCK_SIZE);
  // mulberry32: tiny, fast and good enough to make every byte position distinguishable.
  let state = seed >>> 0;
  for (let i = 0; i < BLOCK_SIZE; i += 4) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    block.writeUInt32LE((t ^ (t >>> 14)) >>> 0, i);
  }
  block.copy(block, BLOCK_SIZE, 0, BLOCK_SIZE);
  // A handful of seeds is all tests use; do not let a seed-per-test loop grow without bound.
  if (doubledBlocks.size >= 16) doubledBlocks.clear();
  doubledBlocks.set(seed, block);
  return block;
}

function isGenerated(content: FakeImageContent): content is GeneratedContent {
  return !(content instanceof Uint8Array);
}

function contentSize(content: FakeImageContent): number {
  return isGenerated(content) ? content.size : content.length;
}

function checkRange(size: number, start: number, end: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > size) {
    throw new RangeError(`byte range [${start}, ${end}) is not within 0..${size}`);
  }
}

/**
 * The bytes `[start, end)` of generated content, as zero-copy slices of at most 1 MiB (views of a
 * shared block: do not modify them).
 */
export function* generatedImageChunks(spec: GeneratedContent, start = 0, end = spec.size): Generator<Uint8Array> {
  checkRange(spec.size, start, end);
  const source = spec.zero === true ? (zeroBlock ??= Buffer.alloc(BLOCK_SIZE)) : doubledBlock(spec.seed ?? 1);
  let position = start;
  while (position < end) {
    const block = Math.floor(position / BLOCK_SIZE);
    const within = position - block * BLOCK_SIZE;
    const length = Math.min(BLOCK_SIZE - within, end - position);
    const from = spec.zero === true ? within : ((block * ROTATION_STEP) % BLOCK_SIZE) + within;
    yield source.subarray(from, from + length);
    position += length;
  }
}

/** The bytes `[start, end)` of generated content, copied into one new buffer. */
export function generatedImageBytes(spec: GeneratedContent, start = 0, end = spec.size): Buffer {
  checkRange(spec.size, start, end);
  return Buffer.concat([...generatedImageChunks(spec, start, end)], end - start);
}

/** Slices of at most 1 MiB of any content, zero-copy. */
function* contentChunks(content: FakeImageContent, start: number, end: number): Generator<Uint8Array> {
  if (isGenerated(content)) {
    yield* generatedImageChunks(content, start, end);
    return;
  }
  for (let position = start; position < end; position += BLOCK_SIZE) {
    yield content.subarray(position, Math.min(position + BLOCK_SIZE, end));
  }
}

/** What a file response sends: the content, cut or zero-padded to `length` (`wrongLength`). */
function* servedChunks(content: FakeImageContent, length: number, start: number, end: number): Generator<Uint8Array> {
  const size = contentSize(content);
  if (start < size) yield* contentChunks(content, start, Math.min(end, size));
  if (end > size) yield* generatedImageChunks({ size: length, zero: true }, Math.max(start, size), end);
}

async function computeDigests(content: FakeImageContent, algorithm: string | null): Promise<Digests> {
  const md5 = createHash('md5');
  const hash = algorithm === null ? undefined : createHash(algorithm);
  let sinceYield = 0;
  for (const chunk of contentChunks(content, 0, contentSize(content))) {
    md5.update(chunk);
    hash?.update(chunk);
    sinceYield += chunk.length;
    if (sinceYield >= HASH_YIELD_BYTES) {
      sinceYield = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
  return { md5: md5.digest('hex'), hash: hash?.digest('hex') ?? null };
}

/** Same length and alphabet, different value. */
function corrupt(hex: string): string {
  return (hex.startsWith('0') ? '1' : '0') + hex.slice(1);
}

// --- Validation --------------------------------------------------------------------------------

function checkCount(name: string, value: unknown, min: number): void {
  if (value !== undefined && (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min)) {
    throw new RangeError(`fake glance: ${name} must be an integer from ${min} up, got ${inspect(value)}`);
  }
}

function checkFaults(faults: FakeImageFaults): void {
  checkCount('latencyMs', faults.latencyMs, 0);
  checkCount('resetAfterBytes', faults.resetAfterBytes, 0);
  checkCount('resets', faults.resets, 0);
  checkCount('failFirst', faults.failFirst, 0);
  checkCount('stallAfterBytes', faults.stallAfterBytes, 0);
  checkCount('stalls', faults.stalls, 0);
  checkCount('throttleBytesPerSecond', faults.throttleBytesPerSecond, 1);
  checkCount('wrongLength', faults.wrongLength, 0);
  if (faults.failStatus !== undefined) {
    checkCount('failStatus', faults.failStatus, 400);
    if (faults.failStatus > 599) throw new RangeError(`fake glance: failStatus must be a 4xx or 5xx status, got ${faults.failStatus}`);
  }
  for (const offset of faults.resetOffsets ?? []) checkCount('resetOffsets[]', offset, 0);
}

function hashAlgoOf(image: FakeImage): string | null {
  return image.hashAlgo === undefined ? 'sha512' : image.hashAlgo;
}

function newState(image: FakeImage): ImageState {
  const { content } = image;
  if (isGenerated(content)) checkCount('content.size', content.size, 0);
  else if (!(content instanceof Uint8Array)) throw new TypeError('fake glance: content must be a Uint8Array or { size }');
  // Fail at addImage rather than on the first metadata request.
  const algorithm = hashAlgoOf(image);
  if (algorithm !== null) createHash(algorithm);
  checkFaults(image.faults ?? {});
  return {
    image,
    size: contentSize(content),
    status: image.status ?? 'active',
    faults: { ...image.faults },
    failuresUsed: 0,
    resetsUsed: 0,
    stallsUsed: 0,
    digests: undefined,
  };
}

// --- Serving -----------------------------------------------------------------------------------

/** Resolves after `ms`, or as soon as the response closes (the client went away). */
function pause(ms: number, closed: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
    closed,
  ]).finally(() => {
    clearTimeout(timer);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=UTF-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function sendError(res: ServerResponse, status: number, title: string): void {
  sendJson(res, status, { code: status, title, message: title });
}

/**
 * Starts a fake Glance v2 on `http://127.0.0.1:<random port>`.
 *
 * Answers: unknown paths and images 404; a `token` mismatch 401; a `forbidden` image 403;
 * `failFirst` 503. The data of an image whose status is not `active` is answered with
 * 204 No Content, as Glance does for an image without data, and its metadata has null size and
 * checksums. `Range: bytes=N-` (or `N-M`) gets 206 with `Content-Range`, or 416 when N is at or
 * past the end.
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

  const digestsOf = (state: ImageState): Promise<Digests> => {
    const { image } = state;
    const algorithm = hashAlgoOf(image);
    if (image.checksum !== undefined && (algorithm === null || image.hashValue !== undefined)) {
      return Promise.resolve({ md5: image.checksum, hash: algorithm === null ? null : (image.hashValue ?? null) });
    }
    state.digests ??= computeDigests(image.content, algorithm).then((computed) => ({
      md5: image.checksum ?? computed.md5,
      hash: algorithm === null ? null : (image.hashValue ?? computed.hash),
    }));
    return state.digests;
  };

  const serveMetadata = async (res: ServerResponse, state: ImageState): Promise<void> => {
    const { image } = state;
    const active = state.status === 'active';
    const digests = active ? await digestsOf(state) : undefined;
    const wrong = state.faults.wrongChecksum === true;
    const hash = digests?.hash ?? null;
    const diskFormat = image.diskFormat ?? 'raw';
    sendJson(res, 200, {
      id: image.id,
      name: image.name ?? image.id,
      status: state.status,
      size: active ? state.size : null,
      checksum: digests === undefined ? null : wrong ? corrupt(digests.md5) : digests.md5,
      os_hash_algo: hash === null ? null : hashAlgoOf(image),
      os_hash_value: hash === null ? null : wrong ? corrupt(hash) : hash,
      disk_format: diskFormat,
      container_format: image.containerFormat ?? 'bare',
      virtual_size: active ? (image.virtualSize ?? (diskFormat === 'raw' ? state.size : null)) : null,
      visibility: 'shared',
      protected: false,
      ...state.faults.metadataOverrides,
    });
  };

  const serveFile = async (
    req: IncomingMessage,
    res: ServerResponse,
    state: ImageState,
    closed: Promise<void>,
    isClosed: () => boolean,
  ): Promise<void> => {
    if (state.status !== 'active') {
      res.writeHead(204);
      res.end();
      return;
    }
    const { faults } = state;
    const length = faults.wrongLength ?? state.size;
    let start = 0;
    let end = length;
    let status = 200;
    const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream' };
    const honourRange = faults.honourRange !== false;
    if (honourRange) headers['accept-ranges'] = 'bytes';
    const range = honourRange ? /^bytes=(\d+)-(\d*)$/.exec(req.headers.range?.trim() ?? '') : null;
    if (range !== null) {
      const first = Number(range[1]);
      const last = range[2] === undefined || range[2] === '' ? length - 1 : Math.min(Number(range[2]), length - 1);
      if (first >= length) {
        res.writeHead(416, { 'content-range': `bytes */${length}` });
        res.end();
        return;
      }
      // A last byte before the first makes the range invalid, which HTTP says to ignore.
      if (last >= first) {
        start = first;
        end = last + 1;
        status = 206;
        headers['content-range'] = `bytes ${first}-${last}/${length}`;
      }
    }
    headers['content-length'] = end - start;
    res.writeHead(status, headers);

    let faultAt = Number.POSITIVE_INFINITY;
    let fault: 'reset' | 'stall' | undefined;
    if (faults.resetOffsets !== undefined) {
      const offset = faults.resetOffsets[state.resetsUsed];
      state.resetsUsed++;
      if (offset !== undefined) {
        faultAt = offset;
        fault = 'reset';
      }
    } else if (faults.resetAfterBytes !== undefined && state.resetsUsed < (faults.resets ?? 1)) {
      state.resetsUsed++;
      faultAt = faults.resetAfterBytes;
      fault = 'reset';
    }
    if (faults.stallAfterBytes !== undefined && state.stallsUsed < (faults.stalls ?? 1)) {
      state.stallsUsed++;
      if (faults.stallAfterBytes < faultAt) {
        faultAt = faults.stallAfterBytes;
        fault = 'stall';
      }
    }
    // The head must go out even when the fault hits before the first body byte.
    if (fault !== undefined) res.flushHeaders();
    const rate = faults.throttleBytesPerSecond;
    // Small enough slices that a throttled body flows smoothly, large ones otherwise.
    const slice = rate === undefined ? BLOCK_SIZE : Math.max(1024, Math.min(256 * 1024, Math.floor(rate / 20)));
    const counters = countsOf(state.image.id);
    const began = performance.now();
    let sent = 0;

    for (const chunk of servedChunks(state.image.content, length, start, end)) {
      for (let at = 0; at < chunk.length && sent < faultAt; ) {
        if (isClosed()) return;
        const piece = chunk.subarray(at, at + Math.min(slice, faultAt - sent));
        if (rate !== undefined) {
          const wait = began + (sent / rate) * 1000 - performance.now();
          if (wait > 1) await pause(wait, closed);
          if (isClosed()) return;
        }
        at += piece.length;
        sent += piece.length;
        counters.bytes += piece.length;
        if (!res.write(piece)) {
          await Promise.race([new Promise<void>((resolve) => res.once('drain', resolve)), closed]);
        }
      }
      if (sent >= faultAt) break;
    }
    if (fault === undefined) {
      res.end();
    } else if (fault === 'reset') {
      log('closing the connection of %s after %d body bytes', state.image.id, sent);
      // destroySoon flushes what was written, then closes: the client gets exactly `sent` bytes.
      res.socket?.destroySoon();
    } else {
      log('stalling %s after %d body bytes', state.image.id, sent);
      await closed;
    }
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
    records.push(record);

    const match = /^\/v2\/images\/([^/?]+)(\/file)?(?:\?.*)?$/.exec(req.url ?? '');
    let imageId: string | undefined;
    try {
      imageId = match?.[1] === undefined ? undefined : decodeURIComponent(match[1]);
    } catch {
      imageId = undefined;
    }
    if (match === null || imageId === undefined) {
      sendError(res, 404, 'Not Found');
      return;
    }
    const kind = match[2] === undefined ? 'metadata' : 'file';
    record.imageId = imageId;
    record.kind = kind;
    countsOf(imageId)[kind]++;
    log('%s %s (range %s)', req.method ?? '?', req.url ?? '?', req.headers.range ?? 'none');

    if (req.method !== 'GET') {
      res.setHeader('allow', 'GET');
      sendError(res, 405, 'Method Not Allowed');
      return;
    }
    if (token !== undefined && req.headers['x-auth-token'] !== token) {
      sendError(res, 401, 'Unauthorized');
      return;
    }
    const state = images.get(imageId);
    if (state === undefined) {
      sendError(res, 404, 'Not Found');
      return;
    }
    const latency = state.faults.latencyMs ?? 0;
    if (latency > 0) await pause(latency, closed);
    if (isClosed()) return;
    if (state.image.forbidden === true) {
      sendError(res, 403, 'Forbidden');
      return;
    }
    if (state.failuresUsed < (state.faults.failFirst ?? 0)) {
      state.failuresUsed++;
      const status = state.faults.failStatus ?? 503;
      sendError(res, status, status === 503 ? 'Service Unavailable' : 'Injected Failure');
      return;
    }
    if (kind === 'metadata') await serveMetadata(res, state);
    else await serveFile(req, res, state, closed, isClosed);
  };

  const server: Server = createServer((req, res) => {
    // A write racing the client's disconnect must not crash the test process.
    res.on('error', (error) => {
      log('response error: %s', error.message);
    });
    handle(req, res).catch((error: unknown) => {
      log('handler failed: %O', error);
      if (!res.headersSent) sendError(res, 500, 'Internal Server Error');
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
    resetStats() {
      counts = new Map();
      records = [];
      totalRequests = 0;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
