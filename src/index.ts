/**
 * virt-imagecache: a compute-node image cache for virt drivers.
 *
 * @packageDocumentation
 */
export * from './errors.js';
export * from './options.js';
export * from './clock.js';
export * from './image-id.js';
export * from './instances.js';
export * from './cache-entry.js';
export * from './manager.js';
export * from './pins.js';
export type * from './source/image-source.js';
export * from './fetch/image-fetcher.js';
export * from './fetch/lock-manager.js';
export * from './fetch/rw-lock.js';
export * from './fetch/single-flight.js';
export * from './fetch/file-target.js';
export type { MetadataFile, MetadataFs, MetadataIo, MetadataIoMode } from './fs/metadata-fs.js';
export { CACHE_FILE_MODE, STAGING_SUFFIX, isStagingName, stagingFinalName, stagingPathFor, FileStagingSink } from './fetch/staging.js';
export type { StagingSink } from './fetch/staging.js';
export { DIRECT_IO_ALIGNMENT } from './fetch/staging.js';
export type { FileStagingSinkOptions } from './fetch/staging.js';
export { openImageReader, readerFromReadable } from './source/image-reader.js';
export type { ImageReader, ReadableReaderOptions } from './source/image-reader.js';
export { downloadToSink, BLOCK_SIZE } from './fetch/download.js';
export type { DownloadProgress, DownloadRequest, DownloadResult, ProgressListener } from './fetch/download.js';
export { expectedDigestOf } from './fetch/verifier.js';
export type { ExpectedDigest } from './fetch/verifier.js';
export { Throttle } from './fetch/throttle.js';
export * from './source/glance-image-source.js';
export { withRetry, backoffDelay } from './source/retry.js';
export type { BackoffOptions, RetryOptions } from './source/retry.js';
export * from './disk/qcow2-header.js';
export * from './disk/qcow2-overlay.js';
export * from './disk/raw-copy.js';
export * from './backends/files.js';
export * from './backends/libvirt-file/libvirt-file-manager.js';
export * from './backends/libvirt-file/naming.js';
export * from './backends/libvirt-file/storage-registry.js';
export * from './backends/powervm-localdisk/volume-group.js';
export * from './backends/powervm-localdisk/file-volume-group.js';
export * from './backends/powervm-localdisk/naming.js';
export * from './backends/powervm-localdisk/localdisk-manager.js';
export { ImageDiskTarget } from './backends/powervm-localdisk/image-disk-target.js';
export type { ImageDiskTargetOptions } from './backends/powervm-localdisk/image-disk-target.js';
export { isTransientVolumeGroupError } from './backends/powervm-localdisk/volume-group-call.js';
export * from './backends/noop.js';
export * from './backends/use-cached-image.js';
export * from './handlers/template-image-handler.js';
export * from './handlers/downloading-handler.js';
export * from './handlers/linking-handler.js';
export * from './periodic.js';
export { createProgressBar, formatBytes } from './cli/progress-bar.js';
export type { OutputStream, ProgressBar, ProgressBarOptions } from './cli/progress-bar.js';
export { runCli, helpText } from './cli/run-cli.js';
export { ExitCode } from './cli/context.js';
export type { CliIo, ExitCodeValue } from './cli/context.js';
export * from './capacity/index.js';
export type { PrecacheRequestOptions } from './precache/request.js';
export type * from './precache/results.js';
export { cacheImages } from './precache/cache-images.js';
export type { CacheImagesOptions } from './precache/cache-images.js';
export type * from './precache/host-client.js';
export * from './precache/in-process-host-client.js';
export { describePrecacheSummary } from './precache/summary.js';
export type {
  PrecacheAggregateRef,
  PrecacheCounts,
  PrecacheHostImage,
  PrecacheHostOutcome,
  PrecacheHostStatus,
  PrecacheImageTally,
  PrecacheSummary,
} from './precache/summary.js';
export type * from './precache/events.js';
export * from './precache/precache-images.js';
export {
  CACHE_IMAGES_PATH,
  decodeErrorJSON,
  decodeHostCacheReport,
  encodeCacheImagesRequest,
  parseCacheImagesRequest,
} from './precache/wire.js';
export type { CacheImagesRequest, CacheImagesRequestBody, CacheImagesRequestItem } from './precache/wire.js';
export * from './precache/host-agent.js';
export * from './precache/http-host-client.js';
