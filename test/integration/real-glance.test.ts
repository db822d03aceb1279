// The SDK against the real OpenStack Glance API server (Debian's glance-api, started by
// test/helpers/real-glance.ts), through the public API only, over both transports: images made
// through Glance's own API are cached, verified against Glance's own hashes, turned into overlays
// QEMU accepts; the typed errors are those Glance's real answers map to; a cut download resumes
// with a Range Glance honours; the CLI fetches from it.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { GlanceImageSource, LibvirtFileImageManager } from '../../src/index.js';
import { runCli } from '../../src/cli/index.js';
import type { GlanceImageSourceOptions } from '../../src/index.js';
import type { GlanceImageDocument } from '../helpers/real-glance.js';
import { startRealGlanceOrSkip } from '../helpers/real-glance.js';
import { findQemuImg, qemuImgCheck, runQemuImg } from '../helpers/qemu.js';
import { makeTempDir, seededBytes } from '../helpers/tmp.js';

const { glance, skip } = await startRealGlanceOrSkip();
const UNKNOWN = '00000000-0000-4000-8000-000000000000';
const RAW = seededBytes(3 * 1024 * 1024 + 17, 41);
const TRANSPORTS = ['auto', 'node-http'] as const;

function code(error: unknown): unknown {
  return (error as { code?: unknown }).code;
}

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** What one connection through {@link startCuttingProxy} carried. */
interface ProxiedConnection {
  /** The request head the client sent. */
  request: string;
  /** The response head Glance sent. */
  response: string;
  /** Response body bytes forwarded to the client. */
  bodyBytes: number;
}

/**
 * A loopback TCP proxy in front of Glance that resets the first connection after its response
 * head and `cutAfter` body bytes, and lets every later connection through; it records what each
 * carried, so a test sees the Range the client resumed with and what Glance sent for it.
 */
async function startCuttingProxy(target: URL, cutAfter: number): Promise<{ url: string; connections: ProxiedConnection[]; close(): Promise<void> }> {
  const connections: ProxiedConnection[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const record: ProxiedConnection = { request: '', response: '', bodyBytes: 0 };
    const cut = connections.length === 0;
    connections.push(record);
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.on('data', (d: Buffer) => {
      if (!record.request.includes('\r\n\r\n')) record.request += d.toString('latin1');
      upstream.write(d);
    });
    client.on('end', () => upstream.end());
    let head = Buffer.alloc(0);
    let inBody = false;
    upstream.on('data', (d: Buffer) => {
      let body = d;
      if (!inBody) {
        head = Buffer.concat([head, d]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        inBody = true;
        record.response = head.subarray(0, end).toString('latin1');
        client.write(head.subarray(0, end + 4));
        body = head.subarray(end + 4);
      }
      if (cut && record.bodyBytes + body.length >= cutAfter) {
        const last = body.subarray(0, cutAfter - record.bodyBytes);
        record.bodyBytes += last.length;
        upstream.destroy();
        client.write(last, () => client.resetAndDestroy());
        return;
      }
      record.bodyBytes += body.length;
      client.write(body);
    });
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => { resolve(); });
      }),
  };
}

