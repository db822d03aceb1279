// Nova's own image cache code as the oracle (Debian's python3-nova, run by nova_pass.py): the same
// seeded instances paths go through Nova's real periodic pass and through ours, and each removes
// what it removes. We may keep what Nova removes only for a reason the README names as one of
// Nova's bugs (ALLOWED below); any other difference fails. Names are compared the same way.
//
// Replay a run with RELIABILITY_SEED=<seed>; NOVA_ORACLE_SCENARIOS changes the count.
import assert from 'node:assert/strict';
import { lstat, mkdir, readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import pLimit from 'p-limit';
import { LibvirtFileImageManager } from '../../src/backends/libvirt-file/libvirt-file-manager.js';
import { cacheFileName, classifyBaseFileName } from '../../src/backends/libvirt-file/naming.js';
import { ephemeralBaseName, isResizing, swapBaseName } from '../../src/instances.js';
import type { PassReport } from '../../src/index.js';
import { ManualClock } from '../../src/testing/index.js';
import { requireQemuImg } from '../helpers/qemu.js';
import { makeMemoryTempDir } from '../helpers/tmp.js';
import { Rng, withSeed } from '../reliability/seed.js';
import { assertNovaAvailable, runNova, skipUnlessNova } from './nova.js';
import {
  OverlayPool,
  SELF,
  buildScenario,
  ephemeralNamingOf,
  makeScenario,
  makeUniverse,
  novaFailsOnRegistry,
  registryUnreadable,
  toRecord,
} from './scenarios.js';
import type { Scenario } from './scenarios.js';

const SCENARIOS = Number(process.env.NOVA_ORACLE_SCENARIOS ?? 240);
const NAMES = 1000;

/** What Nova read in a scenario, from which an allowed difference is judged. */
interface NovaView {
  readonly scenario: Scenario;
  /** Fingerprints of the images, kernels and ramdisks of the listed instances (Nova hashes '' too). */
  readonly usedFingerprints: ReadonlySet<string>;
  /** Swap and ephemeral bases of every device after an instance's first swap / first ephemeral. */
  readonly laterDevices: ReadonlySet<string>;
  /** Backing files of disks other than `disk` in the directories Nova reads. */
  readonly nonRootBackings: ReadonlySet<string>;
  /** Backing files of disks in directories Nova does not read (not a listed instance's). */
  readonly unreadBackings: ReadonlySet<string>;
  /** Bases last used at or after the moment both passes began (mtime at or past "now"). */
  readonly usedSincePassBegan: ReadonlySet<string>;
}

/**
 * The only differences allowed: a base we keep and Nova removes, for one of Nova's bugs that the
 * README documents ("Tested against"; each key starts with its ID in docs/nova-parity.md).
 */
const ALLOWED: Readonly<Record<string, (name: string, view: NovaView) => boolean>> = {
  "gap B: Nova reads only the root disk's backing file (not disk.local, disk.eph*, disk.swap, disk.rescue)": (name, view) =>
    view.nonRootBackings.has(name),
  'gap B: Nova counts only the first swap and the first ephemeral device of an instance': (name, view) => view.laterDevices.has(name),
  "gap C: Nova's list walk skips the resized variant after each one it marks in use": (name, view) =>
    /^[0-9a-f]{40}_[0-9]+$/.test(name) && view.usedFingerprints.has(name.slice(0, 40)),
  'bug 1 / gap H: Nova reads only the directories of listed instances, so a base backing any other disk goes': (name, view) =>
    view.unreadBackings.has(name),
  'bug 3: an unreadable registry suspends our removals (Nova reads it as no other host)': (_name, view) =>
    registryUnreadable(view.scenario.registryState),
  'race 4.7: with no minimum age, Nova removes a base used as its pass begins (a spawn may be building on it)': (name, view) =>
    view.usedSincePassBegan.has(name),
};

function novaView(scenario: Scenario, hosts: readonly string[]): NovaView {
  const listed = scenario.instances.filter((i) => hosts.includes(i.host));
  const dirs = new Set<string>();
  const usedFingerprints = new Set<string>();
  const laterDevices = new Set<string>();
  const naming = ephemeralNamingOf(scenario);
  for (const instance of listed) {
    dirs.add(instance.name).add(instance.uuid);
    if (isResizing(toRecord(instance))) dirs.add(`${instance.name}_resize`).add(`${instance.uuid}_resize`);
    for (const ref of [instance.imageRef, instance.kernelId, instance.ramdiskId]) if (ref !== null) usedFingerprints.add(cacheFileName(ref));
    const swaps = instance.bdms.filter((d) => d.kind === 'swap').slice(1);
    const ephemerals = instance.bdms.filter((d) => d.kind === 'ephemeral').slice(1);
    for (const d of swaps) laterDevices.add(swapBaseName(d.size));
    for (const d of ephemerals) laterDevices.add(ephemeralBaseName(d.size, naming, instance.osType));
  }
  const nonRootBackings = new Set<string>();
  const unreadBackings = new Set<string>();
  for (const disk of scenario.disks) {
    if (disk.backing === null) continue;
    if (!dirs.has(disk.dir)) unreadBackings.add(disk.backing);
    else if (disk.name !== 'disk') nonRootBackings.add(disk.backing);
  }
  const usedSincePassBegan = new Set(scenario.baseFiles.filter((f) => f.ageSeconds <= 0).map((f) => f.name));
  return { scenario, usedFingerprints, laterDevices, nonRootBackings, unreadBackings, usedSincePassBegan };
}

/** Every file and directory under `root`, relative, except the lock directory and the registry. */
async function snapshot(root: string): Promise<Set<string>> {
  const found = new Set<string>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const dirent of await readdir(dir, { withFileTypes: true })) {
      const relPath = rel === '' ? dirent.name : `${rel}/${dirent.name}`;
      if (rel === '' && (dirent.name === 'locks' || dirent.name.startsWith('compute_nodes') || dirent.name.startsWith('imagecache_pins'))) continue;
      found.add(dirent.isDirectory() ? `${relPath}/` : relPath);
      if (dirent.isDirectory()) await walk(path.join(dir, dirent.name), relPath);
    }
  };
  await walk(root, '');
  return found;
}

