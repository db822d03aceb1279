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
import { createHash, randomUUID } from 'node:crypto';
import { STATUS_CODES, createServer } from 'node:http';
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
  /** Honour `Range` with 206 (see {@link startFakeGlance}); when false, ignore it: 200 with the whole body. Default true. */
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
  /** Glance status. Default `active`; see {@link startFakeGlance} for what other statuses answer. */
  readonly status?: string | undefined;
  /** Display name. Default null, as Glance's when none is given. */
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
  /**
   * `virtual_size`. Default: what Glance finds: the size for a non-empty `raw` image, the header's
   * size for `qcow2` bytes, null otherwise.
   */
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
  /** `created_at`, as Glance formats it (seconds, `Z`). */
  readonly created: string;
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

/**
 * The virtual size Glance's format inspector finds at upload: a raw image's size (none when it is
 * empty), a qcow2 header's size field; null for what the fake does not inspect.
 */
function inspectedVirtualSize(diskFormat: string, content: FakeImageContent): number | null {
  const size = contentSize(content);
  if (diskFormat === 'raw') return size > 0 ? size : null;
  if (diskFormat === 'qcow2' && content instanceof Uint8Array && content.length >= 32) {
    const header = Buffer.from(content.buffer, content.byteOffset, 32);
    if (header.readUInt32BE(0) === 0x514649fb) return Number(header.readBigUInt64BE(24));
  }
  return null;
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
    created: `${new Date().toISOString().slice(0, 19)}Z`,
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

/** JSON spaced as Python's `json.dumps` spaces it (`", "` and `": "`), so lengths match Glance's. */
function pythonJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(', ')}]`;
  if (typeof value === 'object' && value !== null) {
    return `{${Object.entries(value)
      .filter(([, field]) => field !== undefined)
      .map(([key, field]) => `${JSON.stringify(key)}: ${pythonJson(field)}`)
      .join(', ')}}`;
  }
  return JSON.stringify(value);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = pythonJson(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Statuses whose image has no data yet (or lost it): null size and digests, a 204 file. */
const WITHOUT_DATA = new Set(['queued', 'saving', 'uploading', 'importing', 'killed']);

const REASONS: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  416: 'Request Range Not Satisfiable',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** What Glance's error responses say; `explanation` and `detail` as webob's exceptions take them. */
interface GlanceError {
  readonly status: number;
  readonly explanation: string;
  readonly detail?: string | undefined;
  readonly headers?: Readonly<Record<string, string>> | undefined;
}

/** The q-value `accept` gives `type` (0 when it does not accept it), as webob reads Accept. */
function acceptQuality(accept: string, type: string): number {
  let best = -1;
  let quality = 0;
  for (const part of accept.split(',')) {
    const [range = '', ...params] = part.split(';').map((p) => p.trim().toLowerCase());
    const [major, minor] = range.split('/');
    const specificity = range === type ? 2 : major === type.split('/')[0] && minor === '*' ? 1 : range === '*/*' ? 0 : -1;
    if (specificity <= best) continue;
    best = specificity;
    const q = params.find((p) => p.startsWith('q='));
    quality = q === undefined ? 1 : Number(q.slice(2)) || 0;
  }
  return quality;
}

/**
 * Sends an error the way Glance does (webob's exception bodies): HTML when the client accepts
 * `text/html` (`*\/*` included), JSON `{message, code: "404 Not Found", title}` when it accepts
 * only `application/json`, plain text otherwise (no Accept, or `application/octet-stream`).
 */
