/**
 * One cross-process lock (a lease): a regular file at the lock path that holds its owner record
 * (host and pid) and whose mtime the holder refreshes four times per `staleMs`. Hosts sharing the
 * lock directory need not agree on the time.
 *
 * The file is written under a temporary name and hard-linked to the lock path: `link` creates the
 * lock atomically, or fails when anything is there, so a lock never exists without its owner
 * record (a holder killed at any point leaves a lock that names it, or none) and is never created
 * over another.
 *
 * Staleness never compares a timestamp with a clock. A waiter keeps, per lock path, the lock's
 * identity as it last saw it (inode, mtime and ctime in ns) and when it first saw that identity by
 * its own monotonic clock; a lock whose identity has not changed for `staleMs` of the waiter's time
 * has stopped being refreshed, and its holder is dead (or stalled past `staleMs`, which no lease
 * can tell from dead). A holder on this host whose pid is gone is dead at once. A mtime a day in
 * the future, or a day in the past, says nothing either way. A directory at a lock path is the
 * lock of an older version (proper-lockfile's layout) and is judged by silence alone.
 *
 * Taking over is race-safe between waiters: the waiter that judged a lock dead creates a takeover
 * token named after the identity it judged (`<lock>.takeover-<identity>-<n>`, an atomic mkdir that
 * exactly one waiter wins), checks the lock still has that identity, and only then moves it aside
 * by rename. Tokens are never removed while their identity is current, so no waiter can mistake a
 * fresh lock for the dead one; a token whose winner died is itself judged by observed silence, and
 * the next generation `n + 1` is created instead.
 *
 * On a full file system (ENOSPC, EDQUOT) the owner record cannot be written: the lock is then an
 * empty file, created and linked all the same (a pass that frees space must be able to lock), and
 * judged by silence alone, like an older version's.
 *
 * Anything else at a lock path (a symlink, a FIFO, a socket, a non-empty regular file that holds
 * no owner record) is no lock: it is moved aside the same race-safe way to `<lock>.planted-<random>`, never
 * followed, never opened but as a regular file or a directory, and reported.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { constants } from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { UnsupportedError } from '../errors.js';
import { createLogger } from '../log.js';
import { processExists } from '../process-liveness.js';

const log = createLogger('lock');

/** Every lock path ends so (`LOCK_PREFIX<name>.lock`); by-products carry a mark right after it. */
const LOCK_END = '.lock';
/** Mark of the tokens that serialise a takeover. */
const TAKEOVER_MARK = `${LOCK_END}.takeover-`;
/** Mark of a taken-over lock on its way out. */
const STALE_MARK = `${LOCK_END}.stale-`;
/** Mark of a lock being created (`<pid>-<random>`), linked to the lock path once written. */
const NEW_MARK = `${LOCK_END}.new-`;
/** Mark of something that was found at a lock path and was no lock. */
const PLANTED_MARK = `${LOCK_END}.planted-`;
/** Token generations tried before a takeover is left for later (each one needs a dead winner). */
const MAX_GENERATIONS = 8;
/** Observations kept per tracker: a bound on memory whatever the number of names. */
const MAX_TRACKED = 4096;
/** Largest owner record read. */
const MAX_RECORD = 512;
const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const FILE_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** Who holds a lock, as its owner record says. */
export interface LockOwner {
  /** The holder's host. */
  readonly host: string;
  /** The holder's process id on that host. */
  readonly pid: number;
  /** Where that pid means something: the kernel's boot id and pid namespace ('' when unknown). */
  readonly pids: string;
}

/**
 * This process's pid space: one kernel boot, one pid namespace. Two machines (or containers) that
 * share a hostname differ here, so a pid is only checked where it means something.
 */
const PID_SPACE = ((): string => {
  try {
    return `${fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()}/${fs.readlinkSync('/proc/self/ns/pid')}`;
  } catch {
    return '';
  }
})();

