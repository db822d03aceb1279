/**
 * An in-memory backend: a complete {@link ImageManager} over a `Map`, for driver authors' unit
 * tests and as the smallest example of a backend. It uses the real fetch pipeline (single flight,
 * locks, verification), so what a test sees is what a file backend does.
 *
 * @module
 */
import type { BaseImageScan, CacheEntry, CacheEntryKind } from '../cache-entry.js';
import type { FetchTarget } from '../fetch/image-fetcher.js';
import { LockManager } from '../fetch/lock-manager.js';
import type { StagingSink } from '../fetch/staging.js';
import { ImageManager } from '../manager.js';
import type { ImageManagerOptions } from '../manager.js';

/** One entry of a {@link MemoryImageManager}. */
export interface MemoryEntry {
  /** The bytes. */
  readonly data: Uint8Array;
  /** The image, if the entry holds one. */
  readonly imageId: string | null;
  /** The entry's class. */
  readonly kind: CacheEntryKind;
  /** Last use, ms since the epoch. */
  lastUsedMs: number;
}

const namesByImage = new WeakMap<BaseImageScan, Map<string, string[]>>();

/** Options of {@link MemoryImageManager}. */
export type MemoryImageManagerOptions = ImageManagerOptions;

/** An {@link ImageManager} whose cache is a `Map` of entry name to bytes. */
export class MemoryImageManager extends ImageManager<Map<string, MemoryEntry>> {
  override readonly hasImageCache: boolean = true;
  /** The cache; null until the first entry is written (like a cache directory not yet created). */
  #entries: Map<string, MemoryEntry> | null = null;

  /** @param options - host, source, clock and cache options */
  constructor(options: MemoryImageManagerOptions) {
    super(options, new LockManager(), 'memory');
  }

  /** Puts an entry in the cache directly (test set-up), last used now unless given. */
  put(name: string, data: Uint8Array, init: { imageId?: string | null; kind?: CacheEntryKind; lastUsedMs?: number } = {}): void {
    this.#entries ??= new Map();
    this.#entries.set(name, {
      data,
      imageId: init.imageId === undefined ? name : init.imageId,
      kind: init.kind ?? 'original',
      lastUsedMs: init.lastUsedMs ?? this.clock.now(),
    });
  }

  /** The entry called `name`, if present. */
  get(name: string): MemoryEntry | undefined {
    return this.#entries?.get(name);
  }

  /** Names of every entry. */
  names(): string[] {
    return [...(this.#entries?.keys() ?? [])].sort();
  }

  getBase(): Promise<Map<string, MemoryEntry> | null> {
    return Promise.resolve(this.#entries);
  }

  scanBaseImages(base: Map<string, MemoryEntry>): Promise<BaseImageScan> {
    const entries: CacheEntry[] = [...base]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, entry]) => ({
        name,
        kind: entry.kind,
        imageId: entry.imageId,
        sizeBytes: entry.data.length,
        lastUsedMs: entry.lastUsedMs,
      }));
    return Promise.resolve({ entries, staging: [] });
  }

  override getDiskUsage(): Promise<number> {
    let total = 0;
    for (const entry of this.#entries?.values() ?? []) total += entry.data.length;
    return Promise.resolve(total);
  }

  protected fetchTargetFor(imageId: string): FetchTarget {
    return {
      name: imageId,
      exists: () => Promise.resolve(this.#entries?.has(imageId) ?? false),
      createSink: () => Promise.resolve(this.#sinkFor(imageId)),
    };
  }

  protected override entryNamesForImage(imageId: string, scan: BaseImageScan): readonly string[] {
    // Indexed once per scan: a pass asks once per image in use, which is O(n²) over a large cache.
    let index = namesByImage.get(scan);
    if (index === undefined) {
      index = new Map();
      for (const entry of scan.entries) {
        if (entry.imageId === null) continue;
        const names = index.get(entry.imageId) ?? [];
        names.push(entry.name);
        index.set(entry.imageId, names);
      }
      namesByImage.set(scan, index);
    }
    return index.get(imageId) ?? [];
  }

  protected override touchEntry(name: string): Promise<void> {
    const entry = this.#entries?.get(name);
    if (entry === undefined) return Promise.reject(new Error(`no cache entry ${name}`));
    entry.lastUsedMs = this.clock.now();
    return Promise.resolve();
  }

  protected override statEntry(base: Map<string, MemoryEntry>, entry: CacheEntry): Promise<number | null> {
    return Promise.resolve(base.get(entry.name)?.lastUsedMs ?? null);
  }

  protected override removeEntry(base: Map<string, MemoryEntry>, entry: CacheEntry): Promise<void> {
    base.delete(entry.name);
    return Promise.resolve();
  }

  protected override removeStaging(): Promise<void> {
    return Promise.resolve();
  }

  #sinkFor(imageId: string): StagingSink {
    const chunks: Buffer[] = [];
    return {
      write: (chunk) => {
        // The caller reuses its buffer once the write settles: keep a copy.
        chunks.push(Buffer.from(chunk));
        return Promise.resolve();
      },
      commit: () => {
        this.#entries ??= new Map();
        this.#entries.set(imageId, {
          data: Buffer.concat(chunks),
          imageId,
          kind: 'original',
          lastUsedMs: this.clock.now(),
        });
        return Promise.resolve();
      },
      discard: () => {
        chunks.length = 0;
        return Promise.resolve();
      },
    };
  }
}
