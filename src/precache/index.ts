/**
 * The pre-cache host agent's wire format (`POST /v1/cache-images`), for a transport of your own:
 * a `HostClient` over another RPC, or an agent behind another HTTP server, that must speak the
 * same bodies as `createHostAgent` and `HttpHostClient`.
 *
 * @packageDocumentation
 */
export {
  CACHE_IMAGES_PATH,
  decodeErrorJSON,
  decodeHostCacheReport,
  encodeCacheImagesRequest,
  MAX_REQUEST_PEERS,
  parseCacheImagesRequest,
} from './wire.js';
export type { CacheImagesRequest, CacheImagesRequestBody, CacheImagesRequestItem } from './wire.js';
export { DEFAULT_AGENT_MAX_BODY_BYTES } from './host-agent.js';
export { DEFAULT_CELL, DEFAULT_PRECACHE_HOST_TIMEOUT_MS } from './precache-images.js';
