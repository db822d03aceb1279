/**
 * Free space promised to downloads in flight. Two downloads that each fit the free space may not
 * fit together: each admitted download reserves its size, and the reservation shrinks as its bytes
 * land on disk (they then show in `statfs` instead), so later admissions count what is still to
 * come. Admissions run one at a time, so the check, the reclaim and the reservation are one step.
 *
 * This covers the downloads of one process. Downloads in other processes are only seen through
 * `statfs`; a write that still hits ENOSPC fails cleanly with `DiskFullError`.
 *
 * @module
 */

/** Space held for one download until it is published or fails. */
export interface SpaceReservation {
  /** Bytes still to be written. */
  readonly outstandingBytes: number;
  /** Records that `bytesDone` of the download have been written. */
  progress(bytesDone: number): void;
  /** Gives the space back (download published or failed). Idempotent. */
  release(): void;
}

/** The reservations of one cache, and the queue admissions wait in. */
export class SpaceReservations {
  readonly #active = new Set<{ remaining: number }>();
  #queue: Promise<unknown> = Promise.resolve();

  /** Bytes promised to admitted downloads and not yet written. */
  get outstandingBytes(): number {
    let total = 0;
    for (const reservation of this.#active) total += reservation.remaining;
    return total;
  }

  /** Reserves `bytes` for a download. */
  reserve(bytes: number): SpaceReservation {
    const state = { remaining: Math.max(0, bytes) };
    this.#active.add(state);
    return {
      get outstandingBytes() {
        return state.remaining;
      },
      progress: (bytesDone) => {
        state.remaining = Math.max(0, bytes - bytesDone);
      },
      release: () => {
        this.#active.delete(state);
      },
    };
  }

  /** Runs `admission` after every admission queued before it has finished. */
  exclusive<T>(admission: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(admission, admission);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}
