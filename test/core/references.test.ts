// Every reference the code makes to Nova's behaviour resolves inside the repository: comments,
// tests and docs cite `(docs/nova-parity.md, <ID>)`, never research files that only existed beside
// the project; every cited ID has its section, and every test a section names exists.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PARITY = 'docs/nova-parity.md';

/** Citations of files that are not in the repository (`§` only ever numbered their sections). */
const OUT_OF_REPO = /nova\.md|peers\.md|limits\.md|§/;


function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const relative = path.posix.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(relative));
    else if (/\.(ts|js|md)$/.test(entry.name)) out.push(relative);
  }
  return out;
}

function read(relative: string): string {
  return readFileSync(path.join(root, relative), 'utf8');
}

/** The IDs of the parity document: the text of each `## ` heading before its colon. */
function sectionIds(parity: string): string[] {
  return [...parity.matchAll(/^## ([^:\n]+):/gm)].map((match) => match[1] ?? '');
}

/** `(docs/nova-parity.md, gap H)` and `docs/nova-parity.md, catalogue: ...` give their ID. */
function citedIds(text: string): string[] {
  return [...text.matchAll(/docs\/nova-parity\.md, ([^):;,\n]+)/g)].map((match) => (match[1] ?? '').trim());
}

/** The tests a section names: `` `test/file.ts` › "name" ``. */
function namedTests(parity: string): { file: string; name: string }[] {
  return [...parity.matchAll(/`(test\/[^`]+\.ts)` › "([^"]+)"/g)].map((match) => ({ file: match[1] ?? '', name: match[2] ?? '' }));
}

/** A test file's text with the escapes its string literals may use undone. */
function unescaped(source: string): string {
  return source.replace(/\\'/g, "'").replace(/\\u2019/g, '\u2019');
}

const checked = ['README.md', 'SECURITY.md', ...filesUnder('src')];
const self = 'test/core/references.test.ts';
const citing = [...checked, 'CHANGELOG.md', ...filesUnder('test'), ...filesUnder('examples'), ...filesUnder('bench')].filter((file) => file !== self);

describe('references to Nova resolve inside the repository', () => {
  it('no file in src/, the README or SECURITY.md cites nova.md, peers.md, limits.md or a § section', () => {
    const offenders = checked.filter((file) => OUT_OF_REPO.test(read(file)));
    assert.deepEqual(offenders, []);
  });

  it(`every ID cited as (${PARITY}, <ID>) has its section, and no ID has two`, () => {
    const ids = sectionIds(read(PARITY));
    assert.equal(new Set(ids).size, ids.length, `duplicate sections: ${ids.join(', ')}`);
    assert.ok(ids.includes('gap H') && ids.includes('bug 3') && ids.includes('race 4.7'), ids.join(', '));
    const unresolved = citing.flatMap((file) => citedIds(read(file)).filter((id) => !ids.includes(id)).map((id) => `${file}: ${id}`));
    assert.deepEqual(unresolved, []);
  });

  it(`every test ${PARITY} names exists, in the file it names`, () => {
    const tests = namedTests(read(PARITY));
    assert.ok(tests.length >= 40, `found ${String(tests.length)} named tests`);
    const missing = tests.filter(({ file, name }) => !existsSync(path.join(root, file)) || !unescaped(read(file)).includes(name));
    assert.deepEqual(missing, []);
  });
});
