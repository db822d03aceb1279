/**
 * Instance records and the in-use computation every backend shares (Nova's
 * `_list_running_instances`).
 *
 * @module
 */
import { createHash } from 'node:crypto';

/** Nova task states during which an instance also owns `<name>_resize` / `<uuid>_resize` dirs. */
export const RESIZE_TASK_STATES: ReadonlySet<string> = new Set([
  'resize_prep',
  'resize_migrating',
  'resize_migrated',
  'resize_finish',
]);

/** A swap block device; its cache base is `swap_<sizeMiB>`. */
export interface SwapDevice {
  /** Discriminator. */
  readonly kind: 'swap';
  /** Size in MiB. */
  readonly sizeMiB: number;
}

/** An ephemeral block device; its cache base is `ephemeral_<sizeGiB>_<7 hex>`. */
export interface EphemeralDevice {
  /** Discriminator. */
  readonly kind: 'ephemeral';
  /** Size in GiB. */
  readonly sizeGiB: number;
  /**
   * The guest's filesystem request. Like Nova, it does not change the base's name (the name comes
   * from the host's mkfs configuration); kept for drivers that need it.
   */
  readonly guestFormat?: string | undefined;
}

/** A block device relevant to the cache. */
export type BlockDevice = SwapDevice | EphemeralDevice;

/**
 * What the in-use computation needs to know about one instance: a subset of Nova's `Instance`
 * and its block device mappings. Give every non-deleted instance (soft-deleted included) of every
 * host that shares the cache.
 */
export interface InstanceRecord {
  /** Instance UUID (also an instance directory name). */
  readonly uuid: string;
  /** Instance name, e.g. `instance-0000002a` (legacy instance directory name). */
  readonly name: string;
  /** The compute host running it. */
  readonly host: string;
  /** The image it was built from; null or empty for volume-backed instances. */
  readonly imageRef?: string | null | undefined;
  /** Kernel image id, if any. */
  readonly kernelId?: string | null | undefined;
  /** Ramdisk image id, if any. */
  readonly ramdiskId?: string | null | undefined;
  /** Nova `vm_state` (`active`, `resized`, `soft-delete`, ...). */
  readonly vmState?: string | null | undefined;
  /** Nova `task_state` (`resize_prep`, ...), null when idle. */
  readonly taskState?: string | null | undefined;
  /**
   * Nova `os_type` (`linux`, `windows`, ...): picks the mkfs command, hence the name, of the
   * instance's ephemeral bases when {@link EphemeralNaming.mkfsCommandsByOsType} has one for it.
   */
  readonly osType?: string | null | undefined;
  /** Swap and ephemeral block devices. All of them count, not only the first
   * (docs/nova-parity.md, gap B). */
  readonly blockDevices?: readonly BlockDevice[] | undefined;
}

/** How many instances use an image, on this host and on others. */
export interface ImageUsage {
  /** Instances on this host. */
  local: number;
  /** Instances on other hosts sharing the cache. */
  remote: number;
  /** Names of the instances. */
  readonly instanceNames: string[];
}

/** The result of `computeInUse`. */
export interface InUseSet {
  /** Image ids referenced as image, kernel or ramdisk, with usage counts. */
  readonly usedImages: ReadonlyMap<string, ImageUsage>;
  /** Instance names and uuids, plus `_resize` variants for resizing instances. */
  readonly instanceNames: ReadonlySet<string>;
  /** `swap_<MiB>` base names in use. */
  readonly usedSwap: ReadonlySet<string>;
  /** `ephemeral_<GiB>_<ext>` base names in use. */
  readonly usedEphemeral: ReadonlySet<string>;
}

/** How ephemeral base names are derived: Nova hashes the mkfs command, else the filesystem name. */
export interface EphemeralNaming {
  /** A custom mkfs command for the default OS type (Nova `virt_mkfs = default=...`); wins when set. */
  readonly mkfsCommand?: string | undefined;
  /**
   * Custom mkfs commands by OS type (Nova `virt_mkfs = <os_type>=<command>`): an instance whose
   * {@link InstanceRecord.osType} has one gets bases named after that command.
   */
  readonly mkfsCommandsByOsType?: Readonly<Record<string, string>> | undefined;
  /** `[DEFAULT]default_ephemeral_format`; Nova falls back to `vfat`. */
  readonly defaultEphemeralFormat?: string | undefined;
}

