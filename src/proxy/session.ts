/**
 * One client connection from accept to close. The session owns both sockets
 * and every timer; whatever happens first, teardown runs exactly once and
 * writes one access log line.
 *
 * Path, one line: front (PROXY header in → ACL/limits → a protocol's
 * opening → TLS handshake or ClientHello peek; see front/) → route (SNI, client network) →
 * upstream (pick, connect, retry, PROXY header out, TLS to the server; see
 * upstream.ts) → splice → finish. The phase is stored, never inferred. A
 * PostgreSQL CancelRequest leaves the line after the front: it is delivered
 * to the server that issued its key (src/protocols/postgres) and the
 * connection ends as `cancel_forwarded`.
 *
 * The client is not read until its backend is connected (the listener
 * accepts with pauseOnConnect), except for what a front stage must read, so
 * nothing is buffered for a backend that might never answer. Every failure
 * is a coded error whose code picks the termination (termination.ts).
 */
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { ListenerModel } from '../config/model.js';
import { ConnectFailedError, LocalResourceError, NoServerError, reasonOf, type L4lbError } from '../errors.js';
import type { Logger } from '../log.js';
import type { FdBudget } from '../net/fd-budget.js';
import type { Pool, Server, ServerConnection, ServerLease } from '../pool.js';
import type { SharedPerSourceTable as PerSourceTable } from '../protect/shared-per-source.js';
import { formatEndpoint } from '../config/address.js';
import { logAccess } from './access-log.js';
import { FrontEnd, type FrontOwner } from './front/front-end.js';
import type { FrontStage } from './front/stage.js';
import { outgoingHeader } from './header-out.js';
import type { LineLimiter } from './line-limiter.js';
import type { RouteTable } from './routes.js';
import type { ListenerStats, PairCounters } from './stats.js';
import { terminationOf, type Termination } from './termination.js';
import { Upstream, type UpstreamOwner } from './upstream.js';
import { BackendKeyReader } from '../protocols/postgres/backend-keys.js';
import { CancelForwarder, type CancelOutcome, type CancelTarget } from '../protocols/postgres/cancel-forward.js';
import type { CancelKeyTable } from '../protocols/postgres/cancel-keys.js';
import { cancelRequest, type CancelKey } from '../protocols/postgres/messages.js';

/** What every session of one listener shares (rebuilt on reload; a session keeps the one it started with). */
export interface SessionContext {
  readonly listener: ListenerModel;
  /** The listener's pool: used when no route matches. */
  readonly pool: Pool;
  /** Routes (sni, source) to pools; null when the listener has none. */
  readonly router: RouteTable<Pool> | null;
  /** Every pool the listener can send to (its own first): where a PostgreSQL cancel may have to go. */
  readonly pools: readonly Pool[];
  /** protocol postgres: the cancel keys of live sessions, shared by every thread; null otherwise. */
  readonly cancelKeys: CancelKeyTable | null;
  /** What runs before routing, in order (see front/). */
  readonly front: readonly FrontStage[];
  /** Per client IP limits: the front's admit stage takes a slot, the session gives it back. */
  readonly perSource: PerSourceTable | null;
  /** Access log sink; null when access logging is off. */
  readonly accessLog: Logger | null;
  readonly stats: ListenerStats;
  /** Bounds the lines of connections that never reached a server (the listener's; kept across reloads). */
  readonly limiter: LineLimiter;
  /** The process's file descriptors (the client's is taken at accept, the backend's by the upstream). */
  readonly fds: FdBudget;
  /** The balancer ran short of something (EMFILE...): reported at a bounded rate by the listener. */
  readonly onLocalError: (code: string) => void;
  /** Called once, after teardown. */
  readonly onClosed: (session: Session) => void;
}

/** TCP keep-alive probes start after this much silence (dead peers behind NAT are found eventually). */
export const KEEPALIVE_DELAY_MS = 60_000;
/** Keep-alive is turned on for connections older than this (short ones never pay for it). */
export const KEEPALIVE_AFTER_MS = 10_000;
/** Once a side has sent its FIN, the connection may be inactive this long (or the idle timeout, if shorter). */
export const FIN_TIMEOUT_MS = 10_000;

