/**
 * Running Nova's own code (Debian's `python3-nova`) from the tests: whether it is there, and one
 * Python process that answers a whole batch of questions (see nova_pass.py).
 *
 * @module
 */
import { spawn, spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Debian's interpreter: the one whose `dist-packages` hold Nova (not a pyenv or venv python). */
export const NOVA_PYTHON = '/usr/bin/python3';

const DRIVER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'nova_pass.py');

/** A hang guard: a batch that runs this long fails the test. */
const BATCH_TIMEOUT_MS = 300_000;

let unavailable: string | null | undefined;

/** Why Nova cannot be run here, or null when it can. */
export function novaUnavailableReason(): string | null {
  if (unavailable !== undefined) return unavailable;
  const probe = spawnSync(NOVA_PYTHON, ['-c', 'import nova.virt.libvirt.imagecache, nova.compute.manager'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (probe.error !== undefined) unavailable = `${NOVA_PYTHON} cannot run (${probe.error.message}): install python3-nova`;
  else if (probe.status !== 0) unavailable = `${NOVA_PYTHON} cannot import nova (install python3-nova): ${probe.stderr.trim().split('\n').at(-1) ?? ''}`;
  else unavailable = null;
  return unavailable;
}

/**
 * The `skip` option of a test that needs Nova: skipped, saying why, where Nova is missing, except
 * on CI, where the test runs and fails through {@link assertNovaAvailable}.
 */
export function skipUnlessNova(): string | false {
  const reason = novaUnavailableReason();
  return reason !== null && process.env.CI !== 'true' ? reason : false;
}

/** Fails (on CI) when Nova is missing. */
export function assertNovaAvailable(): void {
  const reason = novaUnavailableReason();
  if (reason !== null) throw new Error(`Nova is required in CI: ${reason}`);
}

/** Runs nova_pass.py over the request written to `requestFile`; resolves with its parsed answer. */
export async function runNova<T>(requestFile: string, request: unknown): Promise<T> {
  await writeFile(requestFile, JSON.stringify(request));
  return new Promise<T>((resolve, reject) => {
    const child = spawn(NOVA_PYTHON, [DRIVER, requestFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    const guard = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`nova_pass.py did not finish within ${BATCH_TIMEOUT_MS} ms`));
    }, BATCH_TIMEOUT_MS);
    child.once('error', (error) => {
      clearTimeout(guard);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(guard);
      if (code !== 0) {
        reject(new Error(`nova_pass.py exited with ${String(code)}:\n${Buffer.concat(err).toString('utf8').slice(-4000)}`));
        return;
      }
      try {
        resolve(JSON.parse(Buffer.concat(out).toString('utf8')) as T);
      } catch (error) {
        reject(new Error(`nova_pass.py printed no JSON: ${String(error)}`));
      }
    });
  });
}