/** What a lock path holds, as observed. */
export interface LockObservation {
  /** Inode, mtime and ctime in ns: changes on every refresh, and when the lock is replaced. */
  readonly identity: string;
  /** A regular file (this version's lock), a directory (an older version's, or a registration), or anything else. */
  readonly kind: 'file' | 'directory' | 'other';
  /** The owner record of a regular file; null when it holds none. */
  readonly owner: LockOwner | null;
  /** A regular file of no bytes: a lock created on a full file system, without its record. */
  readonly empty: boolean;
  /** Its mtime, ms since the epoch by whichever clock wrote it: shown, never compared with a clock. */
  readonly mtimeMs: number;
}

/** What one open of a lock path sees: its attributes (fresh on NFS: close-to-open) and its first bytes. */
interface Opened {
  readonly stats: fs.BigIntStats;
  readonly text: string;
}

/** The file-system calls of the protocol: synchronous (a spawn's lock) or on the thread pool. */
export interface LockOps {
  lstat(p: string): Promise<fs.BigIntStats>;
  /** Opens without following a link or waiting (a FIFO), stats, reads the first bytes of a file. */
  openStat(p: string, directory: boolean): Promise<Opened>;
  /** Creates `p` (never over anything) holding `data`; false when the file system was full: `p` is then empty. */
  writeNew(p: string, data: string): Promise<boolean>;
  link(from: string, to: string): Promise<void>;
  unlink(p: string): Promise<void>;
  mkdir(p: string): Promise<void>;
  rmdir(p: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  touch(p: string): Promise<void>;
}

/** A synchronous call behind the promise interface: a throw becomes a rejection. */
function syncOp<A extends unknown[], T>(fn: (...args: A) => T): (...args: A) => Promise<T> {
  return (...args) =>
    new Promise((resolve) => {
      resolve(fn(...args));
    });
}

/** Synchronous system calls: a few microseconds each, no thread-pool round trip (see lock-fs.ts). */
export const syncLockOps: LockOps = {
  lstat: syncOp((p: string) => fs.lstatSync(p, { bigint: true })),
  openStat: syncOp((p: string, directory: boolean): Opened => {
    const fd = fs.openSync(p, directory ? DIR_FLAGS : FILE_FLAGS);
    try {
      const stats = fs.fstatSync(fd, { bigint: true });
      if (!stats.isFile()) return { stats, text: '' };
      const buf = Buffer.alloc(MAX_RECORD);
      return { stats, text: buf.toString('utf8', 0, fs.readSync(fd, buf, 0, MAX_RECORD, 0)) };
    } finally {
      fs.closeSync(fd);
    }
  }),
  writeNew: syncOp((p: string, data: string): boolean => {
    const fd = fs.openSync(p, 'wx');
    try {
      fs.writeSync(fd, data);
      return true;
    } catch (err) {
      if (isFull(err)) {
        fs.ftruncateSync(fd, 0);
        return false;
      }
      fs.unlinkSync(p);
      throw err;
    } finally {
      fs.closeSync(fd);
    }
  }),
  link: syncOp((from: string, to: string) => {
    fs.linkSync(from, to);
  }),
  unlink: syncOp((p: string) => {
    fs.unlinkSync(p);
  }),
  mkdir: syncOp((p: string) => {
    fs.mkdirSync(p);
  }),
  rmdir: syncOp((p: string) => {
    fs.rmdirSync(p);
  }),
  rename: syncOp((from: string, to: string) => {
    fs.renameSync(from, to);
  }),
  touch: syncOp((p: string) => {
    const now = new Date();
    fs.utimesSync(p, now, now);
  }),
};

/** The same calls on libuv's thread pool, for batch work holding many locks. */
export const threadLockOps: LockOps = {
  lstat: (p) => fsp.lstat(p, { bigint: true }),
  openStat: async (p, directory) => {
    const handle = await fsp.open(p, directory ? DIR_FLAGS : FILE_FLAGS);
    try {
      const stats = await handle.stat({ bigint: true });
      if (!stats.isFile()) return { stats, text: '' };
      const buf = Buffer.alloc(MAX_RECORD);
      const { bytesRead } = await handle.read(buf, 0, MAX_RECORD, 0);
      return { stats, text: buf.toString('utf8', 0, bytesRead) };
    } finally {
      await handle.close();
    }
  },
  writeNew: async (p, data) => {
    const handle = await fsp.open(p, 'wx');
    try {
      await handle.write(data);
      return true;
    } catch (err) {
      if (isFull(err)) {
        await handle.truncate(0);
        return false;
      }
      await fsp.unlink(p);
      throw err;
    } finally {
      await handle.close();
    }
  },
  link: (from, to) => fsp.link(from, to),
  unlink: (p) => fsp.unlink(p),
  mkdir: async (p) => {
    await fsp.mkdir(p);
  },
  rmdir: (p) => fsp.rmdir(p),
  rename: (from, to) => fsp.rename(from, to),
  touch: (p) => {
    const now = new Date();
    return fsp.utimes(p, now, now);
  },
};

function codeOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

function isFull(err: unknown): boolean {
  const code = codeOf(err);
  return code === 'ENOSPC' || code === 'EDQUOT';
}

function identityOf(st: fs.BigIntStats): string {
  return `${st.ino}-${st.mtimeNs}-${st.ctimeNs}`;
}

function parseOwner(text: string): LockOwner | null {
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== 'object' || value === null) return null;
    const { host, pid, pids } = value as Record<string, unknown>;
    if (typeof host !== 'string' || typeof pid !== 'number') return null;
    return { host, pid, pids: typeof pids === 'string' ? pids : '' };
  } catch {
    return null;
  }
}

