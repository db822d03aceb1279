/** A rejected value as JSON, cut to 80 characters for safe logging. */
export function showValue(value: unknown): string {
  let shown: string;
  try {
    // JSON.stringify returns undefined for undefined, functions and symbols.
    shown = value === undefined || typeof value === 'function' || typeof value === 'symbol' ? String(value) : JSON.stringify(value);
  } catch {
    shown = String(value);
  }
  return shown.slice(0, 80);
}