/** The base files of a built scenario whose mtime is no longer the one it was built with (touched). */
async function touchedBases(scenario: Scenario, instancesPath: string, now: number): Promise<string[]> {
  const touched: string[] = [];
  for (const file of scenario.baseFiles) {
    if (file.directory === true) continue;
    try {
      const st = await lstat(path.join(instancesPath, scenario.conf.subdirectoryName, file.name));
      if (Math.round(st.mtimeMs / 1000) !== now - file.ageSeconds) touched.push(file.name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return touched;
}

function removedFrom(before: ReadonlySet<string>, after: ReadonlySet<string>): Set<string> {
  return new Set([...before].filter((p) => !after.has(p)));
}

interface NovaScenarioResult {
  readonly id: string;
  readonly ok: boolean;
  readonly error?: string;
  readonly hosts?: string[];
}

async function runOurs(scenario: Scenario, instancesPath: string, now: number): Promise<PassReport> {
  const records = scenario.instances.map(toRecord);
  const manager = new LibvirtFileImageManager({
    host: SELF,
    instancesPath,
    clock: new ManualClock(now * 1000),
    subdirectoryName: scenario.conf.subdirectoryName,
    removeUnusedBaseImages: scenario.conf.removeUnusedBaseImages,
    removeUnusedOriginalMinimumAgeSeconds: scenario.conf.originalMinimumAgeSeconds,
    removeUnusedResizedMinimumAgeSeconds: scenario.conf.resizedMinimumAgeSeconds,
    ephemeralNaming: ephemeralNamingOf(scenario),
    listInstances: (hosts) => records.filter((r) => hosts.includes(r.host)),
  });
  return manager.update();
}

describe('Nova as the oracle (python3-nova)', () => {
  it(`removes what Nova's own pass removes, over ${SCENARIOS} seeded instances paths`, { skip: skipUnlessNova() }, async (t) => {
    assertNovaAvailable();
    if (requireQemuImg(t) === undefined) return;
    await withSeed(t, async (seed) => {
      const started = performance.now();
      const rng = new Rng(seed);
      const universe = makeUniverse(rng);
      const now = Math.floor(Date.now() / 1000);
      const scenarios = Array.from({ length: SCENARIOS }, (_, i) => makeScenario(rng, universe, `s${i}`, now));
      const { dir, cleanup } = await makeMemoryTempDir('vic-nova-oracle-');
      try {
        const pool = new OverlayPool(path.join(dir, 'pool'));
        const novaPath = (s: Scenario): string => path.join(dir, 'nova', s.id);
        const oursPath = (s: Scenario): string => path.join(dir, 'ours', s.id);
        const build = pLimit(4);
        await Promise.all(scenarios.map((s) => build(async () => {
          await buildScenario(s, novaPath(s), now, pool);
          await buildScenario(s, oursPath(s), now, pool);
        })));
        const before = new Map<string, Set<string>>();
        for (const s of scenarios) {
          const snap = await snapshot(novaPath(s));
          assert.deepEqual(await snapshot(oursPath(s)), snap, `${s.id}: both copies are built alike`);
          before.set(s.id, snap);
        }
        const built = performance.now();

        // Nova in a few Python processes (one per core, at most 4), ours meanwhile in this one.
        const chunks = Math.max(1, Math.min(4, os.availableParallelism()));
        const novaRuns = Array.from({ length: chunks }, (_, c) => {
          const mine = scenarios.filter((_, i) => i % chunks === c);
          return runNova<{ novaVersion: string; results: NovaScenarioResult[] }>(path.join(dir, `request-${c}.json`), {
            scenarios: mine.map((s) => ({
              id: s.id, instancesPath: novaPath(s), host: SELF, now, conf: s.conf, mkfs: s.mkfs, instances: s.instances,
            })),
          });
        });
        // Awaited below; a failure of ours first must not leave their rejections unhandled.
        for (const run of novaRuns) run.catch(() => undefined);
        const reports = new Map<string, PassReport>();
        for (const s of scenarios) reports.set(s.id, await runOurs(s, oursPath(s), now));
        const oursDone = performance.now();
        const novaResults = new Map<string, NovaScenarioResult>();
        let novaVersion = '';
        for (const answer of await Promise.all(novaRuns)) {
          novaVersion = answer.novaVersion;
          for (const r of answer.results) novaResults.set(r.id, r);
        }
        const ran = performance.now();

        const failures: string[] = [];
        const allowedCounts = new Map<string, number>(Object.keys(ALLOWED).map((k) => [k, 0]));
        let novaRemoved = 0;
        let novaTouched = 0;
        let bothRemoved = 0;
        for (const s of scenarios) {
          const nova = novaResults.get(s.id);
          const report = reports.get(s.id);
          assert.ok(nova !== undefined && report !== undefined, s.id);
          const where = `${s.id} (${JSON.stringify({ conf: s.conf, mkfs: s.mkfs, registry: s.registry })})`;
          const novaFailed = novaFailsOnRegistry(s.registryState);
          if (nova.ok === novaFailed) {
            failures.push(`${where}: Nova's pass ${nova.ok ? 'succeeded' : `failed: ${nova.error ?? ''}`}, expected the opposite`);
            continue;
          }
          if (report.failures.length > 0) {
            failures.push(`${where}: our pass reported failures: ${report.failures.map((f) => `${f.name} ${f.operation} ${String(f.error)}`).join('; ')}`);
          }
          // When Nova's pass failed on the registry, there are no hosts of Nova's to compare.
          const hosts = nova.hosts ?? [SELF];
          if (!novaFailed && JSON.stringify([...report.hosts].sort()) !== JSON.stringify(hosts)) {
            failures.push(`${where}: storage users differ: Nova ${JSON.stringify(hosts)}, ours ${JSON.stringify(report.hosts)}`);
          }
          const snap = before.get(s.id) ?? new Set<string>();
          const byNova = removedFrom(snap, await snapshot(novaPath(s)));
          const byUs = removedFrom(snap, await snapshot(oursPath(s)));
          novaRemoved += byNova.size;
          const view = novaView(s, hosts);
          // What Nova marks in use (and touches) we hold in use too, whatever its age.
          const active = new Set(report.active);
          for (const name of await touchedBases(s, novaPath(s), now)) {
            novaTouched++;
            if (!active.has(name)) failures.push(`${where}: Nova marked ${name} in use, we did not`);
          }
          for (const p of byUs) {
            if (byNova.has(p)) bothRemoved++;
            else failures.push(`${where}: we removed ${p}, Nova kept it`);
          }
          for (const p of byNova) {
            if (byUs.has(p)) continue;
            const name = p.startsWith(`${s.conf.subdirectoryName}/`) ? p.slice(s.conf.subdirectoryName.length + 1) : null;
            const reasons = name === null ? [] : Object.entries(ALLOWED).filter(([, allowed]) => allowed(name, view)).map(([reason]) => reason);
            if (reasons.length === 0) failures.push(`${where}: Nova removed ${p}, we kept it, for no allowed reason`);
            for (const reason of reasons) allowedCounts.set(reason, (allowedCounts.get(reason) ?? 0) + 1);
          }
        }
        t.diagnostic(`Nova ${novaVersion}: ${SCENARIOS} scenarios, ${pool.size} overlays made by qemu-img, ${novaRemoved} files removed by Nova, ${bothRemoved} by both, ${novaTouched} marked in use by Nova`);
        for (const [reason, count] of allowedCounts) t.diagnostic(`allowed (${count}): ${reason}`);
        t.diagnostic(`built in ${Math.round(built - started)} ms, our passes in ${Math.round(oursDone - built)} ms, Nova's in ${Math.round(ran - built)} ms`);
        assert.deepEqual(failures.slice(0, 20), [], `${failures.length} differences from Nova`);
        // The comparison saw real removals on both sides, not only kept files.
        assert.ok(bothRemoved > SCENARIOS / 4, `only ${bothRemoved} removals in common`);
      } finally {
        await cleanup();
      }
    });
  });

  it(`names bases as Nova does: ${NAMES} image ids, swap and ephemeral sizes, and scanned names`, { skip: skipUnlessNova() }, async (t) => {
    assertNovaAvailable();
    await withSeed(t, async (seed) => {
      const rng = new Rng(seed);
      const randomString = (alphabet: string, min: number, max: number): string => {
        const chars = Array.from(alphabet); // code points: the unicode alphabet has astral characters
        let s = '';
        for (let n = rng.int(min, max); n > 0; n--) s += rng.pick(chars);
        return s;
      };
      const hex = '0123456789abcdef';
      const unicode = 'aé߷中文ü日本ĳ😀𝔘🚀ß١٢٣';
      const ids = Array.from({ length: NAMES }, (_, i) => {
        if (i % 3 === 0) return `${randomString(hex, 8, 8)}-${randomString(hex, 4, 4)}-4${randomString(hex, 3, 3)}-a${randomString(hex, 3, 3)}-${randomString(hex, 12, 12)}`;
        if (i % 3 === 1) return randomString('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/ ', 1, 64);
        return randomString(`${unicode}abc-`, 1, 40);
      });
      const swapSizes = Array.from({ length: NAMES }, () => (rng.chance(0.5) ? rng.int(0, 65536) : rng.int(0, 2 ** 31 - 1)));
      const commands = ['mkfs.ext4 -L %(fs_label)s -F %(target)s', 'mkfs.xfs -f -L %(fs_label)s %(target)s', 'mkfs.ntfs --fast --label %(fs_label)s %(target)s', ''];
      const ephemerals = Array.from({ length: NAMES }, () => {
        const mkfs: Record<string, string> = {};
        for (const osType of ['default', 'linux', 'windows', 'freebsd']) if (rng.chance(0.25)) mkfs[osType] = rng.pick(commands);
        return {
          size: rng.int(0, 4096),
          osType: rng.pick([null, 'linux', 'windows', 'default', 'freebsd', '']),
          mkfs,
          defaultEphemeralFormat: rng.pick([null, '', 'ext4', 'xfs', 'vfat', 'ntfs', 'ext3']),
        };
      });
      const fp = (): string => randomString(hex, 40, 40);
      const scanNames = [...new Set(Array.from({ length: NAMES }, () => rng.pick([
        () => fp(),
        () => randomString('abcdefghijklmnopqrstuvwxyz0123456789_', 38, 44),
        () => `${fp()}_${randomString('0123456789', 1, 12)}`,
        () => `${fp()}_sm`,
        () => `${fp()}_${randomString('abc_1', 1, 3)}`,
        () => `swap_${rng.pick(['', randomString('0123456789', 1, 6), randomString('ab1', 1, 3), '1_2'])}`,
        () => `ephemeral_${rng.pick(['', randomString('0123456789', 1, 4), 'x'])}_${randomString('0123456789abcdef_', 5, 9)}`,
        () => `ephemeral_${randomString('0123456789', 1, 3)}`,
        () => randomString(`${unicode}_0123456789`, 1, 48),
        () => `${fp().slice(0, rng.int(36, 40))}${randomString(unicode, 1, 3)}`,
        () => `swap_${randomString('١٢٣0', 1, 4)}`,
        () => `ephemeral_${randomString('١٢٣0', 1, 4)}_${randomString(unicode, 7, 7)}`,
      ])()))].filter((n) => n !== '.' && n !== '..');
      const { dir, cleanup } = await makeMemoryTempDir('vic-nova-names-');
      try {
        const scanDir = path.join(dir, 'scan');
        await mkdir(scanDir);
        for (const name of scanNames) await writeFile(path.join(scanDir, name), '');
        const answer = await runNova<{
          naming: { cacheNames: string[]; swapNames: string[]; ephemeralNames: string[]; scan: Record<string, string[]> };
        }>(path.join(dir, 'request.json'), {
          naming: { ids, swapSizes, ephemerals, scanDir },
        });
        const mismatches: string[] = [];
        ids.forEach((id, i) => {
          if (cacheFileName(id) !== answer.naming.cacheNames[i]) mismatches.push(`get_cache_fname(${JSON.stringify(id)}): Nova ${answer.naming.cacheNames[i]}, ours ${cacheFileName(id)}`);
        });
        swapSizes.forEach((size, i) => {
          if (swapBaseName(size) !== answer.naming.swapNames[i]) mismatches.push(`swap ${size}: Nova ${answer.naming.swapNames[i]}, ours ${swapBaseName(size)}`);
        });
        ephemerals.forEach((e, i) => {
          const ours = ephemeralBaseName(e.size, { mkfsCommandsByOsType: e.mkfs, defaultEphemeralFormat: e.defaultEphemeralFormat ?? undefined }, e.osType);
          if (ours !== answer.naming.ephemeralNames[i]) mismatches.push(`ephemeral ${JSON.stringify(e)}: Nova ${answer.naming.ephemeralNames[i]}, ours ${ours}`);
        });
        const novaKind = new Map<string, string>();
        for (const [kind, names] of Object.entries(answer.naming.scan)) for (const name of names) novaKind.set(name, kind);
        for (const name of scanNames) {
          const ours = classifyBaseFileName(name) ?? 'ignored';
          const nova = novaKind.get(name) ?? 'ignored';
          if (ours !== nova) mismatches.push(`scan of ${JSON.stringify(name)}: Nova ${nova}, ours ${ours}`);
        }
        const kinds = new Set(scanNames.map((n) => classifyBaseFileName(n) ?? 'ignored'));
        assert.deepEqual([...kinds].sort(), ['ephemeral', 'ignored', 'original', 'resized', 'swap'], 'every scan kind was generated');
        assert.deepEqual(mismatches.slice(0, 20), [], `${mismatches.length} naming differences from Nova`);
      } finally {
        await cleanup();
      }
    });
  });
});
