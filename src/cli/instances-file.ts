/**
 * `--instances FILE`: the instances an operator command must protect, as a JSON array of
 * instance records (what `openstack server list --long -f json` gives, reshaped).
 *
 * @module
 */
import { readFile } from 'node:fs/promises';
import { InvalidConfigError } from '../errors.js';
import type { InstanceRecord } from '../instances.js';

/** Reads an instances file; undefined when no file was given. */
export async function readInstancesFile(file: unknown): Promise<InstanceRecord[] | undefined> {
  if (file === undefined) return undefined;
  if (typeof file !== 'string') throw new InvalidConfigError('--instances', 'a JSON file path', file);
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new InvalidConfigError('--instances', `a readable JSON file (${(err as Error).message})`, file);
  }
  if (!Array.isArray(parsed)) throw new InvalidConfigError('--instances', 'a JSON array of instance records', file);
  for (const [index, record] of parsed.entries()) {
    const ok =
      typeof record === 'object' &&
      record !== null &&
      typeof (record as Record<string, unknown>).uuid === 'string' &&
      typeof (record as Record<string, unknown>).name === 'string' &&
      typeof (record as Record<string, unknown>).host === 'string';
    if (!ok) throw new InvalidConfigError(`--instances[${String(index)}]`, 'an object with string uuid, name and host', record);
  }
  return parsed as InstanceRecord[];
}
