/**
 * `virt-imagecache prune [--dry-run]`: apply the cache's rules now (aging, size cap, watermarks)
 * and say what goes and why.
 *
 * @module
 */
import { formatBytes } from '../progress-bar.js';
import { ExitCode, emit } from '../context.js';
import type { CliCommand } from '../context.js';
import { readInstancesFile } from '../instances-file.js';
import { openCache } from '../open-cache.js';

/** The `prune` command. */
export const pruneCommand: CliCommand = {
  name: 'prune',
  summary: 'remove what the rules allow now (unused and old, over the cap or watermarks); --dry-run says what would go',
  usage: 'prune [--dry-run] [--instances FILE]',
  options: { 'dry-run': { type: 'boolean' }, instances: { type: 'string' } },
  async run({ values }, io) {
    const { manager, settings } = await openCache(values, io, { needsSource: false });
    const instances = await readInstancesFile(values.instances);
    const dryRun = values['dry-run'] === true;
    const report = await manager.prune({ dryRun, instances, signal: io.signal });
    emit(io, settings.json, report, () => {
      const verb = dryRun ? 'would remove' : 'removed';
      const lines = report.removed.map(
        (entry) => `${verb} ${entry.name} (${formatBytes(entry.bytes)}): ${entry.reason}${entry.detail === undefined ? '' : `, ${entry.detail}`}`,
      );
      for (const failure of report.failures) lines.push(`failed to ${failure.operation} ${failure.name}: ${String(failure.error)}`);
      lines.push(`${String(report.removed.length)} ${dryRun ? 'to remove' : 'removed'}, ${String(report.kept.length)} kept, ${String(report.failures.length)} failures`);
      return lines.join('\n');
    });
    return report.failures.length > 0 ? ExitCode.partial : ExitCode.ok;
  },
};
