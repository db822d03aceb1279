/**
 * Disk names and tags of the localdisk backend (docs/nova-parity.md, powervm names).
 *
 * nova-powervm names an image's cached disk `i_` plus the image UUID, sanitised
 * (`[^.0-9A-Za-z_]` becomes `_`) and cut to the VIOS limit of 15 characters: only 13 characters of
 * the UUID, so two images can get the same name, and nova-powervm would serve one image's disk for
 * the other. Here the full image id is recorded as a tag on the disk and every lookup goes by that
 * tag, never by name alone:
 *
 * - the first choice of name is nova-powervm's, so a cache looks the same to an operator;
 * - when that name is taken (another image's disk, or a foreign disk nobody tagged), the image
 *   gets the first free of a few deterministic alternatives, `i_` plus 13 hex digits of
 *   `sha256("<imageId>#<n>")`, all within 15 characters;
 * - a disk is an image's only when it carries this library's owner tag and that image's full id;
 *   untagged `i_*` disks (another tool's, or nova-powervm's) are never served and never deleted.
 *
 * @module
 */
import { createHash, randomBytes } from 'node:crypto';
import type { VolumeGroupDisk } from './volume-group.js';

/** The VIOS limit on a virtual disk's name (pypowervm `MaxLen.VDISK_NAME`). */
export const VDISK_NAME_MAX = 15;

/** Prefix of cached image disks (`i` for image, as nova-powervm). */
export const IMAGE_DISK_PREFIX = 'i_';

/** Prefix of boot disks built from an image (`b` for boot, as nova-powervm). */
export const BOOT_DISK_PREFIX = 'b_';

/** Prefix of the temporary disks images are uploaded into before they are published. */
export const UPLOAD_DISK_PREFIX = 's_';

/** How many names an image may try before giving up (the first is nova-powervm's). */
export const IMAGE_NAME_CANDIDATES = 8;

/** The tags this library writes on the disks it creates. */
export const DISK_TAGS = Object.freeze({
  /** Set to {@link DISK_OWNER} on every disk this library created. */
  owner: 'virt-imagecache.owner',
  /** The full image id: on image disks, upload disks and disks built from an image. */
  imageId: 'virt-imagecache.image-id',
  /** The image's size in bytes (image and upload disks). */
  imageSize: 'virt-imagecache.image-size',
  /** The instance's UUID (boot disks). */
  instanceUuid: 'virt-imagecache.instance-uuid',
});

/** The owner tag's value. */
export const DISK_OWNER = 'virt-imagecache';

/**
 * pypowervm's `sanitize_file_name_for_api`: every character outside `[.0-9A-Za-z_]` becomes `_`,
 * and the name is cut so that `prefix + name + suffix` fits `maxLength`.
 */
export function sanitizeForApi(name: string, prefix = '', suffix = '', maxLength = 79): string {
  const room = maxLength - prefix.length - suffix.length;
  const base = name.replace(/[^.0-9A-Za-z_]/g, '_');
  if (room < 1 || base === '') throw new RangeError(`cannot fit ${JSON.stringify(name)} in ${maxLength} characters`);
  return `${prefix}${base.slice(0, room)}${suffix}`;
}

/** nova-powervm's cached-disk name of `imageId`: `i_` + the sanitised id, cut to 15 characters. */
export function novaImageDiskName(imageId: string): string {
  return sanitizeForApi(imageId, IMAGE_DISK_PREFIX, '', VDISK_NAME_MAX);
}

/** The names `imageId`'s disk may take, in order of preference: nova-powervm's, then alternatives. */
export function imageDiskNameCandidates(imageId: string): string[] {
  const names = [novaImageDiskName(imageId)];
  for (let n = 1; names.length < IMAGE_NAME_CANDIDATES; n++) {
    const digest = createHash('sha256').update(`${imageId}#${n}`, 'utf8').digest('hex');
    names.push(`${IMAGE_DISK_PREFIX}${digest.slice(0, VDISK_NAME_MAX - IMAGE_DISK_PREFIX.length)}`);
  }
  return names;
}

/**
 * nova-powervm's short boot-disk name of an instance: `b_` + the first 8 characters of its name +
 * `_` + the first 4 of its UUID, sanitised to 15 characters (e.g. `b_Inst_Nam_d506`).
 */
export function bootDiskName(instance: { readonly name: string; readonly uuid: string }): string {
  return sanitizeForApi(`${instance.name.slice(0, 8)}_${instance.uuid.slice(0, 4)}`, BOOT_DISK_PREFIX, '', VDISK_NAME_MAX);
}

/** A fresh name for an upload disk: `s_` + 13 random hex digits. */
export function uploadDiskName(): string {
  return `${UPLOAD_DISK_PREFIX}${randomBytes(7).toString('hex').slice(0, VDISK_NAME_MAX - UPLOAD_DISK_PREFIX.length)}`;
}

/** A published image disk of ours. */
export interface ImageDiskRole {
  /** Discriminator. */
  readonly role: 'image';
  /** The full image id from its tag. */
  readonly imageId: string;
  /** The image's size in bytes from its tag, or null when the tag is missing or bad. */
  readonly imageSize: number | null;
}

/** An upload disk of ours: an upload in progress, or abandoned by a crash. */
export interface UploadDiskRole {
  /** Discriminator. */
  readonly role: 'upload';
  /** The image being uploaded. */
  readonly imageId: string;
}

/** Any other disk: foreign, or an instance's. The cache never touches it. */
export interface OtherDiskRole {
  /** Discriminator. */
  readonly role: 'other';
}

/** What a disk of the volume group is to the cache. */
export type DiskRole = ImageDiskRole | UploadDiskRole | OtherDiskRole;

/**
 * Classifies a disk by its tags and name: a published image (`i_*`, ours, with an image id), an
 * upload in progress or abandoned (`s_*`, ours, with an image id), or anything else, which the
 * cache never touches (foreign disks, boot disks).
 */
export function classifyDisk(disk: VolumeGroupDisk): DiskRole {
  const imageId = disk.tags[DISK_TAGS.imageId];
  if (disk.tags[DISK_TAGS.owner] !== DISK_OWNER || imageId === undefined || imageId === '') return { role: 'other' };
  if (disk.tags[DISK_TAGS.instanceUuid] !== undefined) return { role: 'other' };
  if (disk.name.startsWith(IMAGE_DISK_PREFIX)) {
    const size = Number(disk.tags[DISK_TAGS.imageSize]);
    return { role: 'image', imageId, imageSize: Number.isSafeInteger(size) && size >= 0 ? size : null };
  }
  if (disk.name.startsWith(UPLOAD_DISK_PREFIX)) return { role: 'upload', imageId };
  return { role: 'other' };
}

/** The disk holding `imageId`'s published image, found by tag (never by name alone), or undefined. */
export function findImageDisk(disks: readonly VolumeGroupDisk[], imageId: string): VolumeGroupDisk | undefined {
  const candidates = imageDiskNameCandidates(imageId);
  let found: VolumeGroupDisk | undefined;
  for (const disk of disks) {
    const role = classifyDisk(disk);
    if (role.role !== 'image' || role.imageId !== imageId) continue;
    // Two disks of one image cannot be published by this library; if an operator made one, prefer
    // the earlier candidate name so every process picks the same.
    if (found === undefined || rank(candidates, disk.name) < rank(candidates, found.name)) found = disk;
  }
  return found;
}

function rank(candidates: readonly string[], name: string): number {
  const index = candidates.indexOf(name);
  return index === -1 ? candidates.length : index;
}
