/**
 * The public types of {@link startFakeGlance}: images and their content, fault knobs, options, and
 * the handle a running fake returns.
 *
 * @module
 */

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
  /**
   * The fake's WAN link: caps the image data it sends, summed over every file response and
   * connection, at about this many bytes per second, shared fairly between concurrent downloads
   * (each per-image `throttleBytesPerSecond` still applies within it). Models a site's thin link to
   * the image service; for several sites, each behind its own link, start one fake per site with
   * the same images and give each site's hosts its own fake's URL. Default: no cap.
   */
  readonly linkBytesPerSecond?: number | undefined;
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
  /** File body bytes written for all images together since start or {@link FakeGlance.resetStats}. */
  readonly totalBytesServed: number;
  /** Zeroes request counts, bytes served and the log (fault counts are kept). */
  resetStats(): void;
  /** Stops the server and closes every connection, keep-alive and stalled ones included. Idempotent. */
  close(): Promise<void>;
}
