// An edge site end to end, on loopback: a fake Glance as the image service, and each host a
// LibvirtFileImageManager in its own temp dir behind a real host agent (node:http), reached by
// the fan-out through HttpHostClient (whose endpoints are also the hosts' peer endpoints). A host
// can be made to misbehave by wrapping its agent: a 500 to the pre-cache request, an agent that
// is down, or a hostile image route (wrong bytes, a body cut short) in front of a real cache.
import assert from 'node:assert/strict';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import path from 'node:path';
import { GlanceImageSource, HttpHostClient, LibvirtFileImageManager, createHostAgent } from '../../src/index.js';
import type { BytesFrom, PrecacheAggregate } from '../../src/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { SITE_TOKEN, answerHead, deadUrl, listen, sha256, sha256File } from '../helpers/peers.js';
import type { Listening } from '../helpers/peers.js';
import { makeTempDir } from '../helpers/tmp.js';

/** A file cache that tells whether a download is still running (an aborted one settles in the background). */
export class ObservedManager extends LibvirtFileImageManager {
  /** Downloads running or queued: 0 once an aborted download has kept or discarded its staging. */
  get downloadsRunning(): number {
    return this.fetcher.activeDownloads;
  }
}

/** How a host's agent is served: as is, wrapped (a hostile part in front), or not at all (down). */
export type AgentShape = 'real' | 'down' | ((agent: RequestListener) => RequestListener);

/** One host of the site. */
export interface EdgeHost {
  readonly name: string;
  readonly manager: ObservedManager;
  /** Its agent's URL, as the fan-out and the site's peers reach it. */
  readonly url: string;
  /** Requests its agent's server received, as `METHOD path range` (hostile parts included). */
  readonly requests: string[];
}

/** A site of hosts behind agents, and the client the fan-out asks them with. */
export interface EdgeSite {
  readonly hosts: readonly EdgeHost[];
  readonly client: HttpHostClient;
  /** The aggregate: every host in the given order, each in the site `siteOf` names (default `edge`). */
  aggregate(siteOf?: (host: string) => string): PrecacheAggregate;
  host(name: string): EdgeHost;
  /** Stops every agent and removes every cache. */
  close(): Promise<void>;
}

/** Starts one host per entry of `shapes` (name → agent shape), in that order. */
export async function startEdgeSite(glance: FakeGlance, shapes: Readonly<Record<string, AgentShape>>): Promise<EdgeSite> {
  const tmp = await makeTempDir('vic-edge-');
  const servers: Listening[] = [];
  const hosts: EdgeHost[] = [];
  try {
    for (const [name, shape] of Object.entries(shapes)) {
      const manager = new ObservedManager({
        host: name,
        instancesPath: path.join(tmp.dir, name),
        source: new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1, retries: 2 }),
      });
      const requests: string[] = [];
      let url: string;
      if (shape === 'down') {
        url = await deadUrl();
      } else {
        const agent = createHostAgent(manager, { token: SITE_TOKEN });
        const served = shape === 'real' ? agent : shape(agent);
        const server = await listen((request, response) => {
          requests.push(`${request.method ?? '?'} ${request.url ?? '?'} ${request.headers.range ?? '-'}`);
          served(request, response);
        });
        servers.push(server);
        url = server.url;
      }
      hosts.push({ name, manager, url, requests });
    }
  } catch (error) {
    await Promise.all(servers.map((server) => server.close()));
    await tmp.cleanup();
    throw error;
  }
  const client = new HttpHostClient({ endpoints: Object.fromEntries(hosts.map((h) => [h.name, h.url])), token: SITE_TOKEN, connectTimeoutMs: 1000 });
  return {
    hosts,
    client,
    aggregate: (siteOf = () => 'edge') => ({ id: 16, name: 'edge sites', hosts: hosts.map((h) => ({ name: h.name, site: siteOf(h.name) })) }),
    host: (name) => hosts.find((h) => h.name === name) ?? assert.fail(`no host ${name}`),
    close: async () => {
      await Promise.all(servers.map((server) => server.close()));
      await tmp.cleanup();
    },
  };
}

/** An agent whose pre-cache route answers `status` (its image route stays real). */
export function failingPrecache(status: number): (agent: RequestListener) => RequestListener {
  return (agent) => (request, response) => {
    if (request.method !== 'POST') {
      agent(request, response);
      return;
    }
    request.resume();
    response.writeHead(status, { 'Content-Type': 'application/json' });
    response.end(JSON.stringify({ error: { name: 'Error', code: 'ERR_INJECTED', message: `injected HTTP ${status}` } }));
  };
}

/** An agent whose image route (`/v1/images/{id}`) is `serve` instead; it still caches for real when asked to. */
export function hostileImageRoute(serve: (request: IncomingMessage, response: ServerResponse) => void): (agent: RequestListener) => RequestListener {
  return (agent) => (request, response) => {
    if ((request.url ?? '').startsWith('/v1/images/')) serve(request, response);
    else agent(request, response);
  };
}

/** Serves `bytes` (right size) from the requested offset: a copy that is wrong somewhere. */
export function servesBytes(bytes: Uint8Array): (request: IncomingMessage, response: ServerResponse) => void {
  return (request, response) => {
    const start = answerHead(request, response, bytes.length);
    response.end(bytes.subarray(start));
  };
}

/** Serves `bytes` from the requested offset up to byte `upTo`, then drops the connection mid-body. */
export function vanishesAt(bytes: Uint8Array, upTo: number): (request: IncomingMessage, response: ServerResponse) => void {
  return (request, response) => {
    const start = answerHead(request, response, bytes.length);
    response.write(bytes.subarray(start, Math.max(start, upTo)), () => {
      response.socket?.destroySoon();
    });
  };
}

/** Serves `bytes` from the requested offset up to byte `upTo`, then nothing, keeping the connection open. */
export function stallsAt(bytes: Uint8Array, upTo: number): (request: IncomingMessage, response: ServerResponse) => void {
  return (request, response) => {
    const start = answerHead(request, response, bytes.length);
    response.write(bytes.subarray(start, Math.max(start, upTo)));
  };
}

/** Answers 404, as an agent whose cache no longer holds the image (evicted since it answered). */
export function notFound(request: IncomingMessage, response: ServerResponse): void {
  request.resume();
  response.writeHead(404, { 'Content-Type': 'application/json' });
  response.end(JSON.stringify({ error: { name: 'PeerUnavailableError', code: 'ERR_PEER_UNAVAILABLE', message: 'not cached here' } }));
}

/** Asserts the host's cache holds `imageId` under its final name with exactly `bytes` (by SHA-256). */
export async function assertVerified(host: EdgeHost, imageId: string, bytes: Uint8Array): Promise<void> {
  const file = await host.manager.cachedImageFile(imageId);
  assert.ok(file !== null, `${host.name} holds ${imageId}`);
  assert.equal(await sha256File(file), sha256(bytes), `${host.name}'s cached file is the image`);
}

/** Asserts the host's cache does not hold `imageId`. */
export async function assertNotCached(host: EdgeHost, imageId: string): Promise<void> {
  assert.equal(await host.manager.cachedImageFile(imageId), null, `${host.name} does not hold ${imageId}`);
}

/** A byte-origin list as a record, for order-insensitive comparisons. */
export function originsOf(list: readonly BytesFrom[]): Record<string, number> {
  return Object.fromEntries(list.map(({ from, bytes }) => [from, bytes]));
}

/** Polls `condition` with real timers until it holds, failing after `timeoutMs`. */
export async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