/**
 * The 7-hex suffix of ephemeral base names: md5 of the mkfs command for the instance's OS type
 * (else the default one), else of the filesystem name. Empty strings count as unset, as in Nova
 * (`nova.privsep.fs.get_file_extension_for_os_type`; the per-OS filesystem defaults never apply,
 * since Nova passes the OS type `default` whenever no command exists for it).
 */
export function ephemeralExtension(naming: EphemeralNaming = {}, osType?: string | null): string {
  const byOsType = naming.mkfsCommandsByOsType;
  const own = osType != null && byOsType !== undefined && Object.hasOwn(byOsType, osType) ? byOsType[osType] : undefined;
  const fallback = byOsType !== undefined && Object.hasOwn(byOsType, 'default') ? byOsType.default : undefined;
  const source = own || naming.mkfsCommand || fallback || naming.defaultEphemeralFormat || 'vfat';
  return createHash('md5').update(source).digest('hex').slice(0, 7);
}

/** `swap_<MiB>`: the cache name of a swap base. */
export function swapBaseName(sizeMiB: number): string {
  return `swap_${sizeMiB}`;
}

/** `ephemeral_<GiB>_<ext>`: the cache name of an ephemeral base of an instance of `osType`. */
export function ephemeralBaseName(sizeGiB: number, naming: EphemeralNaming = {}, osType?: string | null): string {
  return ephemeralName(sizeGiB, ephemeralExtension(naming, osType));
}

function ephemeralName(sizeGiB: number, extension: string): string {
  return `ephemeral_${sizeGiB}_${extension}`;
}

/** True when the instance is resizing or resized, so its `_resize` directories exist. */
export function isResizing(instance: InstanceRecord): boolean {
  return (
    instance.vmState === 'resized' ||
    (instance.taskState != null && RESIZE_TASK_STATES.has(instance.taskState))
  );
}

/**
 * Nova's `_list_running_instances`: which images, instance directories, swap and ephemeral bases
 * the given instances use. `host` decides what counts as local.
 *
 * Divergence from Nova, on purpose: every swap and ephemeral device counts (Nova only the first of
 * each), and empty image refs are skipped rather than hashed.
 */
export function computeInUse(
  instances: Iterable<InstanceRecord>,
  host: string,
  naming: EphemeralNaming = {},
): InUseSet {
  const usedImages = new Map<string, ImageUsage>();
  const instanceNames = new Set<string>();
  const usedSwap = new Set<string>();
  const usedEphemeral = new Set<string>();
  // One md5 per OS type, not per device.
  const extensions = new Map<string | null | undefined, string>();

  for (const instance of instances) {
    instanceNames.add(instance.name);
    instanceNames.add(instance.uuid);
    if (isResizing(instance)) {
      instanceNames.add(`${instance.name}_resize`);
      instanceNames.add(`${instance.uuid}_resize`);
    }
    for (const ref of [instance.imageRef, instance.kernelId, instance.ramdiskId]) {
      if (ref == null || ref === '') continue;
      let usage = usedImages.get(ref);
      if (usage === undefined) {
        usage = { local: 0, remote: 0, instanceNames: [] };
        usedImages.set(ref, usage);
      }
      if (instance.host === host) usage.local += 1;
      else usage.remote += 1;
      usage.instanceNames.push(instance.name);
    }
    for (const device of instance.blockDevices ?? []) {
      if (device.kind === 'swap') usedSwap.add(swapBaseName(device.sizeMiB));
      else {
        let ext = extensions.get(instance.osType);
        if (ext === undefined) {
          ext = ephemeralExtension(naming, instance.osType);
          extensions.set(instance.osType, ext);
        }
        usedEphemeral.add(ephemeralName(device.sizeGiB, ext));
      }
    }
  }
  return { usedImages, instanceNames, usedSwap, usedEphemeral };
}
