// The README's configuration and error tables cover every option and every error code, so they
// cannot fall behind the code.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEFAULT_OPTIONS } from '../../src/options.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('README', () => {
  it('the configuration table names every option', async () => {
    const readme = await readFile(path.join(root, 'README.md'), 'utf8');
    const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## Errors'));
    for (const option of Object.keys(DEFAULT_OPTIONS)) assert.match(table, new RegExp(`\\| \`${option}\` \\|`), option);
  });

  it('the errors table explains every error code', async () => {
    const readme = await readFile(path.join(root, 'README.md'), 'utf8');
    const table = readme.slice(readme.indexOf('## Errors'), readme.indexOf('## Observability'));
    const source = await readFile(path.join(root, 'src/errors/base.ts'), 'utf8');
    const union = source.slice(source.indexOf('export type ImageCacheErrorCode'), source.indexOf(';', source.indexOf('export type ImageCacheErrorCode')));
    const codes = [...union.matchAll(/'(ERR_[A-Z_]+)'/g)].map((match) => match[1] ?? '');
    assert.ok(codes.length >= 20, `found ${String(codes.length)} codes`);
    for (const code of codes) assert.match(table, new RegExp(`\\| \`${code}\` \\|`), code);
  });
});
