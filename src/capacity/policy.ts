/**
 * The one removal policy. The periodic pass, eviction after a fill, reclaim before a download and
 * `prune()` (dry run or not) all decide here, so they can never disagree about what may go:
 *
 * 1. {@link decideEntry}: an entry in use, pinned or being cached stays; so does every entry while
 *    removals are suspended, and every entry younger than its minimum age (Nova's thresholds).
 *    Everything else is *removable*.
 * 2. {@link runPolicy}: when aging is on, every removable entry goes (reason `unused`: Nova's pass).
 *    Then, while a capacity rule still asks for bytes ({@link nextEvictionReason}), removable
 *    entries go least recently used first (kubelet's order; last use is the entry's mtime, so it
 *    survives a restart), each under its lock with its age re-checked, until the rules are met.
 *
 * @module
 */
import type { LimitFunction } from 'p-limit';
import { throwIfAborted } from '../abort.js';
import type { CacheEntry, KeptEntry, KeptReason, PassFailure, RemovalReason, RemovedEntry } from '../cache-entry.js';
import type { RemovalOutcome } from '../core/pass-types.js';
import type { CapacityReason } from './types.js';
import type { CapacityNeeds } from './watermarks.js';
import { largestNeed } from './watermarks.js';

export type { CapacityReason } from './types.js';

/** True for the removal reasons that are evictions (capacity), as opposed to aging or operators. */
export function isEvictionReason(reason: RemovalReason): reason is CapacityReason {
  return reason === 'cap' || reason === 'watermark' || reason === 'reclaim';
}

/** What the policy knows when it decides. */
export interface PolicyContext {
  /** Now, ms since the epoch (the manager's clock). */
  readonly nowMs: number;
  /** Entry names in use, each with who uses it (instances, backing files, swap and ephemeral devices). */
  readonly inUse: ReadonlyMap<string, string>;
  /** Entry names of pinned images, each with the pin's expiry. */
  readonly pinned: ReadonlyMap<string, number>;
  /** Entry names protected for reasons no instance shows yet (an image being cached), with why. */
  readonly protect: ReadonlyMap<string, string>;
  /** The entry's minimum age, seconds: younger unused entries are never removed. */
  readonly minimumAgeSeconds: (entry: CacheEntry) => number;
  /** Why no entry may be removed at all right now (in-use cannot be proven), or null. */
  readonly suspended: string | null;
}

/** An entry that must stay, and why. */
export interface KeepDecision {
  /** The entry. */
  readonly entry: CacheEntry;
  /** Discriminator. */
  readonly removable: false;
  /** Why it stays. */
  readonly reason: KeptReason;
  /** Who uses it, until when it is pinned, why removals are suspended. */
  readonly detail?: string | undefined;
}

/** An entry the rules allow to remove. */
export interface RemovableDecision {
  /** The entry. */
  readonly entry: CacheEntry;
  /** Discriminator. */
  readonly removable: true;
  /** Time since its last use, seconds. */
  readonly ageSeconds: number;
  /** Its minimum age, seconds; re-checked under its lock before it is removed. */
  readonly minAgeSeconds: number;
}

/** The policy's verdict on one entry. */
export type EntryDecision = KeepDecision | RemovableDecision;

/** Decides whether `entry` may be removed at all. */
export function decideEntry(entry: CacheEntry, context: PolicyContext): EntryDecision {
  const keep = (reason: KeptReason, detail?: string): KeepDecision => ({ entry, removable: false, reason, detail });
  const user = context.inUse.get(entry.name) ?? context.protect.get(entry.name);
  if (user !== undefined) return keep('in-use', user);
  const pinnedUntil = context.pinned.get(entry.name);
  if (pinnedUntil !== undefined) return keep('pinned', `until ${new Date(pinnedUntil).toISOString()}`);
  if (context.suspended !== null) return keep('removal-disabled', context.suspended);
  const minAgeSeconds = context.minimumAgeSeconds(entry);
  const ageSeconds = (context.nowMs - entry.lastUsedMs) / 1000;
  if (ageSeconds < minAgeSeconds) return keep('too-young', `unused for ${formatSeconds(ageSeconds)}, minimum age ${formatSeconds(minAgeSeconds)}`);
  return { entry, removable: true, ageSeconds, minAgeSeconds };
}

/** {@link decideEntry} for every entry, in the given (scan) order. */
export function decideEntries(entries: readonly CacheEntry[], context: PolicyContext): EntryDecision[] {
  return entries.map((entry) => decideEntry(entry, context));
}

/** The removable entries, least recently used first (ties: by name, so the order is stable). */
export function evictionOrder(decisions: readonly EntryDecision[]): RemovableDecision[] {
  return decisions
    .filter((decision): decision is RemovableDecision => decision.removable)
    .sort((a, b) => a.entry.lastUsedMs - b.entry.lastUsedMs || (a.entry.name < b.entry.name ? -1 : a.entry.name > b.entry.name ? 1 : 0));
}

/**
 * The rule the next victim is evicted for, once `freedBytes` are freed: the smallest need not met
 * yet (so the first victims are those even the smallest rule required), or null when every rule
 * is met.
 */
export function nextEvictionReason(needs: CapacityNeeds, freedBytes: number): CapacityReason | null {
  const open = (['cap', 'watermark', 'reclaim'] as const)
    .filter((reason) => needs[reason] > freedBytes)
    .sort((a, b) => needs[a] - needs[b]);
  return open[0] ?? null;
}

/** Removes one entry under its lock (or pretends to, in a dry run). */
export type EntryRemover = (decision: RemovableDecision, reason: RemovalReason, detail: string) => Promise<RemovalOutcome>;