/**
 * What is at `p`, never following a link and opening only a regular file or a directory (with
 * `O_NONBLOCK`: a FIFO swapped in meanwhile is not waited on); null when nothing. The open makes an
 * NFS client revalidate the attributes (close-to-open): a cached mtime must not make a live lock
 * look silent.
 */
export async function observeLock(p: string, ops: LockOps = syncLockOps): Promise<LockObservation | null> {
  let st: fs.BigIntStats;
  try {
    st = await ops.lstat(p);
  } catch (err) {
    if (codeOf(err) === 'ENOENT') return null;
    throw err;
  }
  let text = '';
  if (st.isFile() || st.isDirectory()) {
    try {
      const opened = await ops.openStat(p, st.isDirectory());
      // Replaced between the lstat and the open: what the open found stands (judged as it is now).
      st = opened.stats;
      text = opened.text;
    } catch (err) {
      const code = codeOf(err);
      if (code === 'ENOENT') return null;
      // No read permission, or swapped for a link (ELOOP) or a non-directory: the lstat stands.
      if (code !== 'EACCES' && code !== 'EPERM' && code !== 'ELOOP' && code !== 'ENOTDIR') throw err;
    }
  }
  const kind = st.isFile() ? 'file' : st.isDirectory() ? 'directory' : 'other';
  const empty = kind === 'file' && st.size === 0n;
  return { identity: identityOf(st), kind, owner: kind === 'file' ? parseOwner(text) : null, empty, mtimeMs: Number(st.mtimeMs) };
}

/**
 * How long each path has kept one identity, by this process's monotonic clock: the only time
 * staleness is judged by. Bounded: the oldest observations are dropped past 4096 paths (a dropped
 * one only restarts its wait).
 */
export class SilenceTracker {
  readonly #seen = new Map<string, { identity: string; since: number }>();
  readonly #now: () => number;

  /** @param now - a monotonic clock, ms; default `performance.now` */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** How long `p` has been seen with `identity`, ms: 0 when it is new or changed since last seen. */
  silentFor(p: string, identity: string): number {
    const now = this.#now();
    const seen = this.#seen.get(p);
    if (seen?.identity === identity) return now - seen.since;
    this.#seen.delete(p);
    this.#seen.set(p, { identity, since: now });
    if (this.#seen.size > MAX_TRACKED) {
      const oldest = this.#seen.keys().next().value;
      if (oldest !== undefined) this.#seen.delete(oldest);
    }
    return 0;
  }

