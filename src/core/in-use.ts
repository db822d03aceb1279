/**
 * What is in use, computed one way for every caller (the pass, capacity's eviction, the operator
 * API): the storage users' instances (given, or from the `listInstances` callback), their images,
 * swap and ephemeral devices, what the backend knows besides (backing files), and the pins.
 *
 * @module
 */
import type { BaseImageScan } from '../cache-entry.js';
import { UnsupportedError } from '../errors.js';
import { computeInUse } from '../instances.js';
import type { InstanceRecord } from '../instances.js';
import type { InstanceLister } from './manager-types.js';
import type { PassInUse } from './pass-types.js';
import type { StoreView } from './store-view.js';

/** Resolves the in-use set of a cache. */
export class InUseResolver<TBase> {
  readonly #view: StoreView<TBase>;

  /** @param view - the manager's view */
  constructor(view: StoreView<TBase>) {
    this.#view = view;
  }

  /**
   * The instances of `hosts`: from `lister` (default: the manager's `listInstances`).
   *
   * @throws `UnsupportedError` when there is no lister
   */
  async instancesOf(
    hosts: readonly string[],
    signal: AbortSignal | undefined,
    lister: InstanceLister | undefined = this.#view.listInstances,
  ): Promise<InstanceRecord[]> {
    if (lister === undefined) {
      throw new UnsupportedError(
        'A cache pass without instances',
        'pass the instances to update(), or give the manager a `listInstances` callback.',
      );
    }
    return [...(await lister(hosts, signal))];
  }

  /** What `records` (every instance of every storage user) and the backend keep in use, and the pins. */
  async collect(base: TBase, records: readonly InstanceRecord[], scan: BaseImageScan, signal: AbortSignal | undefined): Promise<PassInUse> {
    const view = this.#view;
    const inUse = computeInUse(records, view.host, view.ephemeralNaming);
    const entryNames = new Map<string, string>();
    for (const [imageId, usage] of inUse.usedImages) {
      for (const name of view.entryNamesForImage(imageId, scan)) {
        entryNames.set(name, `image ${imageId} of ${usage.instanceNames.join(', ')}`);
      }
    }
    for (const name of inUse.usedSwap) entryNames.set(name, 'swap device');
    for (const name of inUse.usedEphemeral) entryNames.set(name, 'ephemeral device');
    const extra = await view.collectExtraInUse(base, inUse, scan, signal);
    for (const [name, user] of extra) if (!entryNames.has(name)) entryNames.set(name, user);
    const pinnedNames = new Map<string, number>();
    for (const [imageId, until] of await view.activePins()) {
      for (const name of view.entryNamesForImage(imageId, scan)) pinnedNames.set(name, until);
    }
    return { ...inUse, entryNames, pinnedNames };
  }

  /**
   * The exact in-use set outside a pass (capacity, the operator API): from `instances` when given,
   * else from the `listInstances` callback; null when neither exists.
   */
  async resolve(base: TBase, scan: BaseImageScan, instances: Iterable<InstanceRecord> | undefined, signal?: AbortSignal): Promise<PassInUse | null> {
    if (instances === undefined && this.#view.listInstances === undefined) return null;
    const hosts = await this.#view.storageUsers();
    const records = instances === undefined ? await this.instancesOf(hosts, signal) : [...instances];
    return this.collect(base, records, scan, signal);
  }
}
