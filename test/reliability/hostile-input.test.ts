// Hostile input, property-based (fast-check): what a driver, an image service or a guest could
// hand the library.
//   - image ids with '/', '..', NUL, control characters, unicode tricks and 4 KiB strings: a typed
//     InvalidImageIdError before any I/O (no file, no lock, no request), through every entry point;
//   - malformed qcow2 headers (random bytes, huge backing-name lengths, offsets past the end,
//     truncation): a header that keeps every bound, or a typed InvalidDiskImageError; never another
//     exception (a DataView read outside the bytes throws RangeError), never a hang; and the same
//     verdict from a file as from the buffer;
//   - hostile image metadata (negative, fractional or huge sizes, a size over maxImageSizeBytes,
//     unknown hash algorithms, garbage digests): typed errors, never a corrupt entry;
//   - symlinks planted in the base dir (and instance dirs) pointing outside: never followed when
//     deleting; the targets survive passes with every age at 0.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { parseQcow2Header } from '../../src/disk/qcow2-format.js';
import type { Qcow2Header } from '../../src/disk/qcow2-format.js';
import { inspectDiskImage } from '../../src/disk/qcow2-header.js';
import { encodeQcow2Overlay } from '../../src/disk/qcow2-overlay.js';
import { isImageCacheError } from '../../src/errors.js';
import type { RemovalOutcome } from '../../src/manager.js';
import { GlanceImageSource } from '../../src/source/glance-image-source.js';
import { startFakeGlance } from '../../src/testing/fake-glance.js';
import type { FakeGlance } from '../../src/testing/fake-glance.js';
import { ManualClock } from '../../src/testing/manual-clock.js';
import { assertSane, isInvalidDiskImage, materialize } from '../helpers/qcow2.js';
import { listDir, makeMemoryTempDir, seededBytes } from '../helpers/tmp.js';
import { withSeed } from './seed.js';

const DAY = 86400;
const codeOf = (err: unknown): string | undefined => (isImageCacheError(err) ? err.code : undefined);

function figures(t: { diagnostic: (message: string) => void }, what: string, values: Record<string, unknown>): void {
  const line = JSON.stringify(values);
  t.diagnostic(`${what}: ${line}`);
  console.log(`[reliability] hostile-input ${what} ${line}`);
}

