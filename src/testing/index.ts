/**
 * Fakes for driver authors' tests: a real Glance v2 server on loopback, in-memory sources and
 * backends, a manual clock, and the ImageManager contract suite to run over a backend of one's own
 * ({@link describeImageManagerContract}).
 *
 * @packageDocumentation
 */
export * from './manual-clock.js';
export * from './memory-image-manager.js';
export * from './memory-image-source.js';
export * from './fake-glance.js';
export * from './fake-volume-group.js';
export * from './contract-backend.js';
export * from './image-manager-contract.js';
