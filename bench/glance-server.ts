// The fake Glance server as a separate process, so benchmarks measure the client alone.
// Argument: JSON FakeGlanceOptions. Prints the URL once every image's checksum is computed.
import { startFakeGlance } from '../src/testing/fake-glance.js';
import type { FakeGlanceOptions } from '../src/testing/fake-glance.js';

const options = JSON.parse(process.argv[2] ?? '{}') as FakeGlanceOptions;
const glance = await startFakeGlance(options);
for (const image of options.images ?? []) {
  // Warm the lazily computed checksums before anyone times a request.
  await fetch(`${glance.url}/v2/images/${image.id}`);
}
console.log(glance.url);
process.on('SIGTERM', () => {
  void glance.close().then(() => process.exit(0));
});
