/**
 * The periodic pass (Nova's `update` and `_age_and_verify_cached_images`): gather what is in use,
 * scan, touch what is used, let the removal policy age out and evict the rest (capacity/policy.ts),
 * sweep stale staging files, and report.
 *
 * @module
 */
import pLimit from 'p-limit';
import { throwIfAborted } from '../abort.js';
import type { KeptEntry, PassFailure, PassReport, RemovedEntry } from '../cache-entry.js';
import type { CapacityController } from '../capacity/controller.js';
import type { CapacityReport } from '../capacity/types.js';
import type { InstanceRecord } from '../instances.js';
import type { InUseResolver } from './in-use.js';
import type { UpdateOptions } from './manager-types.js';
import type { AgeContext, AgeResult } from './pass-types.js';
import type { SafeRemover } from './remover.js';
import type { StoreView } from './store-view.js';

/** Touches and removals a pass runs at once. */
const PASS_CONCURRENCY = 8;

/** What a pass is made of. */
export interface PassRoles<TBase> {
  /** The manager's view. */
  readonly view: StoreView<TBase>;
  /** The in-use computation. */
  readonly inUse: InUseResolver<TBase>;
  /** The removal path. */
  readonly remover: SafeRemover<TBase>;
  /** Capacity (the removal policy). */
  readonly capacity: CapacityController<TBase>;
  /** The manager's `ageAndVerify`, which a backend may extend. */
  ageAndVerify(context: AgeContext<TBase>): Promise<AgeResult>;
}

/** The periodic pass of one manager. */
export class PeriodicPass<TBase> {
  readonly #roles: PassRoles<TBase>;

  /** @param roles - the view and the roles a pass runs */
  constructor(roles: PassRoles<TBase>) {
    this.#roles = roles;
  }

  /** One pass (`ImageManager.update`). */
  async update(instances: Iterable<InstanceRecord> | undefined, options: UpdateOptions): Promise<PassReport> {
    const { view, inUse } = this.#roles;
    const { signal } = options;
    const startedAt = view.clock.now();
    const started = performance.now();
    const hosts = await view.storageUsers();
    const base = await view.getBase();
    if (base === null) {
      view.log('skipping the pass: no cache yet');
      const report = this.#report({ startedAt, started, hosts, instanceCount: 0, skipped: 'no-base' });
      view.emit('pass', report);
      return report;
    }
    const records = instances === undefined ? await inUse.instancesOf(hosts, signal, options.listInstances) : [...instances];
    throwIfAborted(signal, 'The cache pass');
    const scan = await view.scan(base);
    const used = await inUse.collect(base, records, scan, signal);
    const aged = await this.#roles.ageAndVerify({ base, scan, inUse: used, signal, startedAt });
    const report = this.#report({ startedAt, started, hosts, instanceCount: records.length, skipped: null, ...aged });
    view.log(
      'pass: %d active, %d removed, %d kept, %d failures in %d ms',
      report.active.length,
      report.removed.length,
      report.kept.length,
      report.failures.length,
      Math.round(report.durationMs),
    );
    view.emit('pass', report);
    return report;
  }

  /** The aging of a pass (`ImageManager.ageAndVerify`), inside the backend's removal scope. */
  ageAndVerify(context: AgeContext<TBase>): Promise<AgeResult> {
    return this.#roles.remover.inPassScope(context.signal, () => this.#age(context));
  }

  async #age(context: AgeContext<TBase>): Promise<AgeResult> {
    const { view, capacity, remover } = this.#roles;
    const { base, scan, inUse, signal, startedAt } = context;
    const result: AgeResult = { active: [], kept: [], removed: [], missing: [], failures: [] };
    const now = view.clock.now();
    const suspended = view.removalsSuspended();
    if (suspended !== null) view.log('removals suspended this pass: %s', suspended);
    const present = new Set(scan.entries.map((entry) => entry.name));
    for (const name of [...inUse.usedSwap, ...inUse.usedEphemeral]) {
      if (!present.has(name)) {
        view.log('%s is used by an instance but no base file exists', name);
        result.missing.push(name);
      }
    }
    // The policy decides (capacity/policy.ts: the same rules as eviction and prune()); in-use
    // entries are touched meanwhile. Each removal runs under its own lock; the report keeps scan order.
    const limit = pLimit(PASS_CONCURRENCY);
    const touchFailures = new Map<string, PassFailure>();
    const touches = scan.entries
      .filter((entry) => inUse.entryNames.has(entry.name))
      .map((entry) =>
        limit(async () => {
          throwIfAborted(signal, 'The cache pass');
          try {
            await view.touchEntry(entry.name, false);
          } catch (error) {
            view.log('touching in-use %s failed: %O', entry.name, error);
            touchFailures.set(entry.name, { name: entry.name, operation: 'touch', error });
          }
        }),
      );
    const [applied] = await Promise.all([
      capacity.apply({ base, scan, inUse, ageOut: view.options.removeUnusedBaseImages, trigger: 'pass', signal, limit, usedSinceMs: startedAt }),
      Promise.all(touches),
    ]);
    for (const [index, entry] of scan.entries.entries()) {
      const slot = applied.policy.slots[index];
      if (inUse.entryNames.has(entry.name)) result.active.push(entry.name);
      if (slot?.kept !== undefined) result.kept.push(slot.kept);
      if (slot?.removed !== undefined) result.removed.push(slot.removed);
      if (slot?.failure !== undefined) result.failures.push(slot.failure);
      const touchFailure = touchFailures.get(entry.name);
      if (touchFailure !== undefined) result.failures.push(touchFailure);
    }
    const swept = await remover.sweepStaging({
      leftovers: scan.staging,
      nowMs: now,
      minAgeSeconds: view.options.staleStagingAgeSeconds,
      withoutLock: 'remove',
      lockErrors: 'record',
      remove: (name) => view.removeStagingAt(base, name),
    });
    result.removed.push(...swept.removed);
    result.failures.push(...swept.failures);
    return { ...result, capacity: applied.capacity };
  }

  #report(parts: {
    startedAt: number;
    started: number;
    hosts: readonly string[];
    instanceCount: number;
    skipped: PassReport['skipped'];
    active?: string[];
    kept?: KeptEntry[];
    removed?: RemovedEntry[];
    missing?: string[];
    failures?: PassFailure[];
    capacity?: CapacityReport | null | undefined;
  }): PassReport {
    const { view } = this.#roles;
    return {
      host: view.host,
      startedAt: parts.startedAt,
      durationMs: performance.now() - parts.started,
      skipped: parts.skipped,
      hosts: parts.hosts,
      instanceCount: parts.instanceCount,
      active: parts.active ?? [],
      kept: parts.kept ?? [],
      removed: parts.removed ?? [],
      missing: parts.missing ?? [],
      failures: parts.failures ?? [],
      capacity: parts.capacity ?? null,
    };
  }
}
