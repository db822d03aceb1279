/**
 * The real OpenStack Glance API server (Debian's `glance-api`) for tests: its own process on
 * 127.0.0.1 and a free port, with a config, a sqlite database and a file store in a temp dir, and
 * no Keystone. The fake Glance (src/testing/fake-glance.ts) is checked against it.
 *
 * Two paste pipelines share the process: `/` runs Glance's own unauthenticated-context middleware
 * (every request is an admin: it creates, uploads, deactivates and deletes images), and
 * `/anonymous` runs the normal context middleware with anonymous access allowed: a non-admin,
 * read-only user, who sees what an ordinary user (Nova's) sees, e.g. 403 for a deactivated
 * image's data, where an admin gets the bytes.
 *
 * @module
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Where Debian puts the server; PATH is searched too. */
const GLANCE_API_CANDIDATES = ['/usr/bin/glance-api'];
const SETPRIV = '/usr/bin/setpriv';
/** Startup takes seconds on a quiet machine; this only guards against a hang. */
const START_TIMEOUT_MS = 120_000;
const POLL_MS = 100;

/** A running glance-api with helpers that drive Glance's own API. */
export interface RealGlance extends AsyncDisposable {
  /** Base URL of the admin pipeline, e.g. `http://127.0.0.1:41234`. */
  readonly url: string;
  /** Base URL of the anonymous (non-admin, read-only) pipeline: `<url>/anonymous`. */
  readonly anonymousUrl: string;
  /** Glance's version, e.g. `25.1.0`. */
  readonly version: string;
  /** `POST /v2/images`; resolves with the new (queued) image's document. */
  createImage(fields?: Readonly<Record<string, unknown>>): Promise<GlanceImageDocument>;
  /** `PUT /v2/images/{id}/file` with `data`. */
  upload(imageId: string, data: Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<void>;
  /** Creates an image and uploads `data`; resolves with its (active) document. */
  createActiveImage(data: Uint8Array, fields?: Readonly<Record<string, unknown>>): Promise<GlanceImageDocument>;
  /** `GET /v2/images/{id}`. */
  image(imageId: string): Promise<GlanceImageDocument>;
  /** `POST /v2/images/{id}/actions/deactivate`. */
  deactivate(imageId: string): Promise<void>;
  /** `DELETE /v2/images/{id}`. */
  deleteImage(imageId: string): Promise<void>;
  /** Stops the server (the whole process group) and removes its temp dir. Idempotent. */
  close(): Promise<void>;
}

/** The fields of Glance's image document the tests read (the rest is kept as is). */
export interface GlanceImageDocument {
  readonly id: string;
  readonly status: string;
  readonly size: number | null;
  readonly checksum: string | null;
  readonly os_hash_algo: string | null;
  readonly os_hash_value: string | null;
  readonly [field: string]: unknown;
}

function executable(candidate: string): boolean {
  try {
    accessSync(candidate, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The `glance-api` executable, or null: `$GLANCE_API` when set (another install, e.g. a virtualenv),
 * else Debian's, else the first on PATH. Its sibling `glance-manage` is assumed beside it.
 */
export function findGlanceApi(): string | null {
  const chosen = process.env.GLANCE_API;
  if (chosen !== undefined && chosen !== '') return executable(chosen) ? chosen : null;
  const onPath = (process.env.PATH ?? '').split(path.delimiter).filter((dir) => dir !== '').map((dir) => path.join(dir, 'glance-api'));
  return [...GLANCE_API_CANDIDATES, ...onPath].find(executable) ?? null;
}

/**
 * Starts the real Glance for a test file, at module level, before the tests are declared:
 * `{ glance }` when it runs, `{ skip: reason }` when it cannot start outside CI (declare the tests
 * with `{ skip }`). In CI (`CI=true`) a server that cannot start throws, failing the file: the
 * suite must not silently stop comparing against the real server.
 */
export async function startRealGlanceOrSkip(): Promise<{ glance: RealGlance; skip: false } | { glance: undefined; skip: string }> {
  const ci = process.env.CI === 'true';
  const glanceApi = findGlanceApi();
  if (glanceApi === null) {
    const reason = `glance-api is not installed (Debian: apt-get install glance-api${process.env.GLANCE_API === undefined ? '' : `; GLANCE_API=${process.env.GLANCE_API}`})`;
    if (ci) throw new Error(`${reason}: CI must test against the real Glance (.ci/run installs it)`);
    return { glance: undefined, skip: reason };
  }
  try {
    return { glance: await startRealGlance(glanceApi), skip: false };
  } catch (error) {
    if (ci) throw error;
    return { glance: undefined, skip: `the real glance-api did not start: ${(error as Error).message}` };
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => { resolve(); }));
  return port;
}

function pasteIni(): string {
  return `[composite:glance-api]
paste.composite_factory = paste.urlmap:urlmap_factory
/ = admin
/anonymous = anonymous

[pipeline:admin]
pipeline = versionnegotiation unauthenticated-context rootapp

[pipeline:anonymous]
pipeline = versionnegotiation context rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:context]
paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory

[filter:unauthenticated-context]
paste.filter_factory = glance.api.middleware.context:UnauthenticatedContextMiddleware.factory
`;
}

function apiConf(dir: string, port: number): string {
  // One eventlet process (workers = 0): no forked workers to chase at shutdown. Multi-store
  // configuration (enabled_backends), as Glance 25 wants: the single-store options are deprecated.
  return `[DEFAULT]
bind_host = 127.0.0.1
bind_port = ${port}
workers = 0
log_file = ${dir}/glance-api.log
use_stderr = false
allow_anonymous_access = true
enabled_backends = local:file

[database]
connection = sqlite:///${dir}/glance.sqlite

[glance_store]
default_backend = local

[local]
filesystem_store_datadir = ${dir}/images

[os_glance_staging_store]
filesystem_store_datadir = ${dir}/staging

[os_glance_tasks_store]
filesystem_store_datadir = ${dir}/tasks

[paste_deploy]
flavor =
config_file = ${dir}/glance-api-paste.ini

[oslo_concurrency]
lock_path = ${dir}/locks
`;
}

async function tail(file: string, lines = 30): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-lines).join('\n');
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

async function glanceVersion(glanceApi: string): Promise<string> {
  // The server's own script names its interpreter; ask that one which glance it imports.
  const head = (await readFile(glanceApi, 'utf8').catch(() => '')).split('\n', 1)[0] ?? '';
  const python = head.startsWith('#!') ? (head.slice(2).trim().split(/\s+/)[0] ?? 'python3') : 'python3';
  const { stdout } = await run(python, ['-c', 'import glance.version as v; print(v.version_info.version_string())']);
  return stdout.trim();
}

async function check(res: Response, what: string): Promise<Response> {
  if (!res.ok) throw new Error(`${what}: Glance answered ${res.status} ${await res.text()}`);
  return res;
}

/** Starts glance-api (`glanceApi`, default: the installed one); rejects with its log when it does not come up. */
export async function startRealGlance(glanceApi = findGlanceApi()): Promise<RealGlance> {
  if (glanceApi === null) throw new Error('glance-api is not installed');
  const glanceManage = path.join(path.dirname(glanceApi), 'glance-manage');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vic-glance-'));
  let child: ChildProcess | undefined;
  const onExit = (): void => {
    if (child !== undefined) killGroup(child, 'SIGKILL');
  };
  try {
    await Promise.all(['images', 'staging', 'tasks', 'locks'].map((sub) => mkdir(path.join(dir, sub))));
    const port = await freePort();
    const conf = path.join(dir, 'glance-api.conf');
    await writeFile(conf, apiConf(dir, port));
    await writeFile(path.join(dir, 'glance-api-paste.ini'), pasteIni());
    const [version] = await Promise.all([glanceVersion(glanceApi), run(glanceManage, ['--config-file', conf, 'db_sync'])]);

    // Its own process group, so close() ends the server and anything it forked in one kill.
    // setpriv (util-linux) makes the kernel kill the server should this process die without its
    // exit handlers (SIGKILL, a test runner's timeout); it then execs glance-api in place.
    const command = executable(SETPRIV) ? [SETPRIV, '--pdeathsig', 'KILL', '--', glanceApi] : [glanceApi];
    child = spawn(command[0] ?? glanceApi, [...command.slice(1), '--config-file', conf], { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    // A test process that dies must not leave the server running.
    process.once('exit', onExit);
    const url = `http://127.0.0.1:${port}`;
    const exited = new Promise<never>((_, reject) => {
      child?.once('exit', (code, signal) => {
        void tail(path.join(dir, 'glance-api.log')).then((log) => {
          reject(new Error(`glance-api exited (${code ?? signal}) before answering:\n${stderr}\n${log}`));
        });
      });
    });
    exited.catch(() => undefined);
    const deadline = performance.now() + START_TIMEOUT_MS;
    for (;;) {
      const answered = await Promise.race([
        fetch(`${url}/v2/images`).then(
          (res) => res.status === 200,
          () => false,
        ),
        exited,
      ]);
      if (answered) break;
      if (performance.now() > deadline) throw new Error(`glance-api did not answer within ${START_TIMEOUT_MS} ms:\n${await tail(path.join(dir, 'glance-api.log'))}`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }

    const json = { 'content-type': 'application/json' };
    const api = `${url}/v2/images`;
    let closing: Promise<void> | undefined;
    const server = child;
    const glance: RealGlance = {
      url,
      anonymousUrl: `${url}/anonymous`,
      version,
      async createImage(fields = {}) {
        const res = await check(await fetch(api, { method: 'POST', headers: json, body: JSON.stringify({ disk_format: 'raw', container_format: 'bare', ...fields }) }), 'create image');
        return (await res.json()) as GlanceImageDocument;
      },
      async upload(imageId, data) {
        // node:http rather than fetch: the body streams from any iterable (a 1 GiB one, in the bench).
        const answer = await new Promise<{ status: number; text: string }>((resolve, reject) => {
          const req = request(`${api}/${imageId}/file`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' } }, (res) => {
            let text = '';
            res.on('data', (d: Buffer) => (text += d.toString()));
            res.on('end', () => {
              resolve({ status: res.statusCode ?? 0, text });
            });
          });
          req.on('error', reject);
          pipeline(data instanceof Uint8Array ? Readable.from([data]) : Readable.from(data), req).catch(reject);
        });
        if (answer.status !== 204) throw new Error(`upload ${imageId}: Glance answered ${answer.status} ${answer.text}`);
      },
      async createActiveImage(data, fields = {}) {
        const created = await glance.createImage(fields);
        await glance.upload(created.id, data);
        return glance.image(created.id);
      },
      async image(imageId) {
        return (await (await check(await fetch(`${api}/${imageId}`), `get ${imageId}`)).json()) as GlanceImageDocument;
      },
      async deactivate(imageId) {
        await check(await fetch(`${api}/${imageId}/actions/deactivate`, { method: 'POST' }), `deactivate ${imageId}`);
      },
      async deleteImage(imageId) {
        await check(await fetch(`${api}/${imageId}`, { method: 'DELETE' }), `delete ${imageId}`);
      },
      close() {
        closing ??= (async () => {
          process.off('exit', onExit);
          if (server.exitCode === null && server.signalCode === null) {
            const gone = new Promise<void>((resolve) => server.once('exit', () => { resolve(); }));
            killGroup(server, 'SIGTERM');
            const timer = setTimeout(() => { killGroup(server, 'SIGKILL'); }, 5000);
            await gone;
            clearTimeout(timer);
          }
          await rm(dir, { recursive: true, force: true });
        })();
        return closing;
      },
      [Symbol.asyncDispose]: () => glance.close(),
    };
    return glance;
  } catch (error) {
    onExit();
    process.off('exit', onExit);
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}
