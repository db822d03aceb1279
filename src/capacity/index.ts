/**
 * Capacity's public surface: options live in `options.ts`, the API on `ImageManager`; these are
 * the types it speaks and the pure rules, for drivers that want to preview or test decisions.
 *
 * @module
 */
export type { CapacityReport, CapacityTrigger } from './types.js';
export type { EvictionEvent } from '../core/pass-types.js';
export type { ListedEntry, OperatorOptions, PruneOptions, PruneReport } from './operator.js';
export * from './policy.js';
export * from './stats.js';
export * from './statfs.js';
export * from './watermarks.js';
