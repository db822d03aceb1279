// Class 7 of issue 13: every field the host agent accepts has a range, checked before anything
// changes; a refused request answers 400 ERR_INVALID_REQUEST and leaves pins, cache and image
// service untouched. On main, `pinTtlSeconds: 1e306` answered 500 ERR_CACHE_FAILED after writing
// `null` over an existing 48 h pin, `bytesPerSecond: 0.001` was accepted (and ignored: the sleep
// overflowed), and a token with a space was accepted by the agent but refused for the client.
//   - each field's bounds over the wire, just inside (accepted) and just outside (refused), with
//     the pin file's bytes, the cache's files and mtimes and Glance's request log compared;
//   - the pin stores refuse a non-finite or out-of-range expiry themselves, writing nothing;
//   - the agent and HttpHostClient accept exactly the same tokens (visible ASCII, 1 to 4096), and
//     every accepted token round-trips.
import assert from 'node:assert/strict';
import { readFile, readdir, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LibvirtFileImageManager, PIN_FILE } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { isImageCacheError } from '../../src/errors.js';
import { LockManager } from '../../src/fetch/lock-manager.js';
import { FilePinStore, MemoryPinStore } from '../../src/pins.js';
import { createHostAgent } from '../../src/precache/host-agent.js';
import { HttpHostClient } from '../../src/precache/http-host-client.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import { systemClock } from '../../src/clock.js';
import { startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';
import { makeMemoryTempDir, seededBytes } from '../helpers/tmp.js';

const TOKEN = 'agent-token-0123456789';
const IMAGE = 'pinned-image';
const OTHER = 'other-image';
const HOUR = 3600;
/** The longest pin the agent accepts: 10 years (SECURITY.md). */
const MAX_PIN_TTL_SECONDS = 10 * 365 * 86400;

function figures(t: { diagnostic: (message: string) => void }, what: string, values: Record<string, unknown>): void {
  const line = JSON.stringify(values);
  t.diagnostic(`${what}: ${line}`);
  console.log(`[reliability] agent-inputs ${what} ${line}`);
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

/** POSTs a raw body text (so values JSON.stringify cannot write, like 1e999, can be sent). */
async function postRaw(url: string, body: string, token = TOKEN): Promise<{ status: number; code: string | undefined }> {
  const response = await fetch(`${url}/v1/cache-images`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body,
  });
  const json = (await response.json()) as { error?: { code?: string } };
  return { status: response.status, code: json.error?.code };
}

describe('class 7: the host agent checks every field before anything changes', () => {
  let glance: FakeGlance;
  let dir: string;
  let cleanup: () => Promise<void>;
  let manager: LibvirtFileImageManager;
  let server: Server;
  let url: string;

  before(async () => {
    glance = await startFakeGlance({
      images: [
        { id: IMAGE, content: seededBytes(64 * 1024, 1) },
        { id: OTHER, content: seededBytes(48 * 1024, 2) },
      ],
    });
    ({ dir, cleanup } = await makeMemoryTempDir('vic-agent-inputs-'));
    manager = new LibvirtFileImageManager({ host: 'compute1', instancesPath: dir, source: new GlanceImageSource({ endpoint: glance.url, backoffBaseMs: 1 }) });
    server = createServer(createHostAgent(manager, { token: TOKEN }));
    url = await listen(server);
  });
  after(async () => {
    await close(server);
    await glance.close();
    await cleanup();
  });

  /** Everything a request could change: the pin file's bytes, every file's size and mtime, Glance's log. */
  async function state(): Promise<string> {
    const files: string[] = [];
    for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
      if (!entry.isFile()) continue;
      const file = path.join(entry.parentPath, entry.name);
      const info = await stat(file);
      files.push(`${path.relative(dir, file)} ${info.size} ${info.mtimeMs}`);
    }
    const pins = await readFile(path.join(dir, PIN_FILE), 'utf8').catch(() => '(none)');
    return JSON.stringify({ files: files.sort(), pins, glance: glance.totalRequests });
  }

  it('out-of-range fields answer 400 ERR_INVALID_REQUEST and change nothing; in-range edges are served', async (t) => {
    // The setting: a 48 h pin on a cached image.
    const pinned = await postRaw(url, JSON.stringify({ cache: [{ id: IMAGE }], pinTtlSeconds: 48 * HOUR }));
    assert.equal(pinned.status, 200);
    const pinBefore = (await manager.listPins()).get(IMAGE);
    assert.ok(pinBefore !== undefined);

    const cache = `"cache": [{"id": "${IMAGE}"}, {"id": "${OTHER}"}]`;
    const refused: [string, string][] = [
      ['pinTtlSeconds 1e306', `{${cache}, "pinTtlSeconds": 1e306}`],
      ['pinTtlSeconds 1e999 (Infinity)', `{${cache}, "pinTtlSeconds": 1e999}`],
      ['pinTtlSeconds 10 years + 1 s', `{${cache}, "pinTtlSeconds": ${MAX_PIN_TTL_SECONDS + 1}}`],
      ['pinTtlSeconds 0', `{${cache}, "pinTtlSeconds": 0}`],
      ['pinTtlSeconds -1', `{${cache}, "pinTtlSeconds": -1}`],
      ['pinTtlSeconds "3600"', `{${cache}, "pinTtlSeconds": "3600"}`],
      ['pinTtlSeconds null', `{${cache}, "pinTtlSeconds": null}`],
      ['pinTtlSeconds true', `{${cache}, "pinTtlSeconds": true}`],
      ['bytesPerSecond 0.001', `{${cache}, "bytesPerSecond": 0.001}`],
      ['bytesPerSecond 0.999', `{${cache}, "bytesPerSecond": 0.999}`],
      ['bytesPerSecond 0', `{${cache}, "bytesPerSecond": 0}`],
      ['bytesPerSecond -5', `{${cache}, "bytesPerSecond": -5}`],
      ['bytesPerSecond "fast"', `{${cache}, "bytesPerSecond": "fast"}`],
      ['bytesPerSecond null', `{${cache}, "bytesPerSecond": null}`],
      ['bytesPerSecond [1]', `{${cache}, "bytesPerSecond": [1]}`],
      ['a good pin with a bad speed', `{${cache}, "pinTtlSeconds": 3600, "bytesPerSecond": 0.5}`],
      ['cache empty', `{"cache": []}`],
      ['cache missing', `{"pinTtlSeconds": 60}`],
      ['cache an object', `{"cache": {"id": "${IMAGE}"}}`],
      ['an item with an extra key', `{"cache": [{"id": "${IMAGE}", "x": 1}]}`],
      ['an id that is a number', `{"cache": [{"id": 42}]}`],
      ['an id with a slash', `{"cache": [{"id": "../etc"}]}`],
      ['an id of 4 KiB', `{"cache": [{"id": "${'a'.repeat(4096)}"}]}`],
      ['an id twice', `{"cache": [{"id": "${IMAGE}"}, {"id": "${IMAGE}"}]}`],
      ['an unknown field', `{${cache}, "ttl": 5}`],
      ['not an object', `[{"id": "${IMAGE}"}]`],
    ];
    let held = 0;
    for (const [what, body] of refused) {
      const before = await state();
      const answer = await postRaw(url, body);
      assert.equal(answer.status, 400, `${what}: HTTP ${answer.status} ${answer.code ?? ''}`);
      assert.match(answer.code ?? '', /^ERR_INVALID_(REQUEST|IMAGE_ID)$/, what);
      assert.equal(await state(), before, `${what} changed the pins, the cache or asked Glance`);
      held += 1;
    }
    assert.equal((await manager.listPins()).get(IMAGE), pinBefore, 'the 48 h pin is intact');

    // Just inside every range: served.
    const accepted: [string, string][] = [
      ['pinTtlSeconds 10 years', `{"cache": [{"id": "${IMAGE}"}], "pinTtlSeconds": ${MAX_PIN_TTL_SECONDS}}`],
      ['pinTtlSeconds 0.5', `{"cache": [{"id": "${IMAGE}"}], "pinTtlSeconds": 0.5}`],
      ['bytesPerSecond 1 (nothing to download)', `{"cache": [{"id": "${IMAGE}"}], "bytesPerSecond": 1}`],
      ['bytesPerSecond 1e300', `{"cache": [{"id": "${OTHER}"}], "bytesPerSecond": 1e300}`],
    ];
    for (const [what, body] of accepted) {
      const answer = await postRaw(url, body);
      assert.equal(answer.status, 200, `${what}: HTTP ${answer.status} ${answer.code ?? ''}`);
    }
    const pinAfter = (await manager.listPins()).get(IMAGE);
    assert.ok(pinAfter !== undefined && pinAfter >= Date.now() + (MAX_PIN_TTL_SECONDS - 60) * 1000, 'the 10-year pin extended it');
    const text = await readFile(path.join(dir, PIN_FILE), 'utf8');
    assert.doesNotMatch(text, /null/);
    figures(t, 'fields', { refused: refused.length, unchanged: held, accepted: accepted.length });
  });

  it('the pin stores refuse a non-finite or out-of-range expiry themselves, and write nothing', async () => {
    const pinFile = path.join(dir, 'store-pins.json');
    const store = new FilePinStore(pinFile, new LockManager({ lockDir: path.join(dir, 'store-locks') }), systemClock);
    const memory = new MemoryPinStore();
    const until = Date.now() + 48 * HOUR * 1000;
    await store.pin(IMAGE, until);
    await memory.pin(IMAGE, until);
    const before = await readFile(pinFile, 'utf8');
    for (const bad of [Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.NaN, 1e306 * 1000, 8.64e15 + 1]) {
      await assert.rejects(store.pin(IMAGE, bad), { code: 'ERR_INVALID_CONFIG' }, `FilePinStore.pin(${bad})`);
      await assert.rejects(memory.pin(IMAGE, bad), { code: 'ERR_INVALID_CONFIG' }, `MemoryPinStore.pin(${bad})`);
    }
    assert.equal(await readFile(pinFile, 'utf8'), before);
    assert.equal((await store.active(Date.now())).get(IMAGE), until);
    assert.equal((await memory.active(Date.now())).get(IMAGE), until);
    // And the manager's own entry point checks the time to live first.
    const existing = (await manager.listPins()).get(IMAGE);
    for (const ttl of [1e306, Number.POSITIVE_INFINITY, MAX_PIN_TTL_SECONDS + 1, 0, -1, Number.NaN]) {
      await assert.rejects(manager.pinImage(IMAGE, ttl), { code: 'ERR_INVALID_CONFIG' }, `pinImage(${ttl})`);
    }
    assert.equal((await manager.listPins()).get(IMAGE), existing);
  });

  it('the agent and HttpHostClient accept exactly the same tokens, and every accepted one works', async (t) => {
    const candidates: unknown[] = [
      'plain-token',
      '!',
      '~',
      '!"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~',
      'x'.repeat(4096),
      'x'.repeat(4097),
      'with space',
      ' leading',
      'trailing ',
      'tab\there',
      'line\nfeed',
      'carriage\rreturn',
      'nul\0byte',
      'del\x7f',
      'caf\u00e9',
      '\u010d\u010atoken',
      'emoji\u{1f600}',
      '',
      42,
      null,
      undefined,
    ];
    const tally = { candidates: candidates.length, accepted: 0, refused: 0, roundTrips: 0 };
    for (const token of candidates) {
      const shown = token === undefined ? 'undefined' : JSON.stringify(token).slice(0, 40);
      let agentAccepts = true;
      let handler: ReturnType<typeof createHostAgent> | undefined;
      try {
        handler = createHostAgent(manager, { token: token as string });
      } catch (error) {
        assert.ok(isImageCacheError(error) && error.code === 'ERR_INVALID_CONFIG', `agent ${shown}: ${String(error)}`);
        agentAccepts = false;
      }
      let clientAccepts = true;
      let client: HttpHostClient | undefined;
      try {
        client = new HttpHostClient({ endpoints: { compute1: 'http://127.0.0.1:1' }, token: token as string });
      } catch (error) {
        assert.ok(isImageCacheError(error) && error.code === 'ERR_INVALID_CONFIG', `client ${shown}: ${String(error)}`);
        clientAccepts = false;
      }
      assert.equal(clientAccepts, agentAccepts, `token ${shown}: agent ${agentAccepts ? 'accepts' : 'refuses'}, client ${clientAccepts ? 'accepts' : 'refuses'}`);
      if (!agentAccepts || handler === undefined || client === undefined) {
        tally.refused += 1;
        // A token function returning it is refused before any request is sent.
        const agent = createServer(createHostAgent(manager, { token: TOKEN }));
        let requests = 0;
        agent.on('request', () => (requests += 1));
        const agentUrl = await listen(agent);
        try {
          const viaFunction = new HttpHostClient({ endpoints: { compute1: agentUrl }, token: () => token as string });
          await assert.rejects(viaFunction.cacheImages({ name: 'compute1' }, [IMAGE], { signal: new AbortController().signal }), { code: 'ERR_INVALID_CONFIG' }, shown);
          assert.equal(requests, 0, `token ${shown} was sent`);
        } finally {
          await close(agent);
        }
        continue;
      }
      tally.accepted += 1;
      const agent = createServer(handler);
      const agentUrl = await listen(agent);
      try {
        const working = new HttpHostClient({ endpoints: { compute1: agentUrl }, token: token as string });
        const report = await working.cacheImages({ name: 'compute1' }, [IMAGE], { signal: new AbortController().signal });
        assert.equal(report.images[0]?.status, 'existing', `token ${shown}`);
        tally.roundTrips += 1;
      } finally {
        await close(agent);
      }
    }
    figures(t, 'tokens', tally);
    assert.equal(tally.roundTrips, tally.accepted);
    assert.equal(tally.accepted, 5);
  });
});
