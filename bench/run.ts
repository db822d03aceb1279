// `npm run bench`: runs every bench/*.bench.ts in turn, then prints the summary of results.json.
import { spawnSync } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { RESULTS } from './lib.js';

const here = import.meta.dirname;
const only = process.argv.slice(2);
// Benches that create and delete tens of thousands of files run last. On an ext4 without a
// journal (as on the 2-core reference VM), allocating an inode skips every inode deleted in the
// last minutes, one by one: after the pass bench's 90,000 deletions a file create costs ~1 ms
// instead of ~30 µs for several minutes, which would swamp the metadata-bound spawn bench.
const CHURN_LAST = ['capacity', 'localdisk', 'pass'];
const churn = (f: string): number => (CHURN_LAST.some((c) => f.startsWith(c)) ? 1 : 0);
const scripts = (await readdir(here))
  .filter((f) => f.endsWith('.bench.ts') && (only.length === 0 || only.some((o) => f.startsWith(o))))
  .sort((a, b) => churn(a) - churn(b) || a.localeCompare(b));
let failed = 0;
for (const script of scripts) {
  console.log(`\n== ${script}`);
  const run = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', path.join(here, script)], { stdio: 'inherit' });
  if (run.status !== 0) failed += 1;
}
const results = JSON.parse(await readFile(RESULTS, 'utf8').catch(() => '{}')) as Record<
  string,
  {
    ratio?: number;
    target?: string;
    pass?: boolean;
    boundRatio?: number;
    boundTarget?: string;
    boundPass?: boolean;
    /** More figures of the same bench, each a row of its own (e.g. bench/edge's Glance bytes per site). */
    rows?: readonly { label: string; ratio: number; target: string; pass: boolean }[];
  }
>;
console.log('\n| bench | ratio | target | pass |\n|---|---|---|---|');
for (const [name, r] of Object.entries(results)) {
  console.log(`| ${name} | ${r.ratio ?? ''} | ${r.target ?? ''} | ${r.pass === undefined ? '' : String(r.pass)} |`);
  if (r.boundRatio !== undefined) console.log(`| ${name} vs physical bound | ${r.boundRatio} | ${r.boundTarget ?? ''} | ${String(r.boundPass)} |`);
  for (const row of r.rows ?? []) console.log(`| ${name}: ${row.label} | ${row.ratio} | ${row.target} | ${String(row.pass)} |`);
}
process.exit(failed === 0 ? 0 : 1);
