/**
 * The admin HTTP server (node:http): health, Prometheus metrics, JSON and
 * HTML status, the running configuration, and the state-changing call.
 *
 *     GET  /healthz                                200 "ok" while serving (grace included), 503 "draining" once draining
 *     GET  /ready                                  200 "ready" while accepting with an up server in each listener's
 *                                                  pool; 503 with the reasons otherwise and from a stop signal on
 *     GET  /metrics                                Prometheus text format
 *     GET  /status                                 JSON (see status.ts)
 *     GET  /                                       HTML status page
 *     GET  /config[?reveal=secrets]                the running model as JSON (see config/model-json.ts), bearer token
 *     POST /pools/POOL/servers/SERVER/state        {"state":"drain"|"ready"|"maint"}, bearer token
 *     POST /pools/POOL/servers                     {"name","address","weight","backup"}: a runtime change, bearer token
 *     DELETE /pools/POOL/servers/SERVER            drain, then remove: a runtime change, bearer token
 *     POST /listeners/LISTENER/deny                {"cidr","ttl"}; DELETE with {"cidr"}: a runtime change, bearer token
 *
 * Runtime changes (src/runtime/runtime-changes.ts) last until the next
 * reload or restart; `GET /config` lists them under `runtime`.
 *
 * This file routes requests and owns the lifecycle: `start()` reads the
 * token file and binds; `close()` stops accepting and lets requests in
 * flight finish; `destroy()` closes every connection at once. Every request
 * first passes the Host guard (host-guard.ts: 421 for a name that is not
 * this server's); protected endpoints share one bearer check
 * (bearer-token.ts).
 *
 * It is built to face garbage: bounded headers and bodies (http.ts),
 * timeouts on every phase of a request, every failure answered with a
 * status code rather than a crash, and connections capped in total and per
 * client with eviction of slow ones (connection-caps.ts).
 */
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Registry } from 'prom-client';
import type { AdminModel } from '../config/model.js';
import { configDoc } from '../config/model-json.js';
import { didYouMean } from '../config/suggest.js';
import { ListenError, describe } from '../errors.js';
import type { Logger } from '../log.js';
import { isLoopback, normaliseIp, prefixKey } from '../net/ip.js';
import type { AdminState } from '../pool.js';
import { BearerToken, authorize } from './bearer-token.js';
import { ConnectionCaps, type ConnectionStats } from './connection-caps.js';
import { hostAllowed, listenHostsOf } from './host-guard.js';
import { CLOSE, HTML_HEADERS, HttpError, answerClientError, decodePathSegment, methodNotAllowed, readBody, send, sendJson } from './http.js';
import { createMetricsRegistry } from './metrics.js';
import { renderStatusPage } from './page.js';
import { buildStatus, readiness, type AdminSource } from './status.js';
import { RuntimeChangeError, parseDenyBody, parseServerBody, type BodyProblem, type RuntimeChanges } from '../runtime/runtime-changes.js';

/** What the admin server serves: the status source, and the runtime changes when the source takes them (the App does). */
export type AdminServerSource = AdminSource & { readonly runtime?: RuntimeChanges };

/** Largest request body accepted (the state call's body is a few bytes). */
export const MAX_BODY_BYTES = 4096;
/** Largest request head accepted; Node answers 431 beyond it. */
export const MAX_HEADER_BYTES = 8192;

/** The states the state call accepts. */
export const ADMIN_STATES: readonly AdminState[] = ['ready', 'drain', 'maint'];

/** Limits of the admin server; tests shrink them, l4lb runs with the defaults. */
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

/** The query parameter that asks `GET /config` for payloads in clear. */
export const REVEAL_PARAM = 'reveal';
export const REVEAL_VALUE = 'secrets';

/** Admin clients over IPv6 are counted per /64: one host commonly holds a whole /64, so a per-address cap would be no cap. */
const CLIENT_IPV6_PREFIX = 64;

/** Who a connection counts against: an IPv4 address, or an IPv6 /64 (a key, not for display). */
export function clientKey(address: string): string {
  return prefixKey(address, CLIENT_IPV6_PREFIX);
}

