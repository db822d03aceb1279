/**
 * Seeded instances paths for the Nova differential test: the same scenario is built twice, once
 * for Nova's pass and once for ours.
 *
 * A scenario has bases of every kind Nova names (originals, `_sm`, `<sha1>_<N>`, swap, ephemeral,
 * kernels, ramdisks, names Nova ignores), ages around both minimum ages, the `compute_nodes`
 * registry with hosts in and out of its 24 h window, instances of several hosts (resizing ones
 * too) with swap and ephemeral devices, and instance directories by uuid, by name and `_resize`,
 * listed or left over, whose disks are overlays made by `qemu-img create -b` (or raw files).
 *
 * @module
 */
import { mkdir, open, readFile, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import { cacheFileName } from '../../src/backends/libvirt-file/naming.js';
import { RESIZE_TASK_STATES, ephemeralBaseName, ephemeralExtension, isResizing, swapBaseName } from '../../src/instances.js';
import type { EphemeralNaming, InstanceRecord } from '../../src/instances.js';
import { runQemuImg } from '../helpers/qemu.js';
import type { Rng } from '../reliability/seed.js';

export const DAY = 86400;
/** Nova's registry window (`storage_users.TWENTY_FOUR_HOURS`). */
export const REGISTRY_WINDOW = DAY;
export const SELF = 'compute-a';
const HOSTS = [SELF, 'compute-b', 'compute-c', 'compute-d'];
const MKFS = {
  default: 'mkfs.ext4 -L %(fs_label)s -F %(target)s',
  linux: 'mkfs.ext3 -L %(fs_label)s -F %(target)s',
  windows: 'mkfs.ntfs --fast --label %(fs_label)s %(target)s',
};
/** Resized suffixes: byte and GiB sizes as Nova's tests and the Ops Guide show them, and `_5` (invisible). */
const RESIZED_SUFFIXES = ['_10737418240', '_5368709120', '_21474836480', '_10', '_20', '_5'];
const SWAP_SIZES = [512, 1024, 2048, 4096];
const EPHEMERAL_SIZES = [1, 2, 4, 10];
/** Names Nova's scan ignores (and names it sees as originals although they are no image's). */
const ODD_NAMES = ['swap_', 'swap_abc', 'swap_1_2', 'ephemeral_1', 'ephemeral_0_20_None', 'ephemeral_2_0706d6', '00000001', 'README'];

/** A block device as Nova's BDM gives it: swap size in MiB, ephemeral size in GiB. */
export interface NovaDevice {
  readonly kind: 'swap' | 'ephemeral';
  readonly size: number;
  readonly guestFormat?: string | null;
}

/** An instance record, in the shape nova_pass.py reads. */
export interface NovaInstance {
  readonly uuid: string;
  readonly name: string;
  readonly host: string;
  readonly imageRef: string | null;
  readonly kernelId: string | null;
  readonly ramdiskId: string | null;
  readonly vmState: string;
  readonly taskState: string | null;
  readonly osType: string | null;
  readonly bdms: readonly NovaDevice[];
}

/** A file (or directory) in the cache directory. */
export interface BaseFile {
  readonly name: string;
  readonly ageSeconds: number;
  readonly directory?: boolean;
}

/**
 * A disk in an instance directory: a qcow2 overlay of `backing` (a base name; its header names
 * it by absolute path, or relative to the disk when `relative`), or, when `backing` is null, a
 * raw file or a qcow2 image of its own (`relative` true).
 */
export interface DiskFile {
  readonly dir: string;
  readonly name: string;
  readonly backing: string | null;
  readonly relative: boolean;
}

/** The `[image_cache]` and `[DEFAULT]` options both sides run with. */
export interface ScenarioConf {
  readonly subdirectoryName: string;
  readonly removeUnusedBaseImages: boolean;
  readonly originalMinimumAgeSeconds: number;
  readonly resizedMinimumAgeSeconds: number;
  readonly defaultEphemeralFormat: string | null;
}

/**
 * The registry file: readable, absent, or unreadable in one of three ways (torn JSON, an entry
 * without a timestamp, not an object). Nova reads a torn file as empty, and its pass crashes on
 * the other two; ours suspends removals for all three.
 */
export type RegistryState = 'ok' | 'none' | 'torn' | 'bad-entry' | 'not-an-object';

/** Whether the registry in `state` cannot tell who uses the storage. */
export function registryUnreadable(state: RegistryState): boolean {
  return state === 'torn' || state === 'bad-entry' || state === 'not-an-object';
}

/** Whether Nova's pass fails on the registry in `state` (before it looks at any file). */
export function novaFailsOnRegistry(state: RegistryState): boolean {
  return state === 'bad-entry' || state === 'not-an-object';
}

export interface Scenario {
  readonly id: string;
  readonly conf: ScenarioConf;
  /** `[DEFAULT]virt_mkfs`, by OS type. */
  readonly mkfs: Readonly<Record<string, string>>;
  /** The `compute_nodes` file's text, or null for none. */
  readonly registry: string | null;
  readonly registryState: RegistryState;
  /** False: the cache directory does not exist (both passes do nothing). */
  readonly hasBaseDir: boolean;
  readonly instances: readonly NovaInstance[];
  readonly baseFiles: readonly BaseFile[];
  readonly disks: readonly DiskFile[];
}

/** The images every scenario draws from, so that a small pool of overlays serves them all. */
interface Universe {
  readonly images: readonly string[];
  readonly kernels: readonly string[];
  readonly ramdisks: readonly string[];
}

function uuid(rng: Rng): string {
  let hex = '';
  for (let i = 0; i < 32; i++) hex += rng.int(0, 15).toString(16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20)}`;
}

export function makeUniverse(rng: Rng): Universe {
  const ids = (n: number): string[] => Array.from({ length: n }, () => uuid(rng));
  return { images: ids(16), kernels: ids(3), ramdisks: ids(3) };
}

/** The ephemeral naming a scenario's options give (ours). */
export function ephemeralNamingOf(scenario: Scenario): EphemeralNaming {
  return {
    mkfsCommandsByOsType: scenario.mkfs,
    defaultEphemeralFormat: scenario.conf.defaultEphemeralFormat ?? undefined,
  };
}

/** Our instance record for Nova's. */
export function toRecord(instance: NovaInstance): InstanceRecord {
  return {
    uuid: instance.uuid,
    name: instance.name,
    host: instance.host,
    imageRef: instance.imageRef,
    kernelId: instance.kernelId,
    ramdiskId: instance.ramdiskId,
    vmState: instance.vmState,
    taskState: instance.taskState,
    osType: instance.osType,
    blockDevices: instance.bdms.map((d) =>
      d.kind === 'swap' ? { kind: 'swap' as const, sizeMiB: d.size } : { kind: 'ephemeral' as const, sizeGiB: d.size, guestFormat: d.guestFormat ?? undefined },
    ),
  };
}

/** One seeded scenario. `now` is the pass's clock, seconds. */
export function makeScenario(rng: Rng, universe: Universe, id: string, now: number): Scenario {
  // Nova's defaults; others; or no minimum age at all (a size-bounded LRU cache, README "Capacity").
  const ages = rng.weighted([
    { weight: 65, value: (): [number, number] => [DAY, 3600] },
    { weight: 28, value: (): [number, number] => { const original = rng.int(600, 3 * DAY); return [original, rng.int(60, original)]; } },
    { weight: 7, value: (): [number, number] => [0, 0] },
  ])();
  const [originalAge, resizedAge] = ages;
  const conf: ScenarioConf = {
    // Operators on shared storage may give each host its own cache (`_base_$my_ip`).
    subdirectoryName: rng.chance(0.85) ? '_base' : '_base_10.0.0.7',
    removeUnusedBaseImages: rng.chance(0.92),
    originalMinimumAgeSeconds: originalAge,
    resizedMinimumAgeSeconds: resizedAge,
    defaultEphemeralFormat: rng.weighted([
      { weight: 7, value: null },
      { weight: 1, value: 'ext4' },
      { weight: 1, value: 'xfs' },
      { weight: 1, value: 'ntfs' },
    ]),
  };
  const mkfs: Record<string, string> = {};
  if (rng.chance(0.2)) mkfs.default = MKFS.default;
  if (rng.chance(0.4)) mkfs.linux = MKFS.linux;
  if (rng.chance(0.25)) mkfs.windows = MKFS.windows;

  // Ages around both thresholds, exactly on them, long past, fresh, and in the future (skew).
  const age = (): number => {
    const margin = rng.int(1, 300);
    return rng.pick([
      originalAge - margin, originalAge, originalAge + margin,
      resizedAge - margin, resizedAge, resizedAge + margin,
      30, 30 * DAY, -600,
    ]);
  };

  // The registry: hosts registered recently, at the window's edge, long ago, in the future (a
  // skewed clock); or no file; or one nobody can read.
  let registry: string | null = null;
  const registryState = rng.weighted<RegistryState>([
    { weight: 85, value: 'ok' }, { weight: 5, value: 'torn' }, { weight: 2, value: 'bad-entry' }, { weight: 2, value: 'not-an-object' }, { weight: 6, value: 'none' },
  ]);
  if (registryState === 'torn') registry = '{"compute-b": 17';
  else if (registryState === 'not-an-object') registry = '["compute-b"]';
  else if (registryState !== 'none') {
    const entries: string[] = [];
    for (const host of HOSTS) {
      if (!rng.chance(host === SELF ? 0.5 : 0.7)) continue;
      const margin = rng.int(1, 600);
      const ago = rng.pick([60, 3600, REGISTRY_WINDOW - margin, REGISTRY_WINDOW, REGISTRY_WINDOW + margin, 5 * DAY, -3600]);
      entries.push(`"${host}": ${now - ago}`);
    }
    if (registryState === 'bad-entry') entries.push('"compute-e": "yesterday"');
    registry = `{${entries.join(', ')}}`;
  }

  const instances: NovaInstance[] = [];
  const count = rng.weighted([
    { weight: 1, value: 0 }, { weight: 2, value: 1 }, { weight: 3, value: 2 }, { weight: 3, value: 3 },
    { weight: 2, value: 4 }, { weight: 1, value: 6 },
  ]);
  for (let i = 0; i < count; i++) {
    const devices: NovaDevice[] = [];
    const swaps = rng.weighted([{ weight: 6, value: 0 }, { weight: 3, value: 1 }, { weight: 1, value: 2 }]);
    for (let s = 0; s < swaps; s++) devices.push({ kind: 'swap', size: rng.pick(SWAP_SIZES) });
    const ephemerals = rng.weighted([{ weight: 5, value: 0 }, { weight: 4, value: 1 }, { weight: 1, value: 2 }]);
    for (let e = 0; e < ephemerals; e++) {
      devices.push({ kind: 'ephemeral', size: rng.pick(EPHEMERAL_SIZES), guestFormat: rng.chance(0.3) ? 'ext4' : null });
    }
    instances.push({
      uuid: uuid(rng),
      name: `instance-${rng.int(1, 0xffffff).toString(16).padStart(8, '0')}`,
      host: rng.weighted([
        { weight: 45, value: SELF }, { weight: 20, value: 'compute-b' }, { weight: 20, value: 'compute-c' }, { weight: 15, value: 'compute-d' },
      ]),
      imageRef: rng.weighted([
        { weight: 70, value: (): string | null => rng.pick(universe.images) },
        { weight: 10, value: (): string | null => '' },
        { weight: 5, value: (): string | null => null },
        { weight: 15, value: (): string | null => uuid(rng) },
      ])(),
      kernelId: rng.chance(0.2) ? rng.pick(universe.kernels) : null,
      ramdiskId: rng.chance(0.2) ? rng.pick(universe.ramdisks) : null,
      vmState: rng.weighted([
        { weight: 16, value: 'active' }, { weight: 2, value: 'resized' }, { weight: 1, value: 'soft-delete' }, { weight: 1, value: 'stopped' },
      ]),
      taskState: rng.weighted([
        { weight: 80, value: null }, { weight: 12, value: rng.pick([...RESIZE_TASK_STATES]) }, { weight: 8, value: rng.pick(['spawning', 'rebooting']) },
      ]),
      osType: rng.weighted([{ weight: 5, value: null }, { weight: 3, value: 'linux' }, { weight: 2, value: 'windows' }]),
      bdms: devices,
    });
  }

  // The cache directory.
  const baseFiles = new Map<string, BaseFile>();
  const add = (name: string, directory = false): void => {
    baseFiles.set(name, { name, ageSeconds: age(), directory });
  };
  const cachedIds = new Set<string>();
  for (const instance of instances) {
    for (const ref of [instance.imageRef, instance.kernelId, instance.ramdiskId]) if (ref) cachedIds.add(ref);
  }
  for (let i = rng.int(0, 3); i > 0; i--) cachedIds.add(rng.pick([...universe.images, ...universe.kernels, ...universe.ramdisks]));
  const imageBases = new Map<string, string[]>();
  for (const imageId of cachedIds) {
    const fp = cacheFileName(imageId);
    const names: string[] = [];
    if (rng.chance(0.75)) names.push(fp);
    if (rng.chance(0.1)) names.push(`${fp}_sm`);
    for (const suffix of RESIZED_SUFFIXES) if (rng.chance(suffix === '_5' ? 0.05 : 0.12)) names.push(`${fp}${suffix}`);
    for (const name of names) add(name);
    imageBases.set(imageId, names);
  }
  for (let i = rng.int(0, 2); i > 0; i--) add(cacheFileName(uuid(rng)));
  if (rng.chance(0.1)) add('z'.repeat(20) + rng.int(0, 1e9).toString(36).padStart(20, 'q'));
  if (rng.chance(0.05)) add(cacheFileName(uuid(rng)), true);
  // The bases of the instances' devices, as their spawns made them (named by our rule: where it
  // differs from Nova's, Nova and we disagree on what is in use, and the comparison shows it).
  const naming = { mkfsCommandsByOsType: mkfs, defaultEphemeralFormat: conf.defaultEphemeralFormat ?? undefined };
  for (const instance of instances) {
    for (const device of instance.bdms) {
      if (!rng.chance(0.7)) continue;
      add(device.kind === 'swap' ? swapBaseName(device.size) : ephemeralBaseName(device.size, naming, instance.osType));
    }
  }
  for (const size of SWAP_SIZES) if (rng.chance(0.35)) add(`swap_${size}`);
  const extensions = new Set([
    ephemeralExtension({}),
    ephemeralExtension({ defaultEphemeralFormat: 'ext4' }),
    ephemeralExtension({ defaultEphemeralFormat: 'xfs' }),
    ...Object.values(MKFS).map((command) => ephemeralExtension({ mkfsCommand: command })),
    'abcdefg',
  ]);
  for (const size of EPHEMERAL_SIZES) for (const ext of extensions) if (rng.chance(0.08)) add(`ephemeral_${size}_${ext}`);
  for (const name of ODD_NAMES) if (rng.chance(0.15)) add(name);

  // Instance directories and their disks.
  const files = [...baseFiles.values()].filter((f) => !f.directory).map((f) => f.name);
  const ofKind = (test: (name: string) => boolean): string[] => files.filter(test);
  const imageNamed = ofKind((n) => n.length >= 40 && !n.startsWith('swap_') && !n.startsWith('ephemeral_'));
  const swapNamed = ofKind((n) => /^swap_\d+$/.test(n));
  const ephemeralNamed = ofKind((n) => /^ephemeral_\d+_.{7}$/.test(n));
  const disks: DiskFile[] = [];
  const rootBacking = (instance: NovaInstance): string | null => {
    const own = instance.imageRef ? (imageBases.get(instance.imageRef) ?? []) : [];
    if (own.length > 0 && rng.chance(0.8)) return rng.chance(0.6) && own.includes(cacheFileName(instance.imageRef ?? '')) ? cacheFileName(instance.imageRef ?? '') : rng.pick(own);
    if (imageNamed.length > 0 && rng.chance(0.3)) return rng.pick(imageNamed); // rebuilt, unshelved
    if (rng.chance(0.1)) return cacheFileName(uuid(rng)); // its base is gone already
    return null; // a raw copy, or a qcow2 of its own (below)
  };
  for (const instance of instances) {
    if (!rng.chance(0.85)) continue;
    const dir = rng.chance(0.75) ? instance.uuid : instance.name;
    disks.push({ dir, name: 'disk', backing: rootBacking(instance), relative: rng.chance(0.3) });
    if (rng.chance(0.3) && ephemeralNamed.length > 0) disks.push({ dir, name: rng.pick(['disk.local', 'disk.eph0', 'disk.eph1']), backing: rng.pick(ephemeralNamed), relative: rng.chance(0.3) });
    if (rng.chance(0.3) && swapNamed.length > 0) disks.push({ dir, name: 'disk.swap', backing: rng.pick(swapNamed), relative: rng.chance(0.3) });
    if (rng.chance(0.1) && imageNamed.length > 0) disks.push({ dir, name: 'disk.rescue', backing: rng.pick(imageNamed), relative: rng.chance(0.3) });
    if (rng.chance(0.1)) disks.push({ dir, name: 'disk.config', backing: null, relative: false });
    if ((isResizing(toRecord(instance)) ? rng.chance(0.5) : rng.chance(0.08)) && imageNamed.length > 0) {
      disks.push({ dir: `${dir}_resize`, name: 'disk', backing: rng.pick(imageNamed), relative: rng.chance(0.3) });
    }
  }
  // Leftovers of deleted instances.
  for (let i = rng.weighted([{ weight: 6, value: 0 }, { weight: 3, value: 1 }, { weight: 1, value: 2 }]); i > 0 && files.length > 0; i--) {
    disks.push({ dir: uuid(rng), name: 'disk', backing: rng.pick(files), relative: rng.chance(0.3) });
  }

  const hasBaseDir = !rng.chance(0.03);
  return { id, conf, mkfs, registry, registryState, hasBaseDir, instances, baseFiles: hasBaseDir ? [...baseFiles.values()] : [], disks };
}

/**
 * Disks made once by the real `qemu-img create` (overlays: `-f qcow2 -F raw -b <base>`), one per
 * backing name and path style, and copied into every scenario that needs them: both sides read
 * only the backing file's base name, as Nova does.
 */
export class OverlayPool {
  readonly #dir: string;
  readonly #made = new Map<string, Promise<string>>();
  readonly #limit = pLimit(4);
  #raw: Promise<string> | undefined;
  readonly #images = new Map<string, { size: number; blocks: { offset: number; bytes: Buffer }[] }>();

  constructor(dir: string) {
    this.#dir = dir;
  }

  /** How many disks qemu-img made. */
  get size(): number {
    return this.#made.size;
  }

  /**
   * Copies the pool's disk `source` to `target`, sparse: a qcow2 overlay is 192 KiB of mostly
   * zeros, and a few thousand full copies would fill a good part of /dev/shm.
   */
  async copy(source: string, target: string): Promise<void> {
    let image = this.#images.get(source);
    if (image === undefined) {
      const bytes = await readFile(source);
      const blocks: { offset: number; bytes: Buffer }[] = [];
      for (let offset = 0; offset < bytes.length; offset += 4096) {
        const block = bytes.subarray(offset, offset + 4096);
        if (block.some((b) => b !== 0)) blocks.push({ offset, bytes: block });
      }
      image = { size: bytes.length, blocks };
      this.#images.set(source, image);
    }
    const file = await open(target, 'wx');
    try {
      for (const block of image.blocks) await file.write(block.bytes, 0, block.bytes.length, block.offset);
      await file.truncate(image.size);
    } finally {
      await file.close();
    }
  }

  /** An overlay of `backing`, named in its header by absolute path or (`relative`) by `../_base/<backing>`. */
  overlay(backing: string, relative: boolean): Promise<string> {
    const key = `${relative ? 'relative' : 'absolute'}/${backing}`;
    let made = this.#made.get(key);
    if (made === undefined) {
      made = this.#limit(async () => {
        const baseDir = path.join(this.#dir, '_base');
        const overlayDir = path.join(this.#dir, relative ? 'relative' : 'absolute');
        await mkdir(baseDir, { recursive: true });
        await mkdir(overlayDir, { recursive: true });
        const base = path.join(baseDir, backing);
        await writeFile(base, Buffer.alloc(65536));
        const overlay = path.join(overlayDir, backing);
        await runQemuImg(['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', relative ? `../_base/${backing}` : base, overlay, '1M']);
        return overlay;
      });
      this.#made.set(key, made);
    }
    return made;
  }

  /** A qcow2 image with no backing file. */
  standalone(): Promise<string> {
    let made = this.#made.get('standalone');
    if (made === undefined) {
      made = (async () => {
        await mkdir(this.#dir, { recursive: true });
        const file = path.join(this.#dir, 'standalone.qcow2');
        await runQemuImg(['create', '-q', '-f', 'qcow2', file, '1M']);
        return file;
      })();
      this.#made.set('standalone', made);
    }
    return made;
  }

  raw(): Promise<string> {
    this.#raw ??= (async () => {
      await mkdir(this.#dir, { recursive: true });
      const file = path.join(this.#dir, 'raw-disk');
      await writeFile(file, Buffer.alloc(65536));
      return file;
    })();
    return this.#raw;
  }
}

/** Writes `scenario` under `instancesPath` (which must not exist yet). */
export async function buildScenario(scenario: Scenario, instancesPath: string, now: number, pool: OverlayPool): Promise<void> {
  const baseDir = path.join(instancesPath, scenario.conf.subdirectoryName);
  await mkdir(scenario.hasBaseDir ? baseDir : instancesPath, { recursive: true });
  for (const file of scenario.baseFiles) {
    const target = path.join(baseDir, file.name);
    if (file.directory === true) await mkdir(target);
    else await writeFile(target, 'base');
    await utimes(target, now - file.ageSeconds, now - file.ageSeconds);
  }
  if (scenario.registry !== null) await writeFile(path.join(instancesPath, 'compute_nodes'), scenario.registry);
  for (const disk of scenario.disks) {
    const dir = path.join(instancesPath, disk.dir);
    await mkdir(dir, { recursive: true });
    const source = disk.backing !== null ? pool.overlay(disk.backing, disk.relative) : disk.relative ? pool.standalone() : pool.raw();
    await pool.copy(await source, path.join(dir, disk.name));
  }
}
