// Holds a named lock until killed: the cross-process and stale-lock tests run this.
import { LockManager } from '../../src/index.js';

const { lockDir, name, staleMs } = JSON.parse(process.argv[2] ?? '{}') as { lockDir: string; name: string; staleMs: number };
await new LockManager({ lockDir, staleMs }).acquire(name);
console.log('LOCKED');
setInterval(() => undefined, 1000);
