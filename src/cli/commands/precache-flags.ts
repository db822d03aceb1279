/**
 * The `precache` command's flags read into fan-out options: hosts with their agents and sites,
 * the window (`--window START/END`, `--daily HH:MM-HH:MM[@OFFSET]`) and numbers.
 *
 * @module
 */
import { InvalidConfigError } from '../../errors.js';
import type { PrecacheHost } from '../../precache/host-client.js';
import { dailyWindow } from '../../precache/window.js';
import type { PrecacheSchedule, PrecacheWindow } from '../../precache/window.js';

/** A number flag above 0, or undefined when absent. */
export function positiveNumber(flag: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isFinite(number) || number <= 0) throw new InvalidConfigError(flag, 'a number > 0', value);
  return number;
}

/** The hosts and their agents, from `--agent HOST[@SITE]=URL`, `--site HOST=SITE` and `--down HOST`. */
export function hostsFromFlags(
  agents: readonly string[],
  sites: readonly string[],
  down: readonly string[],
): { hosts: PrecacheHost[]; endpoints: Record<string, string> } {
  const endpoints: Record<string, string> = {};
  const siteOf = new Map<string, string>();
  for (const spec of agents) {
    const at = spec.indexOf('=');
    if (at <= 0) throw new InvalidConfigError('--agent', 'HOST=URL or HOST@SITE=URL', spec);
    const [host = '', site] = spec.slice(0, at).split('@', 2);
    if (host === '' || site === '') throw new InvalidConfigError('--agent', 'HOST=URL or HOST@SITE=URL', spec);
    endpoints[host] = spec.slice(at + 1);
    if (site !== undefined) siteOf.set(host, site);
  }
  for (const spec of sites) {
    const at = spec.indexOf('=');
    if (at <= 0 || at === spec.length - 1) throw new InvalidConfigError('--site', 'HOST=SITE', spec);
    siteOf.set(spec.slice(0, at), spec.slice(at + 1));
  }
  const downSet = new Set(down);
  const names = [...new Set([...Object.keys(endpoints), ...downSet])];
  for (const host of siteOf.keys()) {
    if (!names.includes(host)) throw new InvalidConfigError('--site', 'a host given with --agent or --down', host);
  }
  const hosts = names.map((name) => {
    const site = siteOf.get(name);
    return { name, up: !downSet.has(name), ...(site === undefined ? {} : { site }) };
  });
  return { hosts, endpoints };
}

/** The window from `--window START/END` (ISO 8601 times) or `--daily HH:MM-HH:MM[@OFFSET]`, or undefined. */
export function windowFromFlags(window: unknown, daily: unknown): PrecacheWindow | PrecacheSchedule | undefined {
  if (window !== undefined && daily !== undefined) throw new InvalidConfigError('--daily', 'not with --window', daily);
  if (typeof window === 'string') {
    const [start, end, extra] = window.split('/');
    const times = [start, end].map((time) => (time === undefined || time === '' ? Number.NaN : Date.parse(time)));
    if (extra !== undefined || times.some((time) => Number.isNaN(time))) {
      throw new InvalidConfigError('--window', 'START/END, two ISO 8601 times (e.g. 2026-01-05T01:00Z/2026-01-05T05:00Z)', window);
    }
    return { start: times[0] ?? Number.NaN, end: times[1] ?? Number.NaN };
  }
  if (typeof daily === 'string') {
    const match = /^(\d\d:\d\d)-(\d\d:\d\d)(?:@(.+))?$/.exec(daily);
    if (match === null) throw new InvalidConfigError('--daily', 'HH:MM-HH:MM, optionally @UTC or @+02:00', daily);
    return dailyWindow(match[1] ?? '', match[2] ?? '', { timeZone: match[3] ?? 'UTC' });
  }
  return undefined;
}
