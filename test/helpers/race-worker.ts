// One "compute host" of the race harness (test/reliability/races.test.ts): a long-lived process
// with a libvirt-file manager over the shared instances path, minimum ages forced to 0, running
// whatever operation of test/reliability/race-ops.ts the parent sends.
import { raceOperation } from '../reliability/race-ops.js';
import type { RaceMessage } from '../reliability/race-ops.js';
import { serve, workerArgs } from './ipc-worker.js';
import { workerManager } from './worker-manager.js';
import type { WorkerHostArgs } from './worker-manager.js';

const args = workerArgs() as WorkerHostArgs;
const manager = workerManager(args);
const context = { manager, instancesPath: args.instancesPath };

serve((message) => {
  const request = message as RaceMessage;
  return raceOperation(request.op).run(context, request);
});
