/**
 * {@link PeerImageSource}: an {@link ImageSource} that reads an image's bytes from the hosts of
 * the same site that already hold it (their agents' `GET /v1/images/{id}`), and from the image
 * service only for what no peer serves, so a site pulls an image over its WAN link once.
 *
 * Trust stays with the image service: `describe` (size, expected digest) always goes upstream,
 * never to a peer; a peer announcing another size is not read; the download pipeline hashes the
 * bytes in-stream and verifies them against upstream's digest exactly as for any download. A peer
 * whose bytes fail that verification is blamed through {@link PeerImageSource.verificationFailed}
 * and never asked for that image again, and the fetcher downloads again from the start.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { throwIfAborted } from '../abort.js';
import { InvalidConfigError, PeerUnavailableError } from '../errors.js';
import type { ImageCacheError } from '../errors.js';
import { checkImageId, passVouch } from '../image-id.js';
import { createLogger } from '../log.js';
import { openImageReader, readableFromReader } from '../source/image-reader.js';
import type { ImageInfo, ImageReader, ImageSource, OpenImageOptions, SourceCallOptions } from '../source/image-source.js';
import { openPeerLeg, peerFailure, resolvePeer } from './peer-leg.js';
import type { ResolvedPeer } from './peer-leg.js';
import { checkPeer, emitPeerEvent, failureEvent, resolvePeerSettings } from './peer-options.js';
import type { PeerEvent, PeerImageSourceOptions, PeerSettings } from './peer-options.js';
import { PeerChainReader } from './peer-reader.js';
import type { PeerEndpoint } from './types.js';

const log = createLogger('peer');

/** Image descriptions kept for the `openReader` that follows a `describe` (the fetcher's order). */
const DESCRIBED_MAX = 64;

/**
 * Reads images from the site's peers, falling back to the image service (`upstream`).
 *
 * For each download, the peers are tried in order: the first that answers with the image (200 or
 * 206, announcing the size upstream describes) serves it. A peer that does not hold the image
 * (404), refuses (connection refused, 401), times out, stalls or falls below the minimum transfer
 * rate, or whose body ends early, is left at the byte reached: the next peer, and finally the
 * image service, continues from there with `Range`, so no byte is fetched twice.
 * {@link PeerImageSource.openReader}'s reader says how many bytes each origin delivered
 * (`bytesFrom()`).
 *
 * Blame is kept per image by the source: give each manager (or each pre-cache request) its own
 * source, so one download's peers are not blamed for another's.
 *
 * @example
 * ```ts
 * const glance = new GlanceImageSource({ endpoint, token });
 * const manager = new LibvirtFileImageManager({
 *   host: 'edge1-compute3',
 *   instancesPath,
 *   source: new PeerImageSource({ upstream: glance, peers: sitePeers, token: agentToken }),
 * });
 * ```
 */
export class PeerImageSource implements ImageSource {
  /** The image service. */
  readonly upstream: ImageSource;
  readonly #peers: () => readonly PeerEndpoint[];
  readonly #token: string;
  readonly #settings: PeerSettings;
  readonly #onPeerEvent: ((event: PeerEvent) => void) | undefined;
  readonly #resolved = new Map<string, ResolvedPeer>();
  readonly #described = new Map<string, ImageInfo>();
  /** Image → peers blamed for a bad digest. */
  readonly #bad = new Map<string, Set<string>>();
  /** Image → peers that contributed bytes to its current download attempt. */
  readonly #contributors = new Map<string, Set<string>>();

  /**
   * @param options - upstream, peers, token, timeouts, the rate floor and the event listener
   * @throws `InvalidConfigError` naming the first bad option (a list of peers is checked here; a
   *   function's peers as they are used)
   */
  constructor(options: PeerImageSourceOptions) {
    this.#settings = resolvePeerSettings(options);
    this.upstream = options.upstream;
    this.#token = options.token;
    this.#onPeerEvent = options.onPeerEvent;
    const { peers } = options;
    if (typeof peers === 'function') {
      this.#peers = peers;
    } else {
      const fixed = Object.freeze(peers.map(checkPeer));
      for (const peer of fixed) this.#resolve(peer);
      this.#peers = () => fixed;
    }
  }

