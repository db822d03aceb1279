/**
 * virt-imagecache: a compute-node image cache for virt drivers.
 *
 * The root holds what a driver author composes: the managers (one per backend), the image source,
 * the errors, the options, pre-caching and the periodic pass. Tools for narrower jobs live on
 * subpaths: `virt-imagecache/backend-kit` (writing a backend of your own), `virt-imagecache/disk`
 * (qcow2 and raw disk tools), `virt-imagecache/precache` (the host agent's wire format),
 * `virt-imagecache/cli` (the command line) and `virt-imagecache/testing` (fakes for tests).
 *
 * Every name is listed here by hand, never `export *` of an internal module: what is public stays
 * visible in one place, and the API report (`api/`) fails `npm test` when it changes.
 *
 * @packageDocumentation
 */

// Managers: one per backend, all over the same pass, fill path, locks, pins and capacity.
export { ImageManager } from './manager.js';
// The base ImageManager extends: a backend's primitives and their safe defaults.
export type { CacheStoreBase } from './core/store-base.js';
export type {
  AgeContext,
  AgeResult,
  CacheImageOptions,
  CacheImageResult,
  ImageManagerEvents,
  ImageManagerOptions,
  InstanceLister,
  PassInUse,
  RemovalOutcome,
  RemovalScope,
  StoreFiles,
  UpdateOptions,
} from './manager.js';
export { LibvirtFileImageManager } from './backends/libvirt-file/libvirt-file-manager.js';
export type {
  CreateInstanceDiskOptions,
  InstanceDiskResult,
  LibvirtFileImageManagerOptions,
} from './backends/libvirt-file/libvirt-file-manager.js';
export type { RegistryCallOptions, StorageRegistry, StorageRegistryOptions, StorageUsers } from './backends/libvirt-file/storage-registry.js';
export { LocalDiskImageManager } from './backends/powervm-localdisk/localdisk-manager.js';
export type {
  LocalDiskImageManagerOptions,
  LocalDiskInstance,
  LocalDiskSpawnOptions,
  LocalDiskSpawnResult,
  RetryDelay,
} from './backends/powervm-localdisk/localdisk-manager.js';
export { FileVolumeGroup } from './backends/powervm-localdisk/file-volume-group.js';
export type { FileVolumeGroupOptions } from './backends/powervm-localdisk/file-volume-group.js';
export type { NewDiskSpec, VolumeGroup, VolumeGroupCallOptions, VolumeGroupDisk } from './backends/powervm-localdisk/volume-group.js';
export { NoopImageManager } from './backends/noop.js';
export type {
  LinkedCloneHook,
  LinkedCloneRequest,
  NoopDiskRequest,
  NoopDiskResult,
  NoopImageManagerOptions,
  OpenInstanceDisk,
} from './backends/noop.js';

// What a pass, a scan and the operator calls report.
export type {
  BaseImageScan,
  CacheEntry,
  CacheEntryKind,
  KeptEntry,
  KeptReason,
  PassFailure,
  PassReport,
  RemovalReason,
  RemovedEntry,
  StagingEntry,
} from './cache-entry.js';
export type { CapacityReport, CapacityTrigger, EvictionEvent } from './capacity/controller.js';
export type { ListedEntry, OperatorOptions, PruneOptions, PruneReport } from './capacity/operator.js';
export type { CapacityReason } from './capacity/policy.js';
export type { CapacityNeeds, Watermarks } from './capacity/watermarks.js';
export type { CacheStats, CountAndBytes } from './capacity/stats.js';
export type { FilesystemProbe, FilesystemUsage } from './capacity/statfs.js';
export type { PinMap, PinStore } from './pins.js';
export type { Clock, WaitableClock } from './clock.js';

// Instances, and the names Nova gives the bases of their swap and ephemeral disks.
export { cacheFileName } from './backends/libvirt-file/naming.js';
export { ephemeralBaseName, swapBaseName } from './instances.js';
export type { BlockDevice, EphemeralDevice, EphemeralNaming, ImageUsage, InstanceRecord, InUseSet, SwapDevice } from './instances.js';

