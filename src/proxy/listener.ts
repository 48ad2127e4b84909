/**
 * One `net` server per configured listener. It owns its server socket, its
 * timers and every session it accepted.
 *
 * Lifecycle: the constructor only builds objects; `start()` loads what the
 * listener needs (certificates), binds and starts its timers; `close()`
 * stops accepting and resolves once the last session has ended (graceful);
 * `shutdown()` ends the sessions that remain; `destroy()` does all of it at
 * once and releases every timer. Each is idempotent.
 *
 * With several serving threads, each thread has a Listener of the same
 * configuration bound to the same port (SO_REUSEPORT: the kernel spreads new
 * connections), and the counts that must be exact for all of them (open
 * connections against `max_connections`, every counter) live in shared
 * memory at this listener's slot.
 */
import net from 'node:net';
import type { ListenerModel } from '../config/model.js';
import { LocalResourceError, ListenError, RejectedError } from '../errors.js';
import type { Logger } from '../log.js';
import { CidrList } from '../net/cidr.js';
import { processFds, type FdBudget } from '../net/fd-budget.js';
import type { Pool } from '../pool.js';
import { DEFAULT_MAX_SOURCES } from '../protect/per-source.js';
import { SharedPerSourceTable } from '../protect/shared-per-source.js';
import { listenFds } from '../runtime/systemd.js';
import type { TicketKeys } from '../tls/ticket-keys.js';
import type { TlsTerminator } from '../tls/terminator.js';
import { RouteTable } from './routes.js';
import { frontStages } from './front/index.js';
import { CancelKeyTable } from '../protocols/postgres/cancel-keys.js';
import { LineLimiter } from './line-limiter.js';
import { ListenerTls } from './listener-tls.js';
import { Session, type SessionContext } from './session.js';
import { ListenerStats, type PairSlots } from './stats.js';
import { SharedMemory } from '../shared/memory.js';
import { DEFAULT_LINES_PER_SECOND } from './line-limiter.js';

/** A local resource shortage is worth a warning, but one per this interval per listener (with a count). */
const LOCAL_ERROR_WARN_EVERY_MS = 10_000;
/** How often idle per-source entries are forgotten. */
const PER_SOURCE_SWEEP_MS = 10_000;

/**
 * How often open connections are checked for idleness: a quarter of the idle
 * timeout, between 50 ms and 1 s, so an idle connection closes within
 * 25% of its timeout (at most a second late).
 */
function idleSweepMs(idleMs: number): number {
  return Math.min(1_000, Math.max(50, Math.floor(idleMs / 4)));
}

export class Listener {
  #model: ListenerModel;
  #pools: ReadonlyMap<string, Pool>;
  readonly #server: net.Server;
  readonly #sessions = new Set<Session>();
  readonly #logger: Logger;
  readonly #rootLogger: Logger;
  #accessLog: boolean;
  /** What new sessions get; a reload swaps it, sessions keep the one they started with. */
  #ctx: SessionContext | undefined;
  readonly stats: ListenerStats;
  /** Lines of connections that never reached a server, bounded per listener (kept across reloads). */
  readonly #limiter: LineLimiter;
  readonly #fds: FdBudget;
  readonly #memory: SharedMemory;
  /** This listener's slot in shared memory, and the index of the open-connection counts there. */
  readonly slot: number;
  readonly #active: number;
  readonly #share: number;
  /** The port to bind instead of the model's (another thread bound `:0` first and got this one). */
  #port: number | undefined;
  /** A worker thread's per-source table: the main thread's, by its buffer. */
  #perSourceBuffer: SharedArrayBuffer | undefined;
  readonly #tls: ListenerTls;
  /** The TLS terminator new connections use (null: no TLS termination), kept by a change that reads no certificate. */
  #terminator: TlsTerminator | null = null;
  /** Local errors since the last warning, and when that was. */
  #localErrorsUnreported = 0;
  #localErrorWarnedAt = -Infinity;
  #sweepTimer: NodeJS.Timeout | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  /** Resolves close() once the last session has ended. */
  #drained: (() => void) | undefined;
  #destroying: Promise<void> | undefined;