  /**
   * Peers blamed for serving bytes that failed verification, by image: they are not asked for
   * that image again by this source.
   */
  get badPeers(): ReadonlyMap<string, readonly string[]> {
    return new Map([...this.#bad].map(([imageId, peers]) => [imageId, [...peers]]));
  }

  /** Describes the image: always the image service's answer (the trust anchor), never a peer's. */
  async describe(imageId: string, options: SourceCallOptions = {}): Promise<ImageInfo> {
    const info = await this.upstream.describe(imageId, options);
    this.#described.delete(imageId);
    this.#described.set(imageId, info);
    if (this.#described.size > DESCRIBED_MAX) this.#described.delete(this.#described.keys().next().value as string);
    return info;
  }

  /** The same bytes as {@link PeerImageSource.openReader}, as a stream. */
  async open(imageId: string, options: OpenImageOptions = {}): Promise<Readable> {
    return readableFromReader(await this.openReader(imageId, options), { signal: options.signal, imageId });
  }

  /**
   * Opens the image's bytes from `offset`: from the first peer that serves them, then the next,
   * then the image service. Resolves once an origin answered. The size the peers must announce
   * is the image service's (from the `describe` before, or asked now).
   *
   * @returns a reader whose `bytesFrom()` tells the bytes per origin
   * @throws what the image service throws when no peer serves the image and it fails too;
   *   `InvalidConfigError` for a bad offset; `AbortedError`
   */
  async openReader(imageId: string, options: OpenImageOptions = {}): Promise<ImageReader> {
    checkImageId(imageId, options);
    const { signal } = options;
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidConfigError('offset', 'an integer from 0 up', offset);
    throwIfAborted(signal, 'Download', imageId);
    const info = this.#described.get(imageId) ?? (await this.describe(imageId, passVouch(options, imageId, { signal })));
    // A download from the start is a new attempt: only its contributors are blamed for its digest.
    if (offset === 0 || !this.#contributors.has(imageId)) this.#contributors.set(imageId, new Set());
    const contributors = this.#contributors.get(imageId) as Set<string>;
    const size = info.size;
    // Without a size from upstream a peer's answer cannot be checked: the image service serves it.
    const peers = size === null || size === 0 ? [] : this.#peersFor(imageId);
    const byName = new Map(peers.map((peer) => [peer.name, peer]));
    const reader = new PeerChainReader({
      imageId,
      size,
      offset,
      signal,
      peers: [...byName.keys()],
      openPeer: (name, position) =>
        openPeerLeg({ peer: byName.get(name) as ResolvedPeer, token: this.#token, imageId, size: size as number, position, signal }),
      openUpstream: (position) => openImageReader(this.upstream, imageId, passVouch(options, imageId, { signal, offset: position })),
      onReading: (peer, position) => {
        log('image %s: reading from peer %s at byte %d', imageId, peer, position);
        this.#emit({ type: 'reading', imageId, peer, offset: position, reason: null, error: null });
      },
      onSkipped: (error, position) => {
        log('image %s: leaving peer %s at byte %d (%s)', imageId, error.peer, position, error.reason);
        this.#emit(failureEvent('skipped', error, position));
      },
      onContributed: (peer) => contributors.add(peer),
      failureOf: (peer, error) => peerFailure(peer, imageId, error),
    });
    await reader.begin();
    return reader;
  }

  /**
   * Blames the peers that contributed bytes to the failed download of `imageId` (reported as
   * `blamed` events with reason `bad-digest`, then skipped for that image).
   *
   * @returns true when a peer was blamed (the fetcher then downloads again from the start);
   *   false when only the image service contributed (the failure is then the download's)
   */
  verificationFailed(imageId: string, error: ImageCacheError): boolean {
    const contributors = this.#contributors.get(imageId);
    this.#contributors.delete(imageId);
    if (contributors === undefined || contributors.size === 0) return false;
    let bad = this.#bad.get(imageId);
    if (bad === undefined) {
      bad = new Set();
      this.#bad.set(imageId, bad);
    }
    for (const peer of contributors) {
      bad.add(peer);
      log('image %s failed verification (%s): blaming peer %s', imageId, error.code, peer);
      this.#emit(failureEvent('blamed', new PeerUnavailableError(peer, imageId, 'bad-digest', error), 0));
    }
    return true;
  }

  /** The peers to try for `imageId`: in the configured order, valid, not blamed, each once. */
  #peersFor(imageId: string): ResolvedPeer[] {
    const bad = this.#bad.get(imageId);
    const chosen = new Map<string, ResolvedPeer>();
    for (const peer of this.#peers()) {
      let resolved: ResolvedPeer;
      try {
        resolved = this.#resolve(checkPeer(peer));
      } catch (error) {
        log('ignoring peer %O: %s', peer, (error as Error).message);
        continue;
      }
      if (bad?.has(resolved.name) !== true && !chosen.has(resolved.name)) chosen.set(resolved.name, resolved);
    }
    return [...chosen.values()];
  }

  #resolve(peer: PeerEndpoint): ResolvedPeer {
    const key = `${peer.name}\n${peer.url}`;
    let resolved = this.#resolved.get(key);
    if (resolved === undefined) {
      resolved = resolvePeer(peer, this.#settings);
      this.#resolved.set(key, resolved);
    }
    return resolved;
  }

  #emit(event: PeerEvent): void {
    emitPeerEvent(this.#onPeerEvent, event, log);
  }
}
