/**
 * One `net` server per configured listener. It owns its server socket and
 * every session it accepted; `close()` stops accepting while sessions go on,
 * `shutdown()` ends the sessions that remain.
 */
import net from 'node:net';
import { ListenError } from '../errors.js';
import type { ListenerModel } from '../config/model.js';
import type { Logger } from '../log.js';
import type { Pool } from '../pool.js';
import { Session, type SessionContext } from './session.js';
import { CidrList } from '../net/cidr.js';
import { ListenerStats } from './stats.js';
import { DEFAULT_MAX_SOURCES, PerSourceTable } from '../protect/per-source.js';
import { ConfigError } from '../errors.js';
import { SniRouter } from '../tls/sni-routes.js';
import { TlsTerminator, certStoreOptions } from '../tls/terminator.js';
import { TicketKeys } from '../tls/ticket-keys.js';
import { loadCertificates, type CertLoadResult } from '../tls/cert-store.js';
import { listenFds } from '../runtime/systemd.js';
import { LineLimiter } from './line-limiter.js';
import { processFds, type FdBudget } from '../net/fd-budget.js';

/** A local resource shortage is worth a warning, but one per this interval per listener (with a count). */
const LOCAL_ERROR_WARN_EVERY_MS = 10_000;

/**
 * How often open connections are checked for idleness: a quarter of the idle
 * timeout, between 50 ms and 1 s, so an idle connection closes within
 * 25% of its timeout (at most a second late).
 */
function idleSweepMs(idleMs: number): number {
  return Math.min(1_000, Math.max(50, Math.floor(idleMs / 4)));
}

/** Whether `model` terminates TLS with session tickets on. */
function usesTickets(model: ListenerModel): boolean {
  return model.tls !== null && model.tls.mode === 'terminate' && model.tls.sessionTickets;
}

/** How often idle per-source entries are forgotten. */
const PER_SOURCE_SWEEP_MS = 10_000;

type MutableContext = { -readonly [K in keyof SessionContext]: SessionContext[K] };

export class Listener {
  #model: ListenerModel;
  readonly #server: net.Server;
  readonly #sessions = new Set<Session>();
  readonly #logger: Logger;
  #accessLog: Logger | null;
  readonly #rootLogger: Logger;
  /** What new sessions get; a reload swaps it, sessions keep the one they started with. */
  #ctx: MutableContext;
  readonly stats = new ListenerStats();
  /** Lines of connections that never reached a server, bounded per listener (kept across reloads). */
  readonly #limiter = new LineLimiter();
  readonly #fds: FdBudget;
  /** Local errors since the last warning, and when that was. */
  #localErrorsUnreported = 0;
  #localErrorWarnedAt = -Infinity;
  #closing = false;
  /** Session-ticket keys, created with the first terminator that issues tickets; see `ticketKeys`. */
  #ticketKeys: TicketKeys | null = null;
  #sweepTimer: NodeJS.Timeout | undefined;
  #idleTimer: NodeJS.Timeout | undefined;

