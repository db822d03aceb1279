/**
 * `GET /v2/images/{id}/file`: the image's bytes, whole or a range, with the image's faults applied
 * (resets, stalls, throttling, wrong lengths) over the real socket, paced by the fake's link if it
 * has one.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createLogger } from '../log.js';
import { BLOCK_SIZE, servedChunks } from './generated-content.js';
import type { GlanceLink } from './glance-link.js';
import { pause } from './glance-pause.js';
import { publishedDigests } from './glance-images.js';
import type { ImageState } from './glance-images.js';
import { parseGlanceRange } from './glance-ranges.js';
import { sendCrash, sendError } from './glance-responses.js';

const log = createLogger('fake-glance');

/**
 * Answers a file request for `state`'s image; `countsOf` gives the counters its body bytes are
 * added to, `closed` settles when the client goes away, and `link`, when the fake has one, paces
 * the body together with every other response's.
 */
export async function serveFile(
  req: IncomingMessage,
  res: ServerResponse,
  state: ImageState,
  closed: Promise<void>,
  isClosed: () => boolean,
  countsOf: (imageId: string) => { bytes: number },
  link: GlanceLink | undefined,
): Promise<void> {
  if (state.status === 'deactivated') {
    sendError(req, res, { status: 403, explanation: 'The requested image has been deactivated. Image data download is forbidden.' });
    return;
  }
  const digests = await publishedDigests(state);
  if (digests === null) {
    // Glance reads a range against a size it does not have yet: a valid one makes it fail.
    const range = state.faults.honourRange === false ? ({ kind: 'none' } as const) : parseGlanceRange(req.headers.range, req.headers['content-range'], null);
    if (range.kind === 'error') sendError(req, res, range.error);
    else if (range.kind !== 'none') sendCrash(res);
    else {
      res.writeHead(204, { 'content-length': 0 });
      res.end();
    }
    return;
  }
  const { faults } = state;
  const length = faults.wrongLength ?? state.size;
  let start = 0;
  let end = length;
  let status = 200;
  // Glance sends the whole image's md5 even with a range, and no Accept-Ranges.
  const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream', 'content-md5': digests.md5 };
  const range = faults.honourRange === false ? ({ kind: 'none' } as const) : parseGlanceRange(req.headers.range, req.headers['content-range'], length);
  if (range.kind === 'error') {
    sendError(req, res, range.error);
    return;
  }
  if (range.kind === 'crash') {
    sendCrash(res);
    return;
  }
  if (range.kind === 'range') {
    ({ start, end } = range);
    status = 206;
    headers['content-range'] = `bytes ${start}-${end - 1}/${length}`;
  }
  headers['content-length'] = end - start;
  res.writeHead(status, headers);

  let faultAt = Number.POSITIVE_INFINITY;
  let fault: 'reset' | 'stall' | undefined;
  if (faults.resetOffsets !== undefined) {
    const offset = faults.resetOffsets[state.resetsUsed];
    state.resetsUsed++;
    if (offset !== undefined) {
      faultAt = offset;
      fault = 'reset';
    }
  } else if (faults.resetAfterBytes !== undefined && state.resetsUsed < (faults.resets ?? 1)) {
    state.resetsUsed++;
    faultAt = faults.resetAfterBytes;
    fault = 'reset';
  }
  if (faults.stallAfterBytes !== undefined && state.stallsUsed < (faults.stalls ?? 1)) {
    state.stallsUsed++;
    if (faults.stallAfterBytes < faultAt) {
      faultAt = faults.stallAfterBytes;
      fault = 'stall';
    }
  }
  // The head must go out even when the fault hits before the first body byte.
  if (fault !== undefined) res.flushHeaders();
  const rate = faults.throttleBytesPerSecond;
  // Small enough slices that a throttled body flows smoothly, large ones otherwise.
  const own = rate === undefined ? BLOCK_SIZE : Math.max(1024, Math.min(256 * 1024, Math.floor(rate / 20)));
  const slice = Math.min(own, link?.slice ?? own);
  const counters = countsOf(state.image.id);
  const began = performance.now();
  let sent = 0;

  for (const chunk of servedChunks(state.image.content, length, start, end)) {
    for (let at = 0; at < chunk.length && sent < faultAt; ) {
      if (isClosed()) return;
      const piece = chunk.subarray(at, at + Math.min(slice, faultAt - sent));
      if (rate !== undefined) {
        const wait = began + (sent / rate) * 1000 - performance.now();
        if (wait > 1) await pause(wait, closed);
        if (isClosed()) return;
      }
      if (link !== undefined) {
        await link.send(piece.length, closed, isClosed);
        if (isClosed()) return;
      }
      at += piece.length;
      sent += piece.length;
      counters.bytes += piece.length;
      if (!res.write(piece)) {
        await Promise.race([new Promise<void>((resolve) => res.once('drain', resolve)), closed]);
      }
    }
    if (sent >= faultAt) break;
  }
  if (fault === undefined) {
    res.end();
  } else if (fault === 'reset') {
    log('closing the connection of %s after %d body bytes', state.image.id, sent);
    // destroySoon flushes what was written, then closes: the client gets exactly `sent` bytes.
    res.socket?.destroySoon();
  } else {
    log('stalling %s after %d body bytes', state.image.id, sent);
    await closed;
  }
}
