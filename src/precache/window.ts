/**
 * Pre-cache windows: when the fan-out may ask hosts (a maintenance window, the night's low
 * traffic). A window is one `{ start, end }`; a {@link PrecacheSchedule} yields successive ones
 * ({@link dailyWindow}). Time is read from a `Clock`, so tests move a manual clock instead of
 * waiting for the night.
 *
 * @module
 */
import { abortableSleep } from '../abort.js';
import type { Clock, WaitableClock } from '../clock.js';
import { InvalidConfigError, PrecacheWindowClosedError } from '../errors.js';
import { createLogger } from '../log.js';

const log = createLogger('precache');

/** One window, as given: `Date`s or ms since the epoch; `end` after `start`. */
export interface PrecacheWindow {
  /** When hosts may first be asked. */
  readonly start: Date | number;
  /** When hosts still working are paused (their downloads resume in the next window). */
  readonly end: Date | number;
}

/** A window of a schedule, ms since the epoch; `end` after `start`. */
export interface PrecacheWindowRange {
  /** When it opens. */
  readonly start: number;
  /** When it closes. */
  readonly end: number;
}

/** Successive pre-cache windows. */
export interface PrecacheSchedule {
  /**
   * The window open at `afterMs` (its `start` at or before it, its `end` after it), else the first
   * one opening after it; null when no window is left.
   */
  next(afterMs: number): PrecacheWindowRange | null;
}

/** Options of {@link dailyWindow}. */
export interface DailyWindowOptions {
  /** `UTC` (default), `Z`, or a fixed offset from UTC such as `+02:00` or `-05:30`. No daylight saving. */
  readonly timeZone?: string | undefined;
}

const DAY_MS = 86_400_000;
const CLOCK_TIME = /^([01]\d|2[0-3]):([0-5]\d)$/;
const OFFSET = /^([+-])([01]\d|2[0-3]):([0-5]\d)$/;

/** A real-timer poll of a plain clock: wall-clock jumps (NTP, suspend) are noticed within this. */
const POLL_MS = 1000;

/**
 * Every day from `start` to `end` (`HH:MM`, 24-hour), in UTC or a fixed offset; an `end` at or
 * before `start` crosses midnight (`22:00` to `04:00`).
 *
 * @example
 * ```ts
 * await precacheImages({ ...request, window: dailyWindow('01:00', '05:00') });
 * ```
 * @throws `InvalidConfigError` for a malformed time or offset, or `start` equal to `end`
 */
export function dailyWindow(start: string, end: string, options: DailyWindowOptions = {}): PrecacheSchedule {
  const startMin = minutesOf('start', start);
  const endMin = minutesOf('end', end);
  if (startMin === endMin) throw new InvalidConfigError('end', `a time other than start (${start})`, end);
  const offsetMs = offsetOf(options.timeZone ?? 'UTC');
  const lengthMs = (((endMin - startMin) % 1440) + 1440) % 1440 * 60_000;
  return {
    next(afterMs: number): PrecacheWindowRange | null {
      // The window that opened on the local day before may still be open (it crosses midnight).
      const localDay = Math.floor((afterMs + offsetMs) / DAY_MS);
      for (let day = localDay - 1; day <= localDay + 1; day += 1) {
        const opens = day * DAY_MS + startMin * 60_000 - offsetMs;
        if (opens + lengthMs > afterMs) return { start: opens, end: opens + lengthMs };
      }
      return null; // unreachable: one of three consecutive days has a window ending after afterMs
    },
  };
}

/** Checks the `window` option and returns it as a schedule (a single window is a schedule of one). */
export function toSchedule(window: PrecacheWindow | PrecacheSchedule): PrecacheSchedule {
  if (typeof window !== 'object' || (window as unknown) === null) {
    throw new InvalidConfigError('window', '{ start, end } or a schedule with next(afterMs)', window);
  }
  if (typeof (window as Partial<PrecacheSchedule>).next === 'function') return window as PrecacheSchedule;
  const { start, end } = window as PrecacheWindow;
  const range = { start: msOf('window.start', start), end: msOf('window.end', end) };
  if (range.end <= range.start) throw new InvalidConfigError('window.end', 'a time after window.start', end);
  return { next: (afterMs) => (range.end > afterMs ? range : null) };
}

/**
 * The schedule's window for `afterMs`, checked: one that does not end after `afterMs` (a schedule
 * going backwards) counts as none, so the fan-out always moves forward.
 */
export function nextWindow(schedule: PrecacheSchedule, afterMs: number): PrecacheWindowRange | null {
  const range = schedule.next(afterMs);
  if (range === null) return null;
  const { start, end } = range;
  if (!Number.isFinite(start) || !Number.isFinite(end) || end <= start || end <= afterMs) return null;
  return { start, end };
}

