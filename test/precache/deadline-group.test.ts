// DeadlineGroup: the fan-out's per-host timeouts, shared by batches of hosts started together.
// Every call still gets at least its full timeout; finished calls are never aborted; cancelling
// reaches every running call; nothing (timers, listeners) outlives the group.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { DeadlineGroup } from '../../src/precache/deadline-group.js';

const timers = (): number => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;

describe('DeadlineGroup', () => {
  it('calls started together share one signal; a running call times out after at least timeoutMs, a finished one is untouched', async () => {
    // 1 s gives a 10 ms joining window: the two starts below join even on a loaded machine (with
    // 60 ms the window was 1 ms, and a slow first call left the second a batch of its own).
    const group = new DeadlineGroup(undefined, 1000);
    const slow = group.start();
    const fast = group.start();
    assert.equal(slow.signal, fast.signal);
    const started = performance.now();
    assert.equal(await fast.race(Promise.resolve('answered')), 'answered');
    fast.done();
    await assert.rejects(slow.race(new Promise(() => undefined)), { code: 'ERR_ABORTED' });
    assert.ok(performance.now() - started >= 999, 'timed out early');
    assert.equal(slow.timedOut, true);
    slow.done();
    group.close();
  });

  it('a call started after the joining window gets a batch (and a full timeout) of its own', async () => {
    const group = new DeadlineGroup(undefined, 100);
    const first = group.start();
    await sleep(20);
    const second = group.start();
    assert.notEqual(first.signal, second.signal);
    await assert.rejects(first.race(new Promise(() => undefined)), { code: 'ERR_ABORTED' });
    assert.equal(second.signal.aborted, false, 'the later call was cut short');
    first.done();
    second.done();
    group.close();
  });

  it("the caller's signal aborts every running call, and it is not a timeout", async () => {
    const controller = new AbortController();
    const group = new DeadlineGroup(controller.signal, 10_000);
    const a = group.start();
    await sleep(150);
    const b = group.start();
    const races = [a.race(new Promise(() => undefined)), b.race(new Promise(() => undefined))];
    controller.abort();
    for (const race of races) await assert.rejects(race, { code: 'ERR_ABORTED' });
    assert.deepEqual([a.signal.aborted, b.signal.aborted, a.timedOut, b.timedOut], [true, true, false, false]);
    // A call started after the abort is aborted from the start.
    await assert.rejects(group.start().race(Promise.resolve(1)), { code: 'ERR_ABORTED' });
    group.close();
  });

  it('leaves no timer behind once its calls are done and it is closed', () => {
    const before = timers();
    const group = new DeadlineGroup(new AbortController().signal, 1_800_000);
    const calls = Array.from({ length: 100 }, () => group.start());
    assert.equal(timers(), before + 1);
    for (const call of calls) call.done();
    group.close();
    assert.equal(timers(), before);
  });
});
