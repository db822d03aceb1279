/**
 * Which {@link MetadataFs} a directory gets: the `metadataIo` option. `auto` (the default) asks
 * `statfs(2)` for the type of the file system holding the directory and takes the thread pool
 * ({@link asyncMetadataFs}) on a network or cluster file system, where a server that stops
 * answering would otherwise freeze the event loop, and synchronous calls ({@link syncMetadataFs})
 * on a local one, where they are several times cheaper.
 *
 * @module
 */
import { atNearestExisting, statfsTypeProbe } from './filesystem-type.js';
import type { FilesystemTypeProbe } from './filesystem-type.js';
import { createLogger } from '../log.js';
import { metadataFsOf, syncMetadataFs } from './metadata-fs.js';
import type { MetadataFs, MetadataIo, MetadataIoMode } from './metadata-fs.js';

export type { MetadataIo } from './metadata-fs.js';

const log = createLogger('fs');

/** The values of {@link MetadataIo}. */
export const METADATA_IO_VALUES: readonly MetadataIo[] = ['auto', 'sync', 'async'];

/**
 * File systems whose calls may wait on another machine (`f_type` magic numbers of statfs(2)):
 * network file systems, FUSE (glusterfs, sshfs, s3fs...: a user-space server), and cluster file
 * systems whose locks go through a distributed lock manager.
 */
export const NETWORK_FILESYSTEM_TYPES: ReadonlyMap<number, string> = new Map([
  [0x6969, 'nfs'],
  [0xff534d42, 'cifs'],
  [0xfe534d42, 'smb2'],
  [0x517b, 'smb'],
  [0x00c36400, 'ceph'],
  [0x65735546, 'fuse'],
  [0x01021997, '9p'],
  [0x5346414f, 'afs'],
  [0x6b414653, 'kafs'],
  [0x0bd00bd0, 'lustre'],
  [0x47504653, 'gpfs'],
  [0x01161970, 'gfs2'],
  [0x7461636f, 'ocfs2'],
]);

/**
 * The mode `auto` takes for `directory` (or its nearest existing ancestor): `async` on a
 * {@link NETWORK_FILESYSTEM_TYPES | network file system}, `sync` otherwise; `async` when the
 * type cannot be read (the safe side: slower, never a frozen event loop).
 */
export async function chooseMetadataIo(directory: string, probe: FilesystemTypeProbe = statfsTypeProbe): Promise<MetadataIoMode> {
  try {
    const { value: type, at } = await atNearestExisting(directory, probe);
    const network = NETWORK_FILESYSTEM_TYPES.get(type >>> 0);
    log('%s is on a %s file system (0x%s): %s metadata calls', at, network ?? 'local', (type >>> 0).toString(16), network === undefined ? 'synchronous' : 'thread-pool');
    return network === undefined ? 'sync' : 'async';
  } catch (err) {
    log('could not read the file system type of %s (%O): thread-pool metadata calls', directory, err);
    return 'async';
  }
}

/** Every call of a {@link MetadataFs} takes at most three arguments. */
type AnyCall = (a?: unknown, b?: unknown, c?: unknown) => Promise<unknown>;

/**
 * The {@link MetadataFs} of `directory` under the option `io`. With `auto` the choice is made by
 * the first call (one `statfs`, on the thread pool) and kept: the object is built synchronously,
 * where a manager is constructed, without blocking on a file system that may hang.
 */
export function metadataFsFor(directory: string, io: MetadataIo = 'auto', probe: FilesystemTypeProbe = statfsTypeProbe): MetadataFs {
  if (io !== 'auto') return metadataFsOf(io);
  let chosen: MetadataFs | undefined;
  let choosing: Promise<MetadataFs> | undefined;
  const choose = (): Promise<MetadataFs> =>
    (choosing ??= chooseMetadataIo(directory, probe).then((mode) => (chosen = metadataFsOf(mode))));
  const lazy: Record<string, AnyCall> = {};
  for (const key of Object.keys(syncMetadataFs) as (keyof MetadataFs)[]) {
    // Three fixed arguments, no rest array: this sits on the cached-spawn path.
    lazy[key] = (a, b, c) => (chosen !== undefined ? (chosen[key] as AnyCall)(a, b, c) : choose().then((fs) => (fs[key] as AnyCall)(a, b, c)));
  }
  return Object.freeze(lazy) as unknown as MetadataFs;
}