function sendError(req: IncomingMessage, res: ServerResponse, error: GlanceError): void {
  const title = REASONS[error.status] ?? STATUS_CODES[error.status] ?? 'Error';
  const status = `${error.status} ${title}`;
  // webob's body template; the 405 one has no comment line.
  const raw = (escape: (text: string) => string): string =>
    `${escape(error.explanation)}<br /><br />\n${escape(error.detail ?? '')}${error.status === 405 ? '' : '\n\n'}`;
  if (req.method === 'HEAD') {
    // webob answers HEAD with its default (HTML) type and no body.
    res.writeHead(error.status, { ...error.headers, 'content-type': 'text/html; charset=UTF-8', 'content-length': 0 });
    res.end();
    return;
  }
  const accept = req.headers.accept ?? '';
  const html = accept === '' ? 0 : acceptQuality(accept, 'text/html');
  const json = accept === '' ? 0 : acceptQuality(accept, 'application/json');
  let type: string;
  let body: string;
  if (html > 0 && html >= json) {
    type = 'text/html; charset=UTF-8';
    body = `<html>\n <head>\n  <title>${status}</title>\n </head>\n <body>\n  <h1>${status}</h1>\n  ${raw(htmlEscape)}\n </body>\n</html>`;
  } else if (json > 0) {
    type = 'application/json';
    body = pythonJson({ message: raw((text) => text), code: status, title });
  } else {
    type = 'text/plain; charset=UTF-8';
    const stripped = raw((text) => text)
      .replace(/\n/g, ' ')
      .replace(/\r/g, '')
      .replace(/<br\s*\/?>/gi, '\n')
      .replace(/<[^>]*>/g, '');
    body = `${status}\n\n${stripped}`;
  }
  res.writeHead(error.status, { ...error.headers, 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function htmlEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#x27;');
}

/**
 * What Glance's server (eventlet) answers when Glance itself fails: an empty 500, then it closes
 * the connection.
 */
function sendCrash(res: ServerResponse): void {
  res.removeHeader('x-openstack-request-id');
  res.writeHead(500, { 'content-type': 'text/plain', 'content-length': 0, connection: 'close' });
  res.end();
}

/** Glance's (webob's) reading of `Range`; `crash` where Glance itself fails (a 500). */
type RangeAnswer =
  | { readonly kind: 'none' }
  | { readonly kind: 'crash' }
  | { readonly kind: 'range'; readonly start: number; readonly end: number }
  | { readonly kind: 'error'; readonly error: GlanceError };

function unsatisfiable(detail: string): RangeAnswer {
  return { kind: 'error', error: { status: 416, explanation: 'The Range requested is not available.', detail } };
}

/**
 * Reads `Range` as Glance 25 does: several ranges are 400; a header webob cannot parse
 * (`bytes=5-2`, not `bytes=`) is 416 "Invalid Range header."; a start at or past the end is 416;
 * `bytes=-N` is the last N bytes (the whole image when N is not below the size); an end past the
 * image is cut to it; `bytes=-` makes Glance fail. Without `Range`, Glance still reads a request
 * `Content-Range` (its legacy form), see {@link parseGlanceContentRange}.
 */
function parseGlanceRange(header: string | undefined, contentRange: string | undefined, size: number | null): RangeAnswer {
  if (header === undefined) return contentRange === undefined ? { kind: 'none' } : parseGlanceContentRange(contentRange, size);
  if (header.includes(',')) {
    return {
      kind: 'error',
      error: { status: 400, explanation: 'Requests with multiple ranges are not supported in Glance. You may make multiple single-range requests instead.' },
    };
  }
  const match = /^bytes *= *(\d*) *- *(\d*)/i.exec(header);
  if (match === null) return unsatisfiable('Invalid Range header.');
  const [, first = '', last = ''] = match;
  // webob reads `bytes=-N` as a start of -N to the end: `bytes=-` fails on `int('')`, and -0 is
  // a start of 0 (so it is checked against the size like any other start).
  if (first === '' && last === '') return { kind: 'crash' };
  const suffix = first === '' ? Number(last) : 0;
  if (suffix > 0) {
    if (size === null) return { kind: 'crash' };
    return { kind: 'range', start: suffix < size ? size - suffix : 0, end: size };
  }
  const start = Number(first);
  const open = first === '' || last === '';
  if (!open && Number(last) < start) return unsatisfiable('Invalid Range header.');
  // An image without data has no size yet, and Glance fails comparing with it.
  if (size === null) return { kind: 'crash' };
  if (start >= size) {
    return unsatisfiable(`Invalid start position in Range header. Start position MUST be in the inclusive range [0, ${size - 1}].`);
  }
  return { kind: 'range', start, end: open ? size : Math.min(Number(last) + 1, size) };
}

/**
 * Glance's legacy reading of a request `Content-Range: bytes F-L/(N|*)`: F..L when webob finds it
 * valid and it starts (and, without N, ends) within the image; 416 otherwise; `bytes * /N` makes
 * Glance fail. (With N given, Glance does not check L against the image and announces more bytes
 * than it has; the fake cuts the range to the image instead.)
 */
function parseGlanceContentRange(header: string, size: number | null): RangeAnswer {
  const match = /^bytes (?:(\d+)-(\d+)|\*)\/(?:(\d+)|\*)/.exec(header);
  if (match === null) return unsatisfiable('Invalid Content-Range header.');
  const [, first, last, total] = match;
  if (first === undefined || last === undefined) return { kind: 'crash' };
  const start = Number(first);
  const stop = Number(last) + 1;
  const length = total === undefined ? null : Number(total);
  const valid = start < stop && (length === null || (stop <= length && start < length));
  if (!valid) return unsatisfiable('Invalid Content-Range header.');
  if (size === null) return { kind: 'crash' };
  if (length === null && stop > size) {
    return unsatisfiable(`Invalid stop position in Content-Range header. The stop position MUST be in the inclusive range [0, ${size - 1}].`);
  }
  if (start >= size) {
    return unsatisfiable(`Invalid start position in Content-Range header. Start position MUST be in the inclusive range [0, ${size - 1}].`);
  }
  return { kind: 'range', start, end: Math.min(stop, size) };
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

  /** The digests as published (corrupted under `wrongChecksum`); null for an image without data. */
  const publishedDigests = async (state: ImageState): Promise<Digests | null> => {
    if (WITHOUT_DATA.has(state.status)) return null;
    const digests = await digestsOf(state);
    if (state.faults.wrongChecksum !== true) return digests;
    return { md5: corrupt(digests.md5), hash: digests.hash === null ? null : corrupt(digests.hash) };
  };

  const serveMetadata = async (res: ServerResponse, state: ImageState): Promise<void> => {
    const { image } = state;
    const digests = await publishedDigests(state);
    const hasData = digests !== null;
    const hash = digests?.hash ?? null;
    const diskFormat = image.diskFormat ?? 'raw';
    const self = `/v2/images/${image.id}`;
    // Glance 25's fields, in its order; `stores` as a multi-store Glance (enabled_backends) shows it.
    sendJson(res, 200, {
      name: image.name ?? null,
      disk_format: diskFormat,
      container_format: image.containerFormat ?? 'bare',
      visibility: 'shared',
      size: hasData ? state.size : null,
      virtual_size: hasData ? (image.virtualSize ?? inspectedVirtualSize(diskFormat, image.content)) : null,
      status: state.status,
      checksum: digests?.md5 ?? null,
      protected: false,
      min_ram: 0,
      min_disk: 0,
      owner: null,
      os_hidden: false,
      os_hash_algo: hash === null ? null : hashAlgoOf(image),
      os_hash_value: hash,
      id: image.id,
      created_at: state.created,
      updated_at: state.created,
      tags: [],
      self,
      file: `${self}/file`,
      schema: '/v2/schemas/image',
      ...(hasData ? { stores: 'local' } : {}),
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
    if (state.status === 'deactivated') {
      sendError(req, res, { status: 403, explanation: 'The requested image has been deactivated. Image data download is forbidden.' });
      return;
    }
    const digests = await publishedDigests(state);
    if (digests === null) {
      // Glance reads a range against a size it does not have yet: a valid one makes it fail.
      const range = state.faults.honourRange === false ? ({ kind: 'none' } as const) : parseGlanceRange(req.headers.range, req.headers['content-range'], null);
      if (range.kind === 'error') sendError(req, res, range.error);
      else if (range.kind !== 'none') sendCrash(res);
      else {
        res.writeHead(204, { 'content-length': 0 });
        res.end();
      }
      return;
    }
    const { faults } = state;
    const length = faults.wrongLength ?? state.size;
    let start = 0;
    let end = length;
    let status = 200;
    // Glance sends the whole image's md5 even with a range, and no Accept-Ranges.
    const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream', 'content-md5': digests.md5 };
    const range = faults.honourRange === false ? ({ kind: 'none' } as const) : parseGlanceRange(req.headers.range, req.headers['content-range'], length);
    if (range.kind === 'error') {
      sendError(req, res, range.error);
      return;
    }
    if (range.kind === 'crash') {
      sendCrash(res);
      return;
    }
    if (range.kind === 'range') {
      ({ start, end } = range);
      status = 206;
      headers['content-range'] = `bytes ${start}-${end - 1}/${length}`;
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
    else await serveFile(req, res, state, closed, isClosed);
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
    resetStats() {
      counts = new Map();
      records = [];
      totalRequests = 0;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