  /** Forgets `p` (it was taken, or is gone). */
  forget(p: string): void {
    this.#seen.delete(p);
  }

  /** Forgets every path directly under `dir` whose name is not in `present`. */
  retain(dir: string, present: ReadonlySet<string>): void {
    for (const p of this.#seen.keys()) {
      if (path.dirname(p) === dir && !present.has(path.basename(p))) this.#seen.delete(p);
    }
  }
}

/** A lock this process holds. */
export interface HeldLease {
  /** Stops refreshing and removes the lock, unless another process has taken it over meanwhile. */
  release(): Promise<void>;
}

/** Settings of {@link Leases}. */
export interface LeasesOptions {
  /** A lock not refreshed for this long, by a waiter's own clock, is taken over, ms. */
  readonly staleMs: number;
  /** This host's name in owner records. */
  readonly host: string;
  /** Told of each object that was found at a lock path and was no lock, once moved aside. */
  readonly onMovedAside?: ((lockPath: string, movedTo: string, why: string) => void) | undefined;
}

/** Held locks by path, removed (if still ours) when the process exits normally. */
const heldAtExit = new Map<string, () => void>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const remove of heldAtExit.values()) remove();
  });
}

/** The lease protocol with its observations: one per lock manager. */
export class Leases {
  /** Observations of the locks this process waits for or sweeps. */
  readonly tracker = new SilenceTracker();
  readonly #staleMs: number;
  readonly #host: string;
  readonly #record: string;
  readonly #onMovedAside: (lockPath: string, movedTo: string, why: string) => void;

  /** @param options - staleness and this host's name */
  constructor(options: LeasesOptions) {
    this.#staleMs = options.staleMs;
    this.#host = options.host;
    this.#record = JSON.stringify({ host: options.host, pid: process.pid, pids: PID_SPACE });
    this.#onMovedAside = options.onMovedAside ?? (() => undefined);
  }

