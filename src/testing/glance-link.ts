/**
 * The fake's WAN link: one pacing schedule shared by every file response of a fake Glance, so the
 * sum of image bytes it sends, over all connections, stays at `linkBytesPerSecond` (a site's thin
 * link to the image service), and concurrent downloads share it fairly.
 *
 * @module
 */
import { pause } from './glance-pause.js';

/** Credit an idle or late link may spend at once, ms: covers timers firing late on a busy machine. */
const BURST_MS = 20;

/**
 * A link of `bytesPerSecond` shared by every response. Each response asks for its next slice with
 * {@link GlanceLink.send}, which books the slice's transmission time after everything booked so far
 * and resolves when that time has passed. A response books one slice at a time, so connections take
 * turns slice by slice (round robin): fair, and a response waiting on its own client's back-pressure
 * books nothing and leaves the link to the others.
 */
export class GlanceLink {
  /** Bytes per second. */
  readonly bytesPerSecond: number;
  /** Bytes per booking: small enough that turns interleave finely, large enough to keep timers few. */
  readonly slice: number;
  /** When the link finishes sending what is booked, `performance.now()` time. */
  #busyUntil = performance.now();

  constructor(bytesPerSecond: number) {
    this.bytesPerSecond = bytesPerSecond;
    this.slice = Math.max(1024, Math.min(64 * 1024, Math.floor(bytesPerSecond / 50)));
  }

  /**
   * Books `bytes` on the link and resolves once they would have crossed it; resolves early (the
   * booking returned when it is the last one) when `closed` settles first.
   */
  async send(bytes: number, closed: Promise<void>, isClosed: () => boolean): Promise<void> {
    const now = performance.now();
    // An idle link does not save up more than a small burst.
    const start = Math.max(this.#busyUntil, now - BURST_MS);
    const end = start + (bytes / this.bytesPerSecond) * 1000;
    this.#busyUntil = end;
    const wait = end - now;
    if (wait > 1) await pause(wait, closed);
    if (isClosed() && this.#busyUntil === end) {
      // The client left before its slice went out: give the slice back to the others.
      this.#busyUntil = start;
    }
  }
}
