// The ImageManager contract (src/testing/image-manager-contract.ts, shipped to driver authors in
// virt-imagecache/testing), proven on every backend of ours with an image cache.
import { describeImageManagerContract } from '../../src/testing/index.js';
import { CONTRACT_BACKENDS } from './contract-backends.js';

for (const backend of CONTRACT_BACKENDS) describeImageManagerContract(backend);
