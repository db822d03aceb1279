/**
 * How the host agent answers: a status with a JSON body, and the typed error answers every route
 * shares (`{"error": {name, code, message}}`), so the pre-cache route and the image route read
 * the same to a client.
 *
 * @module
 */
import type { ServerResponse } from 'node:http';
import type { ImageCacheError } from '../errors.js';

/** An answer with a status and a typed error: thrown by a route, written by the agent. */
export class HttpAnswer extends Error {
  readonly statusCode: number;
  readonly error: ImageCacheError;
  constructor(statusCode: number, error: ImageCacheError) {
    super(error.message);
    this.statusCode = statusCode;
    this.error = error;
  }
}

/** Writes `body` as JSON with `statusCode`. */
export function send(response: ServerResponse, statusCode: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(statusCode, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  response.end(text);
}

/** Writes `{"error": ...}` with `statusCode`, and closes the connection after it. */
export function sendError(response: ServerResponse, statusCode: number, error: ImageCacheError): void {
  // The request body may be unread (or too large to read): close rather than drain it.
  response.setHeader('Connection', 'close');
  send(response, statusCode, { error });
}
