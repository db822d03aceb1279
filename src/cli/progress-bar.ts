/**
 * A download progress display: a redrawn bar on a terminal, plain lines otherwise (logs, CI), so
 * the same call reads well in both.
 *
 * @module
 */
import type { DownloadProgress, ProgressListener } from '../fetch/download.js';

/** A writable stream that may be a terminal (`process.stdout`, `process.stderr`, a file stream). */
export interface OutputStream extends NodeJS.WritableStream {
  /** True when the stream is a terminal. */
  readonly isTTY?: boolean | undefined;
}

/** Options of {@link createProgressBar}. */
export interface ProgressBarOptions {
  /** Where to draw. Default `process.stderr`. */
  readonly stream?: OutputStream | undefined;
  /** Text before the bar, e.g. the image id. Default: the image id of the progress events. */
  readonly label?: string | undefined;
  /** Force the terminal (true) or the line (false) form. Default: the stream's `isTTY`. */
  readonly tty?: boolean | undefined;
  /** In line form, print a line every this many percent. Default 25. */
  readonly lineStepPercent?: number | undefined;
  /** Time source for the rate, ms. Default `performance.now`. */
  readonly now?: (() => number) | undefined;
}

/** A progress listener that draws, plus `done()` to finish the line. */
export interface ProgressBar {
  /** Pass as `onProgress`. */
  readonly update: ProgressListener;
  /** Ends the display (a newline after a bar). Safe to call more than once. */
  done(): void;
}

const MiB = 1024 * 1024;
const BAR_WIDTH = 28;

/** Formats a byte count for humans (B, KiB, MiB, GiB). */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? String(value) : value.toFixed(value >= 100 ? 0 : 1)} ${units[unit] ?? 'B'}`;
}

/** Creates a progress display for one download. */
export function createProgressBar(options: ProgressBarOptions = {}): ProgressBar {
  const stream = options.stream ?? process.stderr;
  const tty = options.tty ?? stream.isTTY === true;
  const step = options.lineStepPercent ?? 25;
  const now = options.now ?? ((): number => performance.now());
  const started = now();
  let nextLine = 0;
  let drawn = false;
  let finished = false;

  const describe = (progress: DownloadProgress): { pct: number | null; text: string } => {
    const label = options.label ?? progress.imageId;
    const seconds = Math.max((now() - started) / 1000, 1e-3);
    const rate = `${(progress.bytesDone / MiB / seconds).toFixed(0)} MiB/s`;
    if (progress.totalBytes === null || progress.totalBytes === 0) {
      return { pct: null, text: `${label} ${formatBytes(progress.bytesDone)} ${rate}` };
    }
    const pct = Math.min(100, Math.floor((progress.bytesDone / progress.totalBytes) * 100));
    const filled = Math.round((pct / 100) * BAR_WIDTH);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`;
    const amounts = `${formatBytes(progress.bytesDone)}/${formatBytes(progress.totalBytes)}`;
    return { pct, text: `${label} ${bar} ${String(pct).padStart(3)}% ${amounts} ${rate}` };
  };

  return {
    update(progress) {
      if (finished) return;
      const { pct, text } = describe(progress);
      if (tty) {
        stream.write(`\r${text}\u001b[K`);
        drawn = true;
        return;
      }
      if (pct === null || pct < nextLine) return;
      stream.write(`${text}\n`);
      nextLine = (Math.floor(pct / step) + 1) * step;
    },
    done() {
      if (finished) return;
      finished = true;
      if (tty && drawn) stream.write('\n');
    },
  };
}
