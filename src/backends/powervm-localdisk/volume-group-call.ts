/**
 * Calls into a {@link VolumeGroup} with the backend's error policy: typed errors pass through, the
 * rest become {@link VolumeGroupError} (`name-taken` for EEXIST, `not-found` for ENOENT, `failed`
 * otherwise), and `failed` ones are the transient failures a spawn retries.
 *
 * @module
 */
import { VolumeGroupError, isImageCacheError } from '../../errors.js';
import type { VolumeGroup } from './volume-group.js';

/** The volume-group operations, as named in errors. */
export type VolumeGroupOperation = 'list' | 'create' | 'upload' | 'clone' | 'rename' | 'touch' | 'delete';

/** Runs `call`, mapping its failure to a typed error that names the disk and the image. */
export async function callVolumeGroup<T>(
  operation: VolumeGroupOperation,
  disk: string,
  imageId: string | undefined,
  call: () => Promise<T>,
): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw toVolumeGroupError(err, operation, disk, imageId);
  }
}

/** `err` as a typed error: an `ImageCacheError` as is, anything else as a {@link VolumeGroupError}. */
export function toVolumeGroupError(err: unknown, operation: VolumeGroupOperation, disk: string, imageId: string | undefined): unknown {
  if (err instanceof VolumeGroupError && err.imageId === undefined && imageId !== undefined) {
    // The group does not know the image; the message should name it.
    return new VolumeGroupError(err.operation, err.disk, err.reason, { imageId, cause: err.cause });
  }
  if (isImageCacheError(err)) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const reason = code === 'EEXIST' ? 'name-taken' : code === 'ENOENT' ? 'not-found' : 'failed';
  return new VolumeGroupError(operation, disk, reason, { imageId, cause: err });
}

/** True for a failure worth another attempt: a volume-group error that is not a name clash or a missing disk. */
export function isTransientVolumeGroupError(err: unknown): boolean {
  return err instanceof VolumeGroupError && err.reason === 'failed';
}

/** Lists the group's disks with the error policy. */
export function listDisks(group: VolumeGroup, signal?: AbortSignal): ReturnType<VolumeGroup['listDisks']> {
  return callVolumeGroup('list', '', undefined, () => group.listDisks({ signal }));
}
