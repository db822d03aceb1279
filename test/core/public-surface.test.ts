// The package's entry points: the root stays what a driver composes, and every subpath in
// package.json `exports` is built from an entry file, documented by typedoc and covered by an API
// report (which `npm test` compares: scripts/api-report.ts).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The root's budget of runtime names (issue 15): managers, source, errors, options, pre-cache, pass. */
const ROOT_RUNTIME_NAMES_MAX = 60;

interface Entry {
  readonly subpath: string;
  /** `src/<dir>/index.ts`, or `src/index.ts` for the root. */
  readonly source: string;
  /** The report's name in `api/`. */
  readonly report: string;
}

async function entries(): Promise<Entry[]> {
  const pkg = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as {
    exports: Record<string, string | { types?: string; default?: string }>;
  };
  return Object.entries(pkg.exports).flatMap(([subpath, target]) => {
    if (typeof target === 'string') return [];
    assert.ok(target.types !== undefined && target.default !== undefined, `${subpath} has types and a default`);
    assert.equal(target.types.replace(/\.d\.ts$/, '.js'), target.default, `${subpath}: types beside the code`);
    const source = target.default.replace(/^\.\/dist\//, 'src/').replace(/\.js$/, '.ts');
    return [{ subpath, source, report: subpath === '.' ? 'index' : subpath.slice(2) }];
  });
}

describe('public surface', () => {
  it(`the root exports at most ${String(ROOT_RUNTIME_NAMES_MAX)} runtime names`, async () => {
    const names = Object.keys(await import('../../src/index.js'));
    assert.ok(names.length >= 20, `found ${String(names.length)} names`);
    assert.ok(names.length <= ROOT_RUNTIME_NAMES_MAX, `${String(names.length)} runtime names at the root: ${names.join(', ')}`);
  });

  it('every entry point has an entry file, a typedoc entry and an API report', async () => {
    const typedoc = JSON.parse(await readFile(path.join(root, 'typedoc.json'), 'utf8')) as { entryPoints: string[] };
    const all = await entries();
    assert.ok(all.length >= 6, `found ${String(all.length)} entry points`);
    for (const entry of all) {
      assert.ok(existsSync(path.join(root, entry.source)), `${entry.subpath}: ${entry.source} exists`);
      assert.ok(typedoc.entryPoints.includes(entry.source), `${entry.subpath}: ${entry.source} is a typedoc entry point`);
      assert.ok(existsSync(path.join(root, 'api', `${entry.report}.api.md`)), `${entry.subpath}: api/${entry.report}.api.md exists`);
    }
  });

  it('entry files list their exports by name, so a merge cannot widen the API unseen', async () => {
    for (const entry of await entries()) {
      if (entry.subpath === './testing') continue; // the fakes' own index, every name a fake
      const text = await readFile(path.join(root, entry.source), 'utf8');
      assert.doesNotMatch(text, /^export (type )?\* from/m, `${entry.source} re-exports a whole module`);
    }
  });
});
