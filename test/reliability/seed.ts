// Seeds for the reliability suite: every random choice comes from one printed seed, so any failure
// replays with `RELIABILITY_SEED=<seed> node --import tsx --test test/reliability/<file>.test.ts`.
import { createHash } from 'node:crypto';
import type { TestContext } from 'node:test';

/** The suite's master seed: `RELIABILITY_SEED` when set (decimal), else a fresh one. */
export const MASTER_SEED: number = (() => {
  const fromEnv = process.env.RELIABILITY_SEED;
  if (fromEnv !== undefined && fromEnv !== '') {
    const parsed = Number(fromEnv);
    if (!Number.isSafeInteger(parsed) || parsed < 0) throw new Error(`RELIABILITY_SEED must be a non-negative integer, got ${fromEnv}`);
    return parsed >>> 0;
  }
  return Math.floor(Math.random() * 2 ** 32) >>> 0;
})();

/** A seed for one test, derived from the master seed and the test's name: tests replay independently. */
export function seedFor(name: string): number {
  return createHash('sha256').update(`${MASTER_SEED}:${name}`).digest().readUInt32BE(0);
}

/** A small deterministic PRNG (mulberry32) with the draws the tests need. */
export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** One element of a non-empty list. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[this.int(0, items.length - 1)] as T;
  }

  /** One element, chosen with the given weights. */
  weighted<T>(items: readonly { readonly weight: number; readonly value: T }[]): T {
    const total = items.reduce((sum, item) => sum + item.weight, 0);
    let draw = this.next() * total;
    for (const item of items) {
      draw -= item.weight;
      if (draw < 0) return item.value;
    }
    return (items.at(-1) as { value: T }).value;
  }
}

/**
 * Runs `body` with the test's seed; prints the seed as a diagnostic, and on failure rethrows with
 * the command that replays it.
 */
export async function withSeed(t: TestContext, body: (seed: number) => Promise<void>): Promise<void> {
  const seed = seedFor(t.name);
  t.diagnostic(`seed ${seed} (master RELIABILITY_SEED=${MASTER_SEED})`);
  try {
    await body(seed);
  } catch (err) {
    const replay = `replay with RELIABILITY_SEED=${MASTER_SEED}`;
    if (err instanceof Error) {
      err.message = `${err.message}\n[${replay}; test seed ${seed}]`;
      throw err;
    }
    throw new Error(`${String(err)}\n[${replay}; test seed ${seed}]`, { cause: err });
  }
}
