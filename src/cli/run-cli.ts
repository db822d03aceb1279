/**
 * The `virt-imagecache` command: parses the command line, runs a sub-command, and maps errors to
 * the documented exit codes. Separate from the bin so tests and embedding tools can call it.
 *
 * @module
 */
import { parseArgs } from 'node:util';
import { isImageCacheError } from '../errors.js';
import { agentCommand } from './commands/agent.js';
import { fetchCommand } from './commands/fetch.js';
import { precacheCommand } from './commands/precache.js';
import { pruneCommand } from './commands/prune.js';
import { statusCommand } from './commands/status.js';
import { ExitCode } from './context.js';
import type { CliCommand, CliIo, ExitCodeValue } from './context.js';
import { COMMON_OPTIONS } from './open-cache.js';

/** Every sub-command, in help order. */
export const COMMANDS: readonly CliCommand[] = [statusCommand, pruneCommand, fetchCommand, precacheCommand, agentCommand];

/** Error codes that mean the user asked for something malformed (exit 2), not a failed operation. */
const USAGE_ERROR_CODES = new Set(['ERR_INVALID_CONFIG', 'ERR_INVALID_IMAGE_ID', 'ERR_PARSE_ARGS_UNKNOWN_OPTION', 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE', 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL']);

/** The text of `--help`. */
export function helpText(): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length));
  return [
    'virt-imagecache: operate a compute host\u2019s image cache (libvirt-file layout)',
    '',
    'Usage: virt-imagecache <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    '',
    'Options (every command):',
    '  --instances-path DIR  the instances path holding _base/ (env VIRT_IMAGECACHE_INSTANCES_PATH)',
    '  --glance URL          Glance endpoint (env VIRT_IMAGECACHE_GLANCE_URL)',
    '  --token TOKEN         Keystone token for Glance and host agents (env OS_AUTH_TOKEN)',
    '  --host NAME           this host\u2019s name (default: the machine\u2019s hostname)',
    '  --config FILE         JSON: {instancesPath, host, glanceUrl, token, cache: {<cache options>}}',
    '  --json                machine-readable output on stdout',
    '  --instances FILE      (status, prune) JSON array of instance records {uuid, name, host, imageRef, ...}',
    '  --agent-token TOKEN   (precache, agent) host agents\u2019 bearer token (env VIRT_IMAGECACHE_AGENT_TOKEN)',
    '  -h, --help            this help; `virt-imagecache <command> --help` for a command',
    '',
    'Exit codes: 0 done; 1 failed; 2 bad usage or configuration; 3 partly done; 130 interrupted.',
  ].join('\n');
}

/** Runs the command line `argv` (without node and the script). Never throws; returns the exit code. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<ExitCodeValue> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout.write(`${helpText()}\n`);
    return name === undefined ? ExitCode.usage : ExitCode.ok;
  }
  const command = COMMANDS.find((candidate) => candidate.name === name);
  if (command === undefined) {
    io.stderr.write(`virt-imagecache: unknown command '${name}'\n\n${helpText()}\n`);
    return ExitCode.usage;
  }
  let json = false;
  try {
    const { values, positionals } = parseArgs({
      args: [...rest],
      options: { ...COMMON_OPTIONS, ...command.options },
      allowPositionals: true,
      strict: true,
    });
    json = values.json === true;
    if (values.help === true) {
      io.stdout.write(`Usage: virt-imagecache ${command.usage}\n\n${command.summary}\n`);
      return ExitCode.ok;
    }
    return await command.run({ values, positionals }, io);
  } catch (err) {
    return reportError(err, io, json);
  }
}

function reportError(err: unknown, io: CliIo, json: boolean): ExitCodeValue {
  const code = (err as { code?: unknown } | null)?.code;
  const exit =
    io.signal.aborted ? ExitCode.interrupted : typeof code === 'string' && USAGE_ERROR_CODES.has(code) ? ExitCode.usage : ExitCode.failed;
  const message = err instanceof Error ? err.message : String(err);
  if (json) {
    io.stdout.write(`${JSON.stringify({ error: { code: typeof code === 'string' ? code : null, message } }, null, 2)}\n`);
  } else {
    io.stderr.write(`virt-imagecache: ${message}${isImageCacheError(err) ? ` [${err.code}]` : ''}\n`);
  }
  return exit;
}
