// Runs examples/powervm-localdisk.ts as a user would (one command, the package imported by name
// through dist/), so the example cannot rot.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('examples/powervm-localdisk.ts', () => {
  it('runs: the first spawn uploads, the second is a hit that never contacts Glance, cleanup removes only the image disk', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'examples/powervm-localdisk.ts'], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 0, `exit ${code}: ${err}`);
    assert.match(out, /spawn 1: cached \(miss: uploaded into the VG\), cloned i_3e865d14_8c1e into b_web_0001_d506 \(20 GiB\)/);
    assert.match(out, /spawn 2: existing \(hit: Glance not contacted\), cloned i_3e865d14_8c1e into b_web_0002_7b1f \(20 GiB\)/);
    assert.match(out, /bytes pulled from Glance: 64 MiB for 2 spawns/);
    assert.match(out, /cleanup pass: removed i_3e865d14_8c1e \(unused\)/);
    assert.match(out, /volume group after cleanup: b_web_0001_d506, b_web_0002_7b1f\n/);
  });
});