/** Every path under `dir`, for "nothing was created" checks. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    out.push(path.join(entry.parentPath, entry.name));
  }
  return out.sort();
}

describe('hostile input', () => {
  let glance: FakeGlance;
  let dir: string;
  let cleanup: () => Promise<void>;
  let next = 0;

  before(async () => {
    glance = await startFakeGlance();
    ({ dir, cleanup } = await makeMemoryTempDir('vic-hostile-'));
  });
  after(async () => {
    await glance.close();
    await cleanup();
  });

  const managerIn = (instancesPath: string, extra: Partial<ConstructorParameters<typeof LibvirtFileImageManager>[0]> = {}): LibvirtFileImageManager =>
    new LibvirtFileImageManager({
      host: 'hostile',
      instancesPath,
      source: new GlanceImageSource({ endpoint: glance.url, retries: 1, backoffBaseMs: 1 }),
      lockStaleMs: 2000,
      ...extra,
    });

  describe('image ids', () => {
    /** Ids that must be refused: each carries one thing an id must never contain or be. */
    const hostileId: fc.Arbitrary<string> = fc.oneof(
      fc
        .tuple(fc.string({ maxLength: 12 }), fc.constantFrom('/', '\\', '..', '\0', '\n', '\r', '\t', '\x1b', '\x7f'), fc.string({ maxLength: 12 }))
        .map(([a, bad, b]) => `${a}${bad}${b}`),
      fc.constantFrom('../../etc/passwd', '/etc/shadow', 'a/../../b', '..', '\\\\server\\share', 'nul\0byte', '', ' ', 'x'.repeat(4096), 'é'.repeat(2048)),
      // Longer than 255 bytes: 4 KiB strings of any characters.
      fc.integer({ min: 256, max: 4096 }).chain((n) => fc.string({ unit: 'grapheme-ascii', minLength: n, maxLength: n })),
      // Not well-formed: a lone surrogate.
      fc.tuple(fc.string({ maxLength: 12 }), fc.integer({ min: 0xd800, max: 0xdfff })).map(([a, unit]) => `${a}${String.fromCharCode(unit)}`),
      // Padded with white space.
      fc.tuple(fc.string({ minLength: 1, maxLength: 12 }), fc.constantFrom(' ', '\u00a0', '\u2003')).map(([a, space]) => `${space}${a}`),
    );

    it('hostile ids are InvalidImageIdError before any file, lock or request, through every entry point', async (t) => {
      await withSeed(t, async (seed) => {
        const instancesPath = await mkdtemp(path.join(dir, 'ids-'));
        const manager = managerIn(instancesPath);
        const source = new GlanceImageSource({ endpoint: glance.url });
        const before = await tree(instancesPath);
        const requestsBefore = glance.totalRequests;
        let inputs = 0;
        await fc.assert(
          fc.asyncProperty(hostileId, async (id) => {
            inputs++;
            const refused = (err: unknown): boolean => codeOf(err) === 'ERR_INVALID_IMAGE_ID';
            assert.throws(() => manager.cachePathFor(id), refused);
            await assert.rejects(manager.cacheImage(id), refused);
            await assert.rejects(manager.createInstanceDisk({ imageId: id, instanceDir: path.join(instancesPath, 'i') }), refused);
            await assert.rejects(source.describe(id), refused);
            await assert.rejects(source.open(id), refused);
          }),
          { seed, numRuns: 400 },
        );
        assert.deepEqual(await tree(instancesPath), before, 'a hostile id created something');
        assert.equal(glance.totalRequests, requestsBefore, 'a hostile id reached the image service');
        figures(t, 'image ids', { hostileIdsTried: inputs, callsPerId: 5, filesCreated: 0, requestsSent: 0 });
      });
    });

    it('any string is either refused before I/O or confined to a 40-hex name in the cache', async (t) => {
      await withSeed(t, async (seed) => {
        const instancesPath = await mkdtemp(path.join(dir, 'anyid-'));
        const manager = managerIn(instancesPath);
        let refused = 0;
        let accepted = 0;
        await fc.assert(
          fc.asyncProperty(fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 40 })), async (id) => {
            const requestsBefore = glance.totalRequests;
            try {
              await manager.cacheImage(id);
              assert.fail(`the fake serves no image ${JSON.stringify(id)}`);
            } catch (err) {
              const code = codeOf(err);
              if (code === 'ERR_INVALID_IMAGE_ID') {
                refused++;
                assert.equal(glance.totalRequests, requestsBefore);
                return;
              }
              assert.equal(code, 'ERR_IMAGE_NOT_FOUND', String(err));
              accepted++;
              // The id reached Glance intact, URL-encoded, and was named by its SHA-1 only.
              assert.equal(glance.log.at(-1)?.imageId, id);
              assert.match(path.basename(manager.cachePathFor(id)), /^[0-9a-f]{40}$/);
            }
          }),
          { seed, numRuns: 300 },
        );
        for (const file of await tree(instancesPath)) {
          assert.ok(file.startsWith(`${instancesPath}${path.sep}`), file);
          assert.match(path.relative(instancesPath, file), /^(locks|_base)?$/);
        }
        figures(t, 'arbitrary strings as ids', { tried: refused + accepted, refused, accepted });
      });
    });
  });

  describe('qcow2 headers', () => {
    interface Mutation {
      readonly kind: 'u32' | 'u64' | 'bytes' | 'truncate' | 'append';
      readonly offset: number;
      readonly value: bigint;
      readonly bytes: Uint8Array;
    }
    const U32_FIELDS = [4, 16, 20, 32, 36, 56, 60, 96, 100, 104, 112, 116, 120, 124];
    const U64_FIELDS = [8, 24, 40, 48, 64, 72, 80, 88];
    const mutation: fc.Arbitrary<Mutation> = fc.record({
      kind: fc.constantFrom('u32', 'u32', 'u64', 'u64', 'bytes', 'truncate', 'append'),
      offset: fc.nat({ max: 70_000 }),
      value: fc.oneof(
        fc.constantFrom(0n, 1n, 9n, 16n, 21n, 22n, 104n, 1023n, 1024n, 4096n, 65536n, 0x7fffffffn, 0xffffffffn, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      ),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 32 }),
    });
    const header: fc.Arbitrary<Buffer> = fc
      .record({
        backingFile: fc.stringMatching(/^\/[a-z0-9_/.-]{1,200}$/),
        backingFormat: fc.constantFrom('raw', 'qcow2'),
        sectors: fc.integer({ min: 0, max: 2 ** 21 }),
        clusterBits: fc.integer({ min: 9, max: 16 }),
      })
      .map((o) => materialize(encodeQcow2Overlay({ backingFile: o.backingFile, backingFormat: o.backingFormat, virtualSize: o.sectors * 512, clusterBits: o.clusterBits })));

    function apply(base: Buffer, mutations: readonly Mutation[], keepMagic: boolean): Buffer {
      let bytes = Buffer.from(base);
      for (const m of mutations) {
        if (m.kind === 'u32') {
          const at = U32_FIELDS[m.offset % U32_FIELDS.length] ?? 4;
          if (at + 4 <= bytes.length) bytes.writeUInt32BE(Number(m.value & 0xffffffffn), at);
        } else if (m.kind === 'u64') {
          const at = U64_FIELDS[m.offset % U64_FIELDS.length] ?? 8;
          // Offsets just past the end of the file are the interesting ones.
          const value = m.value % 3n === 0n ? BigInt(bytes.length) + (m.value % 4096n) : m.value;
          if (at + 8 <= bytes.length) bytes.writeBigUInt64BE(value & (2n ** 64n - 1n), at);
        } else if (m.kind === 'bytes') {
          Buffer.from(m.bytes).copy(bytes, m.offset % Math.max(1, bytes.length));
        } else if (m.kind === 'truncate') {
          bytes = bytes.subarray(0, m.offset % (bytes.length + 1));
        } else {
          bytes = Buffer.concat([bytes, Buffer.from(m.bytes)]);
        }
      }
      if (keepMagic && bytes.length >= 4) bytes.writeUInt32BE(0x514649fb, 0);
      return bytes;
    }

    /** The verdict on `bytes`: a header (checked sane), null (raw) or 'invalid'; anything else throws. */
    function verdict(bytes: Uint8Array): Qcow2Header | null | 'invalid' {
      try {
        const parsed = parseQcow2Header(bytes);
        if (parsed !== null) assertSane(parsed, bytes.length);
        return parsed;
      } catch (err) {
        if (isInvalidDiskImage(err)) return 'invalid';
        throw err;
      }
    }

    it('malformed headers give a sane header or InvalidDiskImageError, fast, and a file gets the buffer\'s verdict', async (t) => {
      await withSeed(t, async (seed) => {
        const files = await mkdtemp(path.join(dir, 'qcow2-'));
        const tally = { inputs: 0, parsed: 0, invalid: 0, raw: 0, filesCompared: 0 };
        let slowestMs = 0;
        const input = fc.oneof(
          { weight: 4, arbitrary: fc.tuple(header, fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.boolean()).map(([base, ms, keep]) => apply(base, ms, keep || true)) },
          // Huge backing-name lengths and names past the end of the file.
          {
            weight: 1,
            arbitrary: fc.tuple(header, fc.integer({ min: 0, max: 0xffffffff }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })).map(([base, length, offset]) => {
              const bytes = Buffer.from(base);
              bytes.writeUInt32BE(length, 16);
              if (offset % 2n === 0n) bytes.writeBigUInt64BE(offset, 8);
              return bytes;
            }),
          },
          // Random bytes behind the magic.
          { weight: 1, arbitrary: fc.uint8Array({ minLength: 4, maxLength: 8192 }).map((raw) => apply(Buffer.from(raw), [], true)) },
        );
        await fc.assert(
          fc.asyncProperty(input, async (bytes) => {
            tally.inputs++;
            const started = performance.now();
            const outcome = verdict(bytes);
            slowestMs = Math.max(slowestMs, performance.now() - started);
            if (outcome === 'invalid') tally.invalid++;
            else if (outcome === null) tally.raw++;
            else tally.parsed++;
            // One input in eight also goes through a real file: same verdict, same header.
            if (tally.inputs % 8 === 0) {
              const file = path.join(files, 'case.img');
              await writeFile(file, bytes);
              let fromFile: Qcow2Header | null | 'invalid';
              try {
                fromFile = (await inspectDiskImage(file)).header;
              } catch (err) {
                assert.ok(isInvalidDiskImage(err), String(err));
                fromFile = 'invalid';
              }
              assert.deepEqual(fromFile, outcome);
              tally.filesCompared++;
            }
          }),
          { seed, numRuns: 3000 },
        );
        assert.ok(slowestMs < 250, `a header took ${slowestMs} ms`);
        figures(t, 'qcow2 headers', { ...tally, slowestParseMs: Math.round(slowestMs * 100) / 100 });
      });
    });

    it('a hostile qcow2 served as an image is cached as bytes but never built on, and a hostile disk stops a pass before any removal', async (t) => {
      await withSeed(t, async (seed) => {
        const instancesPath = await mkdtemp(path.join(dir, 'product-'));
        const clock = new ManualClock();
        const manager = managerIn(instancesPath, { clock, removeUnusedOriginalMinimumAgeSeconds: 0 });
        const hostile = fc
          .tuple(header, fc.array(mutation, { minLength: 1, maxLength: 3 }))
          .map(([base, ms]) => apply(base, ms, true))
          .filter((bytes) => verdict(bytes) === 'invalid');
        let images = 0;
        await fc.assert(
          fc.asyncProperty(hostile, async (bytes) => {
            const id = `hostile-qcow2-${next++}`;
            images++;
            glance.addImage({ id, content: bytes, diskFormat: 'qcow2' });
            await manager.cacheImage(id);
            const instanceDir = path.join(instancesPath, `on-${id}`);
            await assert.rejects(manager.createInstanceDisk({ imageId: id, instanceDir }), (err) => codeOf(err) === 'ERR_INVALID_DISK_IMAGE');
            assert.ok(!existsSync(path.join(instanceDir, 'disk')), 'a disk was built on a hostile base');
            // The same bytes as an instance disk: the pass cannot prove anything unused, so it
            // fails, typed, before removing any base.
            await mkdir(instanceDir, { recursive: true });
            await writeFile(path.join(instanceDir, 'disk'), bytes);
            clock.advance(DAY);
            const basesBefore = await listDir(manager.baseDir);
            await assert.rejects(manager.update([]), (err) => codeOf(err) === 'ERR_INVALID_DISK_IMAGE');
            assert.deepEqual(await listDir(manager.baseDir), basesBefore);
            await rm(instanceDir, { recursive: true });
          }),
          { seed, numRuns: 25 },
        );
        figures(t, 'hostile qcow2 through the product', { images, disksBuilt: 0, basesRemovedByFailedPasses: 0 });
      });
    });
  });

  describe('image metadata', () => {
    async function cacheWith(overrides: Record<string, unknown>, extra: { maxImageSizeBytes?: number; requireChecksum?: boolean } = {}): Promise<{ outcome: string; files: number; manager: LibvirtFileImageManager; id: string; data: Buffer }> {
      const id = `meta-${next++}`;
      const data = seededBytes(64 * 1024 + (next % 97), next);
      glance.addImage({ id, content: data, faults: { metadataOverrides: overrides } });
      const instancesPath = path.join(dir, `meta-${next}`);
      const manager = managerIn(instancesPath, extra);
      let outcome: string;
      try {
        const result = await manager.cacheImage(id);
        outcome = `ok:${result.algorithm ?? 'none'}`;
        assert.ok((await readFile(manager.cachePathFor(id))).equals(data), 'a corrupt entry was cached');
      } catch (err) {
        assert.ok(isImageCacheError(err), `untyped: ${String(err)}`);
        outcome = err.code;
        assert.deepEqual(await listDir(manager.baseDir), [], 'a failed download left files');
      }
      return { outcome, files: glance.requests(id).file, manager, id, data };
    }

    it('impossible sizes, sizes over the limit and unusable digests are typed errors; nothing is downloaded for them', async (t) => {
      const cases: [string, Record<string, unknown>, { maxImageSizeBytes?: number; requireChecksum?: boolean }, string][] = [
        ['a negative size', { size: -5 }, {}, 'ERR_INVALID_IMAGE_METADATA'],
        ['a fractional size', { size: 1.5 }, {}, 'ERR_INVALID_IMAGE_METADATA'],
        ['a size as a string', { size: '65536' }, {}, 'ERR_INVALID_IMAGE_METADATA'],
        ['a size past 2^53', { size: 2 ** 60 }, {}, 'ERR_INVALID_IMAGE_METADATA'],
        ['a size over maxImageSizeBytes', {}, { maxImageSizeBytes: 1024 }, 'ERR_IMAGE_TOO_LARGE'],
        ['a size that lies (too small)', { size: 10 }, {}, 'ERR_SIZE_MISMATCH'],
        ['an unknown hash algorithm and no md5', { os_hash_algo: 'sha3-1024', checksum: null }, {}, 'ERR_UNSUPPORTED'],
        ['a digest that is not hex and no md5', { os_hash_value: 'not-hex!', checksum: null }, {}, 'ERR_UNSUPPORTED'],
        ['no digest at all with requireChecksum', { os_hash_algo: null, os_hash_value: null, checksum: null }, { requireChecksum: true }, 'ERR_UNSUPPORTED'],
        ['a digest of the wrong image', { os_hash_value: 'ab'.repeat(64) }, {}, 'ERR_CHECKSUM_MISMATCH'],
        ['a status other than active', { status: 'killed' }, {}, 'ERR_IMAGE_NOT_ACTIVE'],
      ];
      for (const [what, overrides, extra, code] of cases) {
        const { outcome, files } = await cacheWith(overrides, extra);
        assert.equal(outcome, code, what);
        if (code !== 'ERR_SIZE_MISMATCH' && code !== 'ERR_CHECKSUM_MISMATCH') assert.equal(files, 0, `${what}: the file was requested`);
      }
      // An unknown multihash next to a valid md5 is verified with the md5, as glanceclient does.
      assert.equal((await cacheWith({ os_hash_algo: 'sha3-1024', os_hash_value: 'ab' })).outcome, 'ok:md5');
      figures(t, 'metadata table', { cases: cases.length + 1 });
    });

    it('arbitrary metadata values: a typed error or the exact image', async (t) => {
      await withSeed(t, async (seed) => {
        const tally = new Map<string, number>();
        const anyValue = fc.oneof(fc.constant(undefined), fc.constant(null), fc.integer(), fc.double(), fc.string({ maxLength: 20 }), fc.boolean(), fc.constant(2 ** 70), fc.constant('ab'.repeat(64)));
        await fc.assert(
          fc.asyncProperty(
            fc.record({ size: anyValue, os_hash_algo: fc.oneof(anyValue, fc.constantFrom('sha256', 'sha512', 'md5', 'SHA512', 'sha3-1024', 'whirlpool')), os_hash_value: anyValue, checksum: anyValue }, { requiredKeys: [] }),
            async (overrides) => {
              const defined = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
              const { outcome } = await cacheWith(defined);
              tally.set(outcome, (tally.get(outcome) ?? 0) + 1);
            },
          ),
          { seed, numRuns: 150 },
        );
        figures(t, 'arbitrary metadata', { inputs: 150, outcomes: Object.fromEntries(tally), corruptEntries: 0 });
      });
    });
  });

  describe('symlinks planted in the cache', () => {
    it('are never followed when deleting: their targets outside survive passes with every age at 0', async (t) => {
      await withSeed(t, async (seed) => {
        const outside = await mkdtemp(path.join(os.tmpdir(), 'vic-outside-'));
        try {
          let planted = 0;
          await fc.assert(
            fc.asyncProperty(
              fc.constantFrom('original', 'resized', 'small', 'swap', 'ephemeral', 'part', 'staging', 'info', 'instance-disk', 'instance-staging'),
              fc.constantFrom('file', 'directory'),
              fc.boolean(),
              async (kind, targetKind, swapAtRemoval) => {
                planted++;
                const instancesPath = await mkdtemp(path.join(dir, 'links-'));
                const clock = new ManualClock();
                class Swapping extends LibvirtFileImageManager {
                  // Replaces a real, removable base by a link between the scan and the removal.
                  protected override async removeIfStillUnused(...args: Parameters<LibvirtFileImageManager['removeIfStillUnused']>): Promise<RemovalOutcome> {
                    if (swapAtRemoval) {
                      const file = path.join(this.baseDir, args[1].name);
                      await unlink(file);
                      await symlink(target, file);
                    }
                    return super.removeIfStillUnused(...args);
                  }
                }
                const manager = new Swapping({
                  host: 'links', instancesPath, clock, removeUnusedOriginalMinimumAgeSeconds: 0,
                  removeUnusedResizedMinimumAgeSeconds: 0, staleStagingAgeSeconds: 0,
                });
                const target = path.join(outside, `target-${planted}`);
                if (targetKind === 'file') await writeFile(target, 'precious');
                else {
                  await mkdir(target);
                  await writeFile(path.join(target, 'inside'), 'precious');
                }
                const baseDir = path.join(instancesPath, '_base');
                await mkdir(baseDir, { recursive: true });
                const fp = cacheFileName(`link-${planted}`);
                const names: Record<string, string> = {
                  original: fp, resized: `${fp}_10737418240`, small: `${fp}_sm`, swap: 'swap_512', ephemeral: 'ephemeral_1_0706d66',
                  part: `${fp}.part`, staging: `${fp}.123-abcdef01.staging`, info: `${fp}.info`,
                };
                if (kind === 'instance-disk' || kind === 'instance-staging') {
                  await mkdir(path.join(instancesPath, 'inst'));
                  await symlink(target, path.join(instancesPath, 'inst', kind === 'instance-disk' ? 'disk' : 'disk.99-abcdef01.staging'));
                } else {
                  await symlink(target, path.join(baseDir, names[kind] ?? fp));
                }
                if (swapAtRemoval) await writeFile(path.join(baseDir, cacheFileName(`real-${planted}`)), 'a real base');
                clock.advance(100 * DAY);
                await manager.update([]);
                clock.advance(100 * DAY);
                await manager.update([]);
                if (targetKind === 'file') assert.equal(await readFile(target, 'utf8'), 'precious', `${kind} link`);
                else assert.equal(await readFile(path.join(target, 'inside'), 'utf8'), 'precious', `${kind} link`);
              },
            ),
            { seed, numRuns: 60 },
          );
          figures(t, 'symlinks', { linksPlanted: planted, targetsLost: 0 });
        } finally {
          await rm(outside, { recursive: true, force: true });
        }
      });
    });
  });
});
