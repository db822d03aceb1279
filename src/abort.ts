/**
 * AbortSignal helpers: every long operation takes a signal and rejects with {@link AbortedError}.
 *
 * @module
 */
import { AbortedError } from './errors.js';
import { setLongTimeout } from './timer.js';

/** Throws {@link AbortedError} when `signal` is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string, imageId?: string): void {
  if (signal?.aborted === true) throw new AbortedError(what, imageId, signal.reason);
}

/**
 * Resolves after `ms` (any length: see `setLongTimeout`), or rejects with {@link AbortedError} as
 * soon as `signal` aborts.
 */
export function abortableSleep(
  ms: number,
  signal: AbortSignal | undefined,
  what = 'Waiting',
  imageId?: string,
): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(new AbortedError(what, imageId, signal.reason));
      return;
    }
    const onAbort = (): void => {
      // The timer is cleared so nothing keeps the process alive after an abort.
      timer.clear();
      reject(new AbortedError(what, imageId, signal?.reason));
    };
    const timer = setLongTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Marks `promise` as handled: for work whose outcome nobody waits for any more (its caller gave
 * up), whose failure would otherwise be an unhandled rejection, which ends a Node process.
 */
export function abandon(promise: Promise<unknown>): void {
  promise.catch(() => undefined);
}

/**
 * Races `promise` against `signal`: rejects with {@link AbortedError} when the signal aborts first.
 * The promise itself keeps running (its later failure is handled here); use this only to stop
 * *waiting*.
 */
export function raceAbort<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  what: string,
  imageId?: string,
): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) {
    abandon(promise);
    return Promise.reject(new AbortedError(what, imageId, signal.reason));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      reject(new AbortedError(what, imageId, signal.reason));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
