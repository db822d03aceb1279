/**
 * A hang guard for tests that must end: a promise that never settles fails the test, with a
 * message saying what hung, instead of stalling the run until the runner's timeout.
 *
 * @module
 */

/** `promise`, or a rejection naming `what` once `ms` pass (far above what the call takes). */
export async function failIfHung<T>(promise: Promise<T>, what: string, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what} hung for ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}