// The image service.
export { GlanceImageSource } from './source/glance-image-source.js';
export type { GlanceImageSourceOptions } from './source/glance-options.js';
export type { ImageInfo, ImageSource, OpenImageOptions, SourceCallOptions } from './source/image-source.js';
export type { ImageReader } from './source/image-reader.js';
export type { BackoffOptions, RetryOptions } from './source/retry.js';
// The site's peers: bytes from hosts that hold the image, trust (metadata, digest) from the service.
export { PeerImageSource } from './peer/peer-image-source.js';
export type { PeerEvent, PeerImageSourceOptions } from './peer/peer-options.js';
export type { ByteOrigin, BytesFrom, PeerEndpoint } from './peer/types.js';
export type { DownloadProgress, DownloadResult, ProgressListener } from './fetch/download.js';
export type { FetchTarget } from './fetch/image-fetcher.js';
export type { StagingSink } from './fetch/staging.js';
export type { HeldLock } from './fetch/lock-manager.js';
export type { LinkCheckReport, TemplateImageHandler, TemplateInitOptions, TemplateInitReport } from './handlers/template-image-handler.js';

// Errors: every failure is an ImageCacheError with a stable `code`.
export {
  AbortedError,
  CacheImageFailedError,
  ChecksumMismatchError,
  DiskFullError,
  FlavorDiskSmallerThanImageError,
  HostTimeoutError,
  HostUnauthorizedError,
  HostUnavailableError,
  ImageCacheError,
  ImageInUseError,
  ImageNotActiveError,
  ImageNotFoundError,
  ImageServiceUnavailableError,
  ImageTooLargeError,
  InvalidConfigError,
  InvalidDiskImageError,
  InvalidImageIdError,
  InvalidImageMetadataError,
  InvalidPrecacheRequestError,
  LockTimeoutError,
  NotAuthorizedError,
  PeerUnavailableError,
  PrecacheWindowClosedError,
  RemoteImageCacheError,
  SizeMismatchError,
  UnsupportedError,
  UnusablePathError,
  VolumeGroupError,
  isImageCacheError,
} from './errors.js';
export type { ImageCacheErrorCode, ImageCacheErrorJSON, ImageCacheErrorOptions, PeerFailureReason, VolumeGroupFailure } from './errors.js';

// Options.
export { DEFAULT_OPTIONS, resolveImageCacheOptions } from './options.js';
export type { ImageCacheOptions, ResolvedImageCacheOptions, TemplateImageHandlerKind } from './options.js';
export type { MetadataIo, MetadataIoMode } from './fs/metadata-fs.js';

// The periodic pass.
export { startPeriodicPass } from './periodic.js';
export type { PeriodicPass, PeriodicPassOptions } from './periodic.js';

// Pre-caching: per host, across an aggregate, and the transports between them.
export { cacheImages } from './precache/cache-images.js';
export type { CacheImagesOptions } from './precache/cache-images.js';
export { precacheImages } from './precache/precache-images.js';
export type { PrecacheAggregate, PrecacheImagesOptions } from './precache/precache-images.js';
export { describePrecacheSummary } from './precache/summary.js';
export type {
  PrecacheAggregateRef,
  PrecacheBlamedPeer,
  PrecacheCounts,
  PrecacheHostImage,
  PrecacheHostOutcome,
  PrecacheHostStatus,
  PrecacheImageTally,
  PrecacheSiteTotals,
  PrecacheSummary,
} from './precache/summary.js';
export type {
  PrecacheAggregateWithHosts,
  PrecacheEndEvent,
  PrecacheEvent,
  PrecacheProgressEvent,
  PrecacheStartEvent,
  PrecacheWindowEvent,
} from './precache/events.js';
export { dailyWindow } from './precache/window.js';
export type { DailyWindowOptions, PrecacheSchedule, PrecacheWindow, PrecacheWindowRange } from './precache/window.js';
export type { PrecacheRequestOptions } from './precache/request.js';
export type { HostCacheReport, PrecacheImageResult, PrecacheImageStatus } from './precache/results.js';
export type { HostCacheOptions, HostClient, PrecacheHost } from './precache/host-client.js';
export { InProcessHostClient } from './precache/in-process-host-client.js';
export type { InProcessHostClientOptions } from './precache/in-process-host-client.js';
export { createHostAgent } from './precache/host-agent.js';
export type { HostAgentHandler, HostAgentOptions } from './precache/host-agent.js';
export { HttpHostClient } from './precache/http-host-client.js';
export type { HttpHostClientOptions } from './precache/http-host-client.js';
