/**
 * `virt-imagecache precache`: pre-cache images on a set of hosts through their host agents
 * (`virt-imagecache agent` or `createHostAgent` inside a driver), with one progress line per host
 * (its site and where its bytes came from), window changes, and a summary with per-site totals.
 *
 * @module
 */
import { InvalidConfigError } from '../../errors.js';
import type { BytesFrom } from '../../peer/types.js';
import type { PrecacheEvent } from '../../precache/events.js';
import { HttpHostClient } from '../../precache/http-host-client.js';
import { precacheImages } from '../../precache/precache-images.js';
import { describeBlamedPeer } from '../../precache/summary.js';
import type { PrecacheSummary } from '../../precache/summary.js';
import { GlanceImageSource } from '../../source/glance-image-source.js';
import { loadSettings } from '../config.js';
import { ExitCode, emit } from '../context.js';
import type { CliCommand } from '../context.js';
import { formatBytes } from '../progress-bar.js';
import { hostsFromFlags, positiveNumber, windowFromFlags } from './precache-flags.js';

/** `1.0 MiB from glance, 3.0 MiB from peer:edge-1`, or `nothing downloaded`. */
function describeBytesFrom(bytesFrom: readonly BytesFrom[]): string {
  return bytesFrom.length === 0 ? 'nothing downloaded' : bytesFrom.map(({ from, bytes }) => `${formatBytes(bytes)} from ${from}`).join(', ');
}

/** The stderr line of a progress or window event, or null for the others. */
function progressLine(event: PrecacheEvent): string | null {
  if (event.type === 'aggregate.cache_images.window') {
    const at = (ms: number): string => new Date(ms).toISOString();
    if (event.state === 'waiting') return `waiting for the window ${at(event.start)} to ${at(event.end)} (${String(event.remaining)} hosts)`;
    if (event.state === 'open') return `window open until ${at(event.end)} (${String(event.remaining)} hosts to go)`;
    return `window closed at ${at(event.end)}: ${String(event.remaining)} hosts unfinished${event.paused.length > 0 ? `, paused ${event.paused.join(' ')}` : ''}`;
  }
  if (event.type !== 'aggregate.cache_images.progress') return null;
  const site = event.site === null ? '' : `, site ${event.site}${event.seed ? ' (seed)' : ''}`;
  return (
    `[${String(event.index)}/${String(event.total)}] ${event.host}: ${event.status}` +
    `${event.images_failed.length > 0 ? `, failed ${event.images_failed.join(' ')}` : ''}${event.error === null ? '' : ` (${event.error.code})`}` +
    `${site}${event.status === 'done' ? `; ${describeBytesFrom(event.bytes_from)}` : ''}`
  );
}

/** The text summary: totals, per-site lines, each peer blamed for bad bytes, then each image error. */
function summaryText(summary: PrecacheSummary): string {
  return [
    `${String(summary.totalHosts)} hosts, ${String(summary.imageIds.length)} images in ${(summary.durationMs / 1000).toFixed(1)} s: ` +
      Object.entries(summary.counts)
        .map(([status, count]) => `${String(count)} ${status}`)
        .join(', '),
    ...summary.sites.map(
      (site) =>
        `  site ${site.site} (${String(site.hosts)} hosts, ${site.peerFanOut ? `seed ${site.seed ?? 'none'}` : 'site-unaware'}): ` +
        `${formatBytes(site.bytesFromGlance)} from glance, ${formatBytes(site.bytesFromPeers)} from peers (${formatBytes(site.bytesSaved)} saved)`,
    ),
    ...summary.blamedPeers.map((blame) => `  ${describeBlamedPeer(blame)}`),
    ...summary.hosts.flatMap((host) =>
      host.images.filter((image) => image.status === 'error').map((image) => `  ${host.host} ${image.imageId}: ${image.error?.message ?? 'error'}`),
    ),
  ].join('\n');
}

/** The `precache` command. */
export const precacheCommand: CliCommand = {
  name: 'precache',
  summary: 'pre-cache images on hosts through their agents (one progress line per host, then a summary)',
  usage:
    'precache --images ID[,ID...] --agent HOST[@SITE]=URL [--agent ...] [--site HOST=SITE ...] [--down HOST ...] [--aggregate NAME] [--concurrency N] ' +
    '[--pin-hours H] [--timeout-s S] [--site-bytes-per-second N] [--window START/END | --daily HH:MM-HH:MM[@OFFSET]] [--agent-token T]',
  options: {
    images: { type: 'string' },
    agent: { type: 'string', multiple: true },
    down: { type: 'string', multiple: true },
    site: { type: 'string', multiple: true },
    'site-bytes-per-second': { type: 'string' },
    window: { type: 'string' },
    daily: { type: 'string' },
    aggregate: { type: 'string' },
    concurrency: { type: 'string' },
    'pin-hours': { type: 'string' },
    'timeout-s': { type: 'string' },
    'agent-token': { type: 'string' },
  },
  async run({ values }, io) {
    // The hosts' caches are theirs: pre-caching needs no local instances path.
    const settings = await loadSettings(values, io.env, { needsInstancesPath: false });
    if (settings.glanceUrl === undefined) throw new InvalidConfigError('--glance', 'the image service URL (or VIRT_IMAGECACHE_GLANCE_URL)', undefined);
    const images = typeof values.images === 'string' ? values.images.split(',').filter((id) => id !== '') : [];
    const { hosts, endpoints } = hostsFromFlags(
      (values.agent as string[] | undefined) ?? [],
      (values.site as string[] | undefined) ?? [],
      (values.down as string[] | undefined) ?? [],
    );
    if (hosts.length === 0) throw new InvalidConfigError('--agent', 'at least one HOST=URL', undefined);
    const window = windowFromFlags(values.window, values.daily);
    const agentToken = (values['agent-token'] as string | undefined) ?? io.env.VIRT_IMAGECACHE_AGENT_TOKEN;
    if (agentToken === undefined || agentToken === '') {
      throw new InvalidConfigError('--agent-token', "the host agents' bearer token (or VIRT_IMAGECACHE_AGENT_TOKEN)", agentToken);
    }
    const timeoutSeconds = positiveNumber('--timeout-s', values['timeout-s']);
    const pinHours = positiveNumber('--pin-hours', values['pin-hours']);
    const summary = await precacheImages({
      aggregate: { id: (values.aggregate as string | undefined) ?? 'cli', name: (values.aggregate as string | undefined) ?? 'cli', hosts },
      imageIds: images,
      source: new GlanceImageSource({ endpoint: settings.glanceUrl, token: settings.token }),
      client: new HttpHostClient({ endpoints, token: agentToken, timeoutMs: timeoutSeconds === undefined ? undefined : timeoutSeconds * 1000 }),
      concurrency: positiveNumber('--concurrency', values.concurrency),
      pinTtlSeconds: pinHours === undefined ? undefined : pinHours * 3600,
      siteBytesPerSecond: positiveNumber('--site-bytes-per-second', values['site-bytes-per-second']),
      window,
      signal: io.signal,
      onEvent: (event) => {
        const line = settings.json ? null : progressLine(event);
        if (line !== null) io.stderr.write(`${line}\n`);
      },
    });
    emit(io, settings.json, summary, () => summaryText(summary));
    const { error, skipped, deferred } = summary.counts;
    return error > 0 || skipped > 0 || deferred > 0 || summary.failedHosts > 0 ? ExitCode.partial : ExitCode.ok;
  },
};
