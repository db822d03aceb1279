/**
 * {@link startBodyExchange}: one GET of an image body over the transport the endpoint allows: the
 * raw socket client for `http:` (the body read straight into the caller's memory), node:http or
 * node:https otherwise, and for a response the raw client hands over. Shared by the Glance source
 * and the peer source, so both read bodies the same way.
 *
 * @module
 */
import type { BodyExchange } from './body-exchange.js';
import type { ResolvedOptions } from './glance-options.js';
import { HttpGet, NodeHttpExchange } from './node-http-get.js';
import { RawHttpGet } from './raw-http-get.js';

/**
 * Starts a GET of `url` with `headers`: over {@link RawHttpGet} when `raw` is set (an `http:` URL
 * without a custom agent), else over node:http. `onFallback` is told when the raw client hands
 * a response it does not read to node:http (the caller may stop asking it).
 *
 * @throws `InvalidConfigError` when the URL or a header cannot be written as is
 */
export function startBodyExchange(
  url: URL,
  headers: Readonly<Record<string, string>>,
  options: ResolvedOptions,
  raw: boolean,
  onFallback: () => void,
): BodyExchange {
  const viaNodeHttp = (): BodyExchange => new NodeHttpExchange(new HttpGet(url, headers, options));
  if (!raw) return viaNodeHttp();
  return new RawHttpGet(url, headers, {
    connectTimeoutMs: options.connectTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs,
    fallback: () => {
      onFallback();
      return viaNodeHttp();
    },
  });
}
