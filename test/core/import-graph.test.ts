// No import cycle in src/: type-only edges count too, because a cycle of `import type` is still a
// knot of modules that can only be understood (and changed) together. The reader is deliberately
// simple: every static `import`/`export ... from` specifier, `import type` included, and dynamic
// `import('...')` with a literal; relative specifiers only (packages cannot point back into src).
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeTempDir } from '../helpers/tmp.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Module specifiers of static imports and re-exports (type-only too) and literal dynamic imports. */
const SPECIFIER = /(?:^|[\s;}])(?:import|export)\s+(?:type\s+)?(?:[\w*{}\s,$]+?\s+from\s+)?['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

async function sourceFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await sourceFiles(full)));
    else if (entry.name.endsWith('.ts')) files.push(full);
  }
  return files.sort();
}

/** The import graph of the `.ts` files under `dir`: file → files it imports (relative to `dir`). */
async function importGraph(dir: string): Promise<Map<string, string[]>> {
  const files = await sourceFiles(dir);
  const known = new Set(files);
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const text = (await readFile(file, 'utf8')).replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, '');
    const edges = new Set<string>();
    for (const match of text.matchAll(SPECIFIER)) {
      const specifier = match[1] ?? match[2] ?? '';
      if (!specifier.startsWith('.')) continue;
      const target = path.resolve(path.dirname(file), specifier).replace(/\.js$/, '.ts');
      const resolved = known.has(target) ? target : path.join(target, 'index.ts');
      assert.ok(known.has(resolved), `${path.relative(dir, file)} imports ${specifier}, which is not a source file`);
      edges.add(path.relative(dir, resolved));
    }
    graph.set(path.relative(dir, file), [...edges].sort());
  }
  return graph;
}

/** Strongly connected components of more than one file (Tarjan), each as a sorted list. */
function cycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (node: string): void => {
    index.set(node, index.size);
    low.set(node, index.get(node) ?? 0);
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node) ?? 0, low.get(next) ?? 0));
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node) ?? 0, index.get(next) ?? 0));
      }
    }
    if (low.get(node) !== index.get(node)) return;
    const component: string[] = [];
    for (let member = stack.pop(); member !== undefined; member = stack.pop()) {
      onStack.delete(member);
      component.push(member);
      if (member === node) break;
    }
    if (component.length > 1) found.push(component.sort());
  };
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return found;
}

/** One cycle's path through `component`, for the failure message: a → b → … → a. */
function describeCycle(graph: ReadonlyMap<string, readonly string[]>, component: readonly string[]): string {
  const members = new Set(component);
  const start = component[0] ?? '';
  const previous = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const node = queue.shift() ?? '';
    for (const next of graph.get(node) ?? []) {
      if (!members.has(next)) continue;
      if (next === start) {
        const pathBack = [node];
        while (pathBack[0] !== start) pathBack.unshift(previous.get(pathBack[0] ?? '') ?? start);
        return [...pathBack, start].join(' → ');
      }
      if (!previous.has(next)) {
        previous.set(next, node);
        queue.push(next);
      }
    }
  }
  return component.join(', ');
}

function cycleReport(graph: ReadonlyMap<string, readonly string[]>): string[] {
  return cycles(graph).map((component) => `${String(component.length)} files: ${describeCycle(graph, component)}`);
}

describe('import graph of src/', () => {
  it('has no cycle, type-only imports included', async () => {
    const graph = await importGraph(path.join(root, 'src'));
    assert.ok(graph.size > 50, `read ${String(graph.size)} files`);
    assert.deepEqual(cycleReport(graph), []);
  });

  it('the check finds a cycle made of type-only imports and re-exports', async () => {
    const { dir, cleanup } = await makeTempDir('vic-import-graph-');
    try {
      await mkdir(path.join(dir, 'sub'));
      await writeFile(path.join(dir, 'a.ts'), "import type { B } from './sub/b.js';\nexport interface A { b: B }\n");
      await writeFile(path.join(dir, 'sub/b.ts'), "export type { C as B } from '../c.js';\n");
      await writeFile(path.join(dir, 'c.ts'), "import {\n  type A,\n} from './a.js';\nexport type C = A[];\n");
      await writeFile(path.join(dir, 'leaf.ts'), "// import type { A } from './a.js';\nexport const leaf = 1;\n");
      const graph = await importGraph(dir);
      assert.deepEqual(cycles(graph), [['a.ts', 'c.ts', 'sub/b.ts']]);
      assert.deepEqual(cycleReport(graph), ['3 files: a.ts → sub/b.ts → c.ts → a.ts']);
    } finally {
      await cleanup();
    }
  });
});