  /**
   * @param pools every pool by name: the listener's own and those its routes name.
   */
  constructor(model: ListenerModel, pools: ReadonlyMap<string, Pool>, logger: Logger, accessLog: boolean, env: ListenerEnv = {}) {
    this.#fds = env.fds ?? processFds;
    this.#memory = env.memory ?? SharedMemory.create(1, { servers: 0, listeners: 1, pairs: 0, pools: 0 });
    this.slot = env.slot ?? 0;
    this.#port = env.port;
    this.#perSourceBuffer = env.perSourceBuffer;
    const threads = this.#memory.threads;
    this.#active = this.slot * (threads + 1);
    this.#share = this.#active + 1 + this.#memory.thread;
    this.stats = new ListenerStats(this.#memory, this.slot, env.pairSlots);
    // The lines-per-second bound is per listener: each thread takes its share.
    this.#limiter = new LineLimiter(Math.max(1, Math.round(DEFAULT_LINES_PER_SECOND / threads)));
    this.#model = model;
    this.#pools = pools;
    this.#logger = logger.child({ listener: model.name });
    this.#rootLogger = logger;
    this.#accessLog = accessLog;
    this.#tls = new ListenerTls(model.name, this.#logger, this.#memory, this.slot);
    this.#server = net.createServer({
      allowHalfOpen: true,
      // The client is read only once its backend is connected.
      pauseOnConnect: true,
      noDelay: true,
      // TCP keep-alive is set later, on connections that last (see Session.checkIdle): four
      // setsockopt calls per socket are a tenth of a short connection's cost.
    });
    this.#server.on('connection', this.#onConnection);
    this.#server.on('error', (err) => {
      // A failed bind is start()'s to report; once listening, errors are accept failures: log, keep serving.
      if (!this.#server.listening) return;
      this.#logger.error({ err: { code: (err as NodeJS.ErrnoException).code, message: err.message } }, 'accept error');
    });
  }

  get model(): ListenerModel {
    return this.#model;
  }

  /** Open connections right now, of every thread. */
  get connections(): number {
    return Atomics.load(this.#memory.listenerActive, this.#active);
  }

  /** The bound address (useful with port 0). */
  address(): net.AddressInfo {
    return this.#server.address() as net.AddressInfo;
  }

  /** This listener's session-ticket keys; null while it issues no tickets. */
  get ticketKeys(): TicketKeys | null {
    return this.#tls.ticketKeys;
  }

  /**
   * Load what the listener needs (certificates), bind and start accepting.
   * Rejects with ConfigError (certificates) or ListenError (bind); nothing is
   * left open then.
   */
  async start(): Promise<void> {
    const ctx = await this.#buildContext(this.#model, this.#pools, this.#accessLog, null, this.#perSourceBuffer);
    this.#ctx = ctx;
    this.#terminator = ctx.terminator;
    await this.#listen();
    this.#startTimers();
  }

  /**
   * Reload, step one: build everything the new model needs (certificates
   * re-read from disk) without touching what serves now. Returns the commit
   * step, which cannot fail; rejects with ConfigError and changes nothing.
   * The bound socket is kept: a reload never refuses a connection here.
   */
  async prepareUpdate(
    model: ListenerModel,
    pools: ReadonlyMap<string, Pool>,
    accessLog: boolean,
    options: { pairSlots?: PairSlots; perSourceBuffer?: SharedArrayBuffer; keepCertificates?: boolean } = {},
  ): Promise<PreparedListener> {
    const { pairSlots } = options;
    // A change that is not a reload from the file (a server's DNS answer) reads no certificate: the same model keeps its terminator.
    const keep = options.keepCertificates === true && model === this.#model ? this.#terminator : undefined;
    const ctx = await this.#buildContext(model, pools, accessLog, this.#ctx ?? null, options.perSourceBuffer, keep);
    const perSourceBuffer = ctx.perSource?.buffer;
    return {
      ...(perSourceBuffer !== undefined ? { perSourceBuffer } : {}),
      commit: () => {
        this.#perSourceBuffer = perSourceBuffer;
      if (pairSlots !== undefined) this.stats.usePairSlots(pairSlots);
      this.#tls.committed(model);
      this.#terminator = ctx.terminator;
      this.#model = model;
      this.#pools = pools;
      this.#accessLog = accessLog;
      this.#ctx = ctx;
      if (this.#closing === undefined) this.#startTimers();
      },
    };
  }

  /** The per-source table new connections are counted in (one for every thread), or null. */
  get perSource(): SharedPerSourceTable | null {
    return this.#ctx?.perSource ?? null;
  }

  /** Stop accepting; resolves once every open session has ended. Idempotent (one shared promise). */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      clearInterval(this.#sweepTimer);
      this.#sweepTimer = undefined;
      // net.Server#close waits for connections we track ourselves: unbind, and count sessions instead.
      if (this.#server.listening) this.#server.close();
      if (this.#sessions.size === 0) return resolve();
      this.#drained = resolve;
    });
    return this.#closing;
  }

  /** End every open session now (drain time is over). */
  shutdown(): void {
    for (const session of this.#sessions) session.shutdown();
  }

  /** Stop accepting, end every session, release every timer and the ticket keys. Idempotent (one shared promise). */
  destroy(): Promise<void> {
    this.#destroying ??= (async () => {
      const closed = this.close();
      this.shutdown();
      clearInterval(this.#idleTimer);
      this.#idleTimer = undefined;
      this.#limiter.close();
      this.#tls.close();
      await closed;
    })();
    return this.#destroying;
  }

  /** Everything a session needs, built from one model; `previous` lends its per-source table if the limits are unchanged. */
  async #buildContext(
    model: ListenerModel,
    pools: ReadonlyMap<string, Pool>,
    accessLog: boolean,
    previous: SessionContext | null,
    perSourceBuffer: SharedArrayBuffer | undefined,
    keep?: TlsTerminator | null,
  ): Promise<SessionContext & { terminator: TlsTerminator | null }> {
    const terminator = keep !== undefined ? keep : await this.#tls.terminatorFor(model);
    // Entries with open connections are never forgotten, so the table holds at least as many clients as the listener connections.
    const maxSources = Math.max(DEFAULT_MAX_SOURCES, model.maxConnections);
    const samePerSource =
      previous !== null &&
      previous.perSource !== null &&
      previous.listener.perSource.maxConnections === model.perSource.maxConnections &&
      previous.listener.perSource.connectRate === model.perSource.connectRate &&
      previous.listener.perSource.ipv6Prefix === model.perSource.ipv6Prefix &&
      previous.perSource.maxSources === maxSources;
    const perSource = this.#perSourceTable(model, maxSources, samePerSource ? previous.perSource : null, perSourceBuffer);
    const front = frontStages(model, {
      // Never null with accept_proxy: an empty list, which the loader refuses, would trust no one.
      trustedProxies: model.acceptProxy ? new CidrList(model.trustedProxies) : null,
      allow: model.allow.length > 0 ? new CidrList(model.allow) : null,
      deny: model.deny.length > 0 ? new CidrList(model.deny) : null,
      perSource,
      terminator,
      poolSpeaksTls: (pools.get(model.pool)?.model.tls ?? null) !== null,
    });
    const reachable = [...new Set([model.pool, ...model.routes.map((r) => r.pool)])].map((name) => pools.get(name)!);
    return {
      listener: model,
      pool: pools.get(model.pool)!,
      pools: reachable,
      cancelKeys: model.protocol === 'postgres' ? new CancelKeyTable(this.#memory.handles().cancelKeys, this.#memory.thread) : null,
      router: model.routes.length > 0 ? new RouteTable(model.routes, (r) => pools.get(r.pool)!) : null,
      front,
      perSource,
      accessLog: accessLog ? this.#rootLogger : null,
      stats: this.stats,
      limiter: this.#limiter,
      fds: this.#fds,
      onLocalError: this.#onLocalError,
      onClosed: this.#onSessionClosed,
      terminator,
    };
  }

  /**
   * The per-source table for `model`: the main thread makes it (or keeps
   * `same`, when the limits did not change) with a column per serving
   * thread; a worker thread attaches to the main thread's, by its buffer.
   */
  #perSourceTable(model: ListenerModel, maxSources: number, same: SharedPerSourceTable | null, buffer: SharedArrayBuffer | undefined): SharedPerSourceTable | null {
    if (model.perSource.maxConnections <= 0 && model.perSource.connectRate <= 0) return null;
    const memory = this.#memory;
    if (memory.thread !== 0) {
      if (buffer === undefined) throw new Error(`listener ${model.name}: no per-source table from the main thread`);
      return same !== null && same.buffer === buffer ? same : SharedPerSourceTable.attach(buffer, { worker: memory.thread });
    }
    return same ?? SharedPerSourceTable.create(model.perSource, { maxSources, workers: memory.threads, worker: 0 });
  }

  #listen(): Promise<void> {
    const { host, text } = this.#model.bind;
    const port = this.#port ?? this.#model.bind.port;
    const fdName = this.#model.systemdSocket;
    // Several threads bind the same port: the kernel spreads new connections among them.
    const reusePort = this.#memory.threads > 1;
    // A handle `{ fd }` is what listen() takes for an inherited socket.
    let target: net.ListenOptions | { fd: number } = { host, port, backlog: 4096, reusePort };
    if (fdName !== null) {
      // Socket activation: systemd bound it and keeps it across our restarts.
      const fd = listenFds().get(fdName);
      if (fd === undefined) {
        const passed = process.env.LISTEN_FDNAMES ?? '(none)';
        return Promise.reject(new ListenError(this.#model.name, text, new Error(`systemd passed no socket named "${fdName}" (LISTEN_FDNAMES=${passed})`)));
      }
      target = { fd };
    }
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(new ListenError(this.#model.name, text, err));
      this.#server.once('error', onError);
      this.#server.listen(target as net.ListenOptions, () => {
        this.#server.removeListener('error', onError);
        const a = this.address();
        if (this.#memory.thread === 0) this.#logger.info({ address: a.address, port: a.port, threads: this.#memory.threads }, 'listening');
        resolve();
      });
    });
  }

  #startTimers(): void {
    clearInterval(this.#idleTimer);
    clearInterval(this.#sweepTimer);
    this.#sweepTimer = undefined;
    const ctx = this.#ctx!;
    this.#idleTimer = setInterval(this.#checkIdle, idleSweepMs(Math.min(ctx.listener.timeouts.idleMs, ctx.pool.model.timeouts.idleMs)));
    // One thread forgets what the table no longer needs: the main one.
    if (ctx.perSource !== null && this.#memory.thread === 0) {
      const table = ctx.perSource;
      this.#sweepTimer = setInterval(() => table.sweep(), PER_SOURCE_SWEEP_MS);
    }
  }

  #checkIdle = (): void => {
    const now = performance.now();
    for (const session of this.#sessions) session.checkIdle(now);
    this.stats.forgetRetired();
  };

  #onSessionClosed = (session: Session): void => {
    this.#sessions.delete(session);
    Atomics.sub(this.#memory.listenerActive, this.#active, 1);
    this.#memory.listenerActive[this.#share]! -= 1;
    if (this.#sessions.size === 0 && this.#drained !== undefined) {
      this.#drained();
      this.#drained = undefined;
    }
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

  #onConnection = (socket: net.Socket): void => {
    const ctx = this.#ctx;
    if (this.#closing !== undefined || ctx === undefined) {
      socket.destroy();
      return;
    }
    this.stats.accept();
    const session = new Session(socket, ctx);
    // Counted as open at once, in every thread's count: max_connections is exact across threads.
    const before = Atomics.add(this.#memory.listenerActive, this.#active, 1);
    this.#memory.listenerActive[this.#share]! += 1;
    const max = ctx.listener.maxConnections;
    const full = max > 0 && before >= max;
    this.#sessions.add(session);
    // Over a limit: close at once, nothing read, nothing connected; logged like any connection.
    if (full) return session.refuse(new RejectedError('L4LB_REJECTED_LIMIT', 'max_connections'));
    if (!this.#fds.take('accept')) return session.refuse(new LocalResourceError('EMFILE', 'descriptor reserve reached'));
    session.start(true);
  };
}

/** Where a listener's shared state is (defaults: memory of its own, for a listener on its own). */
export interface ListenerEnv {
  readonly memory?: SharedMemory;
  /** This listener's slot in `memory`. */
  readonly slot?: number;
  readonly pairSlots?: PairSlots;
  readonly fds?: FdBudget;
  /** Bind this port instead of the model's (the main thread bound `:0` and got it). */
  readonly port?: number;
  /** In a worker thread: the buffer of the main thread's per-source table for this listener. */
  readonly perSourceBuffer?: SharedArrayBuffer;
}

/** A listener's reload, prepared: commit() cannot fail. */
export interface PreparedListener {
  /** The per-source table's buffer of the new configuration, for the other threads. */
  readonly perSourceBuffer?: SharedArrayBuffer;
  commit(): void;
}
