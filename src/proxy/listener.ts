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
import { PerSourceTable } from '../protect/per-source.js';
import { ConfigError } from '../errors.js';
import { SniRouter } from '../tls/sni-routes.js';
import { TlsTerminator } from '../tls/terminator.js';
import { loadCertificates, type CertLoadResult } from '../tls/cert-store.js';
import { listenFds } from '../runtime/systemd.js';

/**
 * How often open connections are checked for idleness: a quarter of the idle
 * timeout, between 50 ms and 1 s, so an idle connection closes within
 * 25% of its timeout (at most a second late).
 */
function idleSweepMs(idleMs: number): number {
  return Math.min(1_000, Math.max(50, Math.floor(idleMs / 4)));
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
  #closing = false;
  #sweepTimer: NodeJS.Timeout | undefined;
  #idleTimer: NodeJS.Timeout | undefined;

  /**
   * @param pools every pool by name: the listener's own and those its routes name.
   */
  constructor(model: ListenerModel, pools: ReadonlyMap<string, Pool>, logger: Logger, accessLog: boolean) {
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
    const samePerSource =
      previous !== null &&
      previous.listener.perSource.maxConnections === model.perSource.maxConnections &&
      previous.listener.perSource.connectRate === model.perSource.connectRate;
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
          ? new PerSourceTable(model.perSource)
          : null,
      trustedProxies: model.acceptProxy && model.trustedProxies.length > 0 ? new CidrList(model.trustedProxies) : null,
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
      ctx.terminator = new TlsTerminator(model.tls, result.store, model.timeouts.handshakeMs);
    }
    return () => {
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
    this.#ctx.terminator = new TlsTerminator(tlsModel, result.store, this.model.timeouts.handshakeMs);
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
    const result = await loadCertificates(t.certs, {
      ...(t.clientCa !== null ? { clientCa: t.clientCa } : {}),
      context: { minVersion: t.minVersion, ...(t.ciphers !== null ? { ciphers: t.ciphers } : {}) },
    });
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
  }

  #onConnection = (socket: net.Socket): void => {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    this.stats.accepted++;
    const max = this.model.maxConnections;
    if (max > 0 && this.#sessions.size >= max) {
      // Over the listener's limit: close at once, nothing read, nothing connected.
      socket.destroy();
      this.stats.reject('limit');
      this.stats.terminated('rejected_limit');
      this.#logger.debug({ client: socket.remoteAddress, termination: 'rejected_limit' }, 'connection');
      return;
    }
    const session = new Session(socket, this.#ctx);
    this.#sessions.add(session);
    session.start();
  };
}
