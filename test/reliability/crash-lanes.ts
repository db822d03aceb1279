// The crash harness of the reliability suite: worker processes (test/helpers/crash-worker.ts)
// started one ahead, and SIGKILLed a given time after they were told to start their work.
// crashes.test.ts and resume-crashes.test.ts run on it.
import assert from 'node:assert/strict';
import { startIpcChild } from '../helpers/child.js';
import type { IpcChild } from '../helpers/child.js';
import type { CrashWork } from '../helpers/crash-worker.js';

/** Starts crash workers one ahead, so a round never waits for a worker to load. */
export class WorkerLane {
  readonly #args: unknown;
  #spare: IpcChild;

  constructor(args: unknown) {
    this.#args = args;
    this.#spare = startIpcChild('crash-worker.ts', args);
  }

  take(): IpcChild {
    const worker = this.#spare;
    this.#spare = startIpcChild('crash-worker.ts', this.#args);
    return worker;
  }

  async close(): Promise<void> {
    this.#spare.process.kill('SIGKILL');
    await this.#spare.exited;
  }
}

/** What a killed worker had done. */
export interface KillOutcome {
  /** The work had finished before the kill landed. */
  readonly finished: boolean;
  /** The work's result, when it finished. */
  readonly value: unknown;
  /** Everything it printed (the START/DONE lines). */
  readonly stdout: string;
}

/** Starts `work` in `worker` and SIGKILLs it `delayMs` later. An error reply before the kill fails the test. */
export async function killDuring(worker: IpcChild, work: CrashWork, delayMs: number): Promise<KillOutcome> {
  await worker.ready;
  let finished = false;
  let value: unknown;
  let failure: string | undefined;
  const reply = worker.request(work).then((r) => {
    if (r.ok) {
      finished = true;
      value = r.value;
    } else if (r.code !== 'WORKER_DIED') failure = `${r.code ?? ''} ${r.message}`;
  });
  await new Promise((resolve) => setTimeout(resolve, delayMs));
  worker.process.kill('SIGKILL');
  await worker.exited;
  await reply;
  assert.equal(failure, undefined, `the work failed before the kill: ${failure ?? ''}`);
  return { finished, value, stdout: worker.stdout() };
}
