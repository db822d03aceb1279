// Shared helpers of the benchmarks: timing, medians, and the results file.
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const RESULTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results.json');

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = performance.now();
  const value = await fn();
  return { ms: performance.now() - started, value };
}

/** Merges one benchmark's figures into bench/results.json. */
export async function recordResult(name: string, figures: Record<string, unknown>): Promise<void> {
  let all: Record<string, unknown> = {};
  try {
    all = JSON.parse(await readFile(RESULTS, 'utf8')) as Record<string, unknown>;
  } catch {
    // first result
  }
  all[name] = { ...figures, at: new Date().toISOString() };
  await writeFile(RESULTS, `${JSON.stringify(all, null, 2)}\n`);
}

/** A fake Glance server in its own process (so a bench measures the client alone). */
export interface GlanceServer {
  /** Its base URL. */
  readonly url: string;
  /** Stops it. */
  stop(): void;
}

/** Starts bench/glance-server.ts serving one generated image; resolves once its digests are warm. */
export async function startGlanceServer(imageId: string, size: number, seed: number): Promise<GlanceServer> {
  const server = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(path.dirname(fileURLToPath(import.meta.url)), 'glance-server.ts'), JSON.stringify({ images: [{ id: imageId, content: { size, seed } }] })],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const url = await new Promise<string>((resolve, reject) => {
    server.stdout.once('data', (d: Buffer) => {
      resolve(d.toString().trim());
    });
    server.once('exit', (code) => {
      reject(new Error(`glance server exited ${code}`));
    });
  });
  return { url, stop: () => server.kill('SIGTERM') };
}

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