  /**
   * One attempt at the lock `lockPath`: takes it when free, or when its holder is dead (a gone pid
   * on this host, or no refresh seen for `staleMs`), or when what is there is no lock.
   *
   * @returns the held lock, or null when a live holder has it
   * @throws the file-system error of the lock directory itself (`ENOENT` when it was removed)
   */
  async tryAcquire(lockPath: string, ops: LockOps): Promise<HeldLease | null> {
    // Each round either takes the lock, or clears one dead or planted object; a few are plenty.
    for (let round = 0; round < 3; round++) {
      if (await this.#create(lockPath, ops)) {
        this.tracker.forget(lockPath);
        return await this.#hold(lockPath, ops);
      }
      const seen = await observeLock(lockPath, ops);
      if (seen === null) continue;
      const why = this.#deadReason(lockPath, seen);
      if (why === null) return null;
      if (!(await this.#takeOver(lockPath, seen, why, ops))) return null;
    }
    return null;
  }

  /**
   * Clears what crashes left next to the locks in `lockDir`: tokens of identities no lock has any
   * more, taken-over locks not yet removed, and locks a dead process was creating.
   */
  async sweep(lockDir: string, entries: readonly string[], ops: LockOps): Promise<void> {
    for (const entry of entries) {
      const p = path.join(lockDir, entry);
      try {
        if (entry.includes(STALE_MARK)) {
          await removeLock(p, ops);
        } else if (entry.includes(NEW_MARK)) {
          await this.#sweepNew(p, ops);
        } else if (entry.includes(TAKEOVER_MARK)) {
          const mark = entry.lastIndexOf(TAKEOVER_MARK);
          const identity = entry.slice(mark + TAKEOVER_MARK.length).replace(/-\d+$/, '');
          const current = await observeLock(path.join(lockDir, entry.slice(0, mark + LOCK_END.length)), ops);
          // A token of the identity the lock has now may be a takeover in progress: kept.
          if (current?.identity !== identity) await removeLock(p, ops);
        }
      } catch (err) {
        // Something else under a by-product's name (planted, or a non-empty directory): left, reported.
        log('could not clear %s: %O', p, err);
      }
    }
  }

  /** Whether a lock is by-product of the protocol (a token, a lock being created or on its way out). */
  static isByProduct(entry: string): boolean {
    return entry.includes(TAKEOVER_MARK) || entry.includes(STALE_MARK) || entry.includes(NEW_MARK);
  }

  /** Creates the lock with its owner record in one step; false when something is already there. */
  async #create(lockPath: string, ops: LockOps): Promise<boolean> {
    const fresh = `${lockPath}${NEW_MARK.slice(LOCK_END.length)}${process.pid}-${randomBytes(6).toString('hex')}`;
    if (!(await ops.writeNew(fresh, this.#record))) {
      log('%s: the file system is full, so the lock holds no owner record (judged by silence alone)', lockPath);
    }
    try {
      await ops.link(fresh, lockPath);
      return true;
    } catch (err) {
      const code = codeOf(err);
      // ENOENT: our file was swept as a dead creator's (or the directory went): looked at again.
      if (code === 'EEXIST' || code === 'ENOENT') return false;
      if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS') {
        throw new UnsupportedError(
          `Cross-process locks in ${path.dirname(lockPath)}`,
          `its file system refuses hard links (${code}); put the lock directory on one that has them (local file systems, NFS, CephFS do).`,
        );
      }
      throw err;
    } finally {
      await ops.unlink(fresh).catch((err: unknown) => {
        log('could not remove %s: %O', fresh, err);
      });
    }
  }

  /**
   * A lock being created, left by a creator killed before it linked it: removed once its creator is
   * gone (its record, or when it has none its name, names a pid gone here) or it is seen unchanged
   * for staleMs. A live creator whose file is removed by mistake only tries again.
   */
  async #sweepNew(p: string, ops: LockOps): Promise<void> {
    const seen = await observeLock(p, ops);
    if (seen === null) return;
    const { owner } = seen;
    const namedPid = Number(/(\d+)-[0-9a-f]+$/.exec(p)?.[1]);
    const gone = owner === null ? !processExists(namedPid) : this.#samePidSpace(owner) && !processExists(owner.pid);
    if (!gone && this.tracker.silentFor(p, seen.identity) < this.#staleMs) return;
    this.tracker.forget(p);
    await removeLock(p, ops);
  }

  /** Why the lock seen at `lockPath` is dead, or null when its holder may be alive. */
  #deadReason(lockPath: string, seen: LockObservation): string | null {
    if (seen.kind === 'other') return 'not a regular file nor a directory';
    // A lock is linked into place with its record written, or empty on a full file system: a file
    // with anything else in it was never a lock.
    if (seen.kind === 'file' && seen.owner === null && !seen.empty) return 'a regular file without an owner record';
    const owner = seen.owner;
    if (owner !== null && this.#samePidSpace(owner) && !processExists(owner.pid)) return `its holder, pid ${owner.pid} of this host, is gone`;
    const silentMs = this.tracker.silentFor(lockPath, seen.identity);
    return silentMs >= this.#staleMs ? `not refreshed for ${Math.round(silentMs)} ms` : null;
  }

  /** Whether `owner`'s pid can be checked here: same host name and, where known, same boot and pid namespace. */
  #samePidSpace(owner: LockOwner): boolean {
    return owner.host === this.#host && owner.pids === PID_SPACE;
  }

  /**
   * Moves the object judged dead out of the way, if this waiter wins the takeover of exactly the
   * identity it judged.
   *
   * @returns false when another waiter is taking it over, or the lock changed meanwhile
   */
  async #takeOver(lockPath: string, judged: LockObservation, why: string, ops: LockOps): Promise<boolean> {
    const token = (n: number): string => `${lockPath}${TAKEOVER_MARK.slice(LOCK_END.length)}${judged.identity}-${n}`;
    let won = -1;
    for (let n = 0; n < MAX_GENERATIONS && won < 0; n++) {
      try {
        await ops.mkdir(token(n));
        won = n;
      } catch (err) {
        if (codeOf(err) !== 'EEXIST') throw err;
        // Another waiter's takeover of the same identity: in progress unless silent (its winner died).
        const other = await observeLock(token(n), ops);
        if (other !== null && this.tracker.silentFor(token(n), other.identity) < this.#staleMs) {
          log('another waiter is taking over the lock %s', lockPath);
          return false;
        }
      }
    }
    if (won < 0) return false;
    try {
      const now = await observeLock(lockPath, ops);
      if (now?.identity !== judged.identity) {
        log('the lock %s changed before we could take it over', lockPath);
        return false;
      }
      const planted = judged.kind === 'other' || (judged.kind === 'file' && judged.owner === null);
      const aside = `${lockPath}${(planted ? PLANTED_MARK : STALE_MARK).slice(LOCK_END.length)}${randomBytes(6).toString('hex')}`;
      await ops.rename(lockPath, aside);
      this.tracker.forget(lockPath);
      if (planted) {
        // Kept for whoever planted it to see.
        this.#onMovedAside(lockPath, aside, why);
      } else {
        log('took over the lock %s: %s', lockPath, why);
        await removeLock(aside, ops).catch((err: unknown) => {
          log('the taken-over lock %s was left as %s: %O', lockPath, aside, err);
        });
      }
      return true;
    } finally {
      for (let n = won; n >= 0; n--) {
        this.tracker.forget(token(n));
        await ops.rmdir(token(n)).catch(() => undefined);
      }
    }
  }

