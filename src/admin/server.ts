/**
 * The admin HTTP server (node:http): health, Prometheus metrics, JSON and
 * HTML status, the running configuration, and the state-changing call.
 *
 *     GET  /healthz                                200 "ok" while serving, 503 "draining" once stopping
 *     GET  /metrics                                Prometheus text format
 *     GET  /status                                 JSON (see status.ts)
 *     GET  /                                       HTML status page
 *     GET  /config[?reveal=secrets]                the running model as JSON (see config/model-json.ts), bearer token
 *     POST /pools/POOL/servers/SERVER/state        {"state":"drain"|"ready"|"maint"}, bearer token
 *
 * Every request first passes the Host guard: a browser tricked by DNS
 * rebinding sends the attacker's name as Host, so only IP literals,
 * `localhost` and the listen host are served (421 otherwise; no Host is
 * fine, a browser always sends one). Protected endpoints share one bearer
 * check (`#authorize`).
 *
 * It is built to face garbage: bounded headers and bodies, timeouts on every
 * phase of a request, and every failure answered with a status code rather
 * than a crash. Connections are capped in total and per client; at a cap a
 * newcomer evicts the oldest connection that has not delivered a complete
 * request head (a slowloris, or an idle keep-alive) rather than being
 * refused, so slow clients cannot lock out a health check: a real client
 * sends its head at once, a slow one is the first to go.
 */
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { createHash, timingSafeEqual } from 'node:crypto';
import { stat } from 'node:fs/promises';
import type { Registry } from 'prom-client';
import type { AdminModel } from '../config/model.js';
import { configDoc, redactionKey } from '../config/model-json.js';
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
  /**
   * Open connections at most. At the cap a new connection evicts the oldest
   * one without a request in flight, or is closed when every one has a
   * request in flight. Default 64.
   */
  readonly maxConnections?: number;
  /** Open connections per client (an IPv4 address or an IPv6 /64), same rule within them. Default 16. */
  readonly maxConnectionsPerClient?: number;
  /**
   * Slots only local clients (loopback, or this host's own address) may take:
   * remote clients share `maxConnections - reservedLocal`. Matters only when
   * the admin server listens beyond loopback. Default 4.
   */
  readonly reservedLocal?: number;
  /** Which clients are local (IPv4-mapped addresses unmapped). Default: loopback, or the address it connected to. */
  readonly isLocal?: (remote: string, local: string) => boolean;
}

const DEFAULT_OPTIONS: Required<AdminServerOptions> = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 15_000,
  bodyTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  maxConnections: 64,
  // A browser opens about 6 per host; 16 leaves room for a few tools behind one NAT.
  maxConnectionsPerClient: 16,
  reservedLocal: 4,
  isLocal: (remote, local) => isLoopback(remote) || remote === local,
};

/** How often a burst of evicted or refused admin connections is logged, at most. */
const SHED_LOG_INTERVAL_MS = 10_000;

/** The query parameter that asks `GET /config` for payloads in clear. */
export const REVEAL_PARAM = 'reveal';
export const REVEAL_VALUE = 'secrets';

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

/** `::ffff:10.0.0.1` → `10.0.0.1`; anything else as is. */
function unmapped(ip: string): string {
  return ip.startsWith('::ffff:') && net.isIPv4(ip.slice(7)) ? ip.slice(7) : ip;
}

/**
 * Who a connection counts against: an IPv4 address, or an IPv6 /64 (one
 * host commonly holds a whole /64, so counting per address would be no cap).
 */
export function clientKey(address: string): string {
  const ip = unmapped(address.split('%')[0]!.toLowerCase());
  if (!net.isIPv6(ip)) return ip;
  const [head = '', tail] = ip.split('::');
  const groups = (part: string): string[] => (part === '' ? [] : part.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])));
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${all.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}

/**
 * The host name of a Host header value, lower case, without port, brackets
 * or a trailing dot; null when it is not `host[:port]`.
 */
