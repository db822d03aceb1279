// The blueprint's zero-copy template handler: a base is a hard link to the image store's file (same
// inode, link count 2), verified against the image service's metadata; it downloads when the store
// lacks the image, holds the wrong bytes count, or sits on another device (a real tmpfs mount).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { GlanceImageSource, LibvirtFileImageManager, LocalDiskImageManager, isImageCacheError } from '../../src/index.js';
import { LinkingHandler, storeFileSource } from '../../src/handlers/linking-handler.js';
import { openImageReader } from '../../src/source/image-reader.js';
import type { LibvirtFileImageManagerOptions } from '../../src/index.js';
import { FakeVolumeGroup, startFakeGlance } from '../../src/testing/index.js';
import type { FakeGlance } from '../../src/testing/index.js';
import { listDir, makeTempDir, seededBytes } from '../helpers/tmp.js';

const IMAGE = 'aa11bb22-cc33-4d44-8e55-ff6677889900';
const OTHER = 'bb11bb22-cc33-4d44-8e55-ff6677889900';
const DATA = seededBytes(3 * 1024 * 1024 + 17, 21);

describe('LinkingHandler', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let glance: FakeGlance;
  let store: string;
  let instancesPath: string;
  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('vic-link-'));
    glance = await startFakeGlance({ images: [{ id: IMAGE, content: DATA }, { id: OTHER, content: seededBytes(5000, 22) }] });
    store = path.join(dir, 'glance-store');
    instancesPath = path.join(dir, 'instances');
    await mkdir(store);
    await writeFile(path.join(store, IMAGE), DATA);
  });
  afterEach(async () => {
    await glance.close();
    await cleanup();
  });

  const libvirt = (extra: Partial<LibvirtFileImageManagerOptions> = {}): LibvirtFileImageManager =>
    new LibvirtFileImageManager({
      host: 'host1',
      instancesPath,
      source: new GlanceImageSource({ endpoint: glance.url }),
      templateImageHandler: 'link',
      templateImageStorePath: store,
      ...extra,
    });

  it('zero copy: the base is the store file itself (same inode, link count 2); no byte is downloaded', async () => {
    const manager = libvirt();
    assert.ok(manager.templateImageHandler instanceof LinkingHandler);
    const result = await manager.cacheImage(IMAGE);
    assert.equal(result.status, 'cached');
    assert.equal(result.bytes, DATA.length);
    const base = await stat(manager.cachePathFor(IMAGE));
    const stored = await stat(path.join(store, IMAGE));
    assert.equal(base.ino, stored.ino);
    assert.equal(base.dev, stored.dev);
    assert.equal(stored.nlink, 2);
    assert.equal(glance.requests(IMAGE).file, 0, 'the image service sent no data');
    assert.equal(glance.requests(IMAGE).metadata, 1, 'only the metadata, to verify the size');
    assert.deepEqual((await listDir(manager.baseDir)).filter((n) => n.endsWith('.staging')), []);
    // A spawn builds on the linked base like on any other.
    const disk = await manager.createInstanceDisk({ imageId: IMAGE, instanceDir: path.join(instancesPath, 'u1') });
    assert.equal(disk.cacheStatus, 'existing');
  });

  it('falls back to a download when the store lacks the image, or its file is not the size the image service says', async () => {
    const manager = libvirt();
    await manager.cacheImage(OTHER);
    assert.equal(glance.requests(OTHER).file, 1);
    assert.equal((await stat(manager.cachePathFor(OTHER))).nlink, 1);
    await writeFile(path.join(store, IMAGE), DATA.subarray(1));
    await manager.cacheImage(IMAGE);
    assert.equal(glance.requests(IMAGE).file, 1);
    assert.deepEqual(await readFile(manager.cachePathFor(IMAGE)), DATA, 'the downloaded, verified image');
  });

  it('falls back to a download when the store is on another device (EXDEV: a tmpfs mount)', async (t) => {
    if (process.getuid?.() !== 0) {
      t.skip('mounting tmpfs needs root (CI runs as root)');
      return;
    }
    const mnt = path.join(dir, 'tmpfs-store');
    await mkdir(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mnt]);
    try {
      await writeFile(path.join(mnt, IMAGE), DATA);
      const manager = libvirt({ templateImageStorePath: mnt });
      const result = await manager.cacheImage(IMAGE);
      assert.equal(result.status, 'cached');
      const base = await stat(manager.cachePathFor(IMAGE));
      const stored = await stat(path.join(mnt, IMAGE));
      assert.notEqual(base.dev, stored.dev);
      assert.equal(base.nlink, 1);
      assert.equal(stored.nlink, 1);
      assert.equal(glance.requests(IMAGE).file, 1, 'downloaded from the image service');
      assert.deepEqual(await readFile(manager.cachePathFor(IMAGE)), DATA);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });

  it("verification 'checksum' hashes the linked file and refuses a corrupt store file; 'size' trusts the store", async () => {
    const corrupt = Buffer.from(DATA);
    corrupt[1000] = (corrupt[1000] ?? 0) ^ 0xff;
    await writeFile(path.join(store, IMAGE), corrupt);
    // 'size' trusts the store (one stat, no read): the same-size corrupt file is linked.
    const trusting = libvirt({ instancesPath: path.join(dir, 'instances-size') });
    assert.equal((await trusting.cacheImage(IMAGE)).digest, null);
    assert.equal(await trusting.templateImageHandler.removeImage(IMAGE), true);
    const strict = libvirt({ templateImageLinkVerification: 'checksum' });
    await assert.rejects(strict.cacheImage(IMAGE), (err) => isImageCacheError(err) && err.code === 'ERR_CHECKSUM_MISMATCH' && err.imageId === IMAGE);
    assert.deepEqual(await listDir(strict.baseDir), [], 'nothing published, no staging link left');
    assert.equal((await stat(path.join(store, IMAGE))).nlink, 1);
    await writeFile(path.join(store, IMAGE), DATA);
    const verified = await strict.cacheImage(IMAGE);
    assert.equal(verified.algorithm, 'sha512');
    assert.equal((await stat(strict.cachePathFor(IMAGE))).nlink, 2);
  });

  it('the store read honours the offset: a download resuming a kept staging file from the store continues where it stopped', async () => {
    const file = path.join(store, IMAGE);
    await writeFile(file, DATA);
    const info = await new GlanceImageSource({ endpoint: glance.url }).describe(IMAGE);
    const offset = 1024 * 1024 + 3;
    const reader = await openImageReader(storeFileSource(file, info), IMAGE, { offset });
    const chunks: Buffer[] = [];
    for (let buffer = Buffer.alloc(256 * 1024), n = await reader.read(buffer); n > 0; n = await reader.read(buffer)) {
      chunks.push(Buffer.from(buffer.subarray(0, n)));
    }
    // From the start instead (the offset ignored), the bytes would be the image's first ones.
    assert.ok(Buffer.concat(chunks).equals(DATA.subarray(offset)));
  });

  it('a cache that is not a directory of files (a volume group) reads the store through the verified pipeline, not the network', async () => {
    const group = new FakeVolumeGroup();
    const manager = new LocalDiskImageManager({
      host: 'host1',
      volumeGroup: group,
      source: new GlanceImageSource({ endpoint: glance.url }),
      templateImageHandler: 'link',
      templateImageStorePath: store,
    });
    const result = await manager.cacheImage(IMAGE);
    assert.equal(result.status, 'cached');
    assert.ok(result.digest !== null, 'hashed and verified on the way');
    assert.equal(glance.requests(IMAGE).file, 0);
    assert.deepEqual(group.read(result.name), DATA);
  });

  it('init() after a restart sweeps dead staging links and re-checks links: linked, copied, mismatched', async () => {
    const manager = libvirt();
    await manager.cacheImage(IMAGE); // linked
    await manager.cacheImage(OTHER); // downloaded: not in the store
    await writeFile(path.join(store, OTHER), seededBytes(5000, 22)); // now in the store too: a copy
    await writeFile(path.join(store, 'cc11bb22-cc33-4d44-8e55-ff6677889900'), 'x'); // not cached
    const leftover = `${manager.cachePathFor(IMAGE)}.4242-beef.staging`;
    await writeFile(leftover, 'half a link');
    const report = await manager.templateImageHandler.init();
    assert.deepEqual(report.removedStaging, [path.basename(leftover)]);
    assert.deepEqual(report.links, { storeAvailable: true, linked: [IMAGE], copied: [OTHER], mismatched: [] });
    await writeFile(path.join(store, OTHER), 'replaced by something else');
    const handler = manager.templateImageHandler;
    assert.ok(handler instanceof LinkingHandler);
    assert.deepEqual((await handler.checkLinks()).mismatched, [OTHER]);
    await rm(store, { recursive: true });
    assert.equal((await manager.templateImageHandler.init()).links?.storeAvailable, false);
  });

  it('removeImage drops the link; the store keeps its file', async () => {
    const manager = libvirt();
    await manager.cacheImage(IMAGE);
    assert.equal(await manager.templateImageHandler.removeImage(IMAGE), true);
    assert.equal((await stat(path.join(store, IMAGE))).nlink, 1);
    assert.deepEqual(await readFile(path.join(store, IMAGE)), DATA);
    assert.equal(await manager.templateImageHandler.removeImage(IMAGE), false);
  });
});
