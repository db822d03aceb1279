// Registers N hosts concurrently in a shared storage registry: the cross-process registry test
// runs several of these at once.
import { StorageRegistry } from '../../src/backends/libvirt-file/storage-registry.js';
import { systemClock } from '../../src/clock.js';
import { LockManager } from '../../src/fetch/lock-manager.js';

interface WorkerArgs {
  instancesPath: string;
  lockDir: string;
  prefix: string;
  count: number;
}

const args = JSON.parse(process.argv[2] ?? '{}') as WorkerArgs;
const registry = new StorageRegistry({
  instancesPath: args.instancesPath,
  locks: new LockManager({ lockDir: args.lockDir }),
  clock: systemClock,
});
await Promise.all(Array.from({ length: args.count }, (_, i) => registry.register(`${args.prefix}-${i}`)));
console.log(JSON.stringify({ registered: args.count }));
