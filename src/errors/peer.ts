/**
 * Errors of reading an image from a site peer (another host's agent) instead of the image service.
 *
 * @module
 */
import { ImageCacheError } from './base.js';

/**
 * Why a peer was left for the next one (or for the image service):
 * - `not-found`: it does not hold the image (404), or cannot serve it (another 4xx/5xx);
 * - `unauthorized`: it refused the token (401/403);
 * - `refused`: no connection (refused, reset, unreachable);
 * - `timeout`: no connection, response head or body bytes in time;
 * - `too-slow`: its body fell below the minimum transfer rate;
 * - `cut-short`: its body ended or broke before the image's end;
 * - `size-mismatch`: it announced another size than the image service describes;
 * - `bad-digest`: bytes it served were part of a download that failed verification;
 * - `error`: anything else (an unreadable answer).
 */
export type PeerFailureReason =
  | 'not-found'
  | 'unauthorized'
  | 'refused'
  | 'timeout'
  | 'too-slow'
  | 'cut-short'
  | 'size-mismatch'
  | 'bad-digest'
  | 'error';

const REMEDY: Readonly<Record<PeerFailureReason, string>> = {
  'not-found': 'it does not hold the image',
  unauthorized: 'it refused the token: give every agent of the site the same token',
  refused: 'it could not be reached: check that its agent runs',
  timeout: 'it did not answer in time',
  'too-slow': 'it sent the image below the minimum transfer rate',
  'cut-short': 'its answer ended before the image did',
  'size-mismatch': 'it announced a size other than the image service describes',
  'bad-digest': 'bytes it served failed verification: its cached copy is suspect, check that host',
  error: 'its answer could not be used',
};

/**
 * A site peer could not serve an image's bytes. The peer source reports it (through
 * `onPeerEvent`) and moves on to the next peer, then to the image service, so a download does not
 * fail because of a peer; `reason` says why it was left.
 */
export class PeerUnavailableError extends ImageCacheError {
  /** The peer host's name. */
  readonly peer: string;
  /** Why it was left. */
  readonly reason: PeerFailureReason;
  /**
   * @param peer - the peer host's name
   * @param imageId - the image
   * @param reason - why the peer was left
   * @param cause - the underlying failure, when there is one
   */
  constructor(peer: string, imageId: string, reason: PeerFailureReason, cause?: unknown) {
    super('ERR_PEER_UNAVAILABLE', `Peer ${peer} did not serve image ${imageId} (${reason}): ${REMEDY[reason]}; the bytes are read from the next peer or the image service.`, {
      imageId,
      cause,
    });
    this.peer = peer;
    this.reason = reason;
  }
}