/** One run of the policy over a scan. */
export interface PolicyRun {
  /** {@link decideEntries} of the scan. */
  readonly decisions: readonly EntryDecision[];
  /** Remove every removable entry (`unused`) before any eviction: Nova's aging. */
  readonly ageOut: boolean;
  /** Bytes the capacity rules ask for. */
  readonly needs: CapacityNeeds;
  /** Removes (or simulates removing) an entry. */
  readonly remove: EntryRemover;
  /** Says why a capacity rule evicts, for reports and `prune()`. */
  readonly explain: (reason: CapacityReason) => string;
  /** Runs the aging removals, a few at a time. */
  readonly limit: LimitFunction;
  /** Cancels between entries. */
  readonly signal?: AbortSignal | undefined;
  /** What is running, for the abort error (`The cache pass`, ...). */
  readonly what: string;
}

/** What happened to one entry; at most one of `kept` and `removed` is set. */
export interface PolicySlot {
  /** Set when the entry stays. */
  kept?: KeptEntry | undefined;
  /** Set when it went. */
  removed?: RemovedEntry | undefined;
  /** Set when stat or removal failed. */
  failure?: PassFailure | undefined;
}

/** The outcome of {@link runPolicy}. */
export interface PolicyResult {
  /** One slot per decision, in the decisions' order. */
  readonly slots: readonly PolicySlot[];
  /** The entries evicted for capacity, in eviction (least recently used) order. */
  readonly evicted: readonly RemovedEntry[];
  /** Bytes freed, aging and eviction together. */
  readonly freedBytes: number;
  /** Bytes the rules asked for that could not be freed (everything left is protected). */
  readonly shortfallBytes: number;
}

/**
 * Runs the policy: aging first (concurrently, each entry under its own lock), then eviction in
 * least-recently-used order until the capacity needs are met. An entry whose removal is refused
 * (touched meanwhile, lock busy, error) frees nothing, and the next one is tried (kubelet carries
 * on past failures too). `evicted` keeps the LRU order whatever order removals finish in.
 */
export async function runPolicy(run: PolicyRun): Promise<PolicyResult> {
  const { decisions, signal, what } = run;
  const slots: PolicySlot[] = decisions.map((decision) =>
    decision.removable
      ? {}
      : { kept: { name: decision.entry.name, kind: decision.entry.kind, reason: decision.reason, detail: decision.detail } },
  );
  const indexOf = new Map(decisions.map((decision, index) => [decision.entry.name, index]));
  let freedBytes = 0;
  const attempted = new Set<string>();
  const apply = async (decision: RemovableDecision, reason: RemovalReason, detail: string): Promise<RemovedEntry | null> => {
    throwIfAborted(signal, what);
    attempted.add(decision.entry.name);
    const outcome = await run.remove(decision, reason, detail);
    const slot = slots[indexOf.get(decision.entry.name) ?? -1] as PolicySlot;
    slot.removed = outcome.removed ?? undefined;
    slot.kept = outcome.kept ?? undefined;
    slot.failure = outcome.failure ?? undefined;
    if (outcome.removed !== null) freedBytes += outcome.removed.bytes;
    return outcome.removed;
  };

  const removable = evictionOrder(decisions);
  if (run.ageOut) {
    await Promise.all(
      removable.map((decision) =>
        run.limit(() =>
          apply(decision, 'unused', `unused for ${formatSeconds(decision.ageSeconds)}, past its minimum age of ${formatSeconds(decision.minAgeSeconds)}`),
        ),
      ),
    );
  }
  // Eviction in rounds: each round takes the shortest LRU run of candidates that would meet the
  // needs if every removal succeeded, and removes it concurrently; refusals leave a gap the next
  // round fills from the following candidates. Nothing beyond the need is ever removed.
  const evicted: RemovedEntry[] = [];
  const candidates = run.ageOut ? [] : removable;
  let next = 0;
  while (next < candidates.length && nextEvictionReason(run.needs, freedBytes) !== null) {
    const round: { decision: RemovableDecision; reason: CapacityReason }[] = [];
    for (let planned = freedBytes; next < candidates.length; next++) {
      const reason = nextEvictionReason(run.needs, planned);
      const decision = candidates[next];
      if (reason === null || decision === undefined) break;
      round.push({ decision, reason });
      planned += decision.entry.sizeBytes;
    }
    const removed = await Promise.all(
      round.map(({ decision, reason }) =>
        run.limit(() => apply(decision, reason, `least recently used (unused for ${formatSeconds(decision.ageSeconds)}): ${run.explain(reason)}`)),
      ),
    );
    for (const entry of removed) if (entry !== null) evicted.push(entry);
  }
  // Removable entries no rule asked for stay: aging is off and capacity is satisfied.
  for (const [index, decision] of decisions.entries()) {
    if (decision.removable && !attempted.has(decision.entry.name)) {
      (slots[index] as PolicySlot).kept = { name: decision.entry.name, kind: decision.entry.kind, reason: 'removal-disabled', detail: 'aging is off and no capacity rule needs the space' };
    }
  }
  return { slots, evicted, freedBytes, shortfallBytes: Math.max(0, largestNeed(run.needs) - freedBytes) };
}

/** `90061` → `1d 1h 1m`; seconds only under a minute. */
export function formatSeconds(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  const parts: string[] = [];
  const days = Math.floor(s / 86400);
  const hours = Math.floor((s % 86400) / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  if (days > 0) parts.push(`${days}d`);
  if (hours > 0) parts.push(`${hours}h`);
  if (minutes > 0 && days === 0) parts.push(`${minutes}m`);
  return parts.join(' ');
}
