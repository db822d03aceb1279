import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Starts `test/helpers/<script>` in a child Node process (through tsx) with a JSON argument. */
export function startChild(script: string, arg: unknown): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', path.join(here, script), JSON.stringify(arg)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
}

/** Runs a child to completion; resolves with its parsed last stdout line. Rejects on non-zero exit. */
export function runChild<T>(script: string, arg: unknown): Promise<T> {
  const child = startChild(script, arg);
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (code !== 0) {
        reject(new Error(`${script} exited with ${code ?? signal}: ${err}`));
        return;
      }
      const last = out.trim().split('\n').at(-1) ?? 'null';
      resolve(JSON.parse(last) as T);
    });
  });
}

/** Resolves when the child's stdout prints a line containing `marker`. */
export function waitForLine(child: ChildProcess, marker: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const line = buf.split('\n').find((l) => l.includes(marker));
      if (line !== undefined) {
        child.stdout?.off('data', onData);
        resolve(line);
      }
    };
    child.stdout?.on('data', onData);
    child.on('exit', (code) => {
      reject(new Error(`child exited (${code}) before printing ${marker}: ${buf}`));
    });
  });
}