function headerOf(head: string, name: string): string | undefined {
  const line = head.split('\r\n').find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`));
  return line?.slice(name.length + 1).trim();
}

describe(`the SDK against the real Glance ${glance?.version ?? ''}`, { skip }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let raw: GlanceImageDocument;
  let qcow2: GlanceImageDocument | undefined;
  let qcow2Bytes: Buffer | undefined;
  let queued: GlanceImageDocument;
  let deactivated: GlanceImageDocument;
  let deleted: GlanceImageDocument;

  before(async () => {
    assert.ok(glance !== undefined);
    ({ dir, cleanup } = await makeTempDir('vic-real-glance-'));
    raw = await glance.createActiveImage(RAW, { name: 'raw' });
    if (findQemuImg() !== null) {
      // A qcow2 with real data clusters and holes, made by QEMU, not by us.
      const source = path.join(dir, 'qcow2-source.raw');
      const file = path.join(dir, 'image.qcow2');
      await writeFile(source, Buffer.concat([seededBytes(1024 * 1024 + 5, 42), Buffer.alloc(3 * 1024 * 1024)]));
      await runQemuImg(['convert', '-f', 'raw', '-O', 'qcow2', source, file]);
      qcow2Bytes = await readFile(file);
      qcow2 = await glance.createActiveImage(qcow2Bytes, { name: 'qcow2', disk_format: 'qcow2' });
    }
    queued = await glance.createImage({ name: 'queued' });
    deactivated = await glance.createActiveImage(seededBytes(4096, 43), { name: 'deactivated' });
    await glance.deactivate(deactivated.id);
    deleted = await glance.createActiveImage(seededBytes(4096, 44), { name: 'deleted' });
    await glance.deleteImage(deleted.id);
  });
  after(async () => {
    await glance?.close();
    await cleanup();
  });

  it('Glance published the hashes the SDK verifies against', () => {
    assert.equal(raw.status, 'active');
    assert.equal(raw.size, RAW.length);
    assert.equal(raw.checksum, createHash('md5').update(RAW).digest('hex'));
    assert.equal(raw.os_hash_algo, 'sha512');
    assert.equal(raw.os_hash_value, createHash('sha512').update(RAW).digest('hex'));
  });

  for (const transport of TRANSPORTS) {
    describe(`transport ${transport}`, () => {
      const source = (options: Partial<GlanceImageSourceOptions> = {}): GlanceImageSource =>
        new GlanceImageSource({ endpoint: glance?.url ?? '', transport, backoffBaseMs: 1, backoffMaxMs: 10, ...options });
      const manager = (name: string): LibvirtFileImageManager =>
        new LibvirtFileImageManager({ host: `host-${transport}`, instancesPath: path.join(dir, `${transport}-${name}`), source: source() });

      it('describe reads the size and hashes Glance published', async () => {
        const info = await source().describe(raw.id);
        assert.equal(info.status, 'active');
        assert.equal(info.size, raw.size);
        assert.equal(info.checksum, raw.checksum);
        assert.equal(info.hashAlgo, raw.os_hash_algo);
        assert.equal(info.hashValue, raw.os_hash_value);
        assert.equal(info.diskFormat, 'raw');
      });

      it('caches a raw image verified against os_hash_value, and a qcow2 overlay on it passes qemu-img check', async () => {
        const images = manager('raw');
        const result = await images.cacheImage(raw.id);
        assert.equal(result.status, 'cached');
        assert.equal(result.bytes, RAW.length);
        assert.equal(result.algorithm, raw.os_hash_algo);
        assert.equal(result.digest, raw.os_hash_value);
        assert.deepEqual(await readFile(images.cachePathFor(raw.id)), RAW);
        if (findQemuImg() === null) return;
        const disk = await images.createInstanceDisk({ imageId: raw.id, instanceDir: path.join(images.instancesPath, 'instance-raw'), sizeBytes: 8 * 1024 * 1024 });
        await qemuImgCheck(disk.path);
        const { stdout } = await runQemuImg(['info', '--output=json', '--backing-chain', disk.path]);
        const chain = JSON.parse(stdout) as { filename: string; format: string; 'virtual-size': number; 'backing-filename'?: string }[];
        assert.deepEqual(
          chain.map((layer) => [layer.filename, layer.format]),
          [
            [disk.path, 'qcow2'],
            [images.cachePathFor(raw.id), 'raw'],
          ],
        );
        assert.equal(chain[0]?.['virtual-size'], 8 * 1024 * 1024);
      });

      it('caches a qcow2 image made by qemu-img, verified, and an overlay on it passes qemu-img check', { skip: findQemuImg() === null ? 'qemu-img not installed' : false }, async () => {
        assert.ok(qcow2 !== undefined && qcow2Bytes !== undefined);
        const images = manager('qcow2');
        const result = await images.cacheImage(qcow2.id);
        assert.equal(result.digest, qcow2.os_hash_value);
        assert.equal(createHash('md5').update(qcow2Bytes).digest('hex'), qcow2.checksum);
        assert.deepEqual(await readFile(images.cachePathFor(qcow2.id)), qcow2Bytes);
        const disk = await images.createInstanceDisk({ imageId: qcow2.id, instanceDir: path.join(images.instancesPath, 'instance-qcow2') });
        await qemuImgCheck(disk.path);
        const { stdout } = await runQemuImg(['info', '--output=json', '--backing-chain', disk.path]);
        const chain = JSON.parse(stdout) as { filename: string; format: string; 'virtual-size': number }[];
        assert.deepEqual(
          chain.map((layer) => [layer.filename, layer.format]),
          [
            [disk.path, 'qcow2'],
            [images.cachePathFor(qcow2.id), 'qcow2'],
          ],
        );
        // Nova's rule: root size 0 means the image's virtual size, which Glance read from the header.
        assert.equal(chain[0]?.['virtual-size'], chain[1]?.['virtual-size']);
        assert.equal(qcow2.virtual_size, chain[1]?.['virtual-size'], "Glance's virtual_size is QEMU's");
      });

      it('an unknown id and a deleted image are ERR_IMAGE_NOT_FOUND (describe, download, cache)', async () => {
        for (const id of [UNKNOWN, deleted.id]) {
          await assert.rejects(source().describe(id), (err) => code(err) === 'ERR_IMAGE_NOT_FOUND');
          await assert.rejects(source().open(id), (err) => code(err) === 'ERR_IMAGE_NOT_FOUND');
          await assert.rejects(manager('missing').cacheImage(id), (err) => code(err) === 'ERR_IMAGE_NOT_FOUND');
        }
      });

      it('a queued image is ERR_IMAGE_NOT_ACTIVE: its metadata says queued, its data is 204', async () => {
        await assert.rejects(source().describe(queued.id), (err) => code(err) === 'ERR_IMAGE_NOT_ACTIVE');
        await assert.rejects(source().open(queued.id), (err) => code(err) === 'ERR_IMAGE_NOT_ACTIVE');
        await assert.rejects(manager('queued').cacheImage(queued.id), (err) => code(err) === 'ERR_IMAGE_NOT_ACTIVE');
      });

      it('a deactivated image is ERR_IMAGE_NOT_ACTIVE; its data is 403 to a user (ERR_NOT_AUTHORIZED) and served to an admin', async () => {
        await assert.rejects(manager('deactivated').cacheImage(deactivated.id), (err) => code(err) === 'ERR_IMAGE_NOT_ACTIVE');
        await assert.rejects(source().describe(deactivated.id), (err) => code(err) === 'ERR_IMAGE_NOT_ACTIVE');
        const user = source({ endpoint: glance?.anonymousUrl ?? '' });
        await assert.rejects(user.describe(deactivated.id), (err) => code(err) === 'ERR_IMAGE_NOT_ACTIVE');
        await assert.rejects(user.open(deactivated.id), (err) => code(err) === 'ERR_NOT_AUTHORIZED');
        // Glance lets an admin (here: its unauthenticated pipeline) read a deactivated image's data.
        assert.deepEqual(await readAll(await source().open(deactivated.id)), seededBytes(4096, 43));
      });

      it('a download reset mid-body resumes with a Range that Glance honours (206 from the cut)', async () => {
        const cutAfter = 1024 * 1024 + 3;
        const proxy = await startCuttingProxy(new URL(glance?.url ?? ''), cutAfter);
        try {
          const body = await readAll(await source({ endpoint: proxy.url }).open(raw.id));
          assert.equal(createHash('sha512').update(body).digest('hex'), raw.os_hash_value);
          assert.equal(proxy.connections.length, 2, 'one cut, one resume');
          const [first, second] = proxy.connections;
          assert.ok(first !== undefined && second !== undefined);
          assert.equal(headerOf(first.request, 'range'), undefined);
          assert.equal(first.bodyBytes, cutAfter);
          // The client resumes from what it received (at most what the proxy sent before the reset).
          const resumedAt = Number(/^bytes=(\d+)-$/.exec(headerOf(second.request, 'range') ?? '')?.[1]);
          assert.ok(resumedAt > 0 && resumedAt <= cutAfter, `resumed at ${resumedAt}`);
          assert.match(second.response, /^HTTP\/1\.1 206 /);
          assert.equal(headerOf(second.response, 'content-range'), `bytes ${resumedAt}-${RAW.length - 1}/${RAW.length}`);
          assert.equal(second.bodyBytes, RAW.length - resumedAt, 'Glance sent only the rest');
        } finally {
          await proxy.close();
        }
      });

      it('opening at the very end of the image reads nothing (Glance answers 416 without Content-Range)', async () => {
        const reader = await source().openReader(raw.id, { offset: RAW.length });
        assert.equal(await reader.read(Buffer.alloc(16)), 0);
      });
    });
  }

  it('the CLI fetch caches and verifies an image from the real Glance, then finds it cached', async () => {
    const instancesPath = path.join(dir, 'cli');
    const cli = async (args: readonly string[]): Promise<{ exit: number; stdout: string; stderr: string }> => {
      let stdout = '';
      let stderr = '';
      const sink = (append: (text: string) => void): Writable =>
        new Writable({
          write(chunk: Buffer, _encoding, done) {
            append(chunk.toString());
            done();
          },
        });
      const exit = await runCli(args, {
        stdout: sink((text) => (stdout += text)),
        stderr: sink((text) => (stderr += text)),
        signal: new AbortController().signal,
        env: {},
      });
      return { exit, stdout, stderr };
    };
    const first = await cli(['fetch', raw.id, '--instances-path', instancesPath, '--glance', glance?.url ?? '', '--json']);
    assert.equal(first.exit, 0, first.stderr);
    const result = JSON.parse(first.stdout) as { status: string; digest: string; bytes: number };
    assert.equal(result.status, 'cached');
    assert.equal(result.bytes, RAW.length);
    assert.equal(result.digest, raw.os_hash_value);
    const second = await cli(['fetch', raw.id, '--instances-path', instancesPath, '--glance', glance?.url ?? '', '--json']);
    assert.equal(second.exit, 0, second.stderr);
    assert.equal((JSON.parse(second.stdout) as { status: string }).status, 'existing');
    const missing = await cli(['fetch', UNKNOWN, '--instances-path', instancesPath, '--glance', glance?.url ?? '', '--json']);
    assert.equal(missing.exit, 1);
    assert.match(missing.stdout + missing.stderr, /ERR_IMAGE_NOT_FOUND/);
  });
});
