/**
 * Where an image is published in a volume group: {@link ImageDiskTarget}, the localdisk backend's
 * fetch target, and the upload sink behind it.
 *
 * nova-powervm creates the disk under its final `i_` name and then uploads into it, so a crash
 * mid-upload leaves a named, incomplete disk that every later spawn takes for a hit
 * (docs/nova-parity.md, powervm crash). Here the bytes go into an upload disk (`s_<random>`)
 * tagged with the image id, and only once the fetch pipeline has verified the size and digest is
 * it renamed to its `i_` name. An `i_` disk of ours is therefore always complete; an abandoned
 * upload disk is removed once its lock is free.
 *
 * @module
 */
import { throwIfAborted } from '../../abort.js';
import { ImageInUseError, LockTimeoutError, UnsupportedError, VolumeGroupError } from '../../errors.js';
import type { FetchTarget } from '../../fetch/image-fetcher.js';
import type { HeldLock } from '../../fetch/lock-manager.js';
import type { StagingSink } from '../../fetch/staging.js';
import type { ImageInfo } from '../../source/image-source.js';
import { DISK_OWNER, DISK_TAGS, findImageDisk, imageDiskNameCandidates, novaImageDiskName, uploadDiskName } from './naming.js';
import { callVolumeGroup, listDisks, toVolumeGroupError } from './volume-group-call.js';
import type { VolumeGroup } from './volume-group.js';

/** Chunks an upload may have queued before the download waits for it. */
const QUEUED_CHUNKS = 2;

/** Attempts at a free random name for an upload disk. */
const UPLOAD_NAME_ATTEMPTS = 3;

/** Inputs of {@link ImageDiskTarget}. */
export interface ImageDiskTargetOptions {
  /** The volume group. */
  readonly group: VolumeGroup;
  /** The image. */
  readonly imageId: string;
  /**
   * Takes the cache lock exclusively without waiting, or throws `LockTimeoutError`: a removal must
   * not run while a spawn clones from the disk.
   */
  readonly tryExclusive: () => Promise<HeldLock>;
}

/**
 * The fetch target of one image in a volume group. Its name, the lock every process takes for the
 * image, is nova-powervm's disk name of the image, so images whose short names collide take turns
 * choosing names. The disk actually holding the image is found by its image-id tag; after a
 * collision it has another name ({@link ImageDiskTarget.diskName}).
 */
export class ImageDiskTarget implements FetchTarget {
  /** The lock name: nova-powervm's name of the image's disk. */
  readonly name: string;
  /** The image. */
  readonly imageId: string;
  /** The disk holding the image, once {@link exists} found it or an upload published it. */
  diskName: string | undefined;
  readonly #options: ImageDiskTargetOptions;

  /** @param options - the group, the image and the removal guard */
  constructor(options: ImageDiskTargetOptions) {
    this.#options = options;
    this.imageId = options.imageId;
    this.name = novaImageDiskName(options.imageId);
  }

