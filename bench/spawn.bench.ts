// bench/spawn: a cached spawn on the libvirt-file backend (createInstanceDisk: a cacheImage hit,
// then a qcow2 overlay) vs `qemu-img create -q -f qcow2 -F raw -b BASE OVERLAY SIZE` in the same run,
// for a 1 GiB and an 8 GiB (sparse) base. Targets: ours <= 0.1 x qemu-img's time, and flat in the
// base's size (our 8 GiB median within 1.2 x our 1 GiB median).
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, rm, truncate } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { LibvirtFileImageManager } from '../src/backends/libvirt-file/libvirt-file-manager.js';
import { MemoryImageSource } from '../src/testing/memory-image-source.js';
import { GiB, median, recordResult, timed } from './lib.js';

const RUNS = Number(process.env.BENCH_SPAWN_RUNS ?? 51);
const WARMUP = 3;
/** The disk the guest sees: the same for both base sizes, so only the base's size varies. */
const VIRTUAL_SIZE = 20 * GiB;
const SIZES = [1 * GiB, 8 * GiB] as const;
const HOST = 'bench-host';

const execFileAsync = promisify(execFile);

interface SizeResult {
  readonly baseBytes: number;
  readonly oursMedianMs: number;
  readonly qemuImgMedianMs: number;
  readonly ratio: number;
}

const dir = await mkdtemp(path.join(os.tmpdir(), 'vic-bench-spawn-'));

async function benchSize(manager: LibvirtFileImageManager, instancesPath: string, baseBytes: number): Promise<SizeResult> {
  const imageId = `bench-spawn-${baseBytes / GiB}g`;
  const base = path.join(manager.baseDir, manager.cacheFileName(imageId));
  // A sparse base, already in the cache: cacheImage must find it (`existing`), never download.
  await (await open(base, 'wx')).close();
  await truncate(base, baseBytes);

  let seq = 0;
  const newInstanceDir = async (): Promise<string> => {
    const instanceDir = path.join(instancesPath, `spawn-${baseBytes / GiB}g-${String(seq++).padStart(4, '0')}`);
    await mkdir(instanceDir);
    return instanceDir;
  };

  const oursOnce = async (): Promise<number> => {
    const instanceDir = await newInstanceDir();
    // createInstanceDisk is the whole spawn path: cacheImage (a hit: touch) then, under the
    // image's lock, the base check and the overlay. Calling cacheImage before it would count the
    // hit twice.
    const { ms, value } = await timed(() =>
      manager.createInstanceDisk({ imageId, instanceDir, sizeBytes: VIRTUAL_SIZE, format: 'qcow2' }),
    );
    if (value.cacheStatus !== 'existing') throw new Error(`cache ${value.cacheStatus}, expected existing (no download)`);
    if (!value.created || value.format !== 'qcow2') {
      throw new Error(`createInstanceDisk: created ${String(value.created)}, format ${value.format}`);
    }
    return ms;
  };

  const qemuImgOnce = async (): Promise<number> => {
    const overlay = path.join(await newInstanceDir(), 'disk');
    const { ms } = await timed(() =>
      execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', base, overlay, String(VIRTUAL_SIZE)]),
    );
    return ms;
  };

  // Warm up both (JIT, page cache, qemu-img's shared libraries), then check our overlay once.
  for (let i = 0; i < WARMUP; i++) {
    await oursOnce();
    await qemuImgOnce();
  }
  const probeDir = await newInstanceDir();
  const probe = await manager.createInstanceDisk({ imageId, instanceDir: probeDir, sizeBytes: VIRTUAL_SIZE, format: 'qcow2' });
  const { stdout } = await execFileAsync('qemu-img', ['info', '--output=json', probe.path]);
  const info = JSON.parse(stdout) as {
    format?: string;
    'virtual-size'?: number;
    'backing-filename'?: string;
    'backing-filename-format'?: string;
  };
  if (
    info.format !== 'qcow2' ||
    info['virtual-size'] !== VIRTUAL_SIZE ||
    path.basename(info['backing-filename'] ?? '') !== path.basename(base) ||
    info['backing-filename-format'] !== 'raw'
  ) {
    throw new Error(`our overlay is not what qemu-img would make: ${stdout}`);
  }

  const ours: number[] = [];
  const qemuImg: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    // Alternate which goes first, so neither always runs on a warmer page cache.
    if (run % 2 === 0) {
      ours.push(await oursOnce());
      qemuImg.push(await qemuImgOnce());
    } else {
      qemuImg.push(await qemuImgOnce());
      ours.push(await oursOnce());
    }
  }
  const oursMedianMs = median(ours);
  const qemuImgMedianMs = median(qemuImg);
  return { baseBytes, oursMedianMs, qemuImgMedianMs, ratio: oursMedianMs / qemuImgMedianMs };
}

try {
  const instancesPath = path.join(dir, 'instances');
  await mkdir(instancesPath);
  const manager = new LibvirtFileImageManager({
    host: HOST,
    instancesPath,
    // Empty: any download attempt fails with ImageNotFoundError, so a cache miss cannot hide.
    source: new MemoryImageSource([]),
  });
  await mkdir(manager.baseDir, { recursive: true });

  const results: SizeResult[] = [];
  for (const size of SIZES) results.push(await benchSize(manager, instancesPath, size));
  const [small, large] = results as [SizeResult, SizeResult];
  const flatness = large.oursMedianMs / small.oursMedianMs;
  const fast = small.ratio <= 0.1 && large.ratio <= 0.1;
  const flat = flatness <= 1.2;
  const round3 = (n: number): number => Number(n.toFixed(3));
  const figures = {
    runs: RUNS,
    virtualSizeBytes: VIRTUAL_SIZE,
    oursMedianMs1G: round3(small.oursMedianMs),
    qemuImgMedianMs1G: round3(small.qemuImgMedianMs),
    ratio1G: round3(small.ratio),
    oursMedianMs8G: round3(large.oursMedianMs),
    qemuImgMedianMs8G: round3(large.qemuImgMedianMs),
    ratio8G: round3(large.ratio),
    flatness: round3(flatness),
    ratio: round3(Math.max(small.ratio, large.ratio)),
    target: 'ours <= 0.1 x qemu-img at 1 and 8 GiB; ours 8 GiB <= 1.2 x ours 1 GiB',
    passFast: fast,
    passFlat: flat,
    pass: fast && flat,
  };
  const fmt = (n: number): string => n.toFixed(2);
  console.log(
    `spawn (${RUNS} runs): 1 GiB base ours ${fmt(small.oursMedianMs)} ms vs qemu-img ${fmt(small.qemuImgMedianMs)} ms, ratio ${figures.ratio1G}; ` +
      `8 GiB base ours ${fmt(large.oursMedianMs)} ms vs qemu-img ${fmt(large.qemuImgMedianMs)} ms, ratio ${figures.ratio8G}; ` +
      `ours 8G/1G ${figures.flatness} (target ratio <= 0.1, 8G/1G <= 1.2) -> ${figures.pass ? 'PASS' : 'MISS'}`,
  );
  await recordResult('spawn', figures);
} finally {
  await rm(dir, { recursive: true, force: true });
}
