/**
 * Glance's responses, byte for byte where clients can tell: JSON spaced as Python's, webob's error
 * bodies after the `Accept` header, and the empty 500 of a Glance that fails.
 *
 * @module
 */
import { STATUS_CODES } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** JSON spaced as Python's `json.dumps` spaces it (`", "` and `": "`), so lengths match Glance's. */
function pythonJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(', ')}]`;
  if (typeof value === 'object' && value !== null) {
    return `{${Object.entries(value)
      .filter(([, field]) => field !== undefined)
      .map(([key, field]) => `${JSON.stringify(key)}: ${pythonJson(field)}`)
      .join(', ')}}`;
  }
  return JSON.stringify(value);
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = pythonJson(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const REASONS: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  416: 'Request Range Not Satisfiable',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** What Glance's error responses say; `explanation` and `detail` as webob's exceptions take them. */
export interface GlanceError {
  readonly status: number;
  readonly explanation: string;
  readonly detail?: string | undefined;
  readonly headers?: Readonly<Record<string, string>> | undefined;
}

/** The q-value `accept` gives `type` (0 when it does not accept it), as webob reads Accept. */
function acceptQuality(accept: string, type: string): number {
  let best = -1;
  let quality = 0;
  for (const part of accept.split(',')) {
    const [range = '', ...params] = part.split(';').map((p) => p.trim().toLowerCase());
    const [major, minor] = range.split('/');
    const specificity = range === type ? 2 : major === type.split('/')[0] && minor === '*' ? 1 : range === '*/*' ? 0 : -1;
    if (specificity <= best) continue;
    best = specificity;
    const q = params.find((p) => p.startsWith('q='));
    quality = q === undefined ? 1 : Number(q.slice(2)) || 0;
  }
  return quality;
}

/**
 * Sends an error the way Glance does (webob's exception bodies): HTML when the client accepts
 * `text/html` (`*\/*` included), JSON `{message, code: "404 Not Found", title}` when it accepts
 * only `application/json`, plain text otherwise (no Accept, or `application/octet-stream`).
 */
export function sendError(req: IncomingMessage, res: ServerResponse, error: GlanceError): void {
  const title = REASONS[error.status] ?? STATUS_CODES[error.status] ?? 'Error';
  const status = `${error.status} ${title}`;
  // webob's body template; the 405 one has no comment line.
  const raw = (escape: (text: string) => string): string =>
    `${escape(error.explanation)}<br /><br />\n${escape(error.detail ?? '')}${error.status === 405 ? '' : '\n\n'}`;
  if (req.method === 'HEAD') {
    // webob answers HEAD with its default (HTML) type and no body.
    res.writeHead(error.status, { ...error.headers, 'content-type': 'text/html; charset=UTF-8', 'content-length': 0 });
    res.end();
    return;
  }
  const accept = req.headers.accept ?? '';
  const html = accept === '' ? 0 : acceptQuality(accept, 'text/html');
  const json = accept === '' ? 0 : acceptQuality(accept, 'application/json');
  let type: string;
  let body: string;
  if (html > 0 && html >= json) {
    type = 'text/html; charset=UTF-8';
    body = `<html>\n <head>\n  <title>${status}</title>\n </head>\n <body>\n  <h1>${status}</h1>\n  ${raw(htmlEscape)}\n </body>\n</html>`;
  } else if (json > 0) {
    type = 'application/json';
    body = pythonJson({ message: raw((text) => text), code: status, title });
  } else {
    type = 'text/plain; charset=UTF-8';
    const stripped = raw((text) => text)
      .replace(/\n/g, ' ')
      .replace(/\r/g, '')
      .replace(/<br\s*\/?>/gi, '\n')
      .replace(/<[^>]*>/g, '');
    body = `${status}\n\n${stripped}`;
  }
  res.writeHead(error.status, { ...error.headers, 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function htmlEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#x27;');
}

/**
 * What Glance's server (eventlet) answers when Glance itself fails: an empty 500, then it closes
 * the connection.
 */
export function sendCrash(res: ServerResponse): void {
  res.removeHeader('x-openstack-request-id');
  res.writeHead(500, { 'content-type': 'text/plain', 'content-length': 0, connection: 'close' });
  res.end();
}
