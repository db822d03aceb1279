/**
 * What the {@link describeImageManagerContract} suite needs from a backend: how to build a manager
 * over a fresh cache, and a small harness to look at the cache from outside the manager.
 *
 * @module
 */
import type { CacheEntryKind } from '../cache-entry.js';
import type { ImageManager, ImageManagerOptions } from '../manager.js';
import type { ManualClock } from './manual-clock.js';
import type { MemoryImageSource } from './memory-image-source.js';

/**
 * One fresh cache of the backend under test, with a manager over it and the means to inspect and
 * age its entries the way the backend stores them (files, disks, a map).
 */
export interface ContractHarness {
  /** A manager over the fresh cache, built with `host: 'host1'` and the suite's clock and source. */
  readonly manager: ImageManager;
  /** Another manager over the same cache, with `extra` options on top of the first one's. */
  make(extra: Partial<ImageManagerOptions>): ImageManager;
  /** The entry name `imageId` is published under (e.g. `sha1(imageId)` for Nova's layout). */
  entryName(imageId: string): string;
  /** The name of the lock a spawn of `imageId` holds (the manager's `locks` member takes it). */
  lockName(imageId: string): string;
  /** The names of the entries present, sorted. */
  names(): Promise<string[]>;
  /** The first `length` bytes of an entry, read from the storage itself. */
  read(name: string, length: number): Promise<Buffer>;
  /** An entry's last use in ms since the epoch (its mtime, for files), or undefined if absent. */
  lastUsed(name: string): Promise<number | undefined>;
  /** Sets an entry's last use, in ms since the epoch, as a touch by another process would. */
  setLastUsed(name: string, ms: number): Promise<void>;
  /**
   * Plants an entry of `kind` (Nova's names: `swap_512`, `ephemeral_1_0706d66`; for `resized`, a
   * resized variant of `imageId`'s entry), last used at the clock's now, and returns its name.
   * Called only for the kinds listed in {@link ContractBackend.kinds}.
   */
  plant(kind: Exclude<CacheEntryKind, 'original'>, name: string, imageId: string): Promise<string>;
  /** Removes everything the setup created (temp directories, volume groups). */
  cleanup(): Promise<void>;
}

/** A backend the contract suite runs against: its name, what it keeps, and how to set one up. */
export interface ContractBackend {
  /** Shown in the suite's name, e.g. `ImageManager contract (my-backend)`. */
  readonly name: string;
  /**
   * Entry kinds besides `original` the backend keeps; the tests about the others are registered
   * as skipped.
   */
  readonly kinds: ReadonlySet<CacheEntryKind>;
  /** Whether a fresh cache has no base yet, so that a first pass reports `skipped: 'no-base'`. */
  readonly startsWithoutBase: boolean;
  /** Creates a fresh cache and a manager over it; called before each test. */
  setup(clock: ManualClock, source: MemoryImageSource): Promise<ContractHarness>;
}

/**
 * The test functions the suite registers its tests with; node:test's by default. Any runner with
 * the same shapes (`describe`/`it` of vitest or mocha, with their hooks) works.
 */
export interface ContractTestFunctions {
  /** Declares the suite. */
  readonly describe: (name: string, fn: () => void) => unknown;
  /** Declares one test. */
  readonly it: (name: string, fn: () => Promise<void> | void) => unknown;
  /** Runs before each test: the suite sets up a fresh cache there. */
  readonly beforeEach: (fn: () => Promise<void>) => unknown;
  /** Runs after each test: the suite cleans the cache up there. */
  readonly afterEach: (fn: () => Promise<void>) => unknown;
  /**
   * Declares a test that does not apply to this backend, reported as skipped with `reason`. Without
   * it such tests are left out.
   */
  readonly skip?: ((name: string, reason: string) => unknown) | undefined;
}
