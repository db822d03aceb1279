/**
 * The fake's one way to wait: a delay that ends early when the client goes away, so no response
 * keeps a timer (or the test process) alive after its connection closed.
 *
 * @module
 */

/** Resolves after `ms`, or as soon as the response closes (the client went away). */
export function pause(ms: number, closed: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
    closed,
  ]).finally(() => {
    clearTimeout(timer);
  });
}
