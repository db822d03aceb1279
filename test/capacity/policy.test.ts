// The one removal policy (src/capacity/policy.ts), on its own: what may go, in which order, for
// which rule, and when to stop. Kubelet's freeSpace order (least recently used first, in-use and
// pinned images skipped, minimum age honoured) and Nova's minimum ages, with property tests for the
// invariants every caller (pass, eviction, reclaim, prune) relies on.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import pLimit from 'p-limit';
import type { CacheEntry } from '../../src/cache-entry.js';
import {
  decideEntries,
  decideEntry,
  evictionOrder,
  nextEvictionReason,
  runPolicy,
} from '../../src/capacity/policy.js';
import type { EntryDecision, EntryRemover, PolicyContext } from '../../src/capacity/policy.js';
import { NO_NEEDS } from '../../src/capacity/watermarks.js';
import type { CapacityNeeds } from '../../src/capacity/watermarks.js';

const NOW = 1_700_000_000_000;
const HOUR = 3600;

function entry(name: string, lastUsedSecondsAgo: number, sizeBytes = 100): CacheEntry {
  return { name, kind: 'original', imageId: name, sizeBytes, lastUsedMs: NOW - lastUsedSecondsAgo * 1000 };
}

function context(overrides: Partial<PolicyContext> = {}): PolicyContext {
  return {
    nowMs: NOW,
    inUse: new Map(),
    pinned: new Map(),
    protect: new Map(),
    minimumAgeSeconds: () => HOUR,
    suspended: null,
    ...overrides,
  };
}

/** A remover that always succeeds, recording the order and reasons. */
function recordingRemover(calls: [string, string][], refuse: ReadonlySet<string> = new Set()): EntryRemover {
  return (decision, reason, detail) => {
    calls.push([decision.entry.name, reason]);
    if (refuse.has(decision.entry.name)) {
      return Promise.resolve({ removed: null, kept: { name: decision.entry.name, kind: decision.entry.kind, reason: 'touched-meanwhile' }, failure: null });
    }
    const { entry: e } = decision;
    return Promise.resolve({
      removed: { name: e.name, kind: e.kind, imageId: e.imageId, bytes: e.sizeBytes, reason, ageSeconds: decision.ageSeconds, detail },
      kept: null,
      failure: null,
    });
  };
}

function run(entries: CacheEntry[], needs: CapacityNeeds, ctx: PolicyContext, remover: EntryRemover, ageOut = false) {
  return runPolicy({
    decisions: decideEntries(entries, ctx),
    ageOut,
    needs,
    remove: remover,
    explain: (reason) => `rule ${reason}`,
    limit: pLimit(4),
    what: 'test',
  });
}

