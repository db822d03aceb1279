// Captures what the library logs through `debug`, so tests can pin Nova's log lines (its tests
// assert warnings and the conductor's summary wording).
import { format } from 'node:util';
import createDebug from 'debug';

/** The captured lines (plain text, no colours) and a function restoring the previous set-up. */
export interface CapturedLog {
  readonly lines: string[];
  restore(): void;
}

/** Enables `namespaces` (e.g. `virt-imagecache:precache*`) and captures their output until `restore()`. */
export function captureLog(namespaces: string): CapturedLog {
  const previousNamespaces = createDebug.disable();
  const previousLog = createDebug.log;
  const lines: string[] = [];
  createDebug.log = (...args: unknown[]): void => {
    // eslint-disable-next-line no-control-regex
    lines.push(format(...args).replace(/\u001b\[[0-9;]*m/g, ''));
  };
  createDebug.enable(namespaces);
  return {
    lines,
    restore() {
      createDebug.log = previousLog;
      createDebug.disable();
      if (previousNamespaces !== '') createDebug.enable(previousNamespaces);
    },
  };
}
