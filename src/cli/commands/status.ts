/**
 * `virt-imagecache status`: what the cache holds — entries, sizes, ages, use and pins.
 *
 * @module
 */
import { formatBytes } from '../progress-bar.js';
import { ExitCode, emit } from '../context.js';
import type { CliCommand } from '../context.js';
import { readInstancesFile } from '../instances-file.js';
import { openCache } from '../open-cache.js';

function age(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 120) return `${String(seconds)}s`;
  if (seconds < 7200) return `${String(Math.round(seconds / 60))}m`;
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)}h`;
  return `${(seconds / 86_400).toFixed(1)}d`;
}

/** The `status` command. */
export const statusCommand: CliCommand = {
  name: 'status',
  summary: 'list cache entries with size, kind, image, last use, in-use and pin',
  usage: 'status [--instances FILE]',
  options: { instances: { type: 'string' } },
  async run({ values }, io) {
    const { manager, settings } = await openCache(values, io, { needsSource: false });
    const instances = await readInstancesFile(values.instances);
    const entries = await manager.list({ instances, signal: io.signal });
    const diskUsage = await manager.getDiskUsage();
    const pins = await manager.listPins();
    const now = Date.now();
    emit(io, settings.json, { instancesPath: settings.instancesPath, baseDir: manager.baseDir, diskUsage, entries, pins: Object.fromEntries(pins) }, () => {
      const rows = entries.map((entry) => [
        entry.name,
        entry.kind,
        entry.imageId ?? '-',
        formatBytes(entry.sizeBytes),
        age(now - entry.lastUsedMs),
        entry.inUse === null ? '?' : entry.inUse ? `yes (${entry.usedBy ?? ''})` : 'no',
        entry.pinnedUntilMs === null ? '-' : new Date(entry.pinnedUntilMs).toISOString(),
      ]);
      const header = ['NAME', 'KIND', 'IMAGE', 'SIZE', 'UNUSED FOR', 'IN USE', 'PINNED UNTIL'];
      const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
      const line = (cells: readonly string[]): string => cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd();
      return [
        `${manager.baseDir}: ${String(entries.length)} entries, ${formatBytes(diskUsage)} on disk`,
        ...(entries.length === 0 ? [] : [line(header), ...rows.map(line)]),
        ...(values.instances === undefined ? ['(in use: from instance disks only; pass --instances FILE for instance records)'] : []),
      ].join('\n');
    });
    return ExitCode.ok;
  },
};