/**
 * Resolves once `clock` reaches `atMs`: through the clock's own `waitUntil` when it has one (a
 * manual clock), else with real timers, re-reading the clock at least every second.
 *
 * @throws `AbortedError` as soon as `signal` aborts
 */
export async function waitForClock(clock: Clock, atMs: number, signal: AbortSignal | undefined): Promise<void> {
  if (isWaitable(clock)) {
    await clock.waitUntil(atMs, signal);
    return;
  }
  for (let remaining = atMs - clock.now(); remaining > 0; remaining = atMs - clock.now()) {
    await abortableSleep(Math.min(remaining, POLL_MS), signal, 'Waiting for the pre-cache window');
  }
}

/** What {@link runInWindows} drives. */
export interface WindowRounds {
  /** The windows. */
  readonly schedule: PrecacheSchedule;
  /** Their time. */
  readonly clock: Clock;
  /** The request's signal: a cancel ends the wait for a window and the rounds. */
  readonly signal: AbortSignal | undefined;
  /** Hosts not finished yet. */
  unfinished(): number;
  /**
   * Asks the unfinished hosts until they are done or `windowSignal` aborts (with a
   * `PrecacheWindowClosedError` at the window's end); resolves to the hosts it paused.
   */
  round(windowSignal: AbortSignal): Promise<readonly string[]>;
  /** A window state changed (the fan-out's `window` event). */
  onWindow(state: 'waiting' | 'open' | 'closed', window: PrecacheWindowRange, paused: readonly string[]): void;
}

/**
 * Runs rounds window after window until every host finished, no window is left, or the request
 * is cancelled.
 *
 * @returns the end of the last window used, or null when the schedule had none
 */
export async function runInWindows(rounds: WindowRounds): Promise<number | null> {
  const { schedule, clock, signal } = rounds;
  // A function, not a narrowed property: the signal may fire during any await.
  const cancelled = (): boolean => signal?.aborted === true;
  let lastEnd: number | null = null;
  let after = clock.now();
  while (rounds.unfinished() > 0 && !cancelled()) {
    const window = nextWindow(schedule, after);
    if (window === null) break;
    lastEnd = window.end;
    after = window.end;
    if (clock.now() < window.start) {
      log('waiting for the pre-cache window from %s to %s', new Date(window.start).toISOString(), new Date(window.end).toISOString());
      rounds.onWindow('waiting', window, []);
      try {
        await waitForClock(clock, window.start, signal);
      } catch {
        break; // cancelled: the caller fails the unfinished hosts
      }
    }
    if (clock.now() >= window.end) continue; // the clock jumped past it
    rounds.onWindow('open', window, []);
    const roundOver = new AbortController();
    const closed = new AbortController();
    waitForClock(clock, window.end, roundOver.signal).then(
      () => {
        closed.abort(new PrecacheWindowClosedError(window.end));
      },
      () => undefined, // the round ended first
    );
    const paused = await rounds.round(closed.signal);
    roundOver.abort();
    if (rounds.unfinished() > 0 && !cancelled()) {
      log('the pre-cache window closed with %d hosts unfinished (%d paused)', rounds.unfinished(), paused.length);
      rounds.onWindow('closed', window, paused);
    }
  }
  return lastEnd;
}

function isWaitable(clock: Clock): clock is WaitableClock {
  return typeof (clock as Partial<WaitableClock>).waitUntil === 'function';
}

function minutesOf(option: string, value: unknown): number {
  const match = typeof value === 'string' ? CLOCK_TIME.exec(value) : null;
  if (match === null) throw new InvalidConfigError(option, 'a time HH:MM (00:00 to 23:59)', value);
  return Number(match[1]) * 60 + Number(match[2]);
}

function offsetOf(timeZone: unknown): number {
  if (timeZone === 'UTC' || timeZone === 'Z') return 0;
  const match = typeof timeZone === 'string' ? OFFSET.exec(timeZone) : null;
  if (match === null) throw new InvalidConfigError('timeZone', 'UTC, Z or a fixed offset such as +02:00', timeZone);
  return (match[1] === '-' ? -1 : 1) * (Number(match[2]) * 60 + Number(match[3])) * 60_000;
}

function msOf(option: string, value: unknown): number {
  const ms = value instanceof Date ? value.getTime() : value;
  if (typeof ms !== 'number' || !Number.isFinite(ms)) throw new InvalidConfigError(option, 'a Date or ms since the epoch', value);
  return ms;
}
