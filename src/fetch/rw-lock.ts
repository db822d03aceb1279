/**
 * A readers/writer lock across processes, over files: many holders share it, or one holds it
 * exclusively (nova-powervm's `cache_lock`: spawns read, the cleanup pass writes; Nova's is
 * in-process only, this one spans every process using the lock directory).
 *
 * Layout, in the {@link LockManager}'s lock directory:
 * - a gate: an ordinary named lock of the lock manager (in-process mutex + lease file). A
 *   reader holds it only while registering; a writer holds it for its whole turn, so no reader
 *   enters while a writer waits or works (writers are not starved by a stream of readers);
 * - `<name>.readers/`: one registration per reader, a proper-lockfile lock named
 *   `<host>~<pid>~<random>` whose mtime the holder refreshes.
 *
 * A writer, holding the gate, waits until no live registration remains. A registration is dead,
 * and is removed, when its process is gone (same host: the pid no longer exists, so a SIGKILLed
 * reader is recovered at once) or when the writer has seen it unchanged (not refreshed) for
 * `staleMs` of its own monotonic time (another host, or a pid reused by an unrelated process):
 * never by comparing the registration's mtime with this host's clock, which another host's need
 * not match. A killed writer's gate goes stale the same way as every lock of the lock manager.
 *
 * Not re-entrant: a holder asking again for the same lock (shared inside exclusive, or shared
 * inside shared while a writer waits) deadlocks until its timeout.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rmdir, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { abortableSleep, throwIfAborted } from '../abort.js';
import { LockTimeoutError } from '../errors.js';
import { createLogger } from '../log.js';
import { processExists } from '../process-liveness.js';
import { SilenceTracker, observeLock } from './lease.js';
import { lockFsOver } from './lock-fs.js';
import { LOCK_PREFIX } from './lock-manager.js';
import type { AcquireOptions, HeldLock, LockManager } from './lock-manager.js';

const log = createLogger('lock');

/** Options of {@link ReadWriteLock}. */
export interface ReadWriteLockOptions {
  /** Supplies the gate lock and the lock directory; without a lock directory the lock is in-process only. */
  readonly locks: LockManager;
  /** The lock's name (safe as a file name). */
  readonly name: string;
  /** A registration seen unchanged (not refreshed) for this long, by the writer's monotonic clock, is dead, ms (min 2000). Default 10000. */
  readonly staleMs?: number | undefined;
  /** This host's name in registrations. Default `os.hostname()`. */
  readonly hostname?: string | undefined;
}

/** One reader registration, as a writer sees it. */
export interface ReaderRegistration {
  /** The reader's host. */
  readonly host: string;
  /** The reader's process id. */
  readonly pid: number;
  /** Its mtime, ms since the epoch by the reader's clock (only compared with itself). */
  readonly refreshedMs: number;
}

/** Suffix proper-lockfile gives a lock's directory. */
const LOCK_SUFFIX = '.lock';

/** A readers/writer lock shared by every process using the same lock directory. */
export class ReadWriteLock {
  /** The lock's name. */
  readonly name: string;
  /** The directory of reader registrations, or undefined when the lock is in-process only. */
  readonly readersDir: string | undefined;
  readonly #locks: LockManager;
  readonly #staleMs: number;
  readonly #host: string;
  readonly #tracker = new SilenceTracker();
  #localReaders = 0;

  /** @param options - the lock manager, the name and the staleness */
  constructor(options: ReadWriteLockOptions) {
    this.name = options.name;
    this.#locks = options.locks;
    this.#staleMs = Math.max(options.staleMs ?? 10_000, 2000);
    this.#host = options.hostname ?? os.hostname();
    this.readersDir =
      options.locks.lockDir === undefined ? undefined : path.join(options.locks.lockDir, `${LOCK_PREFIX}${options.name}.readers`);
  }

  /**
   * Takes the lock shared: waits while a writer holds it or waits for it.
   *
   * @throws `LockTimeoutError` after the timeout; `AbortedError` when the signal aborts
   */
  async acquireShared(options: AcquireOptions = {}): Promise<HeldLock> {
    const gate = await this.#locks.acquire(this.#gateName, options);
    let unregister: () => Promise<void>;
    try {
      unregister = await this.#register();
    } finally {
      await gate.release();
    }
    let released = false;
    const release = async (): Promise<void> => {
      if (released) return;
      released = true;
      try {
        await unregister();
      } catch (err) {
        log('releasing shared %s failed: %O', this.name, err);
      }
    };
    return { name: this.name, release, [Symbol.asyncDispose]: release };
  }

