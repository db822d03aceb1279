// The worker side of startIpcChild (test/helpers/child.ts): answers each request with the
// handler's value, or with the error's code and message.
import { isImageCacheError } from '../../src/errors.js';

/** Parsed JSON argument the parent passed on the command line. */
export function workerArgs(): unknown {
  return JSON.parse(process.argv[2] ?? '{}');
}

/**
 * Serves requests until the parent disconnects. Requests are handled as they arrive (the parent
 * decides how many run at once); `onMessage` receives fire-and-forget messages.
 */
export function serve(handler: (message: unknown) => Promise<unknown>, onMessage?: (message: unknown) => void): void {
  const send = process.send?.bind(process);
  if (send === undefined) throw new Error('this worker must be started with an IPC channel');
  process.on('message', (envelope: { id?: number; message: unknown }) => {
    if (envelope.id === undefined) {
      onMessage?.(envelope.message);
      return;
    }
    const { id } = envelope;
    handler(envelope.message).then(
      (value) => send({ id, ok: true, value: value ?? null }),
      (err: unknown) => {
        const code = isImageCacheError(err) ? err.code : (err as NodeJS.ErrnoException | undefined)?.code;
        send({ id, ok: false, code, message: err instanceof Error ? err.message : String(err) });
      },
    );
  });
  process.on('disconnect', () => process.exit(0));
  send({ ready: true });
}
