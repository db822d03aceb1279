/**
 * The periodic pass runner: Nova's `_run_image_cache_manager_pass` periodic task, for any
 * {@link ImageManager}. One pass at a time, on a timer that never keeps the process alive.
 *
 * @module
 */
import type { PassReport } from './cache-entry.js';
import { InvalidConfigError, isImageCacheError } from './errors.js';
import { createLogger } from './log.js';
import type { ImageManager, InstanceLister } from './manager.js';
import { setLongTimeout } from './timer.js';
import type { LongTimer } from './timer.js';

const log = createLogger('periodic');

/** oslo.service's default spacing, used when the interval is `0`. */
export const DEFAULT_PERIODIC_SPACING_SECONDS = 60;

/** Options of {@link startPeriodicPass}. */
export interface PeriodicPassOptions {
  /**
   * Seconds between passes, counted from the end of one pass to the start of the next (oslo
   * counts start to start; counting from the end means a pass slower than the interval is not
   * followed by another at once). `0` means 60 s, a negative value disables the runner, fractions
   * are allowed. Default: the manager's `managerInterval`.
   */
  readonly intervalSeconds?: number | undefined;
  /**
   * Lists the instances of the hosts using this cache (this host, or every registered host on
   * shared storage) for each pass, as Nova's compute manager queries them before calling the
   * driver. Omit to let {@link ImageManager.update} ask the manager's own `listInstances`.
   */
  readonly listInstances?: InstanceLister | undefined;
  /** Called with each successful pass's report. */
  readonly onReport?: ((report: PassReport) => void) | undefined;
  /**
   * Called when a pass fails; the schedule continues. Default: a debug log. Not called for a pass
   * cut short by {@link PeriodicPassOptions.signal}.
   */
  readonly onError?: ((error: unknown) => void) | undefined;
  /** Stops the runner and aborts the pass in flight. */
  readonly signal?: AbortSignal | undefined;
  /** Run the first pass now instead of after one interval. Default false. */
  readonly runImmediately?: boolean | undefined;
}

/** A running (or disabled) periodic pass, from {@link startPeriodicPass}. */
export interface PeriodicPass {
  /** False when the interval is negative or the manager keeps no image cache: nothing ever runs. */
  readonly enabled: boolean;
  /** True while a pass is in flight. */
  readonly running: boolean;
  /** Passes that completed with a report (failed passes are not counted). */
  readonly passes: number;
  /** The last successful pass's report, or null before the first. */
  readonly lastReport: PassReport | null;
  /**
   * Runs a pass now, or joins the one in flight: there is never a second concurrent pass. The
   * next scheduled pass then comes one interval after this one. Resolves with the report, or null
   * when the runner is disabled or stopped or the pass failed (the error went to `onError`).
   */
  runNow(): Promise<PassReport | null>;
  /** Stops scheduling and waits for the pass in flight, without aborting it. Idempotent. */
  stop(): Promise<void>;
}

/**
 * The spacing, ms, for an interval in seconds with oslo.service's semantics: `0` is the default
 * spacing of 60 s, a negative value disables the task (null).
 *
 * @throws `InvalidConfigError` when `intervalSeconds` is not a finite number
 */
export function effectiveIntervalMs(intervalSeconds: number): number | null {
  if (!Number.isFinite(intervalSeconds)) {
    throw new InvalidConfigError('intervalSeconds', 'a finite number of seconds (0: every 60 s, negative: disabled)', intervalSeconds);
  }
  if (intervalSeconds < 0) return null;
  return (intervalSeconds === 0 ? DEFAULT_PERIODIC_SPACING_SECONDS : intervalSeconds) * 1000;
}

/**
 * Starts running `manager`'s periodic pass. Like Nova, nothing runs when the interval is negative
 * or the backend keeps no image cache (`hasImageCache` false): the handle is then disabled.
 *
 * @example
 * ```ts
 * const periodic = startPeriodicPass(manager, {
 *   listInstances: (hosts) => db.instancesOf(hosts),
 *   onReport: (report) => metrics.record(report),
 *   onError: (err) => logger.warn(err),
 * });
 * // on shutdown:
 * await periodic.stop();
 * ```
 *
 * @throws `InvalidConfigError` when `intervalSeconds` is not a finite number
 */
