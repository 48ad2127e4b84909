/**
 * The admin HTTP server (node:http): health, Prometheus metrics, JSON and
 * HTML status, and the one state-changing call, which needs the bearer token.
 *
 *     GET  /healthz                                200 "ok" while serving, 503 "draining" once stopping
 *     GET  /metrics                                Prometheus text format
 *     GET  /status                                 JSON (see status.ts)
 *     GET  /                                       HTML status page
 *     GET  /config                                 the running model as JSON (see config/model-json.ts)
 *     POST /pools/POOL/servers/SERVER/state        {"state":"drain"|"ready"|"maint"}, Authorization: Bearer TOKEN
 *
 * It is built to face garbage: bounded headers and bodies, timeouts on every
 * phase of a request, a cap on connections, and every failure answered with
 * a status code rather than a crash.
 */
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { createHash, timingSafeEqual } from 'node:crypto';
import { stat } from 'node:fs/promises';
import type { Registry } from 'prom-client';
import type { AdminModel } from '../config/model.js';
import { configDoc } from '../config/model-json.js';
import { readTokenFile } from '../config/token-file.js';
import { didYouMean } from '../config/suggest.js';
import { ConfigError, ListenError, describe } from '../errors.js';
import type { Logger } from '../log.js';
import type { AdminState } from '../pool.js';
import { createMetricsRegistry } from './metrics.js';
import { renderStatusPage } from './page.js';
import { buildStatus, type AdminSource } from './status.js';

/** Largest request body accepted (the state call's body is a few bytes). */
export const MAX_BODY_BYTES = 4096;
/** Largest request head accepted; Node answers 431 beyond it. */
export const MAX_HEADER_BYTES = 8192;

export const ADMIN_STATES: readonly AdminState[] = ['ready', 'drain', 'maint'];

export interface AdminServerOptions {
  /** The request line and headers must arrive within this. Default 10s. */
  readonly headersTimeoutMs?: number;
  /** The whole request must arrive within this. Default 15s. */
  readonly requestTimeoutMs?: number;
  /** A request body must arrive within this once the headers are in. Default 5s. */
  readonly bodyTimeoutMs?: number;
  /** A connection with no traffic at all is closed after this (e.g. a client that never reads). Default 30s. */
  readonly idleTimeoutMs?: number;
  /** Open connections at most; more are refused by the kernel's accept and Node. Default 64. */
  readonly maxConnections?: number;
}

const DEFAULT_OPTIONS: Required<AdminServerOptions> = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 15_000,
  bodyTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  maxConnections: 64,
};

/** An answer to send instead of a result: thrown inside handlers, caught once. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

const COMMON_HEADERS = {
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
};

const HTML_HEADERS = {
  // Inline CSS only: no script, no external asset, no framing.
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
};

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** 127.0.0.0/8, ::1 and IPv4-mapped loopback. */
export function isLoopback(host: string): boolean {
  const v4 = host.startsWith('::ffff:') ? host.slice(7) : host;
  if (net.isIPv4(v4)) return v4.startsWith('127.');
  return host === '::1';
}

export class AdminServer {
  readonly #source: AdminSource;
  readonly #model: AdminModel;
  readonly #logger: Logger;
  readonly #options: Required<AdminServerOptions>;
  readonly #server: http.Server;
  readonly #registry: Registry;
  /** SHA-256 of the token; the token itself is not kept. null: state changes are refused. */
  #tokenDigest: Buffer | null = null;
  #closing: Promise<void> | undefined;

