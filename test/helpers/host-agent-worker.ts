// A compute host in its own process: a libvirt-file cache over its own instances path, downloading
// from the given Glance, served by the pre-cache host agent on 127.0.0.1 (port 0). Prints
// "LISTENING <port>" once it accepts requests; exits on SIGTERM. `probeDelayMs` slows the free-space
// check before each download (a window for clients to leave in).
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { GlanceImageSource, LibvirtFileImageManager, createHostAgent } from '../../src/index.js';
import { statfsProbe } from '../../src/backend-kit/index.js';

interface WorkerArgs {
  host: string;
  instancesPath: string;
  glanceUrl: string;
  token: string;
  probeDelayMs?: number;
}

const args = JSON.parse(process.argv[2] ?? '{}') as WorkerArgs;
const manager = new LibvirtFileImageManager({
  host: args.host,
  instancesPath: args.instancesPath,
  source: new GlanceImageSource({ endpoint: args.glanceUrl, backoffBaseMs: 5 }),
  ...(args.probeDelayMs === undefined
    ? {}
    : {
        filesystemProbe: async (directory: string) => {
          await sleep(args.probeDelayMs);
          return statfsProbe(directory);
        },
      }),
});
const server = createServer(createHostAgent(manager, { token: args.token }));
server.listen(0, '127.0.0.1', () => {
  console.log(`LISTENING ${(server.address() as AddressInfo).port}`);
});
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
