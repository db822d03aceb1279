// Every example under examples/ runs with its one documented command, as a user would run it
// (importing the package by name, through dist/), so none can rot.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');
const run = promisify(execFile);

/** The environment of a user's shell: not this test runner's (its NODE_TEST_CONTEXT would capture a nested `--test`). */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: '' };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

interface Example {
  readonly file: string;
  /** Extra node flags before the file, e.g. `--test`. */
  readonly flags?: readonly string[];
  /** What its output must show. */
  readonly expect: readonly RegExp[];
  /** Extra environment. */
  readonly env?: NodeJS.ProcessEnv;
}

const EXAMPLES: readonly Example[] = [
  {
    file: 'examples/libvirt-spawn.ts',
    expect: [/spawned .* \[cached\]/, /spawned .* \[existing\]/, /kept \w+ \(in-use\)/, /removed \w+ \(unused\)/],
  },
  { file: 'examples/testing-a-driver.ts', flags: ['--test'], expect: [/# pass 3/, /# fail 0/] },
  {
    // `npm run demo` (a smaller base image keeps the suite quick; the flow is the same).
    file: 'examples/demo.ts',
    env: { DEMO_IMAGE_MIB: '64' },
    expect: [
      /\n   cached in \d+ ms/,
      /median [\d.]+ ms per spawn/,
      /summary: \{"cached":3,"existing":0,"error":0,"unsupported":0,"skipped":0\}/,
      /removed \w+… \(unused\); kept \w+… \(pinned\)/,
      /\[capacity: cap\] least recently used/,
      /nothing left behind/,
    ],
  },
];

describe('examples', () => {
  for (const example of EXAMPLES) {
    it(`${example.file} runs with one command and shows what it claims`, async () => {
      const { stdout } = await run(process.execPath, ['--import', 'tsx', ...(example.flags ?? []), example.file], {
        cwd: root,
        env: { ...userEnv(), ...example.env },
        maxBuffer: 16 * 1024 * 1024,
      });
      for (const pattern of example.expect) assert.match(stdout, pattern);
    });
  }
});