/** The admin HTTP server of one App: routes requests, owns its socket and connections. */
export class AdminServer {
  readonly #source: AdminServerSource;
  readonly #model: AdminModel;
  readonly #logger: Logger;
  readonly #options: Required<AdminServerOptions>;
  readonly #server: http.Server;
  readonly #caps: ConnectionCaps;
  /** Built by start(): prom-client's default metrics read files and start a timer. */
  #registry: Registry | undefined;
  /** Read by start(). null: protected endpoints answer 403. */
  #token: BearerToken | null = null;
  /** Names a Host header may carry besides IP literals and localhost. */
  readonly #listenHosts: ReadonlySet<string>;
  /** The first start(), shared by later calls and awaited by close(). */
  #starting: Promise<void> | undefined;
  /** The first close() or destroy(), shared by later calls: resolves once the server is closed. */
  #closing: Promise<void> | undefined;

  /** Builds the server; nothing is read, bound or scheduled before start(). */
  constructor(source: AdminServerSource, model: AdminModel, logger: Logger, options: AdminServerOptions = {}) {
    this.#source = source;
    this.#model = model;
    this.#logger = logger;
    this.#options = { ...DEFAULT_OPTIONS, ...options };
    const o = this.#options;
    this.#listenHosts = listenHostsOf(model.listen);
    this.#caps = new ConnectionCaps(o, logger);
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
    // No server.maxConnections: Node would refuse at the cap; the caps evict instead.
    this.#server.maxRequestsPerSocket = 1_000;
    this.#server.on('connection', this.#onConnection);
    this.#server.setTimeout(o.idleTimeoutMs, (socket) => socket.destroy());
    this.#server.on('request', this.#onRequest);
    this.#server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      this.#logger.debug({ code: err.code, err: err.message }, 'admin client error');
      answerClientError(err, socket);
    });
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
   * ListenError (bind). Once close() or destroy() was called it binds
   * nothing. Later calls share the first one's promise.
   */
  start(): Promise<void> {
    this.#starting ??= this.#start();
    return this.#starting;
  }

  async #start(): Promise<void> {
    const { listen, tokenFile } = this.#model;
    if (tokenFile !== null) this.#token = await BearerToken.load(tokenFile, this.#logger);
    if (!isLoopback(listen.host) && tokenFile === null) {
      this.#logger.warn(
        { address: listen.text },
        'admin server listens beyond loopback without token_file: status and metrics are open to the network, state changes and GET /config are refused',
      );
    }
    if (this.#closing !== undefined) return;
    this.#registry = createMetricsRegistry(this.#source);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(new ListenError('admin', listen.text, err));
      this.#server.once('error', onError);
      this.#server.listen({ host: listen.host, port: listen.port }, () => {
        this.#server.removeListener('error', onError);
        resolve();
      });
    });
    const a = this.address();
    this.#logger.info({ address: a?.address, port: a?.port, token: this.#token !== null }, 'admin listening');
  }

  /** Open admin connections now (`busy`: with a request in flight), and those evicted and refused at a cap since start. */
  connectionStats(): ConnectionStats {
    return this.#caps.stats();
  }

  /**
   * Graceful: stop accepting, close idle connections now, let requests in
   * flight finish (each connection closes after its last answer), then
   * resolve. Bounded by the request and idle timeouts. Idempotent: every
   * call, and destroy(), shares one promise.
   */
  close(): Promise<void> {
    this.#closing ??= this.#unbind();
    this.#caps.drain();
    return this.#closing;
  }

  /** Forced: close() and end every connection now, requests in flight too. Idempotent; shares close()'s promise. */
  destroy(): Promise<void> {
    const closed = this.close();
    this.#caps.destroyAll();
    return closed;
  }

  async #unbind(): Promise<void> {
    // A bind in progress finishes first, so that its socket is closed too.
    await this.#starting?.catch(() => undefined);
    if (!this.#server.listening) return;
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** A new connection: who it counts against, then the caps admit it or close it. */
  #onConnection = (socket: net.Socket): void => {
    const remote = socket.remoteAddress;
    if (remote === undefined) {
      socket.destroy(); // already gone
      return;
    }
    const ip = normaliseIp(remote);
    this.#caps.admit(socket, clientKey(ip), this.#options.isLocal(ip, normaliseIp(socket.localAddress)));
  };

  // -------------------------------------------------------------------------
  // Requests

  #onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const started = performance.now();
    this.#caps.requestStarted(req.socket, res);
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
      else sendJson(res, 500, { error: 'internal error' }, CLOSE);
    });
  };

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (!hostAllowed(req.headers.host, this.#listenHosts)) {
      throw new HttpError(
        421,
        `Host ${JSON.stringify(req.headers.host!.slice(0, 100))} is not this admin server; use its IP address, localhost or the listen address`,
        CLOSE,
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
        // During the grace the process still serves (alive); only readiness is withdrawn.
        const serving = this.#source.phase === 'running' || this.#source.phase === 'stopping';
        const body = serving ? 'ok' : this.#source.phase === 'created' ? 'starting' : 'draining';
        send(res, serving ? 200 : 503, 'text/plain; charset=utf-8', body);
        return;
      }
      case '/ready': {
        // No token: health checkers (keepalived, ExaBGP) read it, and it says no more than /status.
        if (!read) throw methodNotAllowed('GET, HEAD');
        const r = readiness(this.#source);
        send(res, r.ready ? 200 : 503, 'text/plain; charset=utf-8', r.ready ? 'ready\n' : `not ready: ${r.reasons.join('; ')}\n`);
        return;
      }
      case '/metrics': {
        if (!read) throw methodNotAllowed('GET, HEAD');
        // Set by start() before the server listens.
        const registry = this.#registry!;
        send(res, 200, registry.contentType, await registry.metrics());
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
        authorize(this.#token, req.headers.authorization);
        const reveal = revealRequested(query >= 0 ? target.slice(query + 1) : '');
        const model = this.#source.model;
        if (model === undefined) throw new HttpError(404, 'this instance does not report its configuration');
        if (reveal) this.#logger.info({ client: req.socket.remoteAddress }, 'admin configuration read with secrets revealed');
        const runtime = this.#source.runtime?.list();
        sendJson(res, 200, { ...configDoc(model, reveal ? undefined : this.#token!.redactionKey), ...(runtime !== undefined ? { runtime } : {}) });
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
      await this.#setState(req, res, decodePathSegment(parts[2]!), decodePathSegment(parts[4]!));
      return;
    }
    if (parts.length === 4 && parts[1] === 'pools' && parts[3] === 'servers') {
      if (method !== 'POST') throw methodNotAllowed('POST');
      await this.#addServer(req, res, decodePathSegment(parts[2]!));
      return;
    }
    if (parts.length === 5 && parts[1] === 'pools' && parts[3] === 'servers') {
      if (method !== 'DELETE') throw methodNotAllowed('DELETE');
      await this.#removeServer(req, res, decodePathSegment(parts[2]!), decodePathSegment(parts[4]!));
      return;
    }
    if (parts.length === 4 && parts[1] === 'listeners' && parts[3] === 'deny') {
      if (method !== 'POST' && method !== 'DELETE') throw methodNotAllowed('POST, DELETE');
      await this.#deny(req, res, decodePathSegment(parts[2]!), method === 'POST');
      return;
    }
    throw new HttpError(
      404,
      'not found; try /status, /config, /metrics, /healthz, /ready, POST /pools/POOL/servers/SERVER/state, POST /pools/POOL/servers, DELETE /pools/POOL/servers/SERVER or POST|DELETE /listeners/LISTENER/deny',
    );
  }

  // -------------------------------------------------------------------------
  // Runtime changes: token first, then the body, checked whole before anything changes.

  /** The runtime changes, once the caller is known; 404 from a source that takes none. */
  #runtime(req: http.IncomingMessage): RuntimeChanges {
    authorize(this.#token, req.headers.authorization);
    const runtime = this.#source.runtime;
    if (runtime === undefined) throw new HttpError(404, 'this instance takes no runtime changes');
    return runtime;
  }

  /** A JSON body of at most MAX_BODY_BYTES; 400 when it is not JSON. */
  async #jsonBody(req: http.IncomingMessage, example: string): Promise<unknown> {
    const body = await readBody(req, MAX_BODY_BYTES, this.#options.bodyTimeoutMs);
    try {
      return JSON.parse(body.toString('utf8'));
    } catch {
      throw new HttpError(400, `expected a JSON body like ${example}`);
    }
  }

  /** Runs a runtime change; its refusal becomes 404, 409 or 503 with its message. */
  async #change<T>(req: http.IncomingMessage, what: Record<string, unknown>, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (!(err instanceof RuntimeChangeError)) throw err;
      this.#logger.info({ ...what, reason: err.reason, err: err.message, client: req.socket.remoteAddress }, 'runtime change refused');
      throw new HttpError(err.reason === 'not_found' ? 404 : err.reason === 'conflict' ? 409 : 503, err.message);
    }
  }

  /** POST /pools/POOL/servers. */
  async #addServer(req: http.IncomingMessage, res: http.ServerResponse, poolName: string): Promise<void> {
    const runtime = this.#runtime(req);
    const parsed = parseServerBody(await this.#jsonBody(req, '{"address":"10.0.0.12:5432","name":"pg3"}'));
    if (Array.isArray(parsed)) return badBody(res, parsed);
    const added = await this.#change(req, { pool: poolName, server: parsed.name }, () => runtime.addServer(poolName, parsed));
    sendJson(res, 201, added);
  }

  /** DELETE /pools/POOL/servers/SERVER. A body, if any, is not read. */
  async #removeServer(req: http.IncomingMessage, res: http.ServerResponse, poolName: string, serverName: string): Promise<void> {
    const runtime = this.#runtime(req);
    const removed = await this.#change(req, { pool: poolName, server: serverName }, () => runtime.removeServer(poolName, serverName));
    sendJson(res, 200, removed);
  }

  /** POST (add) or DELETE (lift) /listeners/LISTENER/deny. */
  async #deny(req: http.IncomingMessage, res: http.ServerResponse, listenerName: string, add: boolean): Promise<void> {
    const runtime = this.#runtime(req);
    const parsed = parseDenyBody(await this.#jsonBody(req, add ? '{"cidr":"203.0.113.0/24","ttl":"1h"}' : '{"cidr":"203.0.113.0/24"}'), add);
    if (Array.isArray(parsed)) return badBody(res, parsed);
    const what = { listener: listenerName, cidr: parsed.cidr };
    if (add) {
      const added = await this.#change(req, what, () => runtime.addDeny(listenerName, parsed));
      sendJson(res, added.refreshed ? 200 : 201, added);
    } else {
      sendJson(res, 200, await this.#change(req, what, () => runtime.removeDeny(listenerName, parsed.cidr)));
    }
  }

  /** POST /pools/POOL/servers/SERVER/state. Bodies are not read before the caller is known. */
  async #setState(req: http.IncomingMessage, res: http.ServerResponse, poolName: string, serverName: string): Promise<void> {
    authorize(this.#token, req.headers.authorization);
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
}

/** 400 naming every field that is wrong: `{"error": "address: expected host:port, got ...", "problems": [{path, message}]}`. */
function badBody(res: http.ServerResponse, problems: readonly BodyProblem[]): void {
  sendJson(res, 400, { error: problems.map((p) => `${p.path}: ${p.message}`).join('; '), problems });
}

/** `reveal=secrets` in a `GET /config` query: payloads in clear. Another value is refused, not taken as "no". */
function revealRequested(query: string): boolean {
  const values = new URLSearchParams(query).getAll(REVEAL_PARAM);
  if (values.length === 0) return false;
  if (values.length === 1 && values[0] === REVEAL_VALUE) return true;
  throw new HttpError(400, `expected ${REVEAL_PARAM}=${REVEAL_VALUE} (or no ${REVEAL_PARAM} for redacted payloads)`);
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