const enum Phase {
  /** Front stages: PROXY header, admission, TLS handshake or ClientHello, under the handshake deadline. */
  Front,
  Connecting,
  Spliced,
  /** Ending: sockets destroyed or closing; finish() runs once both have closed. */
  Ending,
  Closed,
}

function noop(): void {}

/** end() only if pipe() has not already: a second end() builds an error with a stack trace, per connection. */
function endOnce(socket: net.Socket | undefined): void {
  if (socket !== undefined && !socket.writableEnded && !socket.destroyed) socket.end();
}

export class Session implements ServerConnection, FrontOwner, UpstreamOwner {
  readonly #ctx: SessionContext;
  readonly #front: FrontEnd;
  readonly #startedAt = performance.now();
  #phase = Phase.Front;
  #pool: Pool;
  #upstream: Upstream | undefined;
  /** A PostgreSQL CancelRequest being delivered (instead of an upstream). */
  #cancel: CancelForwarder | undefined;
  /** The server a cancel went to, when it was one (for the access line). */
  #cancelServer: string | null = null;
  /** Reads the PostgreSQL server's BackendKeyData as it passes (until found). */
  #keyReader: BackendKeyReader | undefined;
  /** This session's entry in the cancel-key table; -1: none. */
  #keyEntry = -1;
  #backend: net.Socket | undefined;
  /** The backend's TCP socket (under the TLS one when the pool re-encrypts). */
  #backendRaw: net.Socket | undefined;
  /** TCP keep-alive is on for both sockets (set once the connection has lasted). */
  #keepAlive = false;
  #lease: ServerLease | undefined;
  /** This listener's counters for the connected server. */
  #counters: PairCounters | undefined;
  /** Bytes already added to #counters (the sweep adds what moved since, the finish the rest). */
  #countedIn = 0;
  #countedOut = 0;
  #connectMs: number | null = null;
  #termination: Termination | undefined;
  /** Why a connection ended before the splice, in words, for its access line. */
  #reason: string | undefined;
  #clientClosed = false;
  #backendClosed = true;
  /** File descriptors held from the budget: the client's (taken at accept) and the backend's. */
  #fds = 0;
  /** Idle bookkeeping for checkIdle(). */
  #idleMs = 0;
  #lastActive = 0;
  #lastMoved = 0;
  /** A side has sent its FIN: inactivity is then bounded by FIN_TIMEOUT_MS. */
  #halfClosed = false;

  constructor(client: net.Socket, ctx: SessionContext) {
    this.#ctx = ctx;
    this.#pool = ctx.pool;
    this.#front = new FrontEnd(client, ctx.front, this);
  }

  /** The client IP (IPv4-mapped IPv6 written as IPv4; the PROXY header's once read). */
  get clientIp(): string {
    return this.#front.clientIp;
  }

