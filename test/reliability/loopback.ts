// Raw loopback servers for the hostile-network tests: a TCP server that records every byte each
// connection sent (so a test can say exactly which requests reached it) and answers however the
// test says, trickles included.
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

/** One connection as the server saw it. */
export interface SeenConnection {
  /** Every byte the client sent, as latin1 (one character per byte). */
  bytes: string;
  readonly socket: net.Socket;
}

/** A recording server on 127.0.0.1. */
export interface LoopbackServer {
  readonly url: string;
  readonly port: number;
  readonly connections: SeenConnection[];
  close(): Promise<void>;
}

/**
 * Starts a server that calls `answer` once per connection, when the first request head is in
 * (everything after it is still recorded).
 */
export async function startLoopback(answer: (socket: net.Socket, head: string, index: number) => void): Promise<LoopbackServer> {
  const connections: SeenConnection[] = [];
  const server = net.createServer((socket) => {
    const seen: SeenConnection = { bytes: '', socket };
    const index = connections.push(seen) - 1;
    let answered = false;
    socket.on('error', () => undefined);
    socket.on('data', (data) => {
      seen.bytes += data.toString('latin1');
      const end = seen.bytes.indexOf('\r\n\r\n');
      if (!answered && end >= 0) {
        answered = true;
        answer(socket, seen.bytes.slice(0, end), index);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    connections,
    async close() {
      for (const { socket } of connections) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** The value of `name` in a request head (first occurrence, case-insensitive), if any. */
export function headerOf(head: string, name: string): string | undefined {
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0 && line.slice(0, colon).toLowerCase() === name.toLowerCase()) return line.slice(colon + 1).trim();
  }
  return undefined;
}

/**
 * Writes `bytes` to `socket` in pieces of `size` bytes, one every `everyMs`, until done or the
 * socket closes; then ends the socket when `end` is set.
 */
export async function trickle(socket: net.Socket, bytes: Buffer | string, everyMs: number, size = 1, end = false): Promise<void> {
  const data = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
  for (let at = 0; at < data.length; at += size) {
    if (socket.destroyed) return;
    socket.write(data.subarray(at, at + size));
    await delay(everyMs);
  }
  if (end && !socket.destroyed) socket.end();
}

/**
 * Fails with `what` when `work` has not settled within `ms`: a hang is a failure of the test,
 * never a pass.
 */
export async function hangGuard<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`hang: ${what} did not settle within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([work, hung]);
  } finally {
    clearTimeout(timer);
  }
}
