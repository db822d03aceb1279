/**
 * A token bucket capping bytes per second. Waiting in the consumer applies TCP back-pressure to
 * the image service, so the link, not just our disk, sees the cap.
 *
 * @module
 */
import { abortableSleep } from '../abort.js';
import { bytesPerSecondOrInfinity } from '../options.js';

/** Caps throughput at `bytesPerSecond`, allowing bursts of up to one second's worth. */
export class Throttle {
  readonly #rate: number;
  #tokens: number;
  #last: number;

  /**
   * @param bytesPerSecond - the cap, at least 1; `Infinity` disables throttling
   * @throws `InvalidConfigError` for a cap below 1 byte per second (or not a number)
   */
  constructor(bytesPerSecond: number) {
    // Whoever forgot to check: a zero or negative cap would wait forever or not at all.
    bytesPerSecondOrInfinity('bytesPerSecond', bytesPerSecond);
    this.#rate = bytesPerSecond;
    this.#tokens = Number.isFinite(bytesPerSecond) ? 0 : Number.POSITIVE_INFINITY;
    this.#last = performance.now();
  }

  /** True when a finite cap is set. */
  get enabled(): boolean {
    return Number.isFinite(this.#rate);
  }

  /** Accounts for `bytes` just transferred, sleeping as long as needed to honour the cap. */
  async consume(bytes: number, signal?: AbortSignal): Promise<void> {
    if (!this.enabled) return;
    const now = performance.now();
    this.#tokens = Math.min(this.#rate, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
    this.#last = now;
    this.#tokens -= bytes;
    if (this.#tokens < 0) {
      await abortableSleep((-this.#tokens / this.#rate) * 1000, signal, 'Throttled download');
    }
  }
}
