/**
 * `virt-imagecache agent`: serve this host's cache to `precache` over HTTP
 * (`POST /v1/cache-images`, bearer token) until interrupted.
 *
 * @module
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { InvalidConfigError } from '../../errors.js';
import { createHostAgent } from '../../precache/host-agent.js';
import { ExitCode } from '../context.js';
import type { CliCommand } from '../context.js';
import { openCache } from '../open-cache.js';

/** The `agent` command. */
export const agentCommand: CliCommand = {
  name: 'agent',
  summary: 'serve this host\u2019s cache to `precache` over HTTP until interrupted',
  usage: 'agent [--port P] [--bind ADDRESS] [--agent-token T]',
  options: { port: { type: 'string' }, bind: { type: 'string' }, 'agent-token': { type: 'string' } },
  async run({ values }, io) {
    const { manager } = await openCache(values, io, { needsSource: true });
    const token = (values['agent-token'] as string | undefined) ?? io.env.VIRT_IMAGECACHE_AGENT_TOKEN;
    if (token === undefined || token === '') {
      throw new InvalidConfigError('--agent-token', 'the bearer token clients must send (or VIRT_IMAGECACHE_AGENT_TOKEN)', token);
    }
    const port = Number((values.port as string | undefined) ?? '0');
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidConfigError('--port', 'a TCP port (0: any free one)', values.port);
    const server = http.createServer(createHostAgent(manager, { token }));
    server.listen(port, (values.bind as string | undefined) ?? '127.0.0.1');
    await once(server, 'listening');
    const address = server.address() as AddressInfo;
    io.stdout.write(`agent for ${manager.host} listening on http://${address.address}:${String(address.port)}\n`);
    if (!io.signal.aborted) await once(io.signal, 'abort');
    server.close();
    server.closeAllConnections();
    await once(server, 'close');
    return ExitCode.ok;
  },
};
