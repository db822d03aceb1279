/**
 * {@link LinkingHandler}: the blueprint's zero-copy way. The image store is a locally attached
 * directory holding one file per image, named by the image id: a Glance file store on shared
 * storage, or the mount of a volume holding images. A template is published as a hard link to the
 * store's file (the same inode: no byte is copied), or a reflink when hard links are refused
 * (protected_hardlinks, another owner), verified against the image service's metadata.
 *
 * What cannot be linked is still served:
 * - the store lacks the image, or its file has the wrong size: downloaded from the image service;
 * - the store is on another device (EXDEV): downloaded, as the blueprint says;
 * - the cache is not a directory of files (a volume group), or the filesystem refuses both links:
 *   the store's file is read through the verified pipeline, which costs a local read but no network.
 *
 * Sharing the inode is safe because the cache never writes a template (instance disks are overlays
 * or copies of it); a consequence is that touching the template sets the store file's times too.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, lstat, readdir, stat, unlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { throwIfAborted } from '../abort.js';
import { tryReflink } from '../disk/raw-copy.js';
import type { DownloadResult } from '../fetch/download.js';
import type { EnsureOptions, EnsureResult, FetchTarget, LocalFillContext } from '../fetch/image-fetcher.js';
import { makeDirectory, publishFile } from '../fetch/durable.js';
import { verifyAndPublish } from '../fetch/publish.js';
import { mapWriteError } from '../fetch/staging.js';
import { stagingPathFor } from '../fetch/staging-names.js';
import { expectedDigestOf } from '../fetch/verifier.js';
import { assertValidImageId, passVouch } from '../image-id.js';
import { createLogger } from '../log.js';
import type { TemplateImageHandlerKind } from '../options.js';
import type { ImageInfo, ImageSource } from '../source/image-source.js';
import { DownloadingHandler } from './downloading-handler.js';
import type { LinkCheckReport, TemplateHandlerContext, TemplateInitOptions, TemplateInitReport } from './types.js';

const log = createLogger('handler');

/** Errors of `link()` after which a reflink is worth trying (same device, link refused). */
const LINK_REFUSED = new Set(['EPERM', 'EACCES', 'EMLINK', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/** Read size when hashing a linked file. */
const HASH_CHUNK_BYTES = 4 * 1024 * 1024;

/** Options of {@link LinkingHandler}. */
export interface LinkingHandlerOptions {
  /** The image store: an absolute directory of files named by image id. */
  readonly storePath: string;
  /**
   * What a linked file is checked against: `size` (default: one stat) or `checksum` (the size, and
   * a hash of the whole file against the image's multihash or md5: a full read of the image).
   */
  readonly verification?: 'size' | 'checksum' | undefined;
}

/** How a template was linked, or why it was not. */
type LinkOutcome = { readonly method: 'hardlink' | 'reflink'; readonly result: DownloadResult } | 'cross-device' | 'refused';

/** Prepares templates by linking them from a local image store; downloads what it cannot link. */
export class LinkingHandler extends DownloadingHandler {
  /** {@inheritDoc TemplateImageHandler.kind} */
  override readonly kind: TemplateImageHandlerKind = 'link';
  /** The image store directory. */
  readonly storePath: string;
  /** What a linked file is checked against. */
  readonly verification: 'size' | 'checksum';

  /**
   * @param context - the cache's locks, fetcher, targets and staging
   * @param options - the store and the verification
   */
  constructor(context: TemplateHandlerContext, options: LinkingHandlerOptions) {
    super(context);
    this.storePath = options.storePath;
    this.verification = options.verification ?? 'size';
  }

  /** The store's file of `imageId`. */
  storeFileFor(imageId: string): string {
    assertValidImageId(imageId);
    return this.#storeFileOf(imageId);
  }

  /** {@link storeFileFor} of an id already checked (by the fetch this handler fills). */
  #storeFileOf(imageId: string): string {
    return path.join(this.storePath, imageId);
  }

  /** Sweeps staging leftovers, then re-checks cached templates against the store ({@link checkLinks}). */
  override async init(options: TemplateInitOptions = {}): Promise<TemplateInitReport> {
    const report = await super.init(options);
    return { ...report, links: await this.checkLinks() };
  }

  /**
   * Compares every image in the store with its cached template: linked (same inode), copied (a
   * separate file of the same size) or mismatched (sizes differ: logged, never removed here).
   */
  async checkLinks(): Promise<LinkCheckReport> {
    const linked: string[] = [];
    const copied: string[] = [];
    const mismatched: string[] = [];
    let names: string[];
    try {
      names = (await readdir(this.storePath, { withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name);
    } catch (err) {
      log('image store %s unreadable (%s): every template will be downloaded', this.storePath, (err as NodeJS.ErrnoException).code);
      return { storeAvailable: false, linked, copied, mismatched };
    }
    for (const imageId of names.sort()) {
      let filePath: string | undefined;
      try {
        filePath = this.context.targetFor(imageId).filePath;
      } catch {
        continue; // not an image id this cache accepts
      }
      if (filePath === undefined) continue;
      const [cached, stored] = await Promise.all([statOrNull(filePath, false), statOrNull(path.join(this.storePath, imageId), false)]);
      if (cached === null || stored === null || !cached.isFile()) continue;
      if (cached.dev === stored.dev && cached.ino === stored.ino) linked.push(imageId);
      else if (cached.size === stored.size) copied.push(imageId);
      else {
        log('template of %s is %d bytes but the store has %d: one of them is not the image', imageId, cached.size, stored.size);
        mismatched.push(imageId);
      }
    }
    return { storeAvailable: true, linked, copied, mismatched };
  }

  /** {@inheritDoc TemplateImageHandler.fetchImage} */
  override fetchImage(imageId: string, target?: FetchTarget, options: EnsureOptions = {}): Promise<EnsureResult> {
    const resolved = target ?? this.context.targetFor(imageId);
    const fillLocally = (info: ImageInfo, fill: LocalFillContext): Promise<DownloadResult | null> => this.#fill(imageId, resolved, info, fill);
    return super.fetchImage(imageId, resolved, passVouch(options, imageId, { ...options, fillLocally }));
  }

  async #fill(imageId: string, target: FetchTarget, info: ImageInfo, fill: LocalFillContext): Promise<DownloadResult | null> {
    const storeFile = this.#storeFileOf(imageId);
    const stored = await statOrNull(storeFile);
    if (stored?.isFile() !== true) {
      log('image store lacks %s: downloading', imageId);
      return null;
    }
    if (info.size !== null && stored.size !== info.size) {
      log('store file of %s is %d bytes, the image service says %d: downloading', imageId, stored.size, info.size);
      return null;
    }
    if (target.filePath !== undefined) {
      const outcome = await this.#link(imageId, storeFile, target.filePath, info, fill.signal);
      if (outcome === 'cross-device') {
        log('image store is on another device than %s: downloading %s', target.filePath, imageId);
        return null;
      }
      if (outcome !== 'refused') {
        log('linked %s into %s (%s)', imageId, target.filePath, outcome.method);
        return outcome.result;
      }
    }
    log('reading %s from the image store through the verified pipeline', imageId);
    // A local read: no byte crossed the network.
    return { ...(await fill.downloadFrom(storeFileSource(storeFile, info))), bytesFrom: [] };
  }

  async #link(imageId: string, storeFile: string, finalPath: string, info: ImageInfo, signal: AbortSignal): Promise<LinkOutcome> {
    const dir = path.dirname(finalPath);
    await makeDirectory(dir, true);
    const staging = stagingPathFor(finalPath);
    let method: 'hardlink' | 'reflink' = 'hardlink';
    try {
      await link(storeFile, staging);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (code === 'EXDEV') return 'cross-device';
      if (!LINK_REFUSED.has(code)) throw mapWriteError(err, imageId, dir);
      if (!(await tryReflink(storeFile, staging))) return 'refused';
      method = 'reflink';
    }
    try {
      const { size } = await stat(staging);
      const digest = this.verification === 'checksum' ? expectedDigestOf(info, false) : null;
      const result = await verifyAndPublish(
        {
          bytes: size,
          digest: (algorithm) => hashFile(staging, algorithm, signal, imageId),
          // A base is always durable. The fsync of a reflink writes its new extent map; of a hard
          // link, the shared inode's link count.
          publish: () => publishFile(staging, finalPath, { sync: true }),
        },
        { imageId, size: info.size, digest },
        { signal, operation: 'Linking' },
      );
      return { method, result };
    } catch (err) {
      await unlink(staging).catch(() => undefined);
      throw err;
    }
  }
}

/**
 * An image source reading one image from a store file (its metadata is already known), from the
 * offset asked: a download resuming a kept staging file continues where it stopped.
 */
export function storeFileSource(file: string, info: ImageInfo): ImageSource {
  return {
    describe: () => Promise.resolve(info),
    open: (_imageId, options): Promise<Readable> =>
      Promise.resolve(createReadStream(file, { start: options?.offset ?? 0, highWaterMark: HASH_CHUNK_BYTES, signal: options?.signal })),
  };
}

async function hashFile(file: string, algorithm: string, signal: AbortSignal, imageId: string): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(file, { highWaterMark: HASH_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
    throwIfAborted(signal, 'Verifying the linked image', imageId);
    hash.update(chunk);
  }
  return hash.digest('hex');
}

/** `stat` (or `lstat`, not following a link) of `file`, or null when it does not exist. */
async function statOrNull(file: string, follow = true): Promise<Stats | null> {
  try {
    return await (follow ? stat(file) : lstat(file));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw err;
  }
}