  /**
   * Takes the lock exclusively: closes the gate to new readers, then waits until every live reader
   * has released (dead ones are removed).
   *
   * @throws `LockTimeoutError` after the timeout; `AbortedError` when the signal aborts
   */
  async acquireExclusive(options: AcquireOptions = {}): Promise<HeldLock> {
    const started = Date.now();
    const gate = await this.#locks.acquire(this.#gateName, options);
    try {
      const timeoutMs = options.timeoutMs ?? this.#locks.defaultTimeoutMs;
      let delay = 10;
      for (;;) {
        throwIfAborted(options.signal, `Waiting for lock ${this.name}`, options.imageId);
        if ((await this.readers()).length === 0) break;
        const waited = Date.now() - started;
        if (waited >= timeoutMs) throw new LockTimeoutError(this.name, waited, options.imageId);
        await abortableSleep(Math.min(delay, timeoutMs - waited), options.signal, `Waiting for lock ${this.name}`);
        delay = Math.min(delay * 2, 250);
      }
    } catch (err) {
      await gate.release();
      throw err;
    }
    return { name: this.name, release: () => gate.release(), [Symbol.asyncDispose]: () => gate.release() };
  }

  /** Runs `fn` holding the lock shared. */
  withShared<T>(fn: () => Promise<T>, options: AcquireOptions = {}): Promise<T> {
    return holding(this.acquireShared(options), fn);
  }

  /** Runs `fn` holding the lock exclusively. */
  withExclusive<T>(fn: () => Promise<T>, options: AcquireOptions = {}): Promise<T> {
    return holding(this.acquireExclusive(options), fn);
  }

  /**
   * The live reader registrations; dead ones (gone process on this host, or seen unrefreshed for
   * `staleMs` across calls on this lock) and anything planted among them are removed on the way.
   * In-process only: one entry per local reader.
   */
  async readers(): Promise<ReaderRegistration[]> {
    if (this.readersDir === undefined) {
      return Array.from({ length: this.#localReaders }, () => ({ host: this.#host, pid: process.pid, refreshedMs: Date.now() }));
    }
    let names: string[];
    try {
      names = await readdir(this.readersDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const live: ReaderRegistration[] = [];
    this.#tracker.retain(this.readersDir, new Set(names));
    for (const name of names) {
      if (!name.endsWith(LOCK_SUFFIX)) continue;
      const [host, pidText] = name.slice(0, -LOCK_SUFFIX.length).split('~');
      const pid = Number(pidText);
      const entry = path.join(this.readersDir, name);
      const seen = await observeLock(entry);
      if (seen === null) continue;
      if (seen.kind !== 'directory') {
        // Planted (a file, a link, a FIFO): no reader. Unlinked, never opened nor followed.
        log('removing %s of %s: not a registration', name, this.name);
        await unlink(entry).catch((err: unknown) => {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        });
        continue;
      }
      const decodedHost = host === undefined ? '' : safeDecode(host);
      const stale = this.#tracker.silentFor(entry, seen.identity) >= this.#staleMs;
      const gone = decodedHost === this.#host && !processExists(pid);
      if (stale || gone) {
        log('removing dead reader %s of %s (%s)', name, this.name, gone ? 'process gone' : 'not refreshed');
        this.#tracker.forget(entry);
        await rmdir(entry).catch((err: unknown) => {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        });
        continue;
      }
      live.push({ host: decodedHost, pid, refreshedMs: seen.mtimeMs });
    }
    return live;
  }

  get #gateName(): string {
    return `${this.name}.gate`;
  }

  async #register(): Promise<() => Promise<void>> {
    this.#localReaders += 1;
    const dir = this.readersDir;
    if (dir === undefined) {
      return () => {
        this.#localReaders -= 1;
        return Promise.resolve();
      };
    }
    try {
      await mkdir(dir, { recursive: true });
      const id = `${encodeURIComponent(this.#host)}~${process.pid}~${randomBytes(6).toString('hex')}`;
      const unlock = await lockfile.lock(path.join(dir, id), {
        realpath: false,
        stale: this.#staleMs,
        retries: 0,
        fs: lockFsOver(this.#locks.metadataFs),
        onCompromised: (err) => {
          // A stalled event loop let the registration go stale and a writer removed it: report,
          // do not crash the host process. Per-entry locks still guard every removal.
          log('reader registration of %s compromised: %O', this.name, err);
        },
      });
      return async () => {
        this.#localReaders -= 1;
        await unlock();
      };
    } catch (err) {
      this.#localReaders -= 1;
      throw err;
    }
  }
}

async function holding<T>(acquired: Promise<HeldLock>, fn: () => Promise<T>): Promise<T> {
  const held = await acquired;
  try {
    return await fn();
  } finally {
    await held.release();
  }
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
