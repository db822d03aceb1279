// The shared-storage registry: Nova's compute_nodes file, written atomically, with corruption
// reported instead of silently read as "no other hosts".
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import {
  DEFAULT_STORAGE_USERS_WINDOW_SECONDS,
  STORAGE_REGISTRY_FILE,
  StorageRegistry,
} from '../../../src/backends/libvirt-file/storage-registry.js';
import { InvalidConfigError, isImageCacheError } from '../../../src/errors.js';
import { LockManager } from '../../../src/fetch/lock-manager.js';
import { ManualClock } from '../../../src/testing/manual-clock.js';
import { runChild } from '../../helpers/child.js';
import { listDir, makeTempDir } from '../../helpers/tmp.js';

const DAY = 86400;
const START_MS = 1_700_000_000_000;

describe('StorageRegistry', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let clock: ManualClock;
  let locks: LockManager;

  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir());
    clock = new ManualClock(START_MS);
    locks = new LockManager({ lockDir: path.join(dir, 'locks') });
  });
  afterEach(async () => {
    await cleanup();
  });

  const registry = (windowSeconds?: number): StorageRegistry =>
    new StorageRegistry({ instancesPath: dir, locks, clock, ...(windowSeconds === undefined ? {} : { windowSeconds }) });
  const file = (): string => path.join(dir, STORAGE_REGISTRY_FILE);
  const readJson = async (): Promise<unknown> => JSON.parse(await readFile(file(), 'utf8')) as unknown;

  it('uses Nova\'s file name and 24 h default window', () => {
    assert.equal(STORAGE_REGISTRY_FILE, 'compute_nodes');
    assert.equal(DEFAULT_STORAGE_USERS_WINDOW_SECONDS, DAY);
    assert.equal(registry().windowSeconds, DAY);
    assert.equal(registry().path, file());
  });

  it('a missing file means no users, and is not corrupt', async () => {
    assert.deepEqual(await registry().users(), { hosts: [], corrupt: false, invalid: [] });
    assert.deepEqual(await registry().entries(), {});
  });

  it('reads a file Nova wrote, and writes epoch seconds Nova can read', async () => {
    const now = START_MS / 1000;
    // json.dump of {host: time.time()}: float seconds, Python's separators; one host is stale.
    await writeFile(file(), `{"nova-a": ${now - 120.25}, "nova-b": ${now - 2 * DAY}.5, "nova-c": ${now - 5}}`);
    assert.deepEqual(await registry().users(), { hosts: ['nova-a', 'nova-c'], corrupt: false, invalid: [] });
    clock.advance(0.125);
    await registry().register('ours');
    const text = await readFile(file(), 'utf8');
    assert.match(text, /^\{"nova-a": [0-9.]+, "nova-b": [0-9.]+, "nova-c": [0-9.]+, "ours": [0-9.]+\}$/);
    assert.deepEqual(await readJson(), {
      'nova-a': now - 120.25,
      'nova-b': now - 2 * DAY + 0.5,
      'nova-c': now - 5,
      ours: now + 0.125,
    });
  });

  it('a host registered 86399 s ago is a user; 86400 s ago it is not; entries stay', async () => {
    await registry().register('old');
    clock.advance(DAY - 1);
    await registry().register('new');
    assert.deepEqual((await registry().users()).hosts, ['new', 'old']);
    clock.advance(1);
    assert.deepEqual((await registry().users()).hosts, ['new']);
    assert.deepEqual(Object.keys(await registry().entries()).sort(), ['new', 'old'], 'entries are never deleted');
  });

  it('the window is configurable', async () => {
    await registry(600).register('a');
    clock.advance(599);
    assert.deepEqual((await registry(600).users()).hosts, ['a']);
    clock.advance(1);
    assert.deepEqual((await registry(600).users()).hosts, []);
    assert.deepEqual((await registry().users()).hosts, ['a'], 'the default window still sees it');
  });

  it('registerAndList registers, then lists, in one call', async () => {
    await registry().register('b');
    clock.advance(10);
    const users = await registry().registerAndList('a');
    assert.deepEqual(users, { hosts: ['a', 'b'], corrupt: false, invalid: [] });
    assert.deepEqual(await registry().entries(), { a: START_MS / 1000 + 10, b: START_MS / 1000 });
  });

  for (const [label, content] of [
    ['truncated JSON', '{"a": 1700000000.5, "b'],
    ['an empty file', ''],
    ['a JSON array', '["a", "b"]'],
    ['JSON null', 'null'],
    ['Python\'s NaN', '{"a": NaN}'],
  ] as const) {
    it(`${label} is reported corrupt (no users), and the next register rewrites a valid file`, async () => {
      await writeFile(file(), content);
      assert.deepEqual(await registry().users(), { hosts: [], corrupt: true, invalid: [] });
      assert.deepEqual(await registry().entries(), {});
      const listed = await registry().registerAndList('a');
      assert.equal(listed.corrupt, true, 'the pass that found it corrupt still knows');
      assert.deepEqual(listed.hosts, ['a']);
      assert.deepEqual(await readJson(), { a: START_MS / 1000 });
      assert.deepEqual(await registry().users(), { hosts: ['a'], corrupt: false, invalid: [] });
    });
  }

  it('skips just the entries without a numeric timestamp, and keeps them on rewrite', async () => {
    const now = START_MS / 1000;
    await writeFile(file(), JSON.stringify({ good: now - 1, text: 'yesterday', none: null, nested: { t: now } }));
    assert.deepEqual(await registry().users(), { hosts: ['good'], corrupt: false, invalid: ['nested', 'none', 'text'] });
    assert.deepEqual(await registry().entries(), { good: now - 1 });
    await registry().register('ours');
    assert.deepEqual(await readJson(), { good: now - 1, text: 'yesterday', none: null, nested: { t: now }, ours: now });
  });

  it('a host called __proto__ is an ordinary entry', async () => {
    await registry().register('__proto__');
    const entries = await registry().entries();
    assert.equal(Object.getPrototypeOf(entries), Object.prototype);
    assert.deepEqual(Object.keys(entries), ['__proto__']);
    assert.deepEqual((await registry().users()).hosts, ['__proto__']);
  });

  it('writes leave no temp files behind', async () => {
    for (let i = 0; i < 5; i++) await registry().register(`h${i}`);
    assert.deepEqual(await listDir(dir), [STORAGE_REGISTRY_FILE, 'locks']);
    assert.deepEqual(await listDir(path.join(dir, 'locks')), [], 'the registry lock was released');
  });

  it('concurrent registrations in this process all land', async () => {
    await Promise.all(Array.from({ length: 30 }, (_, i) => registry().register(`h${i}`)));
    assert.equal((await registry().users()).hosts.length, 30);
  });

  it('four processes registering 20 hosts each at once leave one valid file with all 80', async () => {
    // The workers register with the system clock.
    clock = new ManualClock(Date.now());
    const lockDir = path.join(dir, 'locks');
    const results = await Promise.all(
      ['p0', 'p1', 'p2', 'p3'].map((prefix) =>
        runChild<{ registered: number }>('registry-worker.ts', { instancesPath: dir, lockDir, prefix, count: 20 }),
      ),
    );
    assert.deepEqual(results.map((r) => r.registered), [20, 20, 20, 20]);
    const stored = await readJson();
    assert.equal(typeof stored, 'object');
    const expected = ['p0', 'p1', 'p2', 'p3'].flatMap((p) => Array.from({ length: 20 }, (_, i) => `${p}-${i}`)).sort();
    assert.deepEqual(Object.keys(stored as object).sort(), expected);
    const users = await registry().users();
    assert.equal(users.corrupt, false);
    assert.deepEqual(users.hosts, expected);
    assert.deepEqual(await listDir(dir), [STORAGE_REGISTRY_FILE, 'locks'], 'no temp files left');
  });

  it('rejects a bad window with ERR_INVALID_CONFIG naming storageUsersWindowSeconds', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '60' as unknown as number]) {
      assert.throws(
        () => registry(bad),
        (err) => err instanceof InvalidConfigError && err.code === 'ERR_INVALID_CONFIG' && err.option === 'storageUsersWindowSeconds',
      );
    }
  });

  it('rejects an empty host name with ERR_INVALID_CONFIG', async () => {
    await assert.rejects(registry().register(''), (err) => isImageCacheError(err) && err.code === 'ERR_INVALID_CONFIG');
    await assert.rejects(registry().registerAndList(''), (err) => isImageCacheError(err) && err.code === 'ERR_INVALID_CONFIG');
  });

  it('waiting for the registry lock can be aborted', async () => {
    const held = await locks.acquire('storage-registry-lock');
    const controller = new AbortController();
    const waiting = registry().register('a', { signal: controller.signal });
    controller.abort();
    await assert.rejects(waiting, (err) => isImageCacheError(err) && err.code === 'ERR_ABORTED');
    await held.release();
    await registry().register('a');
  });
});
