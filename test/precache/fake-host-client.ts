// A HostClient for the fan-out's tests: records every call (host, options, order of starts and
// ends), answers through a function of the call, and knows the peer endpoints it is given.
import type { HostCacheOptions, HostCacheReport, HostClient, PrecacheHost, PrecacheImageResult } from '../../src/index.js';
import type { BytesFrom, PeerEndpoint } from '../../src/peer/types.js';

/** Bytes of every image in these tests. */
export const IMAGE_BYTES = 1000;

/** One call the client received. */
export interface RecordedCall {
  readonly host: string;
  readonly imageIds: readonly string[];
  readonly options: HostCacheOptions;
}

export type FakeAnswer = (call: RecordedCall) => Promise<HostCacheReport>;

/** A host that caches every image, from its first peer if it has one, else from Glance. */
export function cachedFromFirstPeer(call: RecordedCall): Promise<HostCacheReport> {
  const peer = call.options.peers?.[0];
  const from: BytesFrom['from'] = peer === undefined ? 'glance' : `peer:${peer.name}`;
  return Promise.resolve(report(call.host, call.imageIds, 'cached', [{ from, bytes: IMAGE_BYTES }]));
}

/** A report with every image in `status`. */
export function report(
  host: string,
  imageIds: readonly string[],
  status: PrecacheImageResult['status'],
  bytesFrom: readonly BytesFrom[] = [],
): HostCacheReport {
  const bytes = bytesFrom.reduce((sum, part) => sum + part.bytes, 0);
  return {
    host,
    durationMs: 0,
    images: imageIds.map((imageId) => ({ imageId, status, error: null, bytes, bytesFrom, blamedPeers: [], durationMs: 0, pinnedUntil: null })),
  };
}

/** Waits for the call's signal, then rejects with its reason (a host that works until stopped). */
export function untilAborted(call: RecordedCall): Promise<HostCacheReport> {
  return new Promise((_resolve, reject) => {
    const { signal } = call.options;
    const stop = (): void => {
      reject(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
    };
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
  });
}

export class FakeHostClient implements HostClient {
  readonly calls: RecordedCall[] = [];
  /** `start <host>` and `end <host>`, in order. */
  readonly journal: string[] = [];
  /** The reason each call's signal aborted with, by host, in order. */
  readonly abortReasons: unknown[] = [];
  active = 0;
  maxActive = 0;
  readonly #answer: FakeAnswer;
  readonly #endpoints: Readonly<Record<string, string>>;

  /**
   * @param answer - how each call answers
   * @param endpoints - peer endpoints by host (none: no host has one)
   */
  constructor(answer: FakeAnswer = cachedFromFirstPeer, endpoints: Readonly<Record<string, string>> = {}) {
    this.#answer = answer;
    this.#endpoints = endpoints;
  }

  peerEndpointOf(host: PrecacheHost): PeerEndpoint | undefined {
    const url = this.#endpoints[host.name];
    return url === undefined ? undefined : { name: host.name, url };
  }

  /** This client as one without `peerEndpointOf` (written before sites). */
  withoutPeerEndpoints(): HostClient {
    return { cacheImages: (host, imageIds, options) => this.cacheImages(host, imageIds, options) };
  }

  async cacheImages(host: PrecacheHost, imageIds: readonly string[], options: HostCacheOptions): Promise<HostCacheReport> {
    const call = { host: host.name, imageIds, options };
    this.calls.push(call);
    this.journal.push(`start ${host.name}`);
    options.signal.addEventListener('abort', () => this.abortReasons.push(options.signal.reason), { once: true });
    this.active += 1;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      return await this.#answer(call);
    } finally {
      this.active -= 1;
      this.journal.push(`end ${host.name}`);
    }
  }

  /** The calls made to `host`. */
  callsOf(host: string): RecordedCall[] {
    return this.calls.filter((call) => call.host === host);
  }

  /** The peer names each call was given, by host, in call order. */
  peerNames(): [string, string[]][] {
    return this.calls.map((call) => [call.host, (call.options.peers ?? []).map((peer) => peer.name)]);
  }
}

/** Endpoints for `hosts` on made-up addresses (the fake never connects). */
export function endpointsOf(...hosts: string[]): Record<string, string> {
  return Object.fromEntries(hosts.map((host, i) => [host, `http://10.0.0.${String(i + 1)}:8775`]));
}
