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

/** A reply from a worker started with {@link startIpcChild}. */
export type IpcReply<T> = { ok: true; value: T } | { ok: false; code: string | undefined; message: string };

/** A long-lived worker driven over Node's IPC channel (see test/helpers/ipc-worker.ts). */
export interface IpcChild {
  readonly process: ChildProcess;
  /** Resolves once the worker has loaded and said it is ready. */
  readonly ready: Promise<void>;
  /** Resolves with the exit code or signal once the worker is gone. */
  readonly exited: Promise<number | string | null>;
  /** Everything the worker printed to stdout, for markers and post-mortems. */
  readonly stdout: () => string;
  /** Sends one request and resolves with the worker's reply (rejects if the worker dies first). */
  request<T>(message: unknown): Promise<IpcReply<T>>;
  /** Sends a message without waiting for a reply. */
  send(message: unknown): void;
}

/**
 * Starts `test/helpers/<script>` with an IPC channel, as user `as` when given. Requests carry an
 * id; the worker's `serve()` answers each one. SIGKILL tests kill `process` at any time.
 */
export function startIpcChild(script: string, arg: unknown, as?: { uid: number; gid: number }): IpcChild {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, script), JSON.stringify(arg)], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: { ...process.env, NODE_OPTIONS: '' },
    // Another user (root only): for real permission errors, which root itself never gets.
    ...(as === undefined ? {} : { uid: as.uid, gid: as.gid }),
  });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const pending = new Map<number, (reply: IpcReply<unknown>) => void>();
  let nextId = 1;
  let dead: Error | undefined;
  const exited = new Promise<number | string | null>((resolve) => {
    child.on('exit', (code, signal) => {
      dead = new Error(`${script} exited (${code ?? signal}) with requests pending: ${err.slice(-2000)}`);
      for (const reply of pending.values()) reply({ ok: false, code: 'WORKER_DIED', message: dead.message });
      pending.clear();
      resolve(code ?? signal);
    });
  });
  const ready = new Promise<void>((resolve, reject) => {
    child.on('message', (message: { ready?: true; id?: number } & IpcReply<unknown>) => {
      if (message.ready === true) {
        resolve();
        return;
      }
      const settle = message.id === undefined ? undefined : pending.get(message.id);
      if (settle !== undefined && message.id !== undefined) {
        pending.delete(message.id);
        settle(message);
      }
    });
    void exited.then(() => {
      reject(new Error(`${script} exited before it was ready: ${err.slice(-2000)}`));
    });
  });
  ready.catch(() => undefined);
  return {
    process: child,
    ready,
    exited,
    stdout: () => out,
    request<T>(message: unknown): Promise<IpcReply<T>> {
      if (dead !== undefined) return Promise.resolve({ ok: false, code: 'WORKER_DIED', message: dead.message });
      const id = nextId++;
      return new Promise((resolve) => {
        pending.set(id, resolve as (reply: IpcReply<unknown>) => void);
        child.send({ id, message });
      });
    },
    send(message: unknown): void {
      child.send({ message });
    },
  };
}

/** Kills `child` with SIGKILL and resolves once it is gone (reaped: its pid no longer exists). */
export async function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Kills every child still running and empties the list (an afterEach's cleanup). */
export async function killAll(children: ChildProcess[]): Promise<void> {
  await Promise.all(children.splice(0).map(killAndWait));
}
