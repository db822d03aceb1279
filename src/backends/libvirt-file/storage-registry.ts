/**
 * The shared-storage registry (Nova's `nova/virt/storage_users.py`): every host whose instances
 * live under one instances path records, at each pass, that it uses that storage; a pass then
 * protects the instances of every host seen within the window, not only its own (Nova's
 * "Disappearing Images" of shared `_base` directories: docs/nova-parity.md, bug 1).
 *
 * The file is Nova's `<instancesPath>/compute_nodes`, `{"<host>": <epoch seconds>}`, so Nova
 * hosts and hosts using this library can share one instances path. Three things differ from Nova:
 * the file is replaced atomically instead of rewritten in place (a crash or a racing host could
 * leave half a file: Nova bug 1194696); a corrupt file is reported as such instead of being read
 * as `{}`, because an empty user list lets a pass delete the bases of every other host
 * (docs/nova-parity.md, bug 3); and the 24 h window is configurable. Anything but a regular file
 * at the name (a link, a FIFO that would block the read, a directory) is moved aside unread and
 * counts as corrupt.
 *
 * The rule a pass follows on shared storage (pinned by test/reliability/shared-storage.test.ts):
 * a host's instance records protect every base they reference (image, kernel, ramdisk, swap,
 * ephemeral) for as long as the host is registered, that is for `storageUsersWindowSeconds`
 * (default 86400) after it last registered: at a pass, at a spawn (at most every quarter of the
 * window), or through `registerStorageUse()`. Whatever the registry says, a base that backs an
 * existing disk anywhere under the instances path is never removed. So when a host stops, the
 * bases its overlays are built on stay as long as the overlays exist, while the bases only its
 * records reference (kernels, ramdisks, bases of raw copies) stay while it is registered: size
 * the window above the longest outage a host may have.
 *
 * @module
 */
import { readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../../clock.js';
import { DiskFullError, InvalidConfigError } from '../../errors.js';
import type { LockManager } from '../../fetch/lock-manager.js';
import { writeFileAtomically } from '../../fetch/atomic-file.js';
import { makeDirectory } from '../../fetch/durable.js';
import { mapWriteError } from '../../fetch/staging.js';
import { createLogger } from '../../log.js';
import { isNotRegularFile, moveAside, readRegularFile } from '../../regular-file.js';

const log = createLogger('storage-registry');

/** The registry's file name under the instances path (Nova's). */
export const STORAGE_REGISTRY_FILE = 'compute_nodes';

/**
 * The lock guarding the registry. The lock manager adds its own prefix; Nova's lock is
 * `nova-storage-registry-lock`, so Nova hosts and ours do not exclude each other. That is
 * tolerable only because our writes are atomic: a Nova host can still lose our update (or we
 * its) in a race, and the next pass writes it again.
 */
export const STORAGE_REGISTRY_LOCK = 'storage-registry-lock';

/** Nova's hard-coded window (`TWENTY_FOUR_HOURS`): hosts seen this recently are storage users. */
export const DEFAULT_STORAGE_USERS_WINDOW_SECONDS = 86400;

/** Options of {@link StorageRegistry}. */
export interface StorageRegistryOptions {
  /** The shared instances path; the registry file is `<instancesPath>/compute_nodes`. */
  readonly instancesPath: string;
  /** Locks shared by every host on this storage (lock directory under the instances path). */
  readonly locks: LockManager;
  /** Time source of the registration timestamps and of the window. */
  readonly clock: Clock;
  /**
   * A host registered less than this many seconds ago is a storage user (option name
   * `storageUsersWindowSeconds`). Integer ≥ 1. Default 86400, Nova's fixed value. Keep it well
   * above every host's pass interval, or a host whose pass is late drops out and stops
   * protecting its instances' bases.
   */
  readonly windowSeconds?: number | undefined;
}

/** Options of one registry operation. */
export interface RegistryCallOptions {
  /** Stops waiting for the registry lock. */
  readonly signal?: AbortSignal | undefined;
  /** Overrides the lock manager's wait limit for the registry lock, ms. */
  readonly timeoutMs?: number | undefined;
}

/** The result of {@link StorageRegistry.users}. */
export interface StorageUsers {
  /**
   * Hosts registered within the window, sorted. When {@link StorageUsers.corrupt}: empty from
   * {@link StorageRegistry.users}, only the registering host from
   * {@link StorageRegistry.registerAndList}.
   */
  readonly hosts: readonly string[];
  /**
   * True when the file exists but is not a JSON object. Nobody can tell which hosts use the
   * storage then, so callers must not remove anything until a register has rewritten it.
   */
  readonly corrupt: boolean;
  /**
   * Hosts whose entry is not a finite number, sorted. They are left out of
   * {@link StorageUsers.hosts}; their instances are therefore not protected, so a caller may
   * prefer to suspend removals while this is not empty.
   */
  readonly invalid: readonly string[];
}

/** What a read of the file found. */
interface RegistryContents {
  /** Every entry as stored, valid or not (kept on rewrite: entries are never deleted). */
  readonly raw: Map<string, unknown>;
  /** The file is there but is not a JSON object. */
  readonly corrupt: boolean;
}

/** Reads and updates `<instancesPath>/compute_nodes` under the registry lock. */
export class StorageRegistry {
  /** The registry file. */
  readonly path: string;
  /** The window, seconds. */
  readonly windowSeconds: number;
  readonly #locks: LockManager;
  readonly #clock: Clock;

  /**
   * @param options - instances path, locks, clock and window
   * @throws `InvalidConfigError` when `windowSeconds` is not an integer ≥ 1
   */
  constructor(options: StorageRegistryOptions) {
    const windowSeconds = options.windowSeconds ?? DEFAULT_STORAGE_USERS_WINDOW_SECONDS;
    if (!Number.isSafeInteger(windowSeconds) || windowSeconds < 1) {
      throw new InvalidConfigError('storageUsersWindowSeconds', 'an integer ≥ 1 (seconds)', windowSeconds);
    }
    this.path = path.join(options.instancesPath, STORAGE_REGISTRY_FILE);
    this.windowSeconds = windowSeconds;
    this.#locks = options.locks;
    this.#clock = options.clock;
  }

  /**
   * Records that `host` uses this storage now (Nova's `register_storage_use`). A corrupt file is
   * replaced by one holding only `host`; the other hosts come back at their next pass.
   */
  async register(host: string, options: RegistryCallOptions = {}): Promise<void> {
    assertHost(host);
    await this.#locked(() => this.#register(host), options);
  }

  /** The hosts registered within the window (Nova's `get_storage_users`). */
  async users(options: RegistryCallOptions = {}): Promise<StorageUsers> {
    return this.#locked(async () => this.#usersOf(await this.#read()), options);
  }

  /**
   * Registers `host` and returns the users, in one locked read-modify-write: what a pass calls.
   * The result reports the file as it was read, so a corrupt file still says `corrupt: true`
   * (with `host` as the only user) even though this call has just rewritten it. When the file
   * cannot be written for lack of space, the users are listed all the same.
   */
  async registerAndList(host: string, options: RegistryCallOptions = {}): Promise<StorageUsers> {
    assertHost(host);
    return this.#locked(async () => {
      let contents: RegistryContents;
      try {
        contents = await this.#register(host);
      } catch (err) {
        // A full filesystem must not stop the pass that would free it: list the users as read
        // (this host among them) and register at the next pass.
        if (!(err instanceof DiskFullError)) throw err;
        log('could not register %s (%s); listing the users as read', host, err.message);
        contents = await this.#read();
        contents.raw.set(host, this.#clock.now() / 1000);
      }
      return this.#usersOf(contents);
    }, options);
  }

  /**
   * Every entry with a numeric timestamp (epoch seconds), expired ones included, for operators:
   * entries are never deleted. Empty when the file is missing or corrupt.
   */
  async entries(options: RegistryCallOptions = {}): Promise<Record<string, number>> {
    const contents = await this.#locked(() => this.#read(), options);
    // fromEntries defines properties, so a host called `__proto__` cannot reach the prototype.
    return Object.fromEntries([...contents.raw].filter((entry): entry is [string, number] => isTimestamp(entry[1])));
  }

  #locked<T>(fn: () => Promise<T>, options: RegistryCallOptions): Promise<T> {
    return this.#locks.withLock(STORAGE_REGISTRY_LOCK, fn, { signal: options.signal, timeoutMs: options.timeoutMs });
  }

  async #register(host: string): Promise<RegistryContents> {
    const contents = await this.#read();
    // Seconds with a fraction, like Python's time.time(), so Nova hosts read the same kind of value.
    contents.raw.set(host, this.#clock.now() / 1000);
    await this.#write(contents.raw);
    return contents;
  }

  #usersOf(contents: RegistryContents): StorageUsers {
    const now = this.#clock.now() / 1000;
    const hosts: string[] = [];
    const invalid: string[] = [];
    for (const [host, value] of contents.raw) {
      if (!isTimestamp(value)) invalid.push(host);
      else if (now - value < this.windowSeconds) hosts.push(host);
    }
    if (invalid.length > 0) log('ignoring %d registry entries without a numeric timestamp: %o', invalid.length, invalid);
    return { hosts: hosts.sort(), corrupt: contents.corrupt, invalid: invalid.sort() };
  }

  async #read(): Promise<RegistryContents> {
    let text: string | null;
    try {
      text = await readRegularFile(this.path);
    } catch (err) {
      if (!isNotRegularFile(err)) throw err;
      // Planted (a link, a FIFO, a directory): never followed nor waited on. Moved aside, under
      // the registry lock, so the next register writes a real file; until then the users are
      // unknown, as for a corrupt file.
      const aside = moveAside(this.path);
      log('%s is a %s, not a regular file: moved aside to %s; treating the storage users as unknown', this.path, err.kind, aside);
      return { raw: new Map(), corrupt: true };
    }
    if (text === null) return { raw: new Map(), corrupt: false };
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      log('%s is not valid JSON; treating the storage users as unknown: %O', this.path, err);
      return { raw: new Map(), corrupt: true };
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      log('%s does not hold a JSON object; treating the storage users as unknown', this.path);
      return { raw: new Map(), corrupt: true };
    }
    return { raw: new Map(Object.entries(parsed)), corrupt: false };
  }

  /** Replaces the file atomically: a reader sees the old file or the new one, never a mix. */
  async #write(raw: ReadonlyMap<string, unknown>): Promise<void> {
    const dir = path.dirname(this.path);
    try {
      await makeDirectory(dir, true);
      await this.#removeDeadTemps(dir);
      await writeFileAtomically(this.path, serialize(raw));
    } catch (err) {
      throw mapWriteError(err, undefined, dir);
    }
  }

  /**
   * Removes temp files of writers that died between creating and renaming theirs (a crash or a
   * SIGKILL mid-write). We hold the registry lock, so no live writer of ours has one open.
   */
  async #removeDeadTemps(dir: string): Promise<void> {
    for (const name of await readdir(dir)) {
      if (!TEMP_NAME.test(name)) continue;
      log('removing %s, left by a writer that died', name);
      await unlink(path.join(dir, name)).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      });
    }
  }
}

/** Our temp files (see `#write`): `.compute_nodes.<pid>.<12 hex digits>.tmp`. */
const TEMP_NAME = /^\.compute_nodes\.\d+\.[0-9a-f]{12}\.tmp$/;

function assertHost(host: unknown): asserts host is string {
  if (typeof host !== 'string' || host === '') throw new InvalidConfigError('host', 'a non-empty host name', host);
}

function isTimestamp(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/** JSON laid out as Python's `json.dump` does, so the file looks the same whoever wrote it last. */
function serialize(raw: ReadonlyMap<string, unknown>): string {
  const parts: string[] = [];
  for (const [host, value] of raw) parts.push(`${JSON.stringify(host)}: ${JSON.stringify(value)}`);
  return `{${parts.join(', ')}}`;
}
