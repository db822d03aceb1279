/**
 * {@link PeerChainReader}: one image's bytes from a chain of origins, the site's peers in order
 * and then the image service. Each origin continues exactly where the previous one stopped (a
 * `Range` from the byte offset already delivered), so no byte is delivered twice and none is
 * skipped; the download pipeline hashes the bytes as they come and verifies them at the end,
 * whichever origins they came from.
 *
 * @module
 */
import { AbortedError, PeerUnavailableError, isImageCacheError } from '../errors.js';
import type { ImageReader } from '../source/image-source.js';
import type { BytesFrom, ByteOrigin } from './types.js';

/** What a {@link PeerChainReader} reads, and from whom. */
export interface PeerChain {
  readonly imageId: string;
  /** The image's size (from the image service); null when unknown: then no peer is asked. */
  readonly size: number | null;
  /** First byte wanted. */
  readonly offset: number;
  readonly signal: AbortSignal | undefined;
  /** The peers to try, in order (each at most once). */
  readonly peers: readonly string[];
  /** Opens a peer's copy from `position`; rejects with `PeerUnavailableError` (or `AbortedError`). */
  readonly openPeer: (peer: string, position: number) => Promise<ImageReader>;
  /** Opens the image service's bytes from `position`; its failures are the download's. */
  readonly openUpstream: (position: number) => Promise<ImageReader>;
  /** A peer answered: its bytes are read from `position`. */
  readonly onReading: (peer: string, position: number) => void;
  /** A peer was left at `position`. */
  readonly onSkipped: (error: PeerUnavailableError, position: number) => void;
  /** A peer delivered its first byte for this reader. */
  readonly onContributed: (peer: string) => void;
  /** Turns what a peer's reader threw into the typed peer failure. */
  readonly failureOf: (peer: string, error: unknown) => PeerUnavailableError;
}

interface Leg {
  /** The peer's name, or undefined for the image service. */
  readonly peer: string | undefined;
  readonly reader: ImageReader;
}

/** The bytes of one image from a chain of origins. Call {@link PeerChainReader.begin} first. */
export class PeerChainReader implements ImageReader {
  readonly #chain: PeerChain;
  /** The next peer to try, an index into `peers`. */
  #nextPeer = 0;
  #leg: Leg | undefined;
  /** The image byte the next read starts at. */
  #position: number;
  readonly #counts = new Map<ByteOrigin, number>();
  #ended = false;
  #failure: Error | undefined;

  constructor(chain: PeerChain) {
    this.#chain = chain;
    this.#position = chain.offset;
  }

  /** Opens the first origin that answers (as a source's `openReader` must before it resolves). */
  async begin(): Promise<void> {
    if (this.#remaining() === 0) return;
    this.#leg = await this.#openNext();
  }

  /** {@inheritDoc ImageReader.read} */
  async read(into: Uint8Array): Promise<number> {
    for (;;) {
      if (this.#failure !== undefined) throw this.#failure;
      if (this.#ended) return 0;
      const remaining = this.#remaining();
      if (remaining === 0) {
        // The whole image is here: whatever a peer would send past it is never read.
        this.#finish();
        return 0;
      }
      const leg = this.#leg ?? (this.#leg = await this.#openNext());
      let n: number;
      try {
        // A peer is read no further than the image's size; the image service as is (the pipeline
        // checks what it sends against the size).
        n = await leg.reader.read(leg.peer === undefined ? into : into.subarray(0, Math.min(into.length, remaining)));
      } catch (error) {
        if (leg.peer === undefined || this.#aborted(error)) throw this.#fatal(error);
        this.#leave(this.#chain.failureOf(leg.peer, error));
        continue;
      }
      if (n === 0) {
        if (leg.peer !== undefined) {
          // A peer's body that ends before the image does (its announced size was checked).
          this.#leave(new PeerUnavailableError(leg.peer, this.#chain.imageId, 'cut-short'));
          continue;
        }
        this.#finish();
        return 0;
      }
      const origin: ByteOrigin = leg.peer === undefined ? 'glance' : `peer:${leg.peer}`;
      const before = this.#counts.get(origin) ?? 0;
      if (before === 0 && leg.peer !== undefined) this.#chain.onContributed(leg.peer);
      this.#counts.set(origin, before + n);
      this.#position += n;
      return n;
    }
  }

  /** Bytes each origin delivered through this reader, in the order they first delivered. */
  bytesFrom(): readonly BytesFrom[] {
    return [...this.#counts].map(([from, bytes]) => ({ from, bytes }));
  }

  /** {@inheritDoc ImageReader.destroy} */
  destroy(): void {
    this.#failure ??= Object.assign(new Error(`the read of image ${this.#chain.imageId} was destroyed`), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
    this.#drop();
  }

  /** Bytes left to read; Infinity when the size is unknown. */
  #remaining(): number {
    const { size } = this.#chain;
    return size === null ? Number.POSITIVE_INFINITY : size - this.#position;
  }

  /** The next origin that answers: a peer, else the image service (whose failure is final). */
  async #openNext(): Promise<Leg> {
    const { peers, size } = this.#chain;
    while (size !== null && this.#nextPeer < peers.length) {
      this.#checkAbort();
      const peer = peers[this.#nextPeer++] as string;
      const position = this.#position;
      try {
        const reader = await this.#chain.openPeer(peer, position);
        this.#chain.onReading(peer, position);
        return { peer, reader };
      } catch (error) {
        if (this.#aborted(error)) throw this.#fatal(error);
        this.#chain.onSkipped(this.#chain.failureOf(peer, error), position);
      }
    }
    this.#checkAbort();
    try {
      return { peer: undefined, reader: await this.#chain.openUpstream(this.#position) };
    } catch (error) {
      throw this.#fatal(error);
    }
  }

  /** Leaves the current peer at the current position: the next origin continues from here. */
  #leave(failure: PeerUnavailableError): void {
    this.#drop();
    this.#chain.onSkipped(failure, this.#position);
  }

  #aborted(error: unknown): boolean {
    return this.#chain.signal?.aborted === true || (isImageCacheError(error) && error.code === 'ERR_ABORTED');
  }

  #checkAbort(): void {
    const { signal, imageId } = this.#chain;
    if (signal?.aborted === true) throw this.#fatal(new AbortedError('Download', imageId, signal.reason));
  }

  #fatal(error: unknown): Error {
    this.#failure ??= error instanceof Error ? error : new Error(String(error));
    this.#drop();
    return this.#failure;
  }

  #finish(): void {
    this.#ended = true;
    this.#drop();
  }

  #drop(): void {
    const leg = this.#leg;
    this.#leg = undefined;
    leg?.reader.destroy();
  }
}
