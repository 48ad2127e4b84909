/**
 * The admin server's HTTP plumbing: answers carry the same safety headers
 * whatever the route, handlers refuse by throwing an {@link HttpError} that
 * the server turns into a JSON answer in one place, and request bodies are
 * read with a size and time bound.
 */
import type http from 'node:http';
import type { Duplex } from 'node:stream';

/** Headers every admin answer carries: nothing is cached, nothing is sniffed. */
const COMMON_HEADERS = {
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
};

/** Headers of the HTML status page: inline CSS only, no script, no external asset, no framing. */
export const HTML_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
};

/** Ends the connection after the answer: a request body that was not read is then never parsed as the next request. */
export const CLOSE: Readonly<Record<string, string>> = { Connection: 'close' };

/** An answer to send instead of a result: thrown inside handlers, caught once by the server. */
export class HttpError extends Error {
  /**
   * @param status the HTTP status of the answer
   * @param message the answer's `error` text, shown to the caller
   * @param headers extra answer headers (`Allow`, `WWW-Authenticate`, {@link CLOSE})
   */
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

/** 405 naming the methods the path takes. */
export function methodNotAllowed(allow: string): HttpError {
  return new HttpError(405, `method not allowed; use ${allow}`, { Allow: allow });
}

/** Sends `body` (UTF-8) with its length and the common headers. */
export function send(res: http.ServerResponse, status: number, type: string, body: string, headers: Readonly<Record<string, string>> = {}): void {
  const buf = Buffer.from(body, 'utf8');
  res.writeHead(status, { ...COMMON_HEADERS, ...headers, 'Content-Type': type, 'Content-Length': buf.length });
  res.end(buf);
}

/** Sends `value` as indented JSON. */
export function sendJson(res: http.ServerResponse, status: number, value: unknown, headers: Readonly<Record<string, string>> = {}): void {
  send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(value, null, 2)}\n`, headers);
}

/** A percent-decoded path segment; 400 when its encoding is malformed. */
export function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, 'malformed percent-encoding in the path');
  }
}

/**
 * Reads a request body of at most `limit` bytes within `timeoutMs`. Rejects
 * with an HttpError (400 too large or aborted, 408 too slow) whose answer
 * closes the connection; the rest of the body is discarded.
 */
export function readBody(req: http.IncomingMessage, limit: number, timeoutMs: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) {
    req.resume();
    return Promise.reject(new HttpError(400, `body larger than ${limit} bytes`, CLOSE));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (err: HttpError | null): void => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onError);
      if (err === null) return resolve(Buffer.concat(chunks, size));
      // Discard the rest; the connection closes after the answer.
      req.on('error', () => {});
      req.resume();
      reject(err);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) finish(new HttpError(400, `body larger than ${limit} bytes`, CLOSE));
      else chunks.push(chunk);
    };
    const onEnd = (): void => finish(null);
    const onError = (): void => finish(new HttpError(400, 'request body aborted', CLOSE));
    const timer = setTimeout(() => finish(new HttpError(408, `request body not received within ${timeoutMs}ms`, CLOSE)), timeoutMs);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onError);
  });
}

/**
 * Answers a request Node could not parse (bad syntax, header overflow,
 * timeouts: it never reaches a handler) with a bare status, then closes.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const status =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? '431 Request Header Fields Too Large'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? '408 Request Timeout'
        : '400 Bad Request';
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
  // Should the peer never read, do not wait for it.
  setTimeout(() => socket.destroy(), 1_000).unref();
}
