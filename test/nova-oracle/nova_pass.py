"""Nova's own image cache code as an oracle, for test/nova-oracle/nova-diff.test.ts.

Reads one JSON request (a file named by argv[1]) and, for each scenario, runs Nova's real
periodic pass over the scenario's instances path:
``ComputeManager._run_image_cache_manager_pass`` (``register_storage_use``, ``get_storage_users``,
the instance query by host) and the libvirt ``ImageCacheManager.update()`` it calls (the libvirt
driver's ``manage_image_cache`` is that one call), with ``qemu-img info`` run for real on every
disk Nova inspects (without its prlimit wrapper). Only the database is replaced: the instance
query (``InstanceList.get_by_filters``) filters the scenario's instance records by host, and
``BlockDeviceMappingList.bdms_by_instance_uuid`` returns real ``BlockDeviceMapping`` objects built
from them. ``time.time`` is the scenario's fixed "now" in the two modules that read it (the cache
manager and the storage registry), so Nova sees exactly the ages the test set.

It also answers naming questions (``get_cache_fname``, swap and ephemeral base names) in bulk.
Prints one JSON object on stdout.
"""

import json
import logging
import os
import sys
import types
import warnings
from unittest import mock

import nova.conf
from nova import context as nova_context
from nova import objects
from nova.compute import manager as compute_manager
import nova.privsep
import nova.privsep.fs
import nova.privsep.path
import nova.privsep.qemu
from nova.virt import block_device as driver_block_device
from nova.virt import storage_users
from nova.virt.libvirt import imagecache

CONF = nova.conf.CONF


def fixed_clock(now):
    return types.SimpleNamespace(time=lambda: now)


def set_mkfs(commands):
    """Nova's ``[DEFAULT]virt_mkfs`` (loaded by nova.virt.disk.api at import), per scenario."""
    nova.privsep.fs._MKFS_COMMAND.clear()
    nova.privsep.fs._DEFAULT_MKFS_COMMAND = None
    for os_type, command in (commands or {}).items():
        nova.privsep.fs.load_mkfs_command(os_type, command)


def bdm_objects(instance):
    bdms = []
    for i, device in enumerate(instance.get('bdms', [])):
        fields = dict(
            instance_uuid=instance['uuid'],
            source_type='blank',
            destination_type='local',
            device_name='/dev/vd%s' % chr(ord('b') + i),
            disk_bus=None,
            device_type='disk',
            boot_index=-1,
            no_device=False,
            encrypted=False,
            encryption_secret_uuid=None,
            encryption_format=None,
            encryption_options=None,
            delete_on_termination=True,
            volume_size=device['size'],
        )
        if device['kind'] == 'swap':
            fields['guest_format'] = 'swap'
        else:
            fields['guest_format'] = device.get('guestFormat')
        bdms.append(objects.BlockDeviceMapping(**fields))
    return objects.BlockDeviceMappingList(objects=bdms)


def fake_instance(record):
    return types.SimpleNamespace(
        uuid=record['uuid'],
        name=record['name'],
        host=record['host'],
        image_ref=record.get('imageRef'),
        kernel_id=record.get('kernelId'),
        ramdisk_id=record.get('ramdiskId'),
        vm_state=record.get('vmState'),
        task_state=record.get('taskState'),
        os_type=record.get('osType'),
    )