describe('removal policy', () => {
  it('in use, being cached, pinned, suspended, too young: kept, in that precedence', () => {
    const verdict = (decision: EntryDecision): [string, string | undefined] =>
      decision.removable ? ['removable', undefined] : [decision.reason, decision.detail];
    const old = entry('a', 10 * HOUR);
    assert.deepEqual(verdict(decideEntry(old, context({ inUse: new Map([['a', 'inst-1']]), pinned: new Map([['a', NOW + 1]]) }))), ['in-use', 'inst-1']);
    assert.deepEqual(verdict(decideEntry(old, context({ protect: new Map([['a', 'being cached']]) }))), ['in-use', 'being cached']);
    assert.equal(verdict(decideEntry(old, context({ pinned: new Map([['a', NOW + 1000]]), suspended: 'x' })))[0], 'pinned');
    assert.deepEqual(verdict(decideEntry(old, context({ suspended: 'registry unreadable' }))), ['removal-disabled', 'registry unreadable']);
    assert.equal(verdict(decideEntry(entry('b', HOUR - 1), context()))[0], 'too-young');
    const removable = decideEntry(entry('c', HOUR), context());
    assert.ok(removable.removable);
    assert.equal(removable.minAgeSeconds, HOUR);
    assert.equal(removable.ageSeconds, HOUR);
  });

  it('kubelet order: least recently used first, ties by name; last use, not name or size, decides', () => {
    const decisions = decideEntries([entry('z-old', 9 * HOUR), entry('a-new', 2 * HOUR), entry('m-mid', 5 * HOUR), entry('b-tie', 5 * HOUR)], context());
    assert.deepEqual(evictionOrder(decisions).map((d) => d.entry.name), ['z-old', 'b-tie', 'm-mid', 'a-new']);
  });

  it('each victim is attributed to the smallest rule not yet met', () => {
    const needs = { cap: 100, watermark: 250, reclaim: 0 };
    assert.equal(nextEvictionReason(needs, 0), 'cap');
    assert.equal(nextEvictionReason(needs, 100), 'watermark');
    assert.equal(nextEvictionReason(needs, 250), null);
    assert.equal(nextEvictionReason(NO_NEEDS, 0), null);
  });

  it('evicts LRU until the need is met, then stops; a refused victim frees nothing and the next is tried', async () => {
    const entries = [entry('e1', 5 * HOUR), entry('e2', 4 * HOUR), entry('e3', 3 * HOUR), entry('e4', 2 * HOUR)];
    const calls: [string, string][] = [];
    const result = await run(entries, { cap: 150, watermark: 0, reclaim: 0 }, context(), recordingRemover(calls, new Set(['e1'])));
    assert.deepEqual(calls, [['e1', 'cap'], ['e2', 'cap'], ['e3', 'cap']]);
    assert.deepEqual(result.evicted.map((r) => r.name), ['e2', 'e3']);
    assert.equal(result.freedBytes, 200);
    assert.equal(result.shortfallBytes, 0);
    assert.deepEqual(result.slots.map((s) => s.kept?.reason ?? s.removed?.reason), ['touched-meanwhile', 'cap', 'cap', 'removal-disabled']);
    assert.match(result.evicted[0]?.detail ?? '', /least recently used .*rule cap/);
  });

  it("aging (Nova's pass) removes every removable entry as `unused`; capacity then has nothing left to take", async () => {
    const calls: [string, string][] = [];
    const result = await run([entry('old', 30 * HOUR), entry('young', 10)], { cap: 1000, watermark: 0, reclaim: 0 }, context(), recordingRemover(calls), true);
    assert.deepEqual(calls, [['old', 'unused']]);
    assert.equal(result.shortfallBytes, 900);
    assert.deepEqual(result.slots.map((s) => s.kept?.reason ?? s.removed?.reason), ['unused', 'too-young']);
  });

  it('property: victims are only removable entries, in LRU order, and eviction stops as soon as every rule is met', async () => {
    const entryArb = fc.record({
      age: fc.integer({ min: 0, max: 100 * HOUR }),
      size: fc.integer({ min: 1, max: 1000 }),
      inUse: fc.boolean(),
      pinned: fc.boolean(),
      refused: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(entryArb, { maxLength: 25 }),
        fc.record({ cap: fc.nat(8000), watermark: fc.nat(8000), reclaim: fc.nat(8000) }),
        fc.integer({ min: 0, max: 50 * HOUR }),
        async (specs, needs, minAge) => {
          const entries = specs.map((s, i) => entry(`e${String(i).padStart(2, '0')}`, s.age, s.size));
          const ctx = context({
            inUse: new Map(entries.filter((_, i) => specs[i]?.inUse).map((e) => [e.name, 'inst'])),
            pinned: new Map(entries.filter((_, i) => specs[i]?.pinned).map((e) => [e.name, NOW + 1])),
            minimumAgeSeconds: () => minAge,
          });
          const refused = new Set(entries.filter((_, i) => specs[i]?.refused).map((e) => e.name));
          const calls: [string, string][] = [];
          const result = await run(entries, needs, ctx, recordingRemover(calls, refused));
          const order = evictionOrder(decideEntries(entries, ctx)).map((d) => d.entry.name);
          // Only removable entries are ever tried, and in LRU order.
          assert.deepEqual(calls.map(([name]) => name), order.slice(0, calls.length));
          for (const [name] of calls) {
            const i = entries.findIndex((e) => e.name === name);
            assert.ok(!(specs[i]?.inUse ?? true) && !(specs[i]?.pinned ?? true));
            assert.ok((NOW - (entries[i]?.lastUsedMs ?? NOW)) / 1000 >= minAge);
          }
          const need = Math.max(needs.cap, needs.watermark, needs.reclaim);
          // Enough was freed, or every candidate was tried.
          assert.ok(result.freedBytes >= need || calls.length === order.length);
          // Stopped at once: before the last victim, the need was not yet met.
          const freedBeforeLast = result.freedBytes - (result.evicted.at(-1)?.bytes ?? 0);
          if (result.evicted.length > 0) assert.ok(freedBeforeLast < need);
          assert.equal(result.shortfallBytes, Math.max(0, need - result.freedBytes));
        },
      ),
      { numRuns: 300 },
    );
  });
});
