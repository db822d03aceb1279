/**
 * Named locks: an in-process mutex per name, and, when a lock directory is configured, a
 * cross-process lock in that directory. On shared storage the lock directory is
 * `<instancesPath>/locks`, so every host sharing the cache shares the locks (Nova's
 * `nova-<name>` external locks).
 *
 * A cross-process lock is a file holding its owner record, whose mtime the holder refreshes,
 * judged stale without trusting any clock but the waiter's monotonic one: see `lease.ts`.
 * Releasing removes the file, so lock files never pile up (Nova bug 1256306) and a lock is never
 * unlinked while another process holds it (Nova gap E).
 *
 * @module
 */
import { mkdir, readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { abortableSleep, throwIfAborted } from '../abort.js';
import { AbortedError, LockTimeoutError } from '../errors.js';
import { createLogger } from '../log.js';
import { moveAside, unusableDirectory } from '../regular-file.js';
import { MAX_TIMER_MS, setLongTimeout } from '../timer.js';
import type { LongTimer } from '../timer.js';
import { metadataFsFor } from '../fs/choose-metadata-fs.js';
import type { MetadataIo } from '../fs/choose-metadata-fs.js';
import { syncMetadataFs } from '../fs/metadata-fs.js';
import type { MetadataFs } from '../fs/metadata-fs.js';
import { Leases, lockOpsOver, threadLockOps } from './lease.js';
import type { LockOps } from './lease.js';

const log = createLogger('lock');

/** Prefix of lock file names, like Nova's `nova-`. */
export const LOCK_PREFIX = 'virt-imagecache-';

/** Options of {@link LockManager}. */
export interface LockManagerOptions {
  /** Directory for cross-process locks; omit for in-process locking only. */
  readonly lockDir?: string | undefined;
  /**
   * A cross-process lock seen unchanged (not refreshed) for this long, by the waiter's own
   * monotonic clock, is taken over, ms (from 2000 to 2^31-1). Default 10000. No host's wall clock is compared
   * with another's: skewed clocks neither steal a live lock nor keep a dead one.
   */
  readonly staleMs?: number | undefined;
  /** This host's name in lock owner records (a holder on this host whose pid is gone is dead at once). Default `os.hostname()`. */
  readonly hostname?: string | undefined;
  /** Default wait for a lock before `LockTimeoutError`, ms. Default 1800000. */
  readonly timeoutMs?: number | undefined;
  /**
   * How the lock directory's file-system calls are made (see `fs/choose-metadata-fs.ts`): `auto`
   * (default) synchronously on a local file system and on the thread pool on a network one.
   */
  readonly metadataIo?: MetadataIo | undefined;
}

/** Options of one acquisition. */
export interface AcquireOptions {
  /** Stops waiting; rejects with `AbortedError`. */
  readonly signal?: AbortSignal | undefined;
  /** Overrides the manager's wait limit, ms. */
  readonly timeoutMs?: number | undefined;
  /** The image concerned, for error messages. */
  readonly imageId?: string | undefined;
  /**
   * Make the lock's file-system calls on libuv's thread pool instead of synchronously. Right for
   * batch work holding many locks concurrently (a pass's removals): the mkdir and rmdir run on
   * other cores while the event loop goes on. Default false: a single acquisition (a spawn) is
   * faster with synchronous calls, which the lock directory gets unless it is on a network file
   * system (`metadataIo`).
   */
  readonly offThread?: boolean | undefined;
}

/** A held lock. Release it exactly once (or use `await using`). */
export interface HeldLock extends AsyncDisposable {
  /** The lock's name. */
  readonly name: string;
  /** Releases the lock; later calls do nothing. */
  release(): Promise<void>;
}

/** In-process mutexes and optional cross-process file locks, by name. */
export class LockManager {
  /** Directory of cross-process locks, or undefined for in-process only. */
  readonly lockDir: string | undefined;
  /** The lock directory's file-system calls (synchronous when there is none). */
  readonly metadataFs: MetadataFs;
  readonly #ops: LockOps;
  readonly #staleMs: number;
  readonly #timeoutMs: number;
  readonly #tails = new Map<string, Promise<void>>();
  readonly #leases: Leases;
  #lockDirReady = false;

  /** @param options - lock directory and timings */
  constructor(options: LockManagerOptions = {}) {
    this.lockDir = options.lockDir;
    this.metadataFs = options.lockDir === undefined ? syncMetadataFs : metadataFsFor(options.lockDir, options.metadataIo);
    this.#ops = lockOpsOver(this.metadataFs);
    // Capped like every timer: a larger staleness would fire at once in node's timers.
    this.#staleMs = Math.min(Math.max(options.staleMs ?? 10_000, 2000), MAX_TIMER_MS);
    this.#timeoutMs = options.timeoutMs ?? 1_800_000;
    this.#leases = new Leases({
      staleMs: this.#staleMs,
      host: options.hostname ?? os.hostname(),
      onMovedAside: (lockPath, movedTo, why) => {
        log('moved aside %s: found at the lock path %s, and no lock (%s)', movedTo, lockPath, why);
      },
    });
  }

  /** How long an acquisition waits by default before `LockTimeoutError`, ms. */
  get defaultTimeoutMs(): number {
    return this.#timeoutMs;
  }

  /** The lock path of `name` (a file that exists while the lock is held, see `lease.ts`). */
  lockPathFor(name: string): string | undefined {
    return this.lockDir === undefined ? undefined : path.join(this.lockDir, `${LOCK_PREFIX}${name}.lock`);
  }

  /**
   * Acquires the lock `name`: first this process's mutex, then the cross-process lock.
   *
   * @throws `AbortedError` when the signal aborts while waiting; `LockTimeoutError` after the timeout
   */
  async acquire(name: string, options: AcquireOptions = {}): Promise<HeldLock> {
    const started = Date.now();
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const releaseLocal = await this.#acquireLocal(name, timeoutMs, options);
    let releaseFile: (() => Promise<void>) | undefined;
    try {
      releaseFile = await this.#acquireFile(name, started, timeoutMs, options);
    } catch (err) {
      releaseLocal();
      throw err;
    }
    let released = false;
    const release = async (): Promise<void> => {
      if (released) return;
      released = true;
      try {
        await releaseFile?.();
      } catch (err) {
        log('releasing lock %s failed: %O', name, err);
      } finally {
        releaseLocal();
      }
    };
    return { name, release, [Symbol.asyncDispose]: release };
  }

  /**
   * Removes the locks of holders that died: the locks of names nobody asks for again,
   * such as an entry a killed pass had just removed, would otherwise stay forever (Nova bug
   * 1256306). A lock of a gone pid on this host goes at once; any other is judged by observed
   * silence, so it goes at the first call at least `staleMs` after this manager first saw it
   * unchanged (passes run minutes apart). Each one is taken over and released the ordinary way, so
   * a lock that is live, or that another process takes first, is left alone. What a takeover
   * interrupted by a crash left is cleared too, and anything planted at a lock path moved aside.
   *
   * @returns the names whose stale lock was removed
   */
  async removeStaleLocks(): Promise<string[]> {
    if (this.lockDir === undefined) return [];
    let entries: string[];
    try {
      entries = await readdir(this.lockDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    this.#leases.tracker.retain(this.lockDir, new Set(entries));
    await this.#leases.sweep(this.lockDir, entries.filter((entry) => Leases.isByProduct(entry)), threadLockOps);
    const removed: string[] = [];
    for (const entry of entries) {
      if (!entry.startsWith(LOCK_PREFIX) || !entry.endsWith('.lock')) continue;
      const name = entry.slice(LOCK_PREFIX.length, -'.lock'.length);
      try {
        const lock = await this.acquire(name, { timeoutMs: 0, offThread: true });
        await lock.release();
        removed.push(name);
        log('removed the stale lock %s of a dead holder', name);
      } catch (err) {
        // Live, or gone meanwhile: either way not ours to remove.
        if (!(err instanceof LockTimeoutError) && (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    return removed;
  }

  /** Runs `fn` while holding the lock `name`. */
  async withLock<T>(name: string, fn: () => Promise<T>, options: AcquireOptions = {}): Promise<T> {
    const lock = await this.acquire(name, options);
    try {
      return await fn();
    } finally {
      await lock.release();
    }
  }

  async #acquireLocal(
    name: string,
    timeoutMs: number,
    options: AcquireOptions,
  ): Promise<() => void> {
    const { signal } = options;
    throwIfAborted(signal, `Waiting for lock ${name}`);
    const previous = this.#tails.get(name) ?? Promise.resolve();
    let releaseThis!: () => void;
    const mine = new Promise<void>((resolve) => {
      releaseThis = resolve;
    });
    const tail = previous.then(() => mine);
    this.#tails.set(name, tail);
    const release = (): void => {
      releaseThis();
      if (this.#tails.get(name) === tail) this.#tails.delete(name);
    };
    const started = Date.now();
    let timer: LongTimer | undefined;
    let onAbort: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        timer = setLongTimeout(() => {
          reject(new LockTimeoutError(name, Date.now() - started, options.imageId));
        }, timeoutMs);
        if (signal !== undefined) {
          onAbort = (): void => {
            reject(new AbortedError(`Waiting for lock ${name}`, options.imageId, signal.reason));
          };
          signal.addEventListener('abort', onAbort, { once: true });
        }
        void previous.then(resolve);
      });
    } catch (err) {
      // Keep the queue order: our turn is passed on as soon as it comes, and not before (releasing
      // now would forget the queue while the holder ahead still holds the lock).
      void previous.then(release);
      throw err;
    } finally {
      timer?.clear();
      if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
    }
    return release;
  }

  async #acquireFile(
    name: string,
    started: number,
    timeoutMs: number,
    options: AcquireOptions,
  ): Promise<(() => Promise<void>) | undefined> {
    const lockPath = this.lockPathFor(name);
    if (lockPath === undefined || this.lockDir === undefined) return undefined;
    if (!this.#lockDirReady) {
      await this.#makeLockDir();
      this.#lockDirReady = true;
    }
    const ops = options.offThread === true ? threadLockOps : this.#ops;
    let delay = 25;
    let recreated = false;
    for (;;) {
      throwIfAborted(options.signal, `Waiting for lock ${name}`, options.imageId);
      try {
        const held = await this.#leases.tryAcquire(lockPath, ops);
        if (held !== null) return () => held.release();
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if ((code === 'ENOENT' || code === 'ENOTDIR') && !recreated) {
          // The lock directory was removed since we created it (an operator cleaning up), or
          // replaced by something else: make it again.
          recreated = true;
          await this.#makeLockDir();
          continue;
        }
        throw err;
      }
      const waited = Date.now() - started;
      if (waited >= timeoutMs) throw new LockTimeoutError(name, waited, options.imageId);
      await abortableSleep(Math.min(delay, timeoutMs - waited), options.signal, `Waiting for lock ${name}`);
      delay = Math.min(delay * 2, 500);
    }
  }

  /**
   * Creates the lock directory. Anything else at its name (a file, a link that does not resolve to
   * a directory) is moved aside the way every planted object is (`<dir>.refused-<random>`, a name
   * no pass reads as an instance directory), and the directory made.
   */
  async #makeLockDir(): Promise<void> {
    const dir = this.lockDir;
    if (dir === undefined) return;
    try {
      await mkdir(dir, { recursive: true });
      return;
    } catch (err) {
      if (unusableDirectory(dir, 'the lock directory', err) === null) throw err;
    }
    const aside = moveAside(dir);
    log('moved aside %s: found at the lock directory %s, and not a directory', aside, dir);
    await mkdir(dir, { recursive: true });
  }

}
