// Contends for a named lock from its own process: waits until the wall-clock moment `goAt` (so
// several contenders start together), then `rounds` times takes the lock, appends `IN <pid>` and,
// `holdMs` later, `OUT <pid>` to the journal (O_APPEND: one line per write), and releases it.
// Prints a JSON summary as its last line.
import { appendFileSync } from 'node:fs';
import { LockManager } from '../../src/backend-kit/index.js';

const { lockDir, name, staleMs, journal, goAt, rounds, holdMs } = JSON.parse(process.argv[2] ?? '{}') as {
  lockDir: string;
  name: string;
  staleMs: number;
  journal: string;
  goAt: number;
  rounds: number;
  holdMs: number;
};
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const locks = new LockManager({ lockDir, staleMs });
await sleep(goAt - Date.now());
for (let round = 0; round < rounds; round++) {
  const held = await locks.acquire(name, { timeoutMs: 60_000 });
  appendFileSync(journal, `IN ${process.pid}\n`);
  await sleep(holdMs);
  appendFileSync(journal, `OUT ${process.pid}\n`);
  await held.release();
}
console.log(JSON.stringify({ rounds }));
