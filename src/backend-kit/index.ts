/**
 * Building blocks for writing a backend of your own (`class X extends ImageManager`, see
 * `examples/custom-backend.ts`) or an image source: the cross-process locks, pins kept in a file,
 * the fetch target of a plain file, the staging-name rules the pass sweeps by, last-use times kept
 * as mtimes, the spawn retry around a cached image and the file-system usage probe. The built-in
 * backends are made of the same pieces.
 *
 * @packageDocumentation
 */
export { LockManager } from '../fetch/lock-manager.js';
export type { AcquireOptions, LockManagerOptions } from '../fetch/lock-manager.js';
export { ReadWriteLock } from '../fetch/rw-lock.js';
export type { ReaderRegistration, ReadWriteLockOptions } from '../fetch/rw-lock.js';
export { SingleFlight } from '../fetch/single-flight.js';
export type { FlightResult } from '../fetch/single-flight.js';
export { FilePinStore, MemoryPinStore } from '../pins.js';
export { systemClock } from '../clock.js';
// The type of the manager's protected `log`, which `touchFile` takes too.
export type { Logger } from '../log.js';
export { MAX_IMAGE_ID_BYTES, assertValidImageId } from '../image-id.js';
export { fileFetchTarget, isRegularFile } from '../fetch/file-target.js';
export type { FileFetchTargetOptions } from '../fetch/file-target.js';
// The manager's protected `fetcher`: a backend's own spawn path fetches through it.
export type { EnsureOptions, EnsureResult, ImageFetcher, ImageFetcherOptions, LocalFill, LocalFillContext } from '../fetch/image-fetcher.js';
export { STAGING_SUFFIX, isStagingName, stagingFinalName, stagingPathFor } from '../fetch/staging-names.js';
// A sink of one's own may offer resume: these are what it records and adopts (see fetch/resume.ts).
export type { StagingResume } from '../fetch/staging.js';
export type { KeptStaging } from '../fetch/kept-staging.js';
export type { ResumeKey, ResumePoint } from '../fetch/resume-sidecar.js';
export { mtimeOf, touchFile } from '../backends/files.js';
// The file-system seam of a shared directory (option `metadataIo`): the file helpers take one.
export { metadataFsFor } from '../fs/choose-metadata-fs.js';
export type { MetadataFile, MetadataFs } from '../fs/metadata-fs.js';
export type { FilesystemTypeProbe } from '../fs/filesystem-type.js';
export { SPAWN_REFETCHES, useCachedImage } from '../backends/use-cached-image.js';
export type { UseCachedImageOptions, UsedCachedImage } from '../backends/use-cached-image.js';
export { statfsProbe, usageOfDirectory } from '../capacity/statfs.js';
export { readerFromReadable } from '../source/image-reader.js';
export type { ReadableReaderOptions } from '../source/image-reader.js';
