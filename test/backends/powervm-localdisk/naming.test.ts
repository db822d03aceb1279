// nova-powervm's names (test_get_name_by_uuid, test_get_disk_name, the i_3e865d14_8c1e fixture of
// test_get_or_upload_image) and the collision-safe alternatives.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DISK_OWNER,
  DISK_TAGS,
  VDISK_NAME_MAX,
  bootDiskName,
  classifyDisk,
  findImageDisk,
  imageDiskNameCandidates,
  novaImageDiskName,
  sanitizeForApi,
  uploadDiskName,
} from '../../../src/backends/powervm-localdisk/naming.js';
import type { VolumeGroupDisk } from '../../../src/index.js';
import { TWIN_A, TWIN_B } from './fixture.js';

const disk = (name: string, tags: Record<string, string> = {}): VolumeGroupDisk => ({ name, sizeBytes: 1, createdMs: 0, lastUsedMs: 0, tags });
const ours = (imageId: string): Record<string, string> => ({ [DISK_TAGS.owner]: DISK_OWNER, [DISK_TAGS.imageId]: imageId });

describe('localdisk naming', () => {
  it("test_get_or_upload_image: image 3e865d14-8c1e-... is cached as i_3e865d14_8c1e (15 characters)", () => {
    assert.equal(novaImageDiskName('3e865d14-8c1e-4615-a4d5-1f2e3d4c5b6a'), 'i_3e865d14_8c1e');
    assert.equal(novaImageDiskName('3e865d14-8c1e-4615-a4d5-1f2e3d4c5b6a').length, VDISK_NAME_MAX);
  });

  it('test_get_disk_name: the short boot-disk name is b_<name[:8]>_<uuid[:4]>, sanitised', () => {
    assert.equal(bootDiskName({ name: 'Inst Name', uuid: 'd5065c2c-ac43-3fa6-af32-ea84a3960291' }), 'b_Inst_Nam_d506');
  });

  it('sanitize_file_name_for_api: outside [.0-9A-Za-z_] becomes _, the name part is cut to fit prefix and suffix', () => {
    assert.equal(sanitizeForApi('a-b c/d.e', 'p_', '_s', 10), 'p_a_b_c__s');
    assert.equal(sanitizeForApi('a-b c/d.e'), 'a_b_c_d.e');
    assert.throws(() => sanitizeForApi('', 'i_'), RangeError);
  });

  it('the two UUIDs of the collision tests share nova-powervm\u2019s name; their candidates differ after the first', () => {
    const a = imageDiskNameCandidates(TWIN_A);
    const b = imageDiskNameCandidates(TWIN_B);
    assert.equal(a[0], b[0]);
    assert.equal(new Set([...a.slice(1), ...b.slice(1)]).size, a.length - 1 + b.length - 1);
    for (const name of [...a, ...b, uploadDiskName()]) {
      assert.ok(name.length <= VDISK_NAME_MAX && /^[.0-9A-Za-z_]+$/.test(name), name);
    }
  });

  it('classifies by owner tag and name: ours published (i_), ours uploading (s_), everything else other', () => {
    assert.equal(classifyDisk(disk('i_img_1', ours('img-1'))).role, 'image');
    assert.equal(classifyDisk(disk('s_0123456789abc', ours('img-1'))).role, 'upload');
    assert.equal(classifyDisk(disk('i_img_1')).role, 'other', 'an untagged i_ disk is foreign');
    assert.equal(classifyDisk(disk('i_img_1', { [DISK_TAGS.imageId]: 'img-1' })).role, 'other', 'no owner tag: foreign');
    assert.equal(classifyDisk(disk('b_inst_0001', { ...ours('img-1'), [DISK_TAGS.instanceUuid]: 'u' })).role, 'other');
  });

  it('finds an image\u2019s disk by its full id, never by name alone', () => {
    const disks = [disk('i_3e865d14_8c1e', ours(TWIN_A)), disk(imageDiskNameCandidates(TWIN_B)[1] ?? '', ours(TWIN_B))];
    assert.equal(findImageDisk(disks, TWIN_A)?.name, 'i_3e865d14_8c1e');
    assert.equal(findImageDisk(disks, TWIN_B)?.name, imageDiskNameCandidates(TWIN_B)[1]);
    assert.equal(findImageDisk([disk('i_3e865d14_8c1e')], TWIN_A), undefined, 'a foreign disk with the name is not the image');
  });
});
