// Holds a readers/writer lock (shared or exclusive) until killed: the cross-process tests run this.
import { LockManager, ReadWriteLock } from '../../src/backend-kit/index.js';

const { lockDir, name, mode, staleMs } = JSON.parse(process.argv[2] ?? '{}') as {
  lockDir: string;
  name: string;
  mode: 'shared' | 'exclusive';
  staleMs: number;
};
const lock = new ReadWriteLock({ locks: new LockManager({ lockDir, staleMs }), name, staleMs });
await (mode === 'shared' ? lock.acquireShared() : lock.acquireExclusive());
console.log('LOCKED');
setInterval(() => undefined, 1000);