def run_scenario(scenario):
    conf = scenario['conf']
    CONF.set_override('instances_path', scenario['instancesPath'])
    CONF.set_override('host', scenario['host'])
    CONF.set_override('default_ephemeral_format', conf.get('defaultEphemeralFormat'))
    CONF.set_override('subdirectory_name', conf['subdirectoryName'], group='image_cache')
    CONF.set_override('remove_unused_base_images', conf['removeUnusedBaseImages'], group='image_cache')
    CONF.set_override('remove_unused_original_minimum_age_seconds', conf['originalMinimumAgeSeconds'],
                      group='image_cache')
    CONF.set_override('remove_unused_resized_minimum_age_seconds', conf['resizedMinimumAgeSeconds'],
                      group='image_cache')
    set_mkfs(scenario.get('mkfs'))

    records = scenario['instances']
    bdms = {r['uuid']: bdm_objects(r) for r in records}
    asked = {}

    def get_by_filters(context, filters, expected_attrs=None, use_slave=False):
        # The database: every instance record on one of the hosts asked for.
        asked['hosts'] = sorted(filters['host'])
        return [fake_instance(r) for r in records if r['host'] in filters['host']]

    def bdms_by_instance_uuid(context, uuids):
        return {u: bdms[u] for u in uuids if len(bdms[u]) > 0}

    cache_manager = imagecache.ImageCacheManager()
    driver = types.SimpleNamespace(
        capabilities={'has_imagecache': True},
        manage_image_cache=cache_manager.update,
    )
    now = scenario['now']
    with mock.patch.object(objects.InstanceList, 'get_by_filters', side_effect=get_by_filters), \
            mock.patch.object(objects.BlockDeviceMappingList, 'bdms_by_instance_uuid',
                              side_effect=bdms_by_instance_uuid), \
            mock.patch.object(imagecache, 'time', fixed_clock(now)), \
            mock.patch.object(storage_users, 'time', fixed_clock(now)):
        compute_manager.ComputeManager._run_image_cache_manager_pass(
            types.SimpleNamespace(driver=driver), nova_context.get_admin_context())
    return {'hosts': asked.get('hosts')}


def naming(request):
    out = {'cacheNames': [imagecache.get_cache_fname(i) for i in request.get('ids', [])]}
    swaps = []
    for size in request.get('swapSizes', []):
        bdm = objects.BlockDeviceMapping(source_type='blank', destination_type='local', guest_format='swap',
                                         device_name='/dev/vdb', disk_bus=None, no_device=False,
                                         volume_size=size)
        swap = driver_block_device.convert_swap([bdm])
        swaps.append('swap_' + str(swap[0]['swap_size']))
    out['swapNames'] = swaps
    ephemerals = []
    for item in request.get('ephemerals', []):
        set_mkfs(item.get('mkfs'))
        CONF.set_override('default_ephemeral_format', item.get('defaultEphemeralFormat'))
        # What the libvirt driver names the base it creates at spawn (driver._create_ephemeral's
        # caller), and what the cache manager names the base an instance uses: both must agree.
        os_type = nova.privsep.fs.get_fs_type_for_os_type(item.get('osType'))
        extension = nova.privsep.fs.get_file_extension_for_os_type(os_type, CONF.default_ephemeral_format)
        ephemerals.append('ephemeral_%s_%s' % (item['size'], extension))
    out['ephemeralNames'] = ephemerals
    if 'scanDir' in request:
        # How the cache manager's scan classifies each name (files made by the test).
        scanner = imagecache.ImageCacheManager()
        scanner._scan_base_images(request['scanDir'])
        originals = {os.path.basename(p) for p in scanner.originals}
        unexplained = {os.path.basename(p) for p in scanner.unexplained_images}
        out['scan'] = {
            'original': sorted(originals),
            'resized': sorted(unexplained - originals),
            'swap': sorted(scanner.back_swap_images),
            'ephemeral': sorted(scanner.back_ephemeral_images),
        }
    set_mkfs({})
    CONF.clear_override('default_ephemeral_format')
    return out


def main():
    warnings.simplefilter('ignore')
    # Nova warns about every unknown base file; only errors are worth a line on stderr here.
    logging.disable(logging.WARNING)
    with open(sys.argv[1]) as f:
        request = json.load(f)
    CONF([], project='nova', default_config_files=[])
    # Privileged helpers (utime) run in this process instead of a root daemon.
    nova.privsep.sys_admin_pctxt.set_client_mode(False)
    # qemu-img runs for real, but not under the prlimit wrapper: that is a second Python
    # interpreter per call (~100 ms on a busy machine), and the limits never bind on these disks.
    nova.privsep.qemu.QEMU_IMG_LIMITS = None
    objects.register_all()
    results = []
    for scenario in request.get('scenarios', []):
        try:
            results.append({'id': scenario['id'], 'ok': True, **run_scenario(scenario)})
        except Exception as e:  # reported per scenario: the test decides what an error means
            results.append({'id': scenario['id'], 'ok': False, 'error': '%s: %s' % (type(e).__name__, e)})
    out = {'novaVersion': nova_version(), 'results': results}
    if 'naming' in request:
        out['naming'] = naming(request['naming'])
    json.dump(out, sys.stdout)


def nova_version():
    from nova import version
    return version.version_string()


if __name__ == '__main__':
    main()