  constructor(source: AdminSource, model: AdminModel, logger: Logger, options: AdminServerOptions = {}) {
    this.#source = source;
    this.#model = model;
    this.#logger = logger;
    this.#options = { ...DEFAULT_OPTIONS, ...options };
    const o = this.#options;
    this.#registry = createMetricsRegistry(source);
    this.#server = http.createServer({
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: o.headersTimeoutMs,
      requestTimeout: Math.max(o.requestTimeoutMs, o.headersTimeoutMs),
      // How often Node enforces the two timeouts above (its default, 30s, would let a slow client linger).
      connectionsCheckingInterval: Math.max(100, Math.min(1_000, o.headersTimeoutMs / 2)),
      keepAliveTimeout: 5_000,
    });
    this.#server.maxConnections = o.maxConnections;
    this.#server.maxRequestsPerSocket = 1_000;
    this.#server.setTimeout(o.idleTimeoutMs, (socket) => socket.destroy());
    this.#server.on('request', this.#onRequest);
    this.#server.on('clientError', this.#onClientError);
    this.#server.on('error', (err) => {
      // After listen succeeded, errors are accept failures (EMFILE...): log, keep serving.
      this.#logger.error({ err: { code: (err as NodeJS.ErrnoException).code, message: err.message } }, 'admin accept error');
    });
  }

  /** The bound address, or null before start and after close. */
  address(): net.AddressInfo | null {
    const a = this.#server.address();
    return a !== null && typeof a === 'object' ? a : null;
  }

  /**
   * Read the token file and bind. Rejects with ConfigError (token file) or
   * ListenError (bind).
   */
  async start(): Promise<void> {
    const { listen, tokenFile } = this.#model;
    if (tokenFile !== null) {
      const r = await readTokenFile(tokenFile);
      if (typeof r === 'string') throw new ConfigError([{ path: 'admin.token_file', message: r }]);
      this.#tokenDigest = digest(r.token);
      const mode = await stat(tokenFile).then((s) => s.mode, () => 0);
      if ((mode & 0o004) !== 0) {
        this.#logger.warn({ token_file: tokenFile }, 'admin token file is readable by every user; chmod 600 it');
      }
    }
    if (!isLoopback(listen.host) && tokenFile === null) {
      this.#logger.warn(
        { address: listen.text },
        'admin server listens beyond loopback without token_file: status and metrics are open to the network, state changes are refused',
      );
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(new ListenError('admin', listen.text, err));
      this.#server.once('error', onError);
      this.#server.listen({ host: listen.host, port: listen.port }, () => {
        this.#server.removeListener('error', onError);
        resolve();
      });
    });
    const a = this.address();
    this.#logger.info({ address: a?.address, port: a?.port, token: this.#tokenDigest !== null }, 'admin listening');
  }

  /** Stop listening and close every admin connection. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      if (!this.#server.listening) return resolve();
      this.#server.close(() => resolve());
      // Admin requests are short; keep-alive connections would otherwise hold close() up.
      this.#server.closeAllConnections();
    });
    return this.#closing;
  }

  // -------------------------------------------------------------------------
  // Requests

  #onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const started = performance.now();
    res.on('finish', () => {
      this.#logger.debug(
        { method: req.method, path: req.url?.slice(0, 200), status: res.statusCode, ms: Math.round(performance.now() - started), client: req.socket.remoteAddress },
        'admin request',
      );
    });
    this.#handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) {
        sendJson(res, err.status, { error: err.message }, err.headers);
        return;
      }
      this.#logger.error({ err: describe(err), method: req.method, path: req.url?.slice(0, 200) }, 'admin request failed');
      if (res.headersSent) res.destroy();
      else sendJson(res, 500, { error: 'internal error' }, { Connection: 'close' });
    });
  };

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const target = req.url ?? '';
    const query = target.indexOf('?');
    const path = query >= 0 ? target.slice(0, query) : target;
    if (!path.startsWith('/')) throw new HttpError(400, 'expected a path starting with "/"');
    const method = req.method ?? '';
    const read = method === 'GET' || method === 'HEAD';

    switch (path) {
      case '/healthz': {
        if (!read) throw methodNotAllowed('GET, HEAD');
        const serving = this.#source.phase === 'running';
        const body = serving ? 'ok' : this.#source.phase === 'created' ? 'starting' : 'draining';
        send(res, serving ? 200 : 503, 'text/plain; charset=utf-8', body);
        return;
      }
      case '/metrics': {
        if (!read) throw methodNotAllowed('GET, HEAD');
        send(res, 200, this.#registry.contentType, await this.#registry.metrics());
        return;
      }
      case '/status': {
        if (!read) throw methodNotAllowed('GET, HEAD');
        sendJson(res, 200, buildStatus(this.#source));
        return;
      }
      case '/config': {
        // Read-only like /status: the model holds no secret (no token, key files by path only).
        if (!read) throw methodNotAllowed('GET, HEAD');
        const model = this.#source.model;
        if (model === undefined) throw new HttpError(404, 'this instance does not report its configuration');
        sendJson(res, 200, configDoc(model));
        return;
      }
      case '/':
      case '/index.html': {
        if (!read) throw methodNotAllowed('GET, HEAD');
        send(res, 200, 'text/html; charset=utf-8', renderStatusPage(buildStatus(this.#source)), HTML_HEADERS);
        return;
      }
    }
    const parts = path.split('/');
    if (parts.length === 6 && parts[1] === 'pools' && parts[3] === 'servers' && parts[5] === 'state') {
      if (method !== 'POST') throw methodNotAllowed('POST');
      await this.#setState(req, res, decodeSegment(parts[2]!), decodeSegment(parts[4]!));
      return;
    }
    throw new HttpError(404, 'not found; try /status, /config, /metrics, /healthz or POST /pools/POOL/servers/SERVER/state');
  }

  /** POST /pools/POOL/servers/SERVER/state. Bodies are not read before the caller is known. */
  async #setState(req: http.IncomingMessage, res: http.ServerResponse, poolName: string, serverName: string): Promise<void> {
    // Until the body is read, an error answer closes the connection rather than reading what follows.
    const close = { Connection: 'close' };
    if (this.#tokenDigest === null) {
      throw new HttpError(403, 'state changes are disabled: no admin.token_file is configured', close);
    }
    const auth = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.headers.authorization ?? '');
    const challenge = { ...close, 'WWW-Authenticate': 'Bearer realm="l4lb"' };
    if (auth === null) throw new HttpError(401, 'missing bearer token (Authorization: Bearer TOKEN)', challenge);
    // Equal-length digests: the comparison takes the same time whatever the token's length or content.
    if (!timingSafeEqual(digest(auth[1]!), this.#tokenDigest)) throw new HttpError(401, 'invalid token', challenge);

    const state = parseStateBody(await readBody(req, MAX_BODY_BYTES, this.#options.bodyTimeoutMs));
    const pool = this.#source.pools.get(poolName);
    if (pool === undefined) {
      throw new HttpError(404, `no pool named "${poolName}"${didYouMean(poolName, this.#source.pools.keys())}`);
    }
    const server = pool.server(serverName);
    if (server === undefined) {
      throw new HttpError(
        404,
        `no server named "${serverName}" in pool "${poolName}"${didYouMean(serverName, pool.servers.map((s) => s.name))}`,
      );
    }
    const from = server.admin;
    if (from !== state) {
      pool.setAdminState(server, state);
      this.#logger.info({ pool: pool.name, server: server.name, from, to: state, client: req.socket.remoteAddress }, 'server admin state');
    }
    sendJson(res, 200, { pool: pool.name, server: server.name, from, to: state });
  }

  /** Malformed requests (bad syntax, header overflow, timeouts) never reach a handler. */
  #onClientError = (err: NodeJS.ErrnoException, socket: Duplex): void => {
    this.#logger.debug({ code: err.code, err: err.message }, 'admin client error');
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
  };
}

function methodNotAllowed(allow: string): HttpError {
  return new HttpError(405, `method not allowed; use ${allow}`, { Allow: allow });
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, 'malformed percent-encoding in the path');
  }
}

