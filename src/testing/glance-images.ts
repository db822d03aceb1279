/**
 * The fake's images: their state (status, faults and how many were used), the validation of what
 * a test gives, their digests, and the metadata document Glance serves for one.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { inspect } from 'node:util';
import type { FakeImage, FakeImageContent, FakeImageFaults } from './fake-glance-types.js';
import { computeDigests, contentSize, isGenerated } from './generated-content.js';
import type { Digests } from './generated-content.js';
import { sendJson } from './glance-responses.js';

/** An image as served: what the test gave, and what requests changed. */
export interface ImageState {
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

/** Statuses whose image has no data yet (or lost it): null size and digests, a 204 file. */
const WITHOUT_DATA = new Set(['queued', 'saving', 'uploading', 'importing', 'killed']);

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

/** Throws a RangeError unless `value` is undefined or a safe integer from `min` up. */
export function checkCount(name: string, value: unknown, min: number): void {
  if (value !== undefined && (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min)) {
    throw new RangeError(`fake glance: ${name} must be an integer from ${min} up, got ${inspect(value)}`);
  }
}

export function checkFaults(faults: FakeImageFaults): void {
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

export function newState(image: FakeImage): ImageState {
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

/** The digests: given ones, else computed once per image (not per request). */
function digestsOf(state: ImageState): Promise<Digests> {
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
}

/** The digests as published (corrupted under `wrongChecksum`); null for an image without data. */
export async function publishedDigests(state: ImageState): Promise<Digests | null> {
  if (WITHOUT_DATA.has(state.status)) return null;
  const digests = await digestsOf(state);
  if (state.faults.wrongChecksum !== true) return digests;
  return { md5: corrupt(digests.md5), hash: digests.hash === null ? null : corrupt(digests.hash) };
}

/** Answers `GET /v2/images/{id}` with the image document Glance 25 serves. */
export async function serveMetadata(res: ServerResponse, state: ImageState): Promise<void> {
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
}