  /** {@inheritDoc FetchTarget.exists} */
  async exists(): Promise<boolean> {
    this.diskName = findImageDisk(await listDisks(this.#options.group), this.imageId)?.name;
    return this.diskName !== undefined;
  }

  /** {@inheritDoc FetchTarget.createSink} */
  createSink(info: ImageInfo, signal?: AbortSignal): Promise<StagingSink> {
    if (info.size === null) {
      throw new UnsupportedError(
        'Caching an image of unknown size in a volume group',
        'the image service published no size, and a virtual disk must be sized before the upload; set the image\u2019s size in the image service.',
        this.imageId,
      );
    }
    return UploadSink.start(this.#options.group, this.imageId, info.size, signal, (name) => {
      this.diskName = name;
    });
  }

  /** {@inheritDoc FetchTarget.remove} */
  async remove(): Promise<boolean> {
    let guard: HeldLock;
    try {
      guard = await this.#options.tryExclusive();
    } catch (err) {
      if (err instanceof LockTimeoutError) throw new ImageInUseError(this.imageId, 'a spawn is building an instance disk from it');
      throw err;
    }
    try {
      const disk = findImageDisk(await listDisks(this.#options.group), this.imageId);
      if (disk === undefined) return false;
      await callVolumeGroup('delete', disk.name, this.imageId, () => this.#options.group.deleteDisk(disk.name));
      return true;
    } finally {
      await guard.release();
    }
  }
}

/** Uploads into an `s_` disk; publishes it under the image's first free `i_` name on commit. */
class UploadSink implements StagingSink {
  readonly #group: VolumeGroup;
  readonly #imageId: string;
  readonly #name: string;
  readonly #channel = new ChunkChannel();
  readonly #upload: Promise<number>;
  readonly #onPublished: (name: string) => void;
  readonly #signal: AbortSignal | undefined;
  #published = false;

  private constructor(group: VolumeGroup, imageId: string, name: string, signal: AbortSignal | undefined, onPublished: (name: string) => void) {
    this.#group = group;
    this.#imageId = imageId;
    this.#name = name;
    this.#signal = signal;
    this.#onPublished = onPublished;
    this.#upload = callVolumeGroup('upload', name, imageId, () => group.uploadDisk(name, this.#channel, { signal }));
    // A failed upload wakes the download so it stops sending.
    this.#upload.catch((err: unknown) => {
      this.#channel.fail(err);
    });
  }

  /** Creates the upload disk, sized to the image, tagged with its id, and starts the upload. */
  static async start(
    group: VolumeGroup,
    imageId: string,
    sizeBytes: number,
    signal: AbortSignal | undefined,
    onPublished: (name: string) => void,
  ): Promise<UploadSink> {
    const tags = { [DISK_TAGS.owner]: DISK_OWNER, [DISK_TAGS.imageId]: imageId, [DISK_TAGS.imageSize]: String(sizeBytes) };
    for (let attempt = 1; ; attempt++) {
      const name = uploadDiskName();
      try {
        await callVolumeGroup('create', name, imageId, () => group.createDisk({ name, sizeBytes, tags }, { signal }));
        return new UploadSink(group, imageId, name, signal, onPublished);
      } catch (err) {
        if (!(err instanceof VolumeGroupError && err.reason === 'name-taken') || attempt >= UPLOAD_NAME_ATTEMPTS) throw err;
      }
    }
  }

  /** {@inheritDoc StagingSink.write} */
  async write(chunk: Uint8Array): Promise<void> {
    // The caller reuses its buffer; the upload may hold a chunk longer (a socket's queue): copy.
    await this.#channel.push(Buffer.from(chunk));
  }

  /** {@inheritDoc StagingSink.commit} */
  async commit(): Promise<void> {
    this.#channel.end();
    await this.#upload;
    throwIfAborted(this.#signal, 'Uploading', this.#imageId);
    // Called by the fetch pipeline only after the size and digest were verified.
    const taken = new Set((await listDisks(this.#group)).map((disk) => disk.name));
    for (const candidate of imageDiskNameCandidates(this.#imageId)) {
      if (taken.has(candidate)) continue;
      try {
        await callVolumeGroup('rename', this.#name, this.#imageId, () => this.#group.renameDisk(this.#name, candidate));
      } catch (err) {
        if (err instanceof VolumeGroupError && err.reason === 'name-taken') continue;
        throw err;
      }
      this.#published = true;
      this.#onPublished(candidate);
      return;
    }
    throw new VolumeGroupError('rename', this.#name, 'name-taken', {
      imageId: this.#imageId,
      cause: new Error(`every candidate name of the image is taken (${imageDiskNameCandidates(this.#imageId).join(', ')})`),
    });
  }

  /** {@inheritDoc StagingSink.discard} */
  async discard(): Promise<void> {
    this.#channel.fail(new Error('upload discarded'));
    await this.#upload.catch(() => undefined);
    if (this.#published) return;
    try {
      await this.#group.deleteDisk(this.#name);
    } catch (err) {
      const typed = toVolumeGroupError(err, 'delete', this.#name, this.#imageId);
      if (!(typed instanceof VolumeGroupError && typed.reason === 'not-found')) throw typed;
    }
  }
}

/**
 * Turns the download's writes into the async iterable an upload reads, with back-pressure: a write
 * waits while {@link QUEUED_CHUNKS} chunks are queued. A failure on either side reaches the other.
 */
class ChunkChannel implements AsyncIterable<Uint8Array> {
  readonly #queue: Uint8Array[] = [];
  #ended = false;
  #failed = false;
  #error: unknown;
  #wakeConsumer: (() => void) | undefined;
  #wakeProducer: (() => void) | undefined;

  async push(chunk: Uint8Array): Promise<void> {
    if (this.#failed) throw this.#error;
    this.#queue.push(chunk);
    this.#wake();
    while (this.#queue.length >= QUEUED_CHUNKS && !this.#hasFailed()) {
      await new Promise<void>((resolve) => (this.#wakeProducer = resolve));
    }
    if (this.#hasFailed()) throw this.#error;
  }

  end(): void {
    this.#ended = true;
    this.#wake();
  }

  fail(error: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#error = error;
    this.#wake();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      if (this.#failed) throw this.#error;
      const chunk = this.#queue.shift();
      if (chunk !== undefined) {
        this.#wake();
        yield chunk;
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => (this.#wakeConsumer = resolve));
    }
  }

  /** A method, not a field read: the flag changes while this side awaits. */
  #hasFailed(): boolean {
    return this.#failed;
  }

  #wake(): void {
    const consumer = this.#wakeConsumer;
    const producer = this.#wakeProducer;
    this.#wakeConsumer = undefined;
    this.#wakeProducer = undefined;
    consumer?.();
    producer?.();
  }
}