function send(res: http.ServerResponse, status: number, type: string, body: string, headers: Readonly<Record<string, string>> = {}): void {
  const buf = Buffer.from(body, 'utf8');
  res.writeHead(status, { ...COMMON_HEADERS, ...headers, 'Content-Type': type, 'Content-Length': buf.length });
  res.end(buf);
}

function sendJson(res: http.ServerResponse, status: number, value: unknown, headers: Readonly<Record<string, string>> = {}): void {
  send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(value, null, 2)}\n`, headers);
}

/** Read a request body of at most `limit` bytes within `timeoutMs`. */
function readBody(req: http.IncomingMessage, limit: number, timeoutMs: number): Promise<Buffer> {
  const close = { Connection: 'close' };
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) {
    req.resume();
    return Promise.reject(new HttpError(400, `body larger than ${limit} bytes`, close));
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
      if (size > limit) finish(new HttpError(400, `body larger than ${limit} bytes`, close));
      else chunks.push(chunk);
    };
    const onEnd = (): void => finish(null);
    const onError = (): void => finish(new HttpError(400, 'request body aborted', close));
    const timer = setTimeout(() => finish(new HttpError(408, `request body not received within ${timeoutMs}ms`, close)), timeoutMs);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onError);
  });
}

/** `{"state":"drain"|"ready"|"maint"}`; other keys are ignored. */
function parseStateBody(body: Buffer): AdminState {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new HttpError(400, 'expected a JSON body like {"state":"drain"}');
  }
  const state = typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>).state : undefined;
  if (typeof state !== 'string' || !ADMIN_STATES.includes(state as AdminState)) {
    throw new HttpError(400, `expected "state" to be one of ${ADMIN_STATES.join(', ')}`);
  }
  return state as AdminState;
}
