/**
 * Whether a process still exists, for recovering what a killed process left behind on this host.
 *
 * @module
 */

/**
 * True when a process with this pid exists on this host (EPERM: it exists, under another user). A
 * pid can be reused, so callers pair this with a second signal (an mtime the holder refreshes).
 */
export function processExists(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
