/**
 * Pins: an image pre-cached "for N hours" is neither aged out nor evicted before then, whatever its
 * use. Nova has no such thing (a pre-cached image unused for 24 h is removed by the next pass, even
 * when the rollout it was cached for has not started yet); kubelet and Glance lack it too.
 *
 * A pin is keyed by image id and holds an expiry. File-backed caches keep pins in a JSON file
 * beside the cache so they survive a restart and are shared by every process (and host) using it.
 *
 * @module
 */
import type { Clock } from './clock.js';
import { InvalidConfigError } from './errors.js';
import type { LockManager } from './fetch/lock-manager.js';
import { writeFileAtomically } from './fetch/atomic-file.js';
import { createLogger } from './log.js';
import { isNotRegularFile, moveAside, readRegularFile } from './regular-file.js';

const log = createLogger('pins');

/** The longest pin, seconds (10 years): a pin outlives a rollout, not the hardware. */
export const MAX_PIN_TTL_SECONDS = 10 * 365 * 86400;

/** The latest time a `Date` can hold, ms since the epoch. */
const MAX_DATE_MS = 8.64e15;

/**
 * Checks a pin's time to live: a number of seconds above 0, at most {@link MAX_PIN_TTL_SECONDS}.
 *
 * @throws `InvalidConfigError` naming `option`
 */
export function checkPinTtlSeconds(option: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_PIN_TTL_SECONDS) {
    throw new InvalidConfigError(option, `a number of seconds above 0, at most ${MAX_PIN_TTL_SECONDS} (10 years)`, value);
  }
}

/**
 * Every store's own check of an expiry, whatever its caller checked: a non-finite expiry would be
 * written as `null` (JSON has no Infinity) and cost the image its existing pin.
 */
function checkExpiry(imageId: string, untilMs: number): void {
  if (typeof untilMs !== 'number' || !Number.isFinite(untilMs) || Math.abs(untilMs) > MAX_DATE_MS) {
    throw new InvalidConfigError(`pin expiry of ${imageId}`, 'a finite time, ms since the epoch, within the range of a Date', untilMs);
  }
}

/** Active pins: image id → expiry, ms since the epoch. */
export type PinMap = ReadonlyMap<string, number>;

/** Where pins are kept. */
export interface PinStore {
  /**
   * Pins `imageId` until `untilMs`; an existing later expiry is kept (pins only ever extend). An
   * expiry that is not a finite time within a `Date`'s range is refused (`InvalidConfigError`),
   * nothing changed.
   */
  pin(imageId: string, untilMs: number): Promise<void>;
  /** Removes the pin of `imageId`, if any. */
  unpin(imageId: string): Promise<void>;
  /** The pins still active at `nowMs` (expired ones are left out). */
  active(nowMs: number): Promise<PinMap>;
}

/** Pins in memory: for caches that live no longer than the process, and for tests. */
export class MemoryPinStore implements PinStore {
  readonly #pins = new Map<string, number>();

  /** Pins `imageId` until `untilMs` (keeps a later expiry). */
  pin(imageId: string, untilMs: number): Promise<void> {
    // A throw inside the executor becomes the rejection.
    return new Promise((resolve) => {
      checkExpiry(imageId, untilMs);
      this.#pins.set(imageId, Math.max(untilMs, this.#pins.get(imageId) ?? Number.NEGATIVE_INFINITY));
      resolve();
    });
  }

  /** Removes the pin of `imageId`. */
  unpin(imageId: string): Promise<void> {
    this.#pins.delete(imageId);
    return Promise.resolve();
  }

  /** Pins active at `nowMs`. */
  active(nowMs: number): Promise<PinMap> {
    return Promise.resolve(new Map([...this.#pins].filter(([, until]) => until > nowMs)));
  }
}

/** The lock name guarding the pin file's read-modify-write across processes. */
const PIN_LOCK = 'pins';

/**
 * Pins in a JSON file (`{"<image id>": <expiry ms>}`), replaced atomically under a cross-process
 * lock, so concurrent pre-cache requests in several processes never lose each other's pins.
 * Expired pins are dropped on the next write. An unreadable file counts as no pins (logged): a
 * pin only delays removal, so losing one can never delete something in use. Anything but a
 * regular file at the name (a link, a FIFO, a directory) is never followed or waited on: it counts
 * as no pins, and the next write moves it aside.
 */
export class FilePinStore implements PinStore {
  /** The pin file. */
  readonly path: string;
  readonly #locks: LockManager;
  readonly #clock: Clock;

  /**
   * @param filePath - the JSON file
   * @param locks - the cache's lock manager (its lock directory makes the lock cross-process)
   * @param clock - the cache's clock, which decides when a pin has expired and may be dropped
   */
  constructor(filePath: string, locks: LockManager, clock: Clock) {
    this.path = filePath;
    this.#locks = locks;
    this.#clock = clock;
  }

  /** Pins `imageId` until `untilMs` (keeps a later expiry). */
  async pin(imageId: string, untilMs: number): Promise<void> {
    checkExpiry(imageId, untilMs);
    await this.#modify((pins) => {
      pins.set(imageId, Math.max(untilMs, pins.get(imageId) ?? Number.NEGATIVE_INFINITY));
    });
  }

  /** Removes the pin of `imageId`. */
  async unpin(imageId: string): Promise<void> {
    await this.#modify((pins) => pins.delete(imageId));
  }

  /** Pins active at `nowMs`. */
  async active(nowMs: number): Promise<PinMap> {
    const pins = await this.#read();
    return new Map([...pins].filter(([, until]) => until > nowMs));
  }

  async #modify(change: (pins: Map<string, number>) => void): Promise<void> {
    await this.#locks.withLock(PIN_LOCK, async () => {
      const pins = await this.#read(true);
      change(pins);
      const nowMs = this.#clock.now();
      for (const [id, until] of pins) if (until <= nowMs) pins.delete(id);
      await writeFileAtomically(this.path, `${JSON.stringify(Object.fromEntries(pins), null, 1)}\n`);
    });
  }

  /** The pins in the file; `locked` when the pin lock is held, so a planted object can be moved aside. */
  async #read(locked = false): Promise<Map<string, number>> {
    let text: string | null;
    try {
      text = await readRegularFile(this.path);
    } catch (err) {
      if (!isNotRegularFile(err)) throw err;
      // A link, a FIFO or a directory planted at the name: never followed nor waited on, no pins.
      const aside = locked ? moveAside(this.path) : null;
      log('%s is a %s, not a regular file; treating it as no pins%s', this.path, err.kind, aside === null ? '' : ` (moved aside to ${aside})`);
      return new Map();
    }
    if (text === null) return new Map();
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      return new Map(
        Object.entries(parsed).filter((pair): pair is [string, number] => typeof pair[1] === 'number' && Number.isFinite(pair[1])),
      );
    } catch (err) {
      log('%s is unreadable (%s); treating it as no pins', this.path, (err as Error).message);
      return new Map();
    }
  }
}
