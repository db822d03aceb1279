/**
 * The shapes shared by the peer source, the host agent's image route and the pre-cache reports:
 * who a site's peers are, and where a download's bytes came from.
 *
 * @module
 */

/** A host agent that may serve cached images to its site's peers. */
export interface PeerEndpoint {
  /** The peer host's name (Nova `CONF.host`): how it is reported (`peer:<name>`). */
  readonly name: string;
  /** agent base URL, http(s)://host:port */
  readonly url: string;
}

/** Where downloaded bytes came from: the image service or a named peer host. */
export type ByteOrigin = 'glance' | `peer:${string}`;

/** Bytes one origin delivered for one image. */
export interface BytesFrom {
  /** The origin. */
  readonly from: ByteOrigin;
  /** Bytes it delivered. */
  readonly bytes: number;
}
