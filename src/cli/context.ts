/**
 * What every CLI command receives, and the exit codes it may return.
 *
 * @module
 */
import type { ParseArgsConfig } from 'node:util';
import type { OutputStream } from './progress-bar.js';

/** Documented exit codes of the `virt-imagecache` command. */
export const ExitCode = {
  /** Everything asked for was done. */
  ok: 0,
  /** The operation failed; the message (and in `--json`, the error code) says why. */
  failed: 1,
  /** Bad usage: unknown command or flag, missing argument, invalid configuration. */
  usage: 2,
  /** Partly done: some images or hosts failed (pre-cache) or some removals failed (prune). */
  partial: 3,
  /** Interrupted (SIGINT or SIGTERM); nothing partial was left behind. */
  interrupted: 130,
} as const;

/** One of {@link ExitCode}'s values. */
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** Where a command writes, and what cancels it. */
export interface CliIo {
  /** Results (text or JSON). */
  readonly stdout: OutputStream;
  /** Progress and diagnostics. */
  readonly stderr: OutputStream;
  /** Aborted on SIGINT/SIGTERM. */
  readonly signal: AbortSignal;
  /** Environment (settings fall back to it). */
  readonly env: NodeJS.ProcessEnv;
}

/** A sub-command. */
export interface CliCommand {
  /** Its name on the command line. */
  readonly name: string;
  /** One line for `--help`. */
  readonly summary: string;
  /** Its usage text (after `virt-imagecache`). */
  readonly usage: string;
  /** Its own flags (the common ones are added). */
  readonly options: NonNullable<ParseArgsConfig['options']>;
  /** Runs it. */
  run(args: { readonly values: Record<string, unknown>; readonly positionals: readonly string[] }, io: CliIo): Promise<ExitCodeValue>;
}

/** Writes one result: JSON when asked, else the text. */
export function emit(io: CliIo, json: boolean, value: unknown, text: () => string): void {
  io.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}