export function hostOf(header: string): string | null {
  const h = header.trim().toLowerCase();
  let name: string;
  let rest: string;
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    if (end < 0) return null;
    name = h.slice(1, end);
    rest = h.slice(end + 1);
  } else {
    const colon = h.indexOf(':');
    // Several colons without brackets: a bare IPv6 literal, no port.
    const bare = colon >= 0 && h.indexOf(':', colon + 1) >= 0;
    name = colon < 0 || bare ? h : h.slice(0, colon);
    rest = colon < 0 || bare ? '' : h.slice(colon);
  }
  if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return null;
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

/**
 * The DNS-rebinding guard: whether a request with this Host header may be
 * served. A page that rebinds its own name to 127.0.0.1 still sends that
 * name as Host, and it can be neither an IP literal nor `localhost`.
 * @param listenHosts the listen address as written and as resolved, lower case
 */
export function hostAllowed(header: string | undefined, listenHosts: ReadonlySet<string>): boolean {
  if (header === undefined || header.trim() === '') return true;
  const name = hostOf(header);
  if (name === null || name === '') return false;
  return net.isIP(name) !== 0 || name === 'localhost' || listenHosts.has(name);
}

/** One admin connection, as the caps see it. */
interface Conn {
  readonly socket: net.Socket;
  readonly client: string;
  /** Loopback, or from this host's own address: may use the reserved slots. */
  readonly local: boolean;
  /** Requests whose head has arrived and whose response has not closed: never evicted while > 0. */
  inFlight: number;
  /** When it last had no request in flight (accepted, or its last response closed): oldest is evicted first. */
  idleSince: number;
}