  async #hold(lockPath: string, ops: LockOps): Promise<HeldLease> {
    const current = async (): Promise<string | undefined> => {
      try {
        return identityOf(await ops.lstat(lockPath));
      } catch {
        return undefined;
      }
    };
    // The lock as we last left it (created, refreshed): anything else at the path means another
    // process took it over, even one whose new file reused the inode.
    let mine = await current();
    installExitHook();
    heldAtExit.set(lockPath, () => {
      try {
        if (identityOf(fs.lstatSync(lockPath, { bigint: true })) === mine) fs.unlinkSync(lockPath);
      } catch {
        // Gone already: nothing of ours to remove.
      }
    });
    let released = false;
    let timer: NodeJS.Timeout | undefined;
    const refresh = async (): Promise<void> => {
      if (released) return;
      if ((await current()) !== mine) {
        log('lock %s compromised: taken over after our refresh stalled past the stale time', lockPath);
        heldAtExit.delete(lockPath);
        return;
      }
      try {
        await ops.touch(lockPath);
        mine = await current();
      } catch (err) {
        log('refreshing lock %s failed: %O', lockPath, err);
      }
      schedule();
    };
    const schedule = (): void => {
      if (released) return;
      // Four refreshes per staleMs: a holder's event loop may lag a while before a waiter sees silence.
      timer = setTimeout(() => void refresh(), Math.max(250, Math.floor(this.#staleMs / 4)));
      timer.unref();
    };
    schedule();
    return {
      release: async () => {
        if (released) return;
        released = true;
        clearTimeout(timer);
        heldAtExit.delete(lockPath);
        if ((await current()) !== mine) {
          log('lock %s was taken over while we held it: left to its new holder', lockPath);
          return;
        }
        await ops.unlink(lockPath).catch((err: unknown) => {
          if (codeOf(err) !== 'ENOENT') throw err;
        });
      },
    };
  }
}

/** Removes a lock or a by-product: a file, or an (empty) directory; never through a link. */
async function removeLock(p: string, ops: LockOps): Promise<void> {
  let st: fs.BigIntStats;
  try {
    st = await ops.lstat(p);
  } catch (err) {
    if (codeOf(err) === 'ENOENT') return;
    throw err;
  }
  await (st.isDirectory() ? ops.rmdir(p) : ops.unlink(p)).catch((err: unknown) => {
    if (codeOf(err) !== 'ENOENT') throw err;
  });
}
