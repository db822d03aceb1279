// Holds a named lock until killed: the cross-process, stale-lock and clock-skew tests run this.
// `skewMs` runs this process's wall clock that far ahead (negative: behind), as on a host whose
// clock is wrong: every mtime it writes (the lock's refreshes) is off by as much. `hostname`
// makes it claim another host, so a waiter cannot check its pid and must judge it by its refreshes.
import { LockManager } from '../../src/backend-kit/index.js';

const { lockDir, name, staleMs, skewMs = 0, hostname } = JSON.parse(process.argv[2] ?? '{}') as {
  lockDir: string;
  name: string;
  staleMs: number;
  skewMs?: number;
  hostname?: string;
};
if (skewMs !== 0) {
  const RealDate = Date;
  // `new Date()` and `Date.now()` (all a lock's refresh reads) come out skewed; the monotonic clock is left alone.
  globalThis.Date = class SkewedDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(RealDate.now() + skewMs);
      else super(...(args as [string | number | Date]));
    }

    static override now(): number {
      return RealDate.now() + skewMs;
    }
  } as DateConstructor;
}
await new LockManager({ lockDir, staleMs, hostname }).acquire(name);
console.log('LOCKED');
setInterval(() => undefined, 1000);
