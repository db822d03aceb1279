/**
 * `debug` loggers under the `virt-imagecache:<area>` namespaces. Enable with
 * `DEBUG=virt-imagecache:*`.
 *
 * @module
 */
import createDebug from 'debug';

/** A `debug` logger. */
export type Logger = createDebug.Debugger;

/** The logger of one area, namespace `virt-imagecache:<area>`. */
export function createLogger(area: string): Logger {
  return createDebug(`virt-imagecache:${area}`);
}
