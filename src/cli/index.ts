/**
 * The `virt-imagecache` command line as a library: run it in-process with your own streams, or
 * reuse its progress bar and byte formatting in a driver's own tools.
 *
 * @packageDocumentation
 */
export { helpText, runCli } from './run-cli.js';
export { ExitCode } from './context.js';
export type { CliIo, ExitCodeValue } from './context.js';
export { createProgressBar, formatBytes } from './progress-bar.js';
export type { OutputStream, ProgressBar, ProgressBarOptions } from './progress-bar.js';
