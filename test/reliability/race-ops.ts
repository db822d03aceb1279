// The operations the race harness (races.test.ts) interleaves across two processes, in ONE table
// shared by the test (which plans each step) and the worker (test/helpers/race-worker.ts, which
// runs it).
//
// To add an operation (e.g. `cacheImages(manager, ids, {pin})`):
//   1. add an entry to RACE_OPERATIONS below: a name, a weight (how often it is drawn), `plan`
//      (parent side: pick its arguments from the world, register what the instance "database"
//      must know before the step starts, return the message) and `run` (worker side: call the
//      manager);
//   2. if it changes what is in use (creates or deletes instances, pins images), update the world
//      in `settle`, so the invariant checker knows what must survive;
//   3. nothing else: the worker dispatches on `name`, the harness draws from the table, and the
//      invariants (no disk loses its backing file, no base of a listed instance disappears, every
//      final-name base verifies) are checked after every interleaving whatever the operations are.
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import type { InstanceRecord } from '../../src/instances.js';
import type { Rng } from './seed.js';

/** An instance the harness's "Nova database" knows. */
export interface RaceInstance extends InstanceRecord {
  /**
   * `spawning` until its spawn replied; `active` with a disk; `error` when the spawn failed;
   * `deleting` while its directory is being destroyed (still listed, as Nova lists it).
   */
  state: 'spawning' | 'active' | 'error' | 'deleting';
}

/** What the parent knows: the instance database and the images the image service serves. */
export interface RaceWorld {
  readonly instancesPath: string;
  readonly imageIds: readonly string[];
  /** Non-deleted instances of every host, by uuid (Nova's instances table). */
  readonly instances: Map<string, RaceInstance>;
  /** Sequence for instance uuids. */
  nextInstance: number;
}

/** The context a worker runs an operation in. */
export interface RaceWorkerContext {
  readonly manager: LibvirtFileImageManager;
  readonly instancesPath: string;
}

/** One planned operation of one step. */
export interface RacePlan {
  /** Builds the message once every plan of the step exists (so `update` can list instances as of then). */
  readonly message: (instances: () => InstanceRecord[]) => RaceMessage;
  /** Applies the reply to the world (instance states, deletions). */
  readonly settle?: ((reply: { ok: boolean; code?: string | undefined }) => void) | undefined;
}

/** What crosses the IPC channel. */
export interface RaceMessage {
  readonly op: string;
  readonly [key: string]: unknown;
}

/** An operation of the table. */
export interface RaceOperation {
  readonly name: string;
  /** Relative frequency. */
  readonly weight: number;
  /** Parent side; null when the operation does not apply now (e.g. nothing to terminate). */
  plan(world: RaceWorld, rng: Rng, host: string): RacePlan | null;
  /** Worker side. */
  run(context: RaceWorkerContext, message: RaceMessage): Promise<unknown>;
}

/** Instances a host keeps at most: few enough that most images are unused at any moment. */
const MAX_INSTANCES_PER_HOST = 3;

export const RACE_OPERATIONS: readonly RaceOperation[] = [
  {
    // A driver's spawn: make sure the image is cached (spawn-path touch), then build the root disk
    // as a qcow2 overlay. The instance is in the database before the spawn starts, as in Nova.
    name: 'spawn',
    weight: 3,
    plan(world, rng, host) {
      // A few instances per host, so that terminations keep making bases unused.
      if ([...world.instances.values()].filter((i) => i.host === host).length >= MAX_INSTANCES_PER_HOST) return null;
      const uuid = `inst-${String(world.nextInstance++).padStart(5, '0')}`;
      const imageRef = rng.pick(world.imageIds);
      const record: RaceInstance = { uuid, name: `instance-${uuid}`, host, imageRef, state: 'spawning' };
      world.instances.set(uuid, record);
      return {
        message: () => ({ op: 'spawn', imageId: imageRef, uuid }),
        settle: (reply) => {
          record.state = reply.ok ? 'active' : 'error';
        },
      };
    },
    async run({ manager, instancesPath }, message) {
      const imageId = message.imageId as string;
      await manager.cacheImage(imageId, { tolerateTouchErrors: true });
      const disk = await manager.createInstanceDisk({ imageId, instanceDir: path.join(instancesPath, message.uuid as string) });
      return { path: disk.path, basePath: disk.basePath };
    },
  },
  {
    // Pre-caching: the hook `cacheImages(manager, ids, {pin})` reuses (issue 5).
    name: 'pre-cache',
    weight: 2,
    plan(world, rng) {
      const imageId = rng.pick(world.imageIds);
      return { message: () => ({ op: 'pre-cache', imageId }) };
    },
    async run({ manager }, message) {
      const result = await manager.cacheImage(message.imageId as string);
      return result.status;
    },
  },
  {
    // The periodic pass with both minimum ages forced to 0 (the workers' managers are built so):
    // every unused base is removable at once, so only the in-use computation and the locks stand
    // between a pass and a loss.
    name: 'update',
    weight: 3,
    plan() {
      return { message: (instances) => ({ op: 'update', instances: instances() }) };
    },
    async run({ manager }, message) {
      const report = await manager.update(message.instances as InstanceRecord[]);
      if (report.failures.length > 0) {
        throw new Error(`pass failures: ${report.failures.map((f) => `${f.name} ${f.operation}: ${String(f.error)}`).join('; ')}`);
      }
      return { removed: report.removed.map((r) => r.name) };
    },
  },
  {
    // Nova's delete: the driver destroys the instance directory, then the record is deleted.
    name: 'terminate',
    weight: 3,
    plan(world, rng, host) {
      const mine = [...world.instances.values()].filter((i) => i.host === host && (i.state === 'active' || i.state === 'error'));
      if (mine.length === 0) return null;
      const victim = rng.pick(mine);
      // Still listed while its directory goes (Nova's task_state `deleting`); gone afterwards.
      victim.state = 'deleting';
      return {
        message: () => ({ op: 'terminate', uuid: victim.uuid }),
        settle: () => {
          world.instances.delete(victim.uuid);
        },
      };
    },
    async run({ instancesPath }, message) {
      await rm(path.join(instancesPath, message.uuid as string), { recursive: true, force: true });
      return null;
    },
  },
  {
    // Eviction: the operator's prune, which runs the one removal policy shared with the size cap
    // and the watermarks (src/capacity/policy.ts), with the instance list as of the step. With the
    // minimum ages at 0 every unused base is a candidate, so only the in-use set and the locks
    // protect a spawn racing it.
    name: 'evict',
    weight: 2,
    plan() {
      return { message: (instances) => ({ op: 'evict', instances: instances() }) };
    },
    async run({ manager }, message) {
      const report = await manager.prune({ instances: message.instances as InstanceRecord[] });
      if (report.failures.length > 0) {
        throw new Error(`prune failures: ${report.failures.map((f) => `${f.name} ${f.operation}: ${String(f.error)}`).join('; ')}`);
      }
      return { removed: report.removed.map((r) => r.name) };
    },
  },
];

/** The operation called `name`. */
export function raceOperation(name: string): RaceOperation {
  const op = RACE_OPERATIONS.find((o) => o.name === name);
  if (op === undefined) throw new Error(`no race operation ${name}`);
  return op;
}
