/**
 * The typed error hierarchy. Every failure the library reports is an {@link ImageCacheError} with a
 * stable {@link ImageCacheError.code}; callers branch on `code` (or `instanceof`), never on message
 * text. Messages name the image and say what to do.
 *
 * @module
 */
export * from './errors/base.js';
export * from './errors/image.js';
export * from './errors/storage.js';
export * from './errors/usage.js';
export * from './errors/precache.js';
export * from './errors/peer.js';
