/**
 * The fan-out's calls to hosts, round by round (the whole request, or one pre-cache window): calls
 * taken from the plan, at most `concurrency` at a time, as the plan makes them available (a site's
 * hosts once its seed has answered), each within its timeout; a host paused by a window's end
 * goes back to the plan for the next round.
 *
 * @module
 */
import { AbortedError, HostTimeoutError, HostUnavailableError, PrecacheWindowClosedError, isImageCacheError } from '../errors.js';
import type { ImageCacheError } from '../errors.js';
import { createLogger } from '../log.js';
import { DeadlineGroup } from './deadline-group.js';
import type { HostClient } from './host-client.js';
import { answeredOutcome, unfinishedOutcome } from './outcomes.js';
import type { FanOutPlan, HostCall } from './sites.js';
import type { PrecacheHostOutcome } from './summary.js';

const log = createLogger('precache');

/** What {@link HostCalls} needs from the request. */
export interface HostCallsContext {
  readonly client: HostClient;
  readonly imageIds: readonly string[];
  readonly pinTtlSeconds: number | undefined;
  readonly timeoutMs: number;
  readonly concurrency: number;
  /** The request's signal. */
  readonly signal: AbortSignal | undefined;
  readonly plan: FanOutPlan;
  /** Reports a host's final outcome (its progress event). */
  readonly complete: (outcome: PrecacheHostOutcome) => void;
}

/** Asks the plan's hosts, round by round, and reports each host's outcome once. */
export class HostCalls {
  readonly #context: HostCallsContext;
  /** Time each host spent in calls so far (a paused host is asked again), ms. */
  readonly #spent = new Map<string, number>();
  /** Hosts asked as their site's seed. */
  readonly #seeds = new Set<string>();

  constructor(context: HostCallsContext) {
    this.#context = context;
  }

  /**
   * Asks hosts until every one is finished or waits for a seed still paused, or the request is
   * cancelled, or `windowSignal` aborts (the window closed).
   *
   * @returns the hosts paused by the window's end
   */
  async round(windowSignal: AbortSignal | undefined): Promise<string[]> {
    const { signal, timeoutMs, plan, concurrency } = this.#context;
    const paused: string[] = [];
    const parent = windowSignal === undefined ? signal : signal === undefined ? windowSignal : AbortSignal.any([signal, windowSignal]);
    // One timer and signal per batch of hosts started together, not per host (see DeadlineGroup).
    const deadlines = new DeadlineGroup(parent, timeoutMs);
    const ask = (call: HostCall): Promise<void> => this.#ask(call, deadlines, windowSignal, paused);
    try {
      await runRound(plan, concurrency, ask, () => signal?.aborted === true || windowSignal?.aborted === true);
    } finally {
      deadlines.close();
    }
    return paused;
  }

  /** Reports the hosts left unfinished: `failed` when cancelled, else `deferred` (no window was left). */
  settleLeftovers(lastWindowEnd: number | null): void {
    const { plan, imageIds, signal, complete } = this.#context;
    for (const { host, place } of plan.remaining) {
      const seed = this.#seeds.has(host.name);
      const durationMs = this.#spent.get(host.name) ?? 0;
      if (signal?.aborted === true) {
        complete(unfinishedOutcome('failed', place, imageIds, new AbortedError(`Pre-caching on host ${host.name}`, undefined, signal.reason), durationMs, seed));
      } else {
        complete(unfinishedOutcome('deferred', place, imageIds, new PrecacheWindowClosedError(lastWindowEnd, host.name), durationMs, seed));
      }
    }
  }

  async #ask(call: HostCall, deadlines: DeadlineGroup, windowSignal: AbortSignal | undefined, paused: string[]): Promise<void> {
    const { client, imageIds, pinTtlSeconds, timeoutMs, signal, plan, complete } = this.#context;
    const { host, place } = call.planned;
    if (call.seed) this.#seeds.add(host.name);
    const hostStarted = performance.now();
    const elapsed = (): number => {
      const total = (this.#spent.get(host.name) ?? 0) + performance.now() - hostStarted;
      this.#spent.set(host.name, total);
      return total;
    };
    const deadline = deadlines.start();
    try {
      const report = await deadline.race(
        client.cacheImages(host, imageIds, {
          signal: deadline.signal,
          pinTtlSeconds,
          bytesPerSecond: call.bytesPerSecond,
          ...(call.peers.length > 0 ? { peers: call.peers } : {}),
        }),
      );
      const outcome = answeredOutcome(place, imageIds, report, elapsed(), call.seed);
      plan.finish(call, outcome);
      complete(outcome);
    } catch (thrown) {
      let error: ImageCacheError;
      if (deadline.timedOut) error = new HostTimeoutError(host.name, timeoutMs);
      else if (signal?.aborted === true) error = new AbortedError(`Pre-caching on host ${host.name}`, undefined, signal.reason);
      else if (windowSignal?.aborted === true) {
        log('pre-caching on host %s paused: the window closed', host.name);
        elapsed();
        plan.pause(call);
        paused.push(host.name);
        return;
      } else error = toHostError(thrown, host.name);
      log('pre-caching on host %s failed: %s', host.name, error.message);
      const outcome = unfinishedOutcome('failed', place, imageIds, error, elapsed(), call.seed);
      plan.finish(call, outcome);
      complete(outcome);
    } finally {
      deadline.done();
    }
  }
}

/** What a client threw, as a typed error about the host (an untyped throw is a broken client). */
function toHostError(thrown: unknown, host: string): ImageCacheError {
  if (isImageCacheError(thrown)) return thrown;
  const detail = thrown instanceof Error ? thrown.message : String(thrown);
  return new HostUnavailableError(host, `its client failed: ${detail}`, { cause: thrown });
}

/**
 * Runs calls from `plan` until it has none ready and none is running, or `stopped()` (the request
 * was cancelled, the window closed) and the running ones have ended.
 *
 * @param ask - makes one call; must not reject (it reports its own outcome)
 */
export function runRound(
  plan: FanOutPlan,
  concurrency: number,
  ask: (call: HostCall) => Promise<void>,
  stopped: () => boolean,
): Promise<void> {
  return new Promise((resolve) => {
    let running = 0;
    const ended = (): void => {
      running -= 1;
      pump();
    };
    // A call that ends can make others ready (a seed answered): take again after each.
    const pump = (): void => {
      while (running < concurrency && !stopped()) {
        const call = plan.take();
        if (call === undefined) break;
        running += 1;
        ask(call).then(ended, ended);
      }
      if (running === 0) resolve();
    };
    pump();
  });
}
