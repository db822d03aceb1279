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
import path from 'node:path';
import { UnsupportedError } from '../errors.js';
import { exitTimeFs } from '../fs/metadata-fs.js';
import { createLogger } from '../log.js';
import { processExists } from '../process-liveness.js';
import { codeOf, identityOf, observeLock } from './lock-observation.js';
import type { LockObservation, LockOps, LockOwner } from './lock-observation.js';
import { SilenceTracker } from './silence-tracker.js';

export { lockOpsOver, observeLock, syncLockOps, threadLockOps } from './lock-observation.js';
export type { LockObservation, LockOps, LockOwner } from './lock-observation.js';
export { SilenceTracker } from './silence-tracker.js';

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
        if (identityOf(exitTimeFs.lstatBigInt(lockPath)) === mine) exitTimeFs.unlink(lockPath);
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
