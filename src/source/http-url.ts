/**
 * The one reading of the URLs this library is given for HTTP services (the image service, host
 * agents, site peers): `http://` or `https://`, and for a base URL nothing after the path.
 *
 * @module
 */

/**
 * `raw` as an `http:`/`https:` URL, or null when it is not a string, does not parse, has another
 * scheme, or (with `base`) carries a query or a fragment, which a base URL has no room for.
 */
export function httpUrlOf(raw: unknown, options: { readonly base?: boolean } = {}): URL | null {
  let url: URL;
  try {
    if (typeof raw !== 'string') return null;
    url = new URL(raw);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  if (options.base === true && (url.search !== '' || url.hash !== '')) return null;
  return url;
}