  /**
   * @param pools every pool by name: the listener's own and those its routes name.
   */
  constructor(model: ListenerModel, pools: ReadonlyMap<string, Pool>, logger: Logger, accessLog: boolean, fds: FdBudget = processFds) {
    this.#fds = fds;
    this.#model = model;
    this.#logger = logger.child({ listener: model.name });
    this.#rootLogger = logger;
    this.#accessLog = accessLog ? logger : null;
    this.#ctx = this.#buildContext(model, pools, null);
    this.#server = net.createServer({
      allowHalfOpen: true,
      // The client is read only once its backend is connected.
      pauseOnConnect: true,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: 60_000,
    });
    this.#server.on('connection', this.#onConnection);
    this.#startTimers();
    this.#server.on('error', (err) => {
      // After listen succeeded, errors are accept failures (EMFILE...): log, keep serving.
      this.#logger.error({ err: { code: (err as NodeJS.ErrnoException).code, message: err.message } }, 'accept error');
    });
  }

  get model(): ListenerModel {
    return this.#model;
  }

  /** Everything a session needs, built from one model; `previous` lends its per-source table if the limits are unchanged. */
  #buildContext(model: ListenerModel, pools: ReadonlyMap<string, Pool>, previous: MutableContext | null): MutableContext {
    // Entries with open connections are never forgotten, so the table holds at least as many clients as the listener connections.
    const maxSources = Math.max(DEFAULT_MAX_SOURCES, model.maxConnections);
    const samePerSource =
      previous !== null &&
      previous.perSource !== null &&
      previous.listener.perSource.maxConnections === model.perSource.maxConnections &&
      previous.listener.perSource.connectRate === model.perSource.connectRate &&
      previous.listener.perSource.ipv6Prefix === model.perSource.ipv6Prefix &&
      previous.perSource.maxSources === maxSources;
    return {
      listener: model,
      pool: pools.get(model.pool)!,
      terminator: null,
      router: model.routes.length > 0 ? new SniRouter(model.routes.map((r) => ({ sni: r.sni, target: pools.get(r.pool)! }))) : null,
      backendTls: (p) => p.tlsOptions,
      accessLog: this.#accessLog,
      logger: this.#logger,
      stats: this.stats,
      allow: model.allow.length > 0 ? new CidrList(model.allow) : null,
      deny: model.deny.length > 0 ? new CidrList(model.deny) : null,
      perSource: samePerSource
        ? previous.perSource
        : model.perSource.maxConnections > 0 || model.perSource.connectRate > 0
          ? new PerSourceTable(model.perSource, { maxSources })
          : null,
      // Never null with accept_proxy (null means "anyone" to the session): an empty list, which the loader refuses, would trust no one.
      trustedProxies: model.acceptProxy ? new CidrList(model.trustedProxies) : null,
      limiter: this.#limiter,
      fds: this.#fds,
      onLocalError: this.#onLocalError,
      onClosed: (session) => this.#sessions.delete(session),
    };
  }

  #startTimers(): void {
    clearInterval(this.#idleTimer);
    clearInterval(this.#sweepTimer);
    this.#sweepTimer = undefined;
    const ctx = this.#ctx;
    this.#idleTimer = setInterval(this.#checkIdle, idleSweepMs(Math.min(ctx.listener.timeouts.idleMs, ctx.pool.model.timeouts.idleMs)));
    if (ctx.perSource !== null) {
      const table = ctx.perSource;
      this.#sweepTimer = setInterval(() => table.sweep(), PER_SOURCE_SWEEP_MS);
    }
  }

  /**
   * Reload, step one: build everything the new model needs (certificates
   * re-read from disk) without touching what serves now. Returns the commit
   * step, which cannot fail; rejects with ConfigError and changes nothing.
   * The bound socket is kept: a reload never refuses a connection here.
   */
  async prepareUpdate(model: ListenerModel, pools: ReadonlyMap<string, Pool>, accessLog: boolean): Promise<() => void> {
    const ctx = this.#buildContext(model, pools, this.#ctx);
    ctx.accessLog = accessLog ? this.#rootLogger : null;
    if (model.tls !== null && model.tls.mode === 'terminate') {
      const result = await this.#loadCertificates(model);
      if (!result.ok) throw this.#certProblems(result);
      ctx.terminator = new TlsTerminator(model.tls, result.store, model.timeouts.handshakeMs, this.#ticketKeysFor(model));
    }
    return () => {
      if (!usesTickets(model)) this.#dropTicketKeys();
      this.#model = model;
      this.#accessLog = ctx.accessLog;
      this.#ctx = ctx;
      if (!this.#closing) this.#startTimers();
    };
  }

  /** Open connections right now. */
  get connections(): number {
    return this.#sessions.size;
  }

  /** The bound address (useful with port 0). */
  address(): net.AddressInfo {
    return this.#server.address() as net.AddressInfo;
  }

  /**
   * Load what the listener needs before it may accept: its certificates.
   * Rejects with ConfigError naming the files; warnings (expired
   * certificates) are logged.
   */
  async prepare(): Promise<void> {
    const tlsModel = this.model.tls;
    if (tlsModel === null || tlsModel.mode !== 'terminate') return;
    const result = await this.#loadCertificates(this.model);
    if (!result.ok) throw this.#certProblems(result);
    this.#ctx.terminator = new TlsTerminator(tlsModel, result.store, this.model.timeouts.handshakeMs, this.#ticketKeysFor(this.model));
  }

  /**
   * This listener's session-ticket keys (null: it issues no tickets). One
   * holder for the listener's life, so tickets survive reloads; never shared
   * with another listener, whose ticket must not resume here.
   */
  get ticketKeys(): TicketKeys | null {
    return this.#ticketKeys;
  }

  #ticketKeysFor(model: ListenerModel): TicketKeys | null {
    if (!usesTickets(model)) return null;
    if (this.#ticketKeys === null) {
      this.#ticketKeys = new TicketKeys();
      this.#ticketKeys.start();
    }
    return this.#ticketKeys;
  }

  #dropTicketKeys(): void {
    this.#ticketKeys?.close();
    this.#ticketKeys = null;
  }

  /**
   * Re-read certificate and key files: new handshakes use them, open
   * connections keep theirs. A bad file leaves the current ones serving and
   * rejects with ConfigError.
   */
  async reloadCertificates(): Promise<void> {
    const terminator = this.#ctx.terminator;
    if (terminator === null) return;
    const result = await terminator.store.reload();
    if (!result.ok) throw this.#certProblems(result);
    for (const w of result.warnings) this.#logger.warn({ warning: w }, 'certificate warning');
    terminator.setStore(result.store);
    this.#logger.info({ certificates: result.store.certificates.length }, 'certificates reloaded');
  }

  async #loadCertificates(model: ListenerModel): Promise<CertLoadResult> {
    const t = model.tls!;
    const result = await loadCertificates(t.certs, certStoreOptions(t));
    for (const w of result.warnings) this.#logger.warn({ warning: w }, 'certificate warning');
    return result;
  }

  #certProblems(result: Extract<CertLoadResult, { ok: false }>): ConfigError {
    const where = `listener ${this.model.name}: tls`;
    return new ConfigError(result.problems.map((p) => ({ path: p.path === '' ? where : `${where}.${p.path}`, message: p.message })));
  }

  /** Bind and start accepting. Rejects with ListenError. */
  start(): Promise<void> {
    const { host, port, text } = this.model.bind;
    const fdName = this.model.systemdSocket;
    // A handle `{ fd }` is what listen() takes for an inherited socket.
    let target: net.ListenOptions | { fd: number } = { host, port, backlog: 4096 };
    if (fdName !== null) {
      // Socket activation: systemd bound it and keeps it across our restarts.
      const fd = listenFds().get(fdName);
      if (fd === undefined) {
        const passed = process.env.LISTEN_FDNAMES ?? '(none)';
        return Promise.reject(new ListenError(this.model.name, text, new Error(`systemd passed no socket named "${fdName}" (LISTEN_FDNAMES=${passed})`)));
      }
      target = { fd };
    }
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(new ListenError(this.model.name, text, err));
      this.#server.once('error', onError);
      this.#server.listen(target as net.ListenOptions, () => {
        this.#server.removeListener('error', onError);
        const a = this.address();
        this.#logger.info({ address: a.address, port: a.port }, 'listening');
        resolve();
      });
    });
  }

  /** Stop accepting new connections; open sessions continue. Idempotent. */
  close(): Promise<void> {
    if (this.#closing) return Promise.resolve();
    this.#closing = true;
    clearInterval(this.#sweepTimer);
    this.#sweepTimer = undefined;
    return new Promise((resolve) => {
      if (!this.#server.listening) return resolve();
      // net.Server#close calls back only once every connection is gone; we
      // track sessions ourselves, so resolve as soon as the socket is unbound.
      this.#server.close();
      resolve();
    });
  }

  #checkIdle = (): void => {
    const now = performance.now();
    for (const session of this.#sessions) session.checkIdle(now);
    this.stats.forgetRetired();
  };

  /**
   * The balancer ran short (EMFILE, EADDRNOTAVAIL...): say so at warn, at
   * most once per interval, with how many connections it cost since.
   */
  #onLocalError = (code: string): void => {
    this.#localErrorsUnreported++;
    const now = performance.now();
    if (now - this.#localErrorWarnedAt < LOCAL_ERROR_WARN_EVERY_MS) return;
    this.#localErrorWarnedAt = now;
    this.#logger.warn(
      {
        code,
        connections: this.#localErrorsUnreported,
        fd_limit: Number.isFinite(this.#fds.limit) ? this.#fds.limit : null,
        fds_held: this.#fds.held,
      },
      'out of local resources: connections refused (raise LimitNOFILE / ulimit -n, or the ephemeral port range)',
    );
    this.#localErrorsUnreported = 0;
  };

  /** End every open session now (drain time is over). */
  shutdown(): void {
    for (const session of this.#sessions) session.shutdown();
  }

  /** Stop accepting and release every timer; call once no session is left (or after shutdown()). Idempotent. */
  async destroy(): Promise<void> {
    await this.close();
    clearInterval(this.#idleTimer);
    this.#idleTimer = undefined;
    this.#limiter.close();
    this.#dropTicketKeys();
  }

  #onConnection = (socket: net.Socket): void => {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    this.stats.accepted++;
    const session = new Session(socket, this.#ctx);
    const max = this.model.maxConnections;
    const full = max > 0 && this.#sessions.size >= max;
    this.#sessions.add(session);
    // Over a limit: close at once, nothing read, nothing connected; logged like any connection.
    if (full) return session.refuse('rejected_limit', 'max_connections');
    if (!this.#fds.take('accept')) return session.refuse('local_error', 'descriptor reserve reached', 'EMFILE');
    session.start(true);
  };
}