  /**
   * Serve the connection. `fdTaken`: the listener took the client's
   * descriptor from the budget (given back at close).
   */
  start(fdTaken: boolean): void {
    if (fdTaken) this.#fds = 1;
    const raw = this.#front.raw;
    raw.on('close', this.#onClientClose);
    // A client that reset right after connecting has no address any more: it
    // is gone, not an untrusted or malformed peer.
    if (raw.destroyed || raw.remoteAddress === undefined) {
      if (raw.closed) this.#clientClosed = true;
      return this.#end('client_close');
    }
    this.#front.start(this.#ctx.listener.timeouts.handshakeMs);
  }

  /**
   * Close at once, before anything is read: the listener refused the
   * connection (max_connections, no descriptor left). Logged like every
   * other finished connection.
   */
  refuse(err: L4lbError): void {
    this.#front.raw.on('close', this.#onClientClose);
    if (this.#front.raw.destroyed) this.#clientClosed = true;
    this.#fail(err);
  }

  /** Close both sides now (drain timeout reached). */
  shutdown(): void {
    this.#end('shutdown');
  }

  /** The server was marked down and its pool says `on_server_down: close`. */
  closeForServerDown(): void {
    this.#end('server_close');
  }

  /**
   * Called by the listener's sweep: close the connection when no byte moved
   * in either direction for the idle timeout.
   */
  checkIdle(now: number): void {
    if (this.#phase !== Phase.Spliced) return;
    const backend = this.#backend!;
    const client = this.#front.client;
    if (!this.#keepAlive && now - this.#startedAt >= KEEPALIVE_AFTER_MS) this.#startKeepAlive();
    const written = client.bytesWritten;
    const moved = client.bytesRead + written + backend.bytesRead + backend.bytesWritten;
    // The bytes so far go into the counters, so l4lb_bytes_total moves while the connection is open
    // (an idle one costs nothing more). Out: only what the socket has finished writing (bytesWritten
    // also counts its buffer, which a reset discards).
    if (moved !== this.#lastMoved || written !== this.#countedOut) this.#count(this.#bytesIn(), written - client.writableLength);
    if (moved !== this.#lastMoved) {
      this.#lastMoved = moved;
      this.#lastActive = now;
    } else if (now - this.#lastActive >= (this.#halfClosed ? Math.min(this.#idleMs, FIN_TIMEOUT_MS) : this.#idleMs)) {
      // Half-closed (a side sent its FIN): what is left must keep moving. A
      // peer that stopped reading would otherwise hold both descriptors for
      // the whole idle timeout (HAProxy bounds this with client-fin / server-fin).
      this.#end('idle_timeout');
    }
  }

  /**
   * TCP keep-alive on both sockets, so a peer that vanished behind a NAT or a
   * firewall is found while the connection idles. Only for connections that
   * last: setting it costs four system calls per socket, a tenth of what a
   * short connection costs in all (HAProxy and NGINX leave it off unless asked).
   */
  #startKeepAlive(): void {
    this.#keepAlive = true;
    this.#front.raw.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    this.#backendRaw?.setKeepAlive(true, KEEPALIVE_DELAY_MS);
  }

  // ---- front → route → upstream ----------------------------------------------

  frontFailed(err: L4lbError | null): void {
    if (err === null) this.#end('client_close');
    else this.#fail(err);
  }

  /** The front is done: route on what it learned, then connect. */
  frontDone(): void {
    const front = this.#front;
    const client = front.client;
    const cancel = front.postgres?.cancel;
    if (cancel != null) return this.#forwardCancel(cancel);
    // From here the session listens to the client it will splice (raw, or TLS over it, which owns the raw one).
    client.on('error', this.#onClientError);
    client.on('end', this.#onClientEnd);
    if (client !== front.raw) {
      front.raw.removeListener('close', this.#onClientClose);
      client.on('close', this.#onClientClose);
    }
    this.#phase = Phase.Connecting;
    const router = this.#ctx.router;
    if (router !== null) this.#pool = router.match(front.clientIp, front.sni) ?? this.#ctx.pool;
    const pool = this.#pool;
    const pg = front.postgres;
    // PostgreSQL: TLS the client began with l4lb's `S` (passthrough) or that l4lb speaks to the server needs the server's `S` too.
    const sslRequest = pg !== null && (this.#ctx.listener.tls?.mode === 'passthrough' || pool.model.tls !== null);
    this.#upstream = new Upstream(pool, front.clientIp, this.#ctx.fds, () => outgoingHeader(pool.model.proxyProtocol, front), this, sslRequest);
    this.#upstream.start();
  }

  /**
   * A PostgreSQL CancelRequest: to the server that issued the key, or to
   * every up server the listener reaches when the key was never seen here
   * (TLS passed through). The client gets no reply; it is closed once the
   * servers have closed, as a server would close it.
   */
  #forwardCancel(key: CancelKey): void {
    this.#phase = Phase.Connecting;
    const ctx = this.#ctx;
    const front = this.#front;
    // A client that resets right after sending its cancel (some drivers do) still gets it delivered: errors are not an end here.
    front.client.on('error', noop);
    if (front.client !== front.raw) {
      front.raw.removeListener('close', this.#onClientClose);
      front.client.on('close', this.#onClientClose);
    }
    const slot = ctx.cancelKeys?.find(key) ?? -1;
    let servers: Array<{ server: Server; pool: Pool }> = [];
    for (const pool of ctx.pools) {
      pool.sync();
      for (const server of pool.servers) {
        if (slot >= 0 ? server.slot === slot : server.up && !servers.some((s) => s.server.address.text === server.address.text)) servers.push({ server, pool });
      }
    }
    if (slot >= 0 && servers.length > 1) servers = servers.slice(0, 1);
    const known = slot >= 0 && servers.length === 1;
    if (known) {
      this.#pool = servers[0]!.pool;
      this.#cancelServer = servers[0]!.server.name;
    }
    const targets: CancelTarget[] = [];
    for (const { server, pool } of servers) {
      let header: Buffer | null;
      try {
        header = outgoingHeader(pool.model.proxyProtocol, front);
      } catch {
        return this.#end('client_close');
      }
      targets.push({ server, header, timeoutMs: pool.model.timeouts.connectMs });
    }
    if (targets.length === 0) return this.#fail(new NoServerError(this.#pool.name));
    this.#cancel = new CancelForwarder(cancelRequest(key), ctx.fds, (outcome) => this.#cancelDelivered(outcome, known, targets.length));
    this.#cancel.start(targets);
  }

  #cancelDelivered(outcome: CancelOutcome, known: boolean, targets: number): void {
    this.#cancel = undefined;
    if (outcome.delivered === 0) {
      return this.#fail(new ConnectFailedError(known ? this.#cancelServer! : `${targets} servers`, new Error(`cancel not delivered: ${outcome.failures.join('; ')}`)));
    }
    const failed = outcome.failures.length > 0 ? `; not delivered to ${outcome.failures.join('; ')}` : '';
    this.#reason = known ? `cancel sent to the session's server${failed}` : `key not seen here: cancel sent to ${outcome.delivered} of ${targets} up servers${failed}`;
    this.#end('cancel_forwarded');
  }

  upstreamFailed(err: L4lbError | null): void {
    if (err === null) this.#end('client_close');
    else this.#fail(err);
  }

  /** Connected: count it, then splice. */
  upstreamReady(backend: net.Socket, raw: net.Socket, lease: ServerLease): void {
    this.#backendRaw = raw;
    this.#fds++; // the backend's descriptor, taken by the upstream
    this.#backend = backend;
    this.#backendClosed = false;
    this.#lease = lease;
    backend.on('error', this.#onBackendError);
    backend.on('end', this.#onBackendEnd);
    backend.on('close', this.#onBackendClose);
    this.#connectMs = Math.round(performance.now() - this.#startedAt);
    lease.connected(this);
    this.#watchForCancelKey(backend);
    this.#counters = this.#ctx.stats.for(lease.server);
    this.#counters.connected();
    if (this.#clientClosed) return this.#end('client_close');
    this.#splice(backend);
  }

  /**
   * PostgreSQL: read the server's BackendKeyData as it passes, so a later
   * CancelRequest can be sent to this server. Not when the bytes are
   * encrypted end to end (passthrough, or a plain listener's client that
   * asked the server for TLS itself).
   */
  #watchForCancelKey(backend: net.Socket): void {
    const pg = this.#front.postgres;
    const table = this.#ctx.cancelKeys;
    const plain = this.#ctx.listener.tls === null;
    if (pg === null || table === null || this.#ctx.listener.tls?.mode === 'passthrough' || (plain && pg.opening === 'direct_tls')) return;
    if (this.#lease!.server.slot < 0) return;
    this.#keyReader = new BackendKeyReader(plain && (pg.opening === 'ssl' || pg.opening === 'gssenc'));
    backend.on('data', this.#onBackendKeyData);
  }

  #onBackendKeyData = (chunk: Buffer): void => {
    const scan = this.#keyReader!.push(chunk);
    if (scan.state === 'more') return;
    this.#backend!.removeListener('data', this.#onBackendKeyData);
    this.#keyReader = undefined;
    if (scan.key !== null && this.#phase === Phase.Spliced) this.#keyEntry = this.#ctx.cancelKeys!.add(scan.key, this.#lease!.server.slot);
  };

  // ---- splice -------------------------------------------------------------------

  #splice(backend: net.Socket): void {
    this.#phase = Phase.Spliced;
    const client = this.#front.client;
    // Idle time is checked by the listener's sweep (see checkIdle), not by a
    // timer per socket: a timer per connection, refreshed on every chunk, costs
    // more than the splice itself on short connections.
    this.#idleMs = Math.min(this.#ctx.listener.timeouts.idleMs, this.#pool.model.timeouts.idleMs);
    this.#lastActive = performance.now();
    // pipe() gives backpressure both ways and passes the FIN on (allowHalfOpen
    // keeps the other direction open); it also resumes the paused client.
    client.pipe(backend);
    backend.pipe(client);
    if (this.#pool.model.leastTime.measure === 'first_byte') this.#timeFirstByte(client, backend);
  }

  /**
   * least_time's `first_byte` figure: from connected to the server's first
   * byte (a greeting), or from the client's first byte when the client spoke
   * first (the reply), so a client's own pause is not blamed on the server.
   * A connection on which the server never sends leaves the figure alone.
   */
  #timeFirstByte(client: net.Socket, backend: net.Socket): void {
    const server = this.#lease!.server;
    let from = performance.now();
    let asked = false;
    const onClient = (): void => {
      if (asked) return;
      asked = true;
      from = performance.now();
    };
    const onBackend = (): void => {
      client.removeListener('data', onClient);
      this.#pool.reportResponse(server, 'first_byte', performance.now() - from);
    };
    client.once('data', onClient);
    backend.once('data', onBackend);
  }

  #onClientError = (): void => {
    this.#end('client_close');
  };

  #onClientEnd = (): void => {
    this.#halfClosed = true;
    this.#termination ??= 'client_close';
  };

  #onBackendError = (): void => {
    // The first reason wins: a server that resets after the client's FIN is
    // usually one closing a finished session (PostgreSQL after Terminate).
    this.#end('server_close');
  };

  #onBackendEnd = (): void => {
    this.#halfClosed = true;
    this.#termination ??= 'server_close';
  };

  #onClientClose = (hadError: boolean): void => {
    this.#clientClosed = true;
    // A cancel is delivered even when its client does not wait for it.
    if (this.#cancel !== undefined && this.#phase === Phase.Connecting) return;
    // In the front, the running stage says how it ended (a TLS refusal of a
    // client certificate closes the socket before the reason arrives).
    if (this.#phase === Phase.Front) return;
    if (this.#phase !== Phase.Spliced) {
      // The client gave up while its server was being connected: stop that.
      return this.#end('client_close');
    }
    this.#termination ??= 'client_close';
    // Both directions of the client are done; let the backend flush and close,
    // or drop it at once if the client vanished with an error.
    if (hadError) this.#backend?.destroy();
    else endOnce(this.#backend);
    this.#maybeFinish();
  };

  #onBackendClose = (hadError: boolean): void => {
    this.#backendClosed = true;
    this.#termination ??= 'server_close';
    if (hadError) this.#front.client.destroy();
    else endOnce(this.#front.client);
    this.#maybeFinish();
  };

  // ---- teardown -------------------------------------------------------------------

  /** Client → server bytes: what the client sent after the PROXY header (a TLS client's: the plaintext). */
  #bytesIn(): number {
    const front = this.#front;
    const client = front.client;
    return client === front.raw ? client.bytesRead - front.headerBytes : client.bytesRead;
  }

  /**
   * Add to the counters what moved since they were last told. Each count only
   * grows, so the sum over a connection's life is its final count, once.
   */
  #count(bytesIn: number, bytesOut: number): void {
    const dIn = bytesIn > this.#countedIn ? bytesIn - this.#countedIn : 0;
    const dOut = bytesOut > this.#countedOut ? bytesOut - this.#countedOut : 0;
    if (dIn === 0 && dOut === 0) return;
    this.#countedIn += dIn;
    this.#countedOut += dOut;
    this.#counters!.moved(dIn, dOut);
  }

  /** End with a failure: its code picks the termination, its reason goes into the access line. */
  #fail(err: L4lbError): void {
    if (this.#termination === undefined) this.#reason = reasonOf(err);
    if (err instanceof LocalResourceError) this.#countLocalError(err);
    this.#end(terminationOf(err));
  }

  #countLocalError(err: LocalResourceError): void {
    this.#ctx.stats.localError(err.errno);
    this.#ctx.onLocalError(err.errno);
  }

  /** Record why the connection ends (the first reason wins) and close both sides now. */
  #end(reason: Termination): void {
    this.#termination ??= reason;
    if (this.#phase >= Phase.Ending) return this.#maybeFinish();
    this.#phase = Phase.Ending;
    this.#front.stop();
    this.#upstream?.abort();
    this.#cancel?.abort();
    this.#cancel = undefined;
    const front = this.#front;
    front.client.destroy();
    if (front.client !== front.raw) front.raw.destroy();
    this.#backend?.destroy();
    this.#maybeFinish();
  }

  #maybeFinish(): void {
    if (this.#phase === Phase.Closed || !this.#clientClosed || !this.#backendClosed) return;
    this.#phase = Phase.Closed;
    this.#lease?.release();
    const ctx = this.#ctx;
    if (this.#keyEntry >= 0) ctx.cancelKeys!.remove(this.#keyEntry);
    const front = this.#front;
    const client = front.client;
    const termination = this.#termination ?? 'client_close';
    const bytesIn = this.#bytesIn();
    const counters = this.#counters;
    if (counters !== undefined) {
      this.#count(bytesIn, client.bytesWritten);
      counters.closed();
    }
    ctx.fds.give(this.#fds);
    this.#fds = 0;
    ctx.stats.terminated(termination);
    if (front.admittedIp !== undefined) ctx.perSource!.release(front.admittedIp);
    // Every finished connection gets a line; those that never reached a server at a bounded rate.
    if (ctx.accessLog !== null && (counters !== undefined || ctx.limiter.allow(ctx.accessLog, ctx.listener.name))) {
      const t = front.tls;
      const failures = this.#upstream?.failures;
      logAccess(ctx.accessLog, {
        listener: ctx.listener.name,
        client: front.clientIp === '' ? null : formatEndpoint({ host: front.clientIp, port: front.clientPort }),
        sni: front.sni,
        pool: this.#pool.name,
        server: this.#serverName(termination),
        connect_ms: this.#connectMs,
        duration_ms: Math.round(performance.now() - this.#startedAt),
        bytes_in: bytesIn,
        bytes_out: client.bytesWritten,
        termination,
        ...(this.#reason !== undefined ? { reason: this.#reason } : {}),
        ...(failures !== undefined && failures.length > 0 ? { tried: failures } : {}),
        ...(t !== null ? { alpn: t.alpn, ...(t.clientCn !== null ? { client_cn: t.clientCn } : {}) } : {}),
      });
    }
    ctx.onClosed(this);
  }

  /** The server the connection reached (connect_failed: the last one tried); null when none was. */
  #serverName(termination: Termination): string | null {
    const reached = this.#lease?.server.name ?? this.#cancelServer;
    if (reached !== null || termination !== 'connect_failed') return reached;
    return this.#upstream?.failures.at(-1)?.server ?? null;
  }
}