export class AdminServer {
  readonly #source: AdminSource;
  readonly #model: AdminModel;
  readonly #logger: Logger;
  readonly #options: Required<AdminServerOptions>;
  readonly #server: http.Server;
  readonly #registry: Registry;
  /** SHA-256 of the token; the token itself is not kept. null: protected endpoints answer 403. */
  #tokenDigest: Buffer | null = null;
  /** Key for the MACs that stand in for secrets in `GET /config` (derived from the token). */
  #redactionKey: Buffer | null = null;
  /** Names a Host header may carry besides IP literals and localhost. */
  readonly #listenHosts: ReadonlySet<string>;
  readonly #conns = new Map<net.Socket, Conn>();
  /** Connections evicted and refused at a cap, since start; `#unreported`: since the last log line. */
  readonly #shed = { evicted: 0, refused: 0 };
  #unreported = { evicted: 0, refused: 0 };
  #shedTimer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  constructor(source: AdminSource, model: AdminModel, logger: Logger, options: AdminServerOptions = {}) {
    this.#source = source;
    this.#model = model;
    this.#logger = logger;
    this.#options = { ...DEFAULT_OPTIONS, ...options };
    const o = this.#options;
    const written = model.listen.text.startsWith('[') ? model.listen.text.slice(1, model.listen.text.lastIndexOf(']')) : model.listen.text.slice(0, model.listen.text.lastIndexOf(':'));
    this.#listenHosts = new Set([written, model.listen.host].map((h) => h.toLowerCase().replace(/\.$/, '')));
    this.#registry = createMetricsRegistry(source);
    this.#server = http.createServer({
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: o.headersTimeoutMs,
      requestTimeout: Math.max(o.requestTimeoutMs, o.headersTimeoutMs),
      // How often Node enforces the two timeouts above (its default, 30s, would let a slow client linger).
      connectionsCheckingInterval: Math.max(100, Math.min(1_000, o.headersTimeoutMs / 2)),
      keepAliveTimeout: 5_000,
      // The contract serves a request without Host (Node answers 400 by default); the Host guard judges those with one.
      requireHostHeader: false,
    });
    // No server.maxConnections: Node would refuse at the cap; #onConnection evicts instead.
    this.#server.maxRequestsPerSocket = 1_000;
    this.#server.on('connection', this.#onConnection);
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
      this.#redactionKey = redactionKey(r.token);
      const mode = await stat(tokenFile).then((s) => s.mode, () => 0);
      if ((mode & 0o004) !== 0) {
        this.#logger.warn({ token_file: tokenFile }, 'admin token file is readable by every user; let only root and the group l4lb runs as read it, as scripts/install.sh does: chown root:l4lb FILE && chmod 0640 FILE');
      }
    }
    if (!isLoopback(listen.host) && tokenFile === null) {
      this.#logger.warn(
        { address: listen.text },
        'admin server listens beyond loopback without token_file: status and metrics are open to the network, state changes and GET /config are refused',
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

  /** Open admin connections now (`busy`: with a request in flight), and those evicted and refused at a cap since start. */
  connectionStats(): { open: number; busy: number; evicted: number; refused: number } {
    let busy = 0;
    for (const c of this.#conns.values()) if (c.inFlight > 0) busy++;
    return { open: this.#conns.size, busy, ...this.#shed };
  }

  /** Stop listening and close every admin connection. Idempotent. */
  close(): Promise<void> {
    clearTimeout(this.#shedTimer);
    this.#closing ??= new Promise<void>((resolve) => {
      if (!this.#server.listening) return resolve();
      this.#server.close(() => resolve());
      // Admin requests are short; keep-alive connections would otherwise hold close() up.
      this.#server.closeAllConnections();
    });
    return this.#closing;
  }

  // -------------------------------------------------------------------------
  // Connections

  /**
   * Admits a new connection within the caps: per client, the remote share
   * (all but the reserved local slots), and the total. At a cap it evicts the
   * oldest connection of the capped group that has no request in flight;
   * when there is none, the newcomer is closed instead.
   */
  #onConnection = (socket: net.Socket): void => {
    const remote = socket.remoteAddress;
    if (remote === undefined) {
      socket.destroy(); // already gone
      return;
    }
    const ip = unmapped(remote);
    const local = this.#options.isLocal(ip, unmapped(socket.localAddress ?? ''));
    const conn: Conn = { socket, client: clientKey(ip), local, inFlight: 0, idleSince: performance.now() };
    const o = this.#options;
    const remoteOnly = (c: Conn): boolean => !c.local;
    const admitted =
      this.#makeRoom((c) => c.client === conn.client, o.maxConnectionsPerClient) &&
      (local || this.#makeRoom(remoteOnly, Math.max(1, o.maxConnections - o.reservedLocal))) &&
      // A remote newcomer never evicts a local client.
      this.#makeRoom(() => true, o.maxConnections, local ? () => true : remoteOnly);
    if (!admitted) {
      this.#noteShed('refused');
      socket.destroy();
      return;
    }
    this.#conns.set(socket, conn);
    socket.once('close', () => this.#conns.delete(socket));
  };

  /**
   * Makes sure fewer than `limit` open connections match `group`, evicting
   * the oldest idle one among `victims` (default: the group) if needed.
   * @returns false when at the limit with nothing to evict
   */
  #makeRoom(group: (c: Conn) => boolean, limit: number, victims: (c: Conn) => boolean = group): boolean {
    let count = 0;
    let oldest: Conn | undefined;
    for (const c of this.#conns.values()) {
      if (group(c)) count++;
      if (c.inFlight === 0 && victims(c) && (oldest === undefined || c.idleSince < oldest.idleSince)) oldest = c;
    }
    if (count < limit) return true;
    if (oldest === undefined) return false;
    this.#conns.delete(oldest.socket);
    oldest.socket.destroy();
    this.#noteShed('evicted');
    return true;
  }

  /** Counts a shed connection; logs at once, then at most once per interval with the counts since. */
  #noteShed(kind: 'evicted' | 'refused'): void {
    this.#shed[kind]++;
    this.#unreported[kind]++;
    if (this.#shedTimer === undefined) this.#reportShed();
  }

  #reportShed = (): void => {
    const { evicted, refused } = this.#unreported;
    if (evicted + refused === 0) {
      this.#shedTimer = undefined;
      return;
    }
    this.#unreported = { evicted: 0, refused: 0 };
    this.#logger.warn(
      { evicted, refused, open: this.#conns.size, max_connections: this.#options.maxConnections, max_per_client: this.#options.maxConnectionsPerClient },
      'admin connection cap reached: evicted connections without a request in flight, refused new ones when none was left',
    );
    this.#shedTimer = setTimeout(this.#reportShed, SHED_LOG_INTERVAL_MS);
    // Only a log line depends on it; close() clears it.
    this.#shedTimer.unref();
  };

  // -------------------------------------------------------------------------
  // Requests

  #onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const started = performance.now();
    const conn = this.#conns.get(req.socket);
    if (conn !== undefined) {
      // A complete head arrived: this connection is no longer evictable until its response closes.
      conn.inFlight++;
      res.once('close', () => {
        conn.inFlight--;
        if (conn.inFlight === 0) conn.idleSince = performance.now();
      });
    }
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
    if (!hostAllowed(req.headers.host, this.#listenHosts)) {
      throw new HttpError(
        421,
        `Host ${JSON.stringify(req.headers.host!.slice(0, 100))} is not this admin server; use its IP address, localhost or the listen address`,
        { Connection: 'close' },
      );
    }
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
        // ACLs, file paths and probe payloads (an AUTH line, say) are not for everyone who can reach the port.
        if (!read) throw methodNotAllowed('GET, HEAD');
        this.#authorize(req);
        const reveal = revealRequested(query >= 0 ? target.slice(query + 1) : '');
        const model = this.#source.model;
        if (model === undefined) throw new HttpError(404, 'this instance does not report its configuration');
        if (reveal) this.#logger.info({ client: req.socket.remoteAddress }, 'admin configuration read with secrets revealed');
        sendJson(res, 200, configDoc(model, reveal ? undefined : this.#redactionKey!));
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

  /**
   * The bearer-token check of every protected endpoint: returns when the
   * request carries the token, else throws 403 (no token configured) or 401.
   * Its answers close the connection: a body that was not read is not parsed
   * as the next request.
   */
  #authorize(req: http.IncomingMessage): void {
    const close = { Connection: 'close' };
    if (this.#tokenDigest === null) {
      throw new HttpError(403, 'disabled: no admin.token_file is configured (state changes and GET /config need the bearer token)', close);
    }
    const auth = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.headers.authorization ?? '');
    const challenge = { ...close, 'WWW-Authenticate': 'Bearer realm="l4lb"' };
    if (auth === null) throw new HttpError(401, 'missing bearer token (Authorization: Bearer TOKEN)', challenge);
    // Equal-length digests: the comparison takes the same time whatever the token's length or content.
    if (!timingSafeEqual(digest(auth[1]!), this.#tokenDigest)) throw new HttpError(401, 'invalid token', challenge);
  }

  /** POST /pools/POOL/servers/SERVER/state. Bodies are not read before the caller is known. */
  async #setState(req: http.IncomingMessage, res: http.ServerResponse, poolName: string, serverName: string): Promise<void> {
    this.#authorize(req);
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

/** `reveal=secrets` in a `GET /config` query: payloads in clear. Another value is refused, not taken as "no". */
function revealRequested(query: string): boolean {
  const values = new URLSearchParams(query).getAll(REVEAL_PARAM);
  if (values.length === 0) return false;
  if (values.length === 1 && values[0] === REVEAL_VALUE) return true;
  throw new HttpError(400, `expected ${REVEAL_PARAM}=${REVEAL_VALUE} (or no ${REVEAL_PARAM} for redacted payloads)`);
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
