// The contract suite we ship (describeImageManagerContract) can fail: run through a small
// collecting runner, it passes every test on our in-memory backend and fails tests on one whose
// touch and removal do nothing (Nova's "touch on use" and the pass's removal of unused bases).
// Without this a suite whose assertions never ran would look like a passing contract.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BaseImageScan, CacheEntry } from '../../src/index.js';
import { MemoryImageManager, describeImageManagerContract } from '../../src/testing/index.js';
import type { ContractBackend, ContractTestFunctions } from '../../src/testing/index.js';
import { memoryContractBackend } from '../core/contract-backends.js';

interface Outcome {
  readonly passed: string[];
  readonly failed: string[];
}

/** Runs the suite for `backend` in this process, one test after another, and reports each test. */
async function runContract(backend: ContractBackend): Promise<Outcome> {
  const tests: { name: string; fn: () => Promise<void> | void }[] = [];
  const before: (() => Promise<void>)[] = [];
  const after: (() => Promise<void>)[] = [];
  const runner: ContractTestFunctions = {
    describe: (_name, fn) => {
      fn();
    },
    it: (name, fn) => tests.push({ name, fn }),
    beforeEach: (fn) => before.push(fn),
    afterEach: (fn) => after.push(fn),
  };
  describeImageManagerContract(backend, runner);
  const outcome: Outcome = { passed: [], failed: [] };
  for (const test of tests) {
    let ok = true;
    try {
      for (const fn of before) await fn();
      await test.fn();
    } catch {
      ok = false;
    } finally {
      for (const fn of after) await fn().catch(() => undefined);
    }
    (ok ? outcome.passed : outcome.failed).push(test.name);
  }
  return outcome;
}

/** An in-memory backend whose last-use touch and entry removal silently do nothing. */
class ForgetfulMemoryImageManager extends MemoryImageManager {
  protected override touchEntry(): Promise<void> {
    return Promise.resolve();
  }

  protected override removeEntry(_base: Map<string, never>, _entry: CacheEntry): Promise<void> {
    return Promise.resolve();
  }

  protected override entryNamesForImage(_imageId: string, _scan: BaseImageScan): readonly string[] {
    return [];
  }
}

const memory = memoryContractBackend('in-memory', (options) => new MemoryImageManager(options));
const forgetful = memoryContractBackend('forgetful in-memory', (options) => new ForgetfulMemoryImageManager(options));

describe('the shipped ImageManager contract suite', () => {
  it('passes every test on a correct backend, run through a runner of our own', async () => {
    const outcome = await runContract(memory);
    assert.deepEqual(outcome.failed, []);
    assert.ok(outcome.passed.length >= 10, `only ${String(outcome.passed.length)} tests ran`);
  });

  it('fails a backend whose touch and removal do nothing', async () => {
    const outcome = await runContract(forgetful);
    assert.ok(outcome.failed.length >= 3, `only ${String(outcome.failed.length)} failed: ${outcome.failed.join('; ')}`);
    assert.ok(outcome.passed.length > 0, 'every test failed: the runner, not the backend, is broken');
  });
});
