/**
 * Fakes for driver authors' tests: a real Glance v2 server on loopback, in-memory sources and
 * backends, and a manual clock.
 *
 * @packageDocumentation
 */
export * from './manual-clock.js';
export * from './memory-image-manager.js';
export * from './memory-image-source.js';
export * from './fake-glance.js';
export * from './fake-volume-group.js';
