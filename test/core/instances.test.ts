import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ephemeralBaseName } from '../../src/index.js';
import { computeInUse, ephemeralExtension } from '../../src/instances.js';
import type { InstanceRecord } from '../../src/index.js';

const instances: InstanceRecord[] = [
  {
    uuid: '123', name: 'inst-1', host: 'host1', imageRef: '1', kernelId: '21', ramdiskId: '22',
    blockDevices: [{ kind: 'swap', sizeMiB: 128 }, { kind: 'ephemeral', sizeGiB: 4, guestFormat: 'ext4' }],
  },
  { uuid: '456', name: 'inst-2', host: 'host1', imageRef: '2', kernelId: '21', ramdiskId: null, blockDevices: [{ kind: 'swap', sizeMiB: 256 }] },
  { uuid: '789', name: 'inst-3', host: 'remotehost', imageRef: '2', kernelId: '21', ramdiskId: null },
];

describe('in-use computation (Nova _list_running_instances)', () => {
  it('test_list_running_instances: counts local and remote users per image, swap and ephemeral names', () => {
    const inUse = computeInUse(instances, 'host1');
    assert.equal(inUse.usedImages.size, 4);
    assert.deepEqual(inUse.usedImages.get('1'), { local: 1, remote: 0, instanceNames: ['inst-1'] });
    assert.deepEqual(inUse.usedImages.get('2'), { local: 1, remote: 1, instanceNames: ['inst-2', 'inst-3'] });
    assert.deepEqual(inUse.usedImages.get('21'), { local: 2, remote: 1, instanceNames: ['inst-1', 'inst-2', 'inst-3'] });
    assert.deepEqual(inUse.usedImages.get('22'), { local: 1, remote: 0, instanceNames: ['inst-1'] });
    for (const name of ['inst-1', 'inst-2', 'inst-3', '123', '456', '789']) assert.ok(inUse.instanceNames.has(name));
    assert.deepEqual([...inUse.usedSwap].sort(), ['swap_128', 'swap_256']);
    // guest_format ext4 does not change the name: vfat is hashed (0706d66), as in Nova.
    assert.deepEqual([...inUse.usedEphemeral], ['ephemeral_4_0706d66']);
  });

  it('test_list_resizing_instances: a resized instance owns its _resize directories', () => {
    const inUse = computeInUse([{ uuid: '123', name: 'instance-1', host: 'h', imageRef: '1', vmState: 'resized' }], 'h');
    assert.deepEqual([...inUse.instanceNames].sort(), ['123', '123_resize', 'instance-1', 'instance-1_resize']);
  });

  it('resize task states also add _resize names', () => {
    for (const taskState of ['resize_prep', 'resize_migrating', 'resize_migrated', 'resize_finish']) {
      const inUse = computeInUse([{ uuid: 'u', name: 'n', host: 'h', taskState }], 'h');
      assert.ok(inUse.instanceNames.has('u_resize'), taskState);
    }
    assert.ok(!computeInUse([{ uuid: 'u', name: 'n', host: 'h', taskState: 'spawning' }], 'h').instanceNames.has('u_resize'));
  });

  it('gap B closed: every swap and ephemeral device counts, not only the first', () => {
    const inUse = computeInUse(
      [{ uuid: 'u', name: 'n', host: 'h', blockDevices: [
        { kind: 'swap', sizeMiB: 512 }, { kind: 'swap', sizeMiB: 1024 },
        { kind: 'ephemeral', sizeGiB: 1 }, { kind: 'ephemeral', sizeGiB: 2 },
      ] }],
      'h',
    );
    assert.deepEqual([...inUse.usedSwap], ['swap_512', 'swap_1024']);
    assert.deepEqual([...inUse.usedEphemeral], ['ephemeral_1_0706d66', 'ephemeral_2_0706d66']);
  });

  it('volume-backed instances (empty image ref) use no image', () => {
    assert.equal(computeInUse([{ uuid: 'u', name: 'n', host: 'h', imageRef: '' }], 'h').usedImages.size, 0);
  });

  it("ephemeral names follow Nova's hashing: vfat 0706d66, ext4 40d1d2c, mkfs command wins", () => {
    assert.equal(ephemeralExtension(), '0706d66');
    assert.equal(ephemeralExtension({ defaultEphemeralFormat: 'ext4' }), '40d1d2c');
    assert.equal(ephemeralExtension({ defaultEphemeralFormat: 'ntfs' }), '68e98b8');
    assert.equal(ephemeralBaseName(4), 'ephemeral_4_0706d66');
    assert.notEqual(ephemeralExtension({ mkfsCommand: 'mkfs.ext4 -L %(fs_label)s -F %(target)s', defaultEphemeralFormat: 'ext4' }), '40d1d2c');
  });

  it("an OS type's own mkfs command names its instances' ephemeral bases; other OS types get the default's (Nova's virt_mkfs)", () => {
    const linux = 'mkfs.ext3 -L %(fs_label)s -F %(target)s';
    const naming = { mkfsCommandsByOsType: { linux }, defaultEphemeralFormat: 'ext4' };
    assert.equal(ephemeralExtension(naming, 'linux'), ephemeralExtension({ mkfsCommand: linux }));
    // No command for windows: Nova uses the OS type "default", whose filesystem default is vfat,
    // so default_ephemeral_format (else vfat) names it, never windows' ntfs.
    assert.equal(ephemeralExtension(naming, 'windows'), '40d1d2c');
    assert.equal(ephemeralExtension({}, 'windows'), '0706d66');
    assert.equal(ephemeralExtension({ mkfsCommandsByOsType: { linux: '' }, defaultEphemeralFormat: '' }, 'linux'), '0706d66', 'empty strings are unset');
    const inUse = computeInUse(
      [{ uuid: 'u', name: 'n', host: 'h', osType: 'linux', blockDevices: [{ kind: 'ephemeral', sizeGiB: 2 }] }],
      'h',
      naming,
    );
    assert.deepEqual([...inUse.usedEphemeral], [ephemeralBaseName(2, naming, 'linux')]);
  });
});
