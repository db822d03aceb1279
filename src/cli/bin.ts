#!/usr/bin/env node
/**
 * The `virt-imagecache` executable: {@link runCli} over the process's streams, with SIGINT and
 * SIGTERM cancelling the running command (downloads abort cleanly, leaving nothing partial).
 *
 * @module
 */
import { runCli } from './run-cli.js';

const controller = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    controller.abort(new Error(`received ${signal}`));
  });
}
process.exitCode = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  signal: controller.signal,
  env: process.env,
});
