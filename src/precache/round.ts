/**
 * One round of a fan-out (the whole request, or one pre-cache window): calls taken from the plan,
 * at most `concurrency` at a time, as the plan makes them available (a site's hosts once its seed
 * has answered).
 *
 * @module
 */
import type { FanOutPlan, HostCall } from './sites.js';

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
