/**
 * `virt-imagecache precache`: pre-cache images on a set of hosts through their host agents
 * (`virt-imagecache agent` or `createHostAgent` inside a driver), with one progress line per host
 * and a summary.
 *
 * @module
 */
import { InvalidConfigError } from '../../errors.js';
import { HttpHostClient } from '../../precache/http-host-client.js';
import { precacheImages } from '../../precache/precache-images.js';
import { GlanceImageSource } from '../../source/glance-image-source.js';
import { loadSettings } from '../config.js';
import { ExitCode, emit } from '../context.js';
import type { CliCommand } from '../context.js';

function positiveNumber(flag: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isFinite(number) || number <= 0) throw new InvalidConfigError(flag, 'a number > 0', value);
  return number;
}

/** The `precache` command. */
export const precacheCommand: CliCommand = {
  name: 'precache',
  summary: 'pre-cache images on hosts through their agents (one progress line per host, then a summary)',
  usage:
    'precache --images ID[,ID...] --agent HOST=URL [--agent HOST=URL ...] [--down HOST ...] [--aggregate NAME] [--concurrency N] [--pin-hours H] [--timeout-s S] [--agent-token T]',
  options: {
    images: { type: 'string' },
    agent: { type: 'string', multiple: true },
    down: { type: 'string', multiple: true },
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
    const endpoints: Record<string, string> = {};
    for (const spec of (values.agent as string[] | undefined) ?? []) {
      const at = spec.indexOf('=');
      if (at <= 0) throw new InvalidConfigError('--agent', 'HOST=URL', spec);
      endpoints[spec.slice(0, at)] = spec.slice(at + 1);
    }
    const down = new Set((values.down as string[] | undefined) ?? []);
    const hostNames = [...new Set([...Object.keys(endpoints), ...down])];
    if (hostNames.length === 0) throw new InvalidConfigError('--agent', 'at least one HOST=URL', undefined);
    const agentToken = (values['agent-token'] as string | undefined) ?? io.env.VIRT_IMAGECACHE_AGENT_TOKEN;
    if (agentToken === undefined || agentToken === '') {
      throw new InvalidConfigError('--agent-token', "the host agents' bearer token (or VIRT_IMAGECACHE_AGENT_TOKEN)", agentToken);
    }
    const timeoutSeconds = positiveNumber('--timeout-s', values['timeout-s']);
    const pinHours = positiveNumber('--pin-hours', values['pin-hours']);
    const summary = await precacheImages({
      aggregate: { id: (values.aggregate as string | undefined) ?? 'cli', name: (values.aggregate as string | undefined) ?? 'cli', hosts: hostNames.map((name) => ({ name, up: !down.has(name) })) },
      imageIds: images,
      source: new GlanceImageSource({ endpoint: settings.glanceUrl, token: settings.token }),
      client: new HttpHostClient({ endpoints, token: agentToken, timeoutMs: timeoutSeconds === undefined ? undefined : timeoutSeconds * 1000 }),
      concurrency: positiveNumber('--concurrency', values.concurrency),
      pinTtlSeconds: pinHours === undefined ? undefined : pinHours * 3600,
      signal: io.signal,
      onEvent: (event) => {
        if (event.type !== 'aggregate.cache_images.progress' || settings.json) return;
        io.stderr.write(
          `[${String(event.index)}/${String(event.total)}] ${event.host}: ${event.status}` +
            `${event.images_failed.length > 0 ? `, failed ${event.images_failed.join(' ')}` : ''}${event.error === null ? '' : ` (${event.error.code})`}\n`,
        );
      },
    });
    emit(io, settings.json, summary, () =>
      [
        `${String(summary.totalHosts)} hosts, ${String(summary.imageIds.length)} images in ${(summary.durationMs / 1000).toFixed(1)} s: ` +
          Object.entries(summary.counts)
            .map(([status, count]) => `${String(count)} ${status}`)
            .join(', '),
        ...summary.hosts.flatMap((host) =>
          host.images.filter((image) => image.status === 'error').map((image) => `  ${host.host} ${image.imageId}: ${image.error?.message ?? 'error'}`),
        ),
      ].join('\n'),
    );
    const { error, skipped } = summary.counts;
    return error > 0 || skipped > 0 || summary.failedHosts > 0 ? ExitCode.partial : ExitCode.ok;
  },
};
