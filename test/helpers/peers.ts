// A site on loopback: host agents over real file caches, and small raw node:http servers for
// peers that misbehave.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GlanceImageSource, LibvirtFileImageManager, createHostAgent } from '../../src/index.js';
import type { ImageSource } from '../../src/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { makeTempDir } from './tmp.js';

/** The bearer token every agent of the test site shares. */
export const SITE_TOKEN = 'site-token-0123456789';

/** A listening server and how to stop it. */
export interface Listening {
  readonly url: string;
  close(): Promise<void>;
}

/** Serves `handler` on a loopback port. */
export async function listen(handler: RequestListener): Promise<Listening> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
    },
  };
}

/** A URL nothing listens on (a port just released). */
export async function deadUrl(): Promise<string> {
  const server = await listen(() => undefined);
  await server.close();
  return server.url;
}

/** One host of the site: a file cache, and its agent once started. */
export interface SiteHost {
  readonly name: string;
  readonly manager: LibvirtFileImageManager;
  readonly instancesPath: string;
  /** Starts its agent (the site token unless another is given). */
  serve(token?: string): Promise<Listening>;
  /** Stops its agent and removes its cache. */
  close(): Promise<void>;
}

/** A host whose cache reads from `glance` (or `source`). */
export async function siteHost(name: string, glance: FakeGlance, source?: ImageSource): Promise<SiteHost> {
  const tmp = await makeTempDir(`vic-${name}-`);
  const manager = new LibvirtFileImageManager({
    host: name,
    instancesPath: tmp.dir,
    source: source ?? new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1, retries: 2 }),
  });
  const servers: Listening[] = [];
  return {
    name,
    manager,
    instancesPath: tmp.dir,
    serve: async (token = SITE_TOKEN) => {
      const server = await listen(createHostAgent(manager, { token }));
      servers.push(server);
      return server;
    },
    close: async () => {
      await Promise.all(servers.map((server) => server.close()));
      await tmp.cleanup();
    },
  };
}

/** Hex SHA-256 of bytes. */
export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Hex SHA-256 of a file. */
export async function sha256File(file: string): Promise<string> {
  return sha256(await readFile(file));
}

/** The first byte a `Range: bytes=N-` asks for (0 without one). */
export function rangeStart(request: IncomingMessage): number {
  const match = /^bytes=(\d+)-$/.exec(request.headers.range ?? '');
  return match === null ? 0 : Number(match[1]);
}

/**
 * Starts answering `bytes` from the requested offset as a well-behaved agent would (200 or 206
 * with the right headers), and returns the body part to send, for a hostile handler to send
 * as it likes.
 */
export function answerHead(request: IncomingMessage, response: ServerResponse, size: number): number {
  const start = rangeStart(request);
  const headers: Record<string, string | number> = { 'Content-Type': 'application/octet-stream', 'Content-Length': size - start };
  if (start > 0) headers['Content-Range'] = `bytes ${start}-${size - 1}/${size}`;
  response.writeHead(start > 0 ? 206 : 200, headers);
  response.flushHeaders();
  return start;
}
