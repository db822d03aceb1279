/**
 * The path of the host agent's image route, shared by the route and the peer source.
 *
 * @module
 */

/** The prefix of the image route: `/v1/images/{id}`. */
export const IMAGES_PATH = '/v1/images/';

/** The image route's URL path of `imageId` (percent-encoded). */
export function imagePathOf(imageId: string): string {
  return `${IMAGES_PATH}${encodeURIComponent(imageId)}`;
}

/** The id part of `/v1/images/{id}` (still percent-encoded), or undefined for another path. */
export function imageSegmentOf(pathname: string): string | undefined {
  return pathname.startsWith(IMAGES_PATH) ? pathname.slice(IMAGES_PATH.length) : undefined;
}
