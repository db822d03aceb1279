import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isImageCacheError } from '../../src/index.js';
import { SingleFlight } from '../../src/backend-kit/index.js';

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe('SingleFlight', () => {
  it('concurrent callers of one key share one execution', async () => {
    const flights = new SingleFlight<number>();
    let runs = 0;
    const gate = deferred<number>();
    const results = Promise.all(
      Array.from({ length: 10 }, () =>
        flights.run('k', () => {
          runs += 1;
          return gate.promise;
        }),
      ),
    );
    gate.resolve(42);
    const all = await results;
    assert.equal(runs, 1);
    assert.deepEqual(all.map((r) => r.value), Array<number>(10).fill(42));
    assert.equal(all.filter((r) => !r.shared).length, 1);
    assert.equal(flights.size, 0, 'the flight is forgotten once it settles');
  });

  it('different keys run separately, and a settled key runs again', async () => {
    const flights = new SingleFlight<string>();
    let runs = 0;
    const task = (): Promise<string> => {
      runs += 1;
      return Promise.resolve('x');
    };
    await Promise.all([flights.run('a', task), flights.run('b', task)]);
    await flights.run('a', task);
    assert.equal(runs, 3);
  });

  it('a failure reaches every caller', async () => {
    const flights = new SingleFlight<number>();
    const boom = new Error('boom');
    const all = await Promise.allSettled([flights.run('k', () => Promise.reject(boom)), flights.run('k', () => Promise.resolve(1))]);
    assert.deepEqual(all.map((r) => r.status), ['rejected', 'rejected']);
  });

  it('one caller aborting leaves the work running for the others', async () => {
    const flights = new SingleFlight<number>();
    const gate = deferred<number>();
    let taskSignal: AbortSignal | undefined;
    const controller = new AbortController();
    const quitter = flights.run('k', (signal) => {
      taskSignal = signal;
      return gate.promise;
    }, controller.signal);
    const stayer = flights.run('k', () => Promise.resolve(0));
    controller.abort();
    await assert.rejects(quitter, (err) => isImageCacheError(err) && err.code === 'ERR_ABORTED');
    assert.equal(taskSignal?.aborted, false);
    gate.resolve(7);
    assert.equal((await stayer).value, 7);
  });

  it('the work is aborted when every caller has aborted, and the next caller starts afresh', async () => {
    const flights = new SingleFlight<number>();
    let taskSignal: AbortSignal | undefined;
    const controller = new AbortController();
    const first = flights.run('k', (signal) => {
      taskSignal = signal;
      return new Promise<number>(() => undefined);
    }, controller.signal);
    controller.abort();
    await assert.rejects(first);
    assert.equal(taskSignal?.aborted, true);
    assert.equal((await flights.run('k', () => Promise.resolve(5))).value, 5);
  });
});
