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
  {
    file: 'examples/precache-http.ts',
    expect: [
      /compute-1: host agent \(pid \d+\) listening on http:\/\/127\.0\.0\.1:\d+/,
      /progress \d\/4: compute-4 \(cell2\) skipped: down, not asked/,
      /summary: \{"cached":6,"existing":0,"error":0,"unsupported":0,"skipped":1,"deferred":0\}/,
      /summary: \{"cached":0,"existing":6,"error":0,"unsupported":0,"skipped":1,"deferred":0\}; new bytes from Glance: 0\n/,
      /summary: \{"cached":0,"existing":0,"error":6,"unsupported":0,"skipped":1,"deferred":0\}, 3 failed hosts/,
      /compute-3: failed ERR_HOST_UNAUTHORIZED: .*host compute-3 refused the request \(HTTP 401\)/,
      /agents stopped \(0 still running\), Glance closed, nothing left behind/,
    ],
  },
  {
    file: 'examples/custom-backend.ts',
    expect: [
      /cacheImage \(first\): cached [\w-]+\.img, 8\.0 MiB downloaded, sha\d+ digest verified/,
      /cacheImage \(second\): existing [\w-]+\.img, already there, touched/,
      /spawn vm-1: .*disk\.img from the cache \[existing\]/,
      /pass with vm-1 running: kept [\w-]+\.img \(in-use\)/,
      /list: [\w-]+\.img image [\w-]+ 8\.0 MiB, in use: true \(image [\w-]+ of vm-1\)/,
      /pass a day after vm-1 was deleted: removed [\w-]+\.img \(unused, 8\.0 MiB\)/,
      /left in images\/: \[\.locks\]/,
      /stats: 2 hits, 1 misses, 1 downloads \(8\.0 MiB\)/,
    ],
  },
  { file: 'examples/testing-a-driver.ts', flags: ['--test'], expect: [/# pass 3/, /# fail 0/] },
  {
    // `npm run demo` (a smaller base image keeps the suite quick; the flow is the same).
    file: 'examples/demo.ts',
    env: { DEMO_IMAGE_MIB: '64' },
    expect: [
      /\n {3}cached in \d+ ms/,
      /median [\d.]+ ms per spawn/,
      /summary: \{"cached":3,"existing":0,"error":0,"unsupported":0,"skipped":0,"deferred":0\}/,
      /removed \w+… \(unused\); kept \w+… \(pinned\)/,
      /\[capacity: cap\] least recently used/,
      // The edge site: one host pulled the image from Glance, the three others from their peers.
      /edge-\d \(seed\) cached: 32\.0 MiB from glance\n/,
      /edge-\d cached: 32\.0 MiB from peer:edge-\d\n/,
      /Glance served 32\.0 MiB for 4 hosts \(1\.00x the image\); peers served 96\.0 MiB: 96\.0 MiB saved/,
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