export function startPeriodicPass<TBase>(manager: ImageManager<TBase>, options: PeriodicPassOptions = {}): PeriodicPass {
  const intervalMs = effectiveIntervalMs(options.intervalSeconds ?? manager.options.managerInterval);
  if (intervalMs === null || !manager.hasImageCache) {
    log(
      'periodic pass of %s disabled (%s)',
      manager.host,
      intervalMs === null ? 'negative interval' : 'the backend keeps no image cache',
    );
    return DISABLED;
  }
  return new PeriodicRunner(manager, intervalMs, options);
}

const DISABLED: PeriodicPass = Object.freeze({
  enabled: false,
  running: false,
  passes: 0,
  lastReport: null,
  runNow: () => Promise.resolve(null),
  stop: () => Promise.resolve(),
});

class PeriodicRunner<TBase> implements PeriodicPass {
  readonly enabled = true;
  readonly #manager: ImageManager<TBase>;
  readonly #intervalMs: number;
  readonly #options: PeriodicPassOptions;
  readonly #onAbort = (): void => {
    log('periodic pass of %s aborted', this.#manager.host);
    this.#halt();
  };
  #stopped = false;
  #timer: LongTimer | undefined;
  #inFlight: Promise<PassReport | null> | undefined;
  #passes = 0;
  #lastReport: PassReport | null = null;

  constructor(manager: ImageManager<TBase>, intervalMs: number, options: PeriodicPassOptions) {
    this.#manager = manager;
    this.#intervalMs = intervalMs;
    this.#options = options;
    const { signal } = options;
    if (signal?.aborted === true) {
      this.#stopped = true;
      return;
    }
    signal?.addEventListener('abort', this.#onAbort, { once: true });
    if (options.runImmediately === true) void this.runNow();
    else this.#schedule(intervalMs);
  }

  get running(): boolean {
    return this.#inFlight !== undefined;
  }

  get passes(): number {
    return this.#passes;
  }

  get lastReport(): PassReport | null {
    return this.#lastReport;
  }

  runNow(): Promise<PassReport | null> {
    if (this.#inFlight !== undefined) return this.#inFlight;
    if (this.#stopped) return Promise.resolve(null);
    this.#timer?.clear();
    this.#timer = undefined;
    const pass = this.#pass().finally(() => {
      this.#inFlight = undefined;
      this.#schedule(this.#intervalMs);
    });
    this.#inFlight = pass;
    return pass;
  }

  async stop(): Promise<void> {
    this.#halt();
    await this.#inFlight;
  }

  #halt(): void {
    this.#stopped = true;
    this.#timer?.clear();
    this.#timer = undefined;
    this.#options.signal?.removeEventListener('abort', this.#onAbort);
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer?.clear();
    // A cache pass is housekeeping: it must never be what keeps a host process alive.
    this.#timer = setLongTimeout(
      () => {
        this.#timer = undefined;
        void this.runNow();
      },
      delayMs,
      { ref: false },
    );
  }

  async #pass(): Promise<PassReport | null> {
    const { signal, listInstances, onReport } = this.#options;
    let report: PassReport;
    try {
      report = await this.#manager.update(undefined, { signal, listInstances });
    } catch (error) {
      this.#failed(error);
      return null;
    }
    this.#passes += 1;
    this.#lastReport = report;
    if (onReport !== undefined) {
      try {
        onReport(report);
      } catch (error) {
        // A throwing listener must not break the schedule, nor become an unhandled rejection.
        log('onReport threw: %O', error);
      }
    }
    return report;
  }

  #failed(error: unknown): void {
    const { signal, onError } = this.#options;
    if (signal?.aborted === true) {
      // Whatever the lister threw on abort (an AbortError, our ERR_ABORTED), the caller asked for it.
      log('periodic pass of %s aborted: %s', this.#manager.host, isImageCacheError(error) ? error.code : String(error));
      return;
    }
    if (onError === undefined) {
      log('periodic pass of %s failed: %O', this.#manager.host, error);
      return;
    }
    try {
      onError(error);
    } catch (thrown) {
      log('onError threw: %O', thrown);
    }
  }
}
