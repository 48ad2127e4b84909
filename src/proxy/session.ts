/**
 * One client connection from accept to close. The session owns both sockets
 * and every timer; whatever happens first, teardown runs exactly once and
 * writes one access log line.
 *
 * Path: (PROXY header in) → ACL/limits → (TLS handshake, or ClientHello
 * peek) → route → pick → connect, retrying other servers → (PROXY header
 * out) → (TLS to the server) → splice → close and log.
 *
 * The client is not read until its backend is connected (the listener
 * accepts with pauseOnConnect), except for what the PROXY header, the TLS
 * handshake or the ClientHello must read, so nothing is buffered for a
 * backend that might never answer. Every phase before the splice runs under
 * one deadline, the listener's `timeouts.handshake`.
 */
import net from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import type { ListenerModel } from '../config/model.js';
import { formatDuration } from '../config/duration.js';
import type { Logger } from '../log.js';
import type { Pool, Server, ServerConnection } from '../pool.js';
import type { CidrList } from '../net/cidr.js';
import type { PerSourceTable } from '../protect/per-source.js';
import {
  PP2_CLIENT_CERT_CONN,
  PP2_CLIENT_SSL,
  ProxyHeaderError,
  ProxyHeaderParser,
  encodeV1,
  encodeV2,
  type ProxyHeader,
  type ProxyTlvInput,
} from '../proxy-protocol.js';
import { ClientHelloError, ClientHelloReader } from '../tls/client-hello.js';
import type { SniRouter } from '../tls/sni-routes.js';
import { backendConnectOptions } from '../tls/backend.js';
import { tlsDetails, type HandshakeOwner, type TlsDetails, type TlsTerminator } from '../tls/terminator.js';
import { formatEndpoint, logAccess, normaliseIp } from './access-log.js';
import type { ListenerStats, ServerCounters } from './stats.js';
import type { Termination } from './termination.js';
import type { LineLimiter } from './line-limiter.js';
import type { FdBudget } from '../net/fd-budget.js';
import { localResourceCode } from '../errors.js';

/** TCP keep-alive probes start after this much silence (dead peers behind NAT are found eventually). */
const KEEPALIVE_DELAY_MS = 60_000;

/** What every session of one listener shares. */
export interface SessionContext {
  readonly listener: ListenerModel;
  /** The listener's pool: used when no route matches. */
  readonly pool: Pool;
  /** Access log sink; null when access logging is off. */
  readonly accessLog: Logger | null;
  /** Debug-level events (rejected headers, failed handshakes); the listener's logger. */
  readonly logger: Logger;
  /** With accept_proxy: who may send a PROXY header; null = anyone. */
  readonly trustedProxies: CidrList | null;
  readonly stats: ListenerStats;
  /** Access lists; null when the listener has none. */
  readonly allow: CidrList | null;
  readonly deny: CidrList | null;
  /** Per client IP limits; null when the listener has none. */
  readonly perSource: PerSourceTable | null;
  /** tls.mode terminate: the handshake engine (its certificates can be swapped on reload). */
  readonly terminator: TlsTerminator | null;
  /** SNI routes to pools; null when the listener has none. */
  readonly router: SniRouter<Pool> | null;
  /** TLS options per pool that re-encrypts to its servers. */
  readonly backendTls: (pool: Pool) => tls.ConnectionOptions | null;
  /** Bounds the lines of connections that never reached a server (the listener's; kept across reloads). */
  readonly limiter: LineLimiter;
  /** The process's file descriptors: a connect that would eat into the reserve is refused as local_error. */
  readonly fds: FdBudget;
  /** The balancer ran short of something (EMFILE...): counted and reported at a bounded rate by the listener. */
  readonly onLocalError: (code: string) => void;
  /** Called once, after teardown. */
  readonly onClosed: (session: Session) => void;
}

const enum Phase {
  /** PROXY header, TLS handshake or ClientHello: under the handshake deadline. */
  Handshake,
  Connecting,
  Spliced,
  Closed,
}

function noop(): void {}

/** end() only if pipe() has not already: a second end() builds an error with a stack trace, per connection. */
function endOnce(socket: net.Socket | undefined): void {
  if (socket !== undefined && !socket.writableEnded && !socket.destroyed) socket.end();
}

export class Session implements ServerConnection, HandshakeOwner {
  readonly #ctx: SessionContext;
  /** The accepted TCP socket. */
  readonly #raw: net.Socket;
  /** What is spliced on the client side: the raw socket, or the TLS socket over it. */
  #client: net.Socket;
  /** The client as everything after accept sees it: from the PROXY header when one was accepted. */
  #clientIp: string;
  #clientPort: number | undefined;
  /** Where the client connected to (from the PROXY header, or our socket). */
  #destIp: string | undefined;
  #destPort: number | undefined;
  readonly #startedAt = performance.now();
  #phase = Phase.Handshake;
  /** Termination if the handshake deadline passes in the current step. */
  #handshakeFailure: Termination = 'proxy_header_error';
  #handshakeTimer: NodeJS.Timeout | undefined;
  #headerParser: ProxyHeaderParser | undefined;
  #helloReader: ClientHelloReader | undefined;
  /** tls terminate: the terminator holds the client until it reports (onTlsSecure / onTlsError). */
  #tlsHandshake = false;
  /** PROXY header bytes read from the client: not part of bytes_in. */
  #headerBytes = 0;
  #sni: string | null = null;
  /** Set when TLS was terminated here. */
  #tls: TlsDetails | null = null;
  #pool: Pool;
  #backend: net.Socket | undefined;
  #server: Server | undefined;
  #tried: Set<Server> | undefined;
  #attempts = 0;
  #connectTimer: NodeJS.Timeout | undefined;
  #connectMs: number | null = null;
  #termination: Termination | undefined;
  #clientClosed = false;
  #backendClosed = true;
  /** This listener's counters for the connected server. */
  #counters: ServerCounters | undefined;
  /** Idle bookkeeping for checkIdle(). */
  #idleMs = 0;
  #lastActive = 0;
  #lastMoved = 0;
  /** The address a per-source slot was taken for, to give it back at close. */
  #admittedIp: string | undefined;
  /** Why a connection ended before the splice, in words, for its access line (e.g. the TLS alert). */
  #reason: string | undefined;
  /** File descriptors taken from the budget: the client's (taken at accept) and a backend's. */
  #fds = 0;

  constructor(client: net.Socket, ctx: SessionContext) {
    this.#ctx = ctx;
    this.#raw = client;
    this.#client = client;
    this.#pool = ctx.pool;
    this.#clientIp = normaliseIp(client.remoteAddress);
    this.#clientPort = client.remotePort;
  }

  /** The normalised client IP (IPv4-mapped IPv6 written as IPv4). */
  get clientIp(): string {
    return this.#clientIp;
  }

  /**
   * Serve the connection. `fdTaken`: the listener took the client's
   * descriptor from the budget (given back at close).
   */
  start(fdTaken: boolean): void {
    if (fdTaken) this.#fds = 1;
    const client = this.#client;
    client.on('error', this.#onClientError);
    client.on('end', this.#onClientEnd);
    client.on('close', this.#onClientClose);
    // A client that reset right after connecting has no address any more: it
    // is gone, not an untrusted or malformed peer.
    if (client.destroyed || client.remoteAddress === undefined) {
      // If 'close' was already emitted it will not come again.
      if (client.closed) this.#clientClosed = true;
      this.#end('client_close');
      return;
    }
    const listener = this.#ctx.listener;
    if (listener.acceptProxy || listener.tls !== null) {
      this.#handshakeTimer = setTimeout(this.#onHandshakeTimeout, listener.timeouts.handshakeMs);
    }
    if (listener.acceptProxy) {
      const trusted = this.#ctx.trustedProxies;
      if (trusted !== null && !trusted.has(client.remoteAddress)) {
        // Not an upstream we trust: close before reading a single byte.
        this.#fail('proxy_header_error', 'untrusted proxy');
        return;
      }
      this.#readProxyHeader();
      return;
    }
    if (this.#admit()) this.#afterAdmit();
  }

  /**
   * Close at once, before anything is read: the listener refused the
   * connection (max_connections, no descriptor left). Logged like every
   * other finished connection.
   */
  refuse(termination: 'rejected_limit', reason: string): void;
  /** `local_error`: the balancer ran short (`code`, e.g. EMFILE); counted as a local error. */
  refuse(termination: 'local_error', reason: string, code: string): void;
  refuse(termination: 'rejected_limit' | 'local_error', reason: string, code?: string): void {
    this.#client.on('error', noop);
    this.#client.on('close', this.#onClientClose);
    if (this.#client.destroyed) this.#clientClosed = true;
    if (code !== undefined) this.#localError(code, reason);
    else this.#fail(termination, reason);
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
    const client = this.#client;
    const moved = client.bytesRead + client.bytesWritten + backend.bytesRead + backend.bytesWritten;
    if (moved !== this.#lastMoved) {
      this.#lastMoved = moved;
      this.#lastActive = now;
    } else if (now - this.#lastActive >= this.#idleMs) {
      this.#end('idle_timeout');
    }
  }

  // ---- PROXY header in ------------------------------------------------------

  /** Read the PROXY header (and only that) before anything else. */
  #readProxyHeader(): void {
    this.#headerParser = new ProxyHeaderParser();
    this.#client.on('data', this.#onHeaderData);
    this.#client.resume();
  }

  #onHeaderData = (chunk: Buffer): void => {
    let result;
    try {
      result = this.#headerParser!.push(chunk);
    } catch (err) {
      this.#fail('proxy_header_error', err instanceof ProxyHeaderError ? err.reason : 'internal');
      return;
    }
    if (result.state === 'need_more') return;
    this.#stopReading(this.#onHeaderData, result.rest);
    this.#headerParser = undefined;
    this.#headerBytes = result.header.length;
    this.#useProxyHeader(result.header);
    if (this.#admit()) this.#afterAdmit();
  };

  /** From here on the client is the one the header names (unless LOCAL/UNKNOWN: the real peer). */
  #useProxyHeader(header: ProxyHeader): void {
    if (header.source === undefined || header.destination === undefined) return;
    this.#clientIp = normaliseIp(header.source.address);
    this.#clientPort = header.source.port;
    this.#destIp = normaliseIp(header.destination.address);
    this.#destPort = header.destination.port;
  }

  /** Pause the client and give back bytes read past what a phase needed: they go to the backend first. */
  #stopReading(listener: (chunk: Buffer) => void, rest: Buffer): void {
    const client = this.#client;
    client.pause();
    client.removeListener('data', listener);
    if (rest.length > 0) client.unshift(rest);
  }

  // ---- ACL and limits -------------------------------------------------------

  /**
   * Access lists and per-source limits, checked against the client address
   * (the PROXY header's, when there is one) before any byte goes anywhere.
   */
  #admit(): boolean {
    const ctx = this.#ctx;
    const ip = this.#clientIp;
    if (ctx.deny !== null && ctx.deny.has(ip)) {
      this.#fail('rejected_acl', 'deny');
      return false;
    }
    if (ctx.allow !== null && !ctx.allow.has(ip)) {
      this.#fail('rejected_acl', 'not in allow');
      return false;
    }
    if (ctx.perSource !== null) {
      if (!ctx.perSource.admit(ip)) {
        this.#fail('rejected_limit', 'per_source');
        return false;
      }
      this.#admittedIp = ip;
    }
    return true;
  }

  #afterAdmit(): void {
    const tlsModel = this.#ctx.listener.tls;
    if (tlsModel === null) return this.#route();
    this.#handshakeFailure = 'tls_error';
    if (tlsModel.mode === 'passthrough') {
      this.#helloReader = new ClientHelloReader();
      this.#client.on('data', this.#onHelloData);
      this.#client.resume();
    } else {
      this.#tlsHandshake = true;
      // The TLS socket copies allowHalfOpen from the raw one. A FIN before the
      // handshake is done means it never will be (the client can no longer
      // send its Finished): without this the connection would be held, half
      // open, until the handshake deadline and then logged as a timeout (every
      // TCP health check a failed handshake). Restored in onTlsSecure.
      this.#raw.allowHalfOpen = false;
      this.#ctx.terminator!.accept(this.#raw, this);
    }
  }

  // ---- TLS passthrough: read the ClientHello, forward it unchanged ---------

  #onHelloData = (chunk: Buffer): void => {
    let result;
    try {
      result = this.#helloReader!.push(chunk);
    } catch (err) {
      this.#tlsFailed(err instanceof ClientHelloError ? `ClientHello ${err.reason}` : 'ClientHello unreadable');
      return;
    }
    if (result.state === 'need_more') return;
    this.#helloReader = undefined;
    this.#stopReading(this.#onHelloData, result.buffered);
    this.#sni = result.hello.sni;
    this.#route();
  };

  // ---- TLS termination ------------------------------------------------------

  /** The handshake finished: from now on the TLS socket is the client. */
  onTlsSecure(socket: tls.TLSSocket): void {
    this.#tlsHandshake = false;
    if (this.#phase !== Phase.Handshake) {
      socket.destroy();
      return;
    }
    // Half-close passes through the splice again (see #afterAdmit).
    this.#raw.allowHalfOpen = true;
    socket.allowHalfOpen = true;
    const raw = this.#raw;
    raw.removeListener('error', this.#onClientError);
    raw.removeListener('end', this.#onClientEnd);
    raw.removeListener('close', this.#onClientClose);
    // The TLS socket owns the raw one now and reports its errors.
    raw.on('error', noop);
    this.#client = socket;
    socket.on('error', this.#onClientError);
    socket.on('end', this.#onClientEnd);
    socket.on('close', this.#onClientClose);
    // Nothing is read until the backend is connected.
    socket.pause();
    this.#tls = tlsDetails(socket);
    this.#sni = this.#tls.sni;
    this.#route();
  }

  onTlsError(err: Error): void {
    this.#tlsHandshake = false;
    if (this.#phase !== Phase.Handshake || this.#termination !== undefined) return;
    const code = (err as NodeJS.ErrnoException).code;
    // ECONNRESET: the client went away (a reset, or Node's "socket hang up" for a FIN).
    if (code === 'ECONNRESET') this.#clientLeftDuringHandshake();
    else this.#tlsFailed(code ?? err.message);
  }

  /**
   * The client went away before its handshake (or its ClientHello) was
   * complete: a failed handshake if it had sent any of it, as in both modes
   * alike; a plain client_close if it sent nothing (a TCP health check or a
   * port scan is no TLS failure).
   */
  #clientLeftDuringHandshake(): void {
    if (this.#termination === undefined && this.#raw.bytesRead > this.#headerBytes) {
      this.#tlsFailed('client closed the connection during the handshake');
    } else {
      this.#end('client_close');
    }
  }

  /** A failed handshake: counted, and its reason goes into the connection's access line. */
  #tlsFailed(reason: string): void {
    this.#ctx.stats.tlsHandshakeFailures++;
    this.#fail('tls_error', reason);
  }

  /** End before the splice with a reason in words (the access line's `reason`); the first reason wins. */
  #fail(termination: Termination, reason: string): void {
    if (this.#termination === undefined) this.#reason = reason;
    this.#end(termination);
  }

  /**
   * The balancer ran short (EMFILE, EADDRNOTAVAIL...): the client gets
   * local_error and no server is blamed, since no server was at fault.
   */
  #localError(code: string, what: string): void {
    this.#ctx.stats.localError(code);
    this.#ctx.onLocalError(code);
    this.#fail('local_error', `${what}: ${code}`);
  }

  #onHandshakeTimeout = (): void => {
    this.#handshakeTimer = undefined;
    const reason = `timeout after ${formatDuration(this.#ctx.listener.timeouts.handshakeMs)}`;
    if (this.#handshakeFailure === 'tls_error') this.#tlsFailed(reason);
    else this.#fail('proxy_header_error', reason);
  };

  // ---- route, pick, connect -------------------------------------------------

  #route(): void {
    clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = undefined;
    this.#phase = Phase.Connecting;
    const router = this.#ctx.router;
    if (router !== null) this.#pool = router.match(this.#sni) ?? this.#ctx.pool;
    this.#connectNext();
  }

  #connectNext(): void {
    const pool = this.#pool;
    const server = pool.pick(this.#clientIp, this.#tried);
    if (server === undefined) {
      this.#end(this.#attempts === 0 ? 'no_server' : 'connect_failed');
      return;
    }
    // Room for the backend's descriptor, or the connect would fail with EMFILE anyway.
    if (!this.#ctx.fds.take('connect')) {
      this.#localError('EMFILE', 'descriptor reserve reached');
      return;
    }
    this.#fds++;
    this.#attempts++;
    this.#server = server;
    server.active++;
    const backend = net.connect({
      host: server.address.host,
      port: server.address.port,
      allowHalfOpen: true,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: KEEPALIVE_DELAY_MS,
    });
    this.#backend = backend;
    this.#backendClosed = false;
    backend.once('connect', this.#onBackendConnect);
    this.#watchBackend(backend);
    this.#connectTimer = setTimeout(this.#onConnectTimeout, pool.model.timeouts.connectMs);
  }

  #watchBackend(backend: net.Socket): void {
    backend.on('error', this.#onBackendError);
    backend.on('end', this.#onBackendEnd);
    backend.on('close', this.#onBackendClose);
  }

  /** Forget a backend socket whose connect failed (its descriptor goes back to the budget). */
  #dropBackend(): Server {
    const backend = this.#backend!;
    const server = this.#server!;
    clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    backend.removeAllListeners();
    backend.on('error', noop);
    backend.destroy();
    this.#ctx.fds.give();
    this.#fds--;
    this.#backend = undefined;
    this.#backendClosed = true;
    server.active--;
    this.#server = undefined;
    return server;
  }

  /** A connect attempt failed: count it, forget that socket, try another server or give up. */
  #connectFailed(reason: string): void {
    const server = this.#dropBackend();
    this.#pool.reportConnectFailure(server, reason);
    (this.#tried ??= new Set()).add(server);
    if (this.#clientClosed) {
      this.#end('client_close');
    } else if (this.#attempts <= this.#pool.model.retries) {
      this.#connectNext();
    } else {
      this.#end('connect_failed');
    }
  }

  #onConnectTimeout = (): void => {
    this.#connectTimer = undefined;
    this.#connectFailed(`connect timeout after ${formatDuration(this.#pool.model.timeouts.connectMs)}`);
  };

  /** TCP is up: send the PROXY header, then either splice or start TLS to the server. */
  #onBackendConnect = (): void => {
    const raw = this.#backend!;
    let header: Buffer | null;
    try {
      header = this.#outgoingHeader();
    } catch {
      // Addresses gone (the client vanished mid-connect): nothing to relay for.
      this.#end('client_close');
      return;
    }
    // The header goes out first, before any client byte (and before TLS to the server).
    if (header !== null) raw.write(header);
    const tlsOptions = this.#ctx.backendTls(this.#pool);
    if (tlsOptions === null) {
      this.#onBackendReady();
      return;
    }
    raw.removeListener('error', this.#onBackendError);
    raw.removeListener('end', this.#onBackendEnd);
    raw.removeListener('close', this.#onBackendClose);
    raw.on('error', noop);
    const secure = tls.connect(backendConnectOptions(tlsOptions, raw, this.#server!.address));
    this.#backend = secure;
    secure.once('secureConnect', this.#onBackendReady);
    this.#watchBackend(secure);
  };

  #onBackendReady = (): void => {
    clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    const client = this.#client;
    const backend = this.#backend!;
    this.#connectMs = Math.round(performance.now() - this.#startedAt);
    const server = this.#server!;
    server.total++;
    server.connections.add(this);
    const counters = (this.#counters = this.#ctx.stats.for(server));
    counters.total++;
    counters.active++;
    if (this.#clientClosed) {
      this.#end('client_close');
      return;
    }
    this.#phase = Phase.Spliced;
    // Idle time is checked by the listener's sweep (see checkIdle), not by a
    // timer per socket: a timer per connection, refreshed on every chunk, costs
    // more than the splice itself on short connections.
    this.#idleMs = Math.min(this.#ctx.listener.timeouts.idleMs, this.#pool.model.timeouts.idleMs);
    this.#lastActive = performance.now();
    // pipe() gives backpressure both ways and passes the FIN on (allowHalfOpen
    // keeps the other direction open); it also resumes the paused client.
    client.pipe(backend);
    backend.pipe(client);
  };

  /** The PROXY header for the backend, or null when the pool sends none. */
  #outgoingHeader(): Buffer | null {
    const version = this.#pool.model.proxyProtocol;
    if (version === 'off') return null;
    const raw = this.#raw;
    const src = { address: this.#clientIp, port: this.#clientPort ?? 0 };
    const dst = {
      address: this.#destIp ?? normaliseIp(raw.localAddress),
      port: this.#destPort ?? raw.localPort ?? 0,
    };
    if (version === 'v1') return encodeV1(src, dst);
    return encodeV2({ command: 'PROXY', src, dst, tlvs: this.#tlvs() });
  }

  /** v2 TLVs: the SNI when known; ALPN and SSL details when TLS was terminated here. */
  #tlvs(): ProxyTlvInput | undefined {
    const t = this.#tls;
    if (t === null) return this.#sni === null ? undefined : { authority: this.#sni };
    return {
      ...(t.sni !== null ? { authority: t.sni } : {}),
      ...(t.alpn !== null ? { alpn: t.alpn } : {}),
      ssl: {
        client: PP2_CLIENT_SSL | (t.clientCertPresented ? PP2_CLIENT_CERT_CONN : 0),
        // 0 = a client certificate was presented and verified.
        verify: t.clientCertVerified ? 0 : 1,
        ...(t.version !== null ? { version: t.version } : {}),
        ...(t.cipher !== null ? { cipher: t.cipher } : {}),
        ...(t.clientCn !== null ? { cn: t.clientCn } : {}),
      },
    };
  }

  // ---- socket events ----------------------------------------------------------

  #onBackendError = (err: NodeJS.ErrnoException): void => {
    if (this.#phase === Phase.Connecting) {
      const local = localResourceCode(err);
      if (local !== undefined) {
        // Our shortage, not the server's: no health report, no retry (it would fail alike).
        if (local === 'EMFILE' || local === 'ENFILE') this.#ctx.fds.exhausted();
        this.#dropBackend();
        this.#localError(local, 'connect');
        return;
      }
      this.#connectFailed(err.code ? `connect ${err.code}` : `connect ${err.message}`);
      return;
    }
    this.#end('server_close');
  };

  #onClientError = (): void => {
    // Mid-handshake the terminator reports, with the reason; 'close' follows.
    if (this.#tlsHandshake) return;
    if (this.#helloReader !== undefined) return this.#clientLeftDuringHandshake();
    this.#end('client_close');
  };

  #onClientEnd = (): void => {
    if (this.#tlsHandshake) return;
    // A FIN before the PROXY header is complete: it never will be. An empty
    // connection (a TCP health check) is a plain close, a partial header an error.
    if (this.#headerParser !== undefined) {
      return this.#end(this.#raw.bytesRead > 0 ? 'proxy_header_error' : 'client_close');
    }
    // A FIN before the ClientHello is complete: it never will be, so do not
    // hold the half-open connection until the handshake deadline.
    if (this.#helloReader !== undefined) return this.#clientLeftDuringHandshake();
    this.#termination ??= 'client_close';
  };

  #onBackendEnd = (): void => {
    this.#termination ??= 'server_close';
  };

  #onClientClose = (hadError: boolean): void => {
    this.#clientClosed = true;
    if (this.#phase !== Phase.Spliced) {
      if (this.#tlsHandshake && this.#termination === undefined) {
        // The TLS server says why right after this event (tlsClientError →
        // onTlsError), e.g. a refused client certificate, which Node closes
        // without an error of its own: wait for it, so that is a tls_error.
        setImmediate(() => this.#end('client_close'));
        return;
      }
      if (this.#helloReader !== undefined) return this.#clientLeftDuringHandshake();
      // The client gave up before the splice: stop whatever was under way.
      this.#end('client_close');
      return;
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
    if (this.#phase === Phase.Connecting) {
      // Closed during a TLS handshake to the server without an error event.
      this.#end('connect_failed');
      return;
    }
    this.#termination ??= 'server_close';
    if (hadError) this.#client.destroy();
    else endOnce(this.#client);
    this.#maybeFinish();
  };

  // ---- teardown ---------------------------------------------------------------

  /** Record why the connection ends (the first reason wins) and close both sides now. */
  #end(reason: Termination): void {
    this.#termination ??= reason;
    clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = undefined;
    if (this.#phase === Phase.Connecting) {
      // Connect listeners may never fire now; close events settle the rest.
      this.#backend?.removeListener('connect', this.#onBackendConnect);
      this.#backend?.removeListener('secureConnect', this.#onBackendReady);
    }
    this.#client.destroy();
    if (this.#client !== this.#raw) this.#raw.destroy();
    this.#backend?.destroy();
    this.#maybeFinish();
  }

  #maybeFinish(): void {
    if (this.#phase === Phase.Closed || !this.#clientClosed || !this.#backendClosed) return;
    this.#phase = Phase.Closed;
    if (this.#server !== undefined) {
      this.#server.active--;
      this.#server.connections.delete(this);
    }
    const ctx = this.#ctx;
    const client = this.#client;
    const termination = this.#termination ?? 'client_close';
    const bytesIn = client === this.#raw ? client.bytesRead - this.#headerBytes : client.bytesRead;
    const counters = this.#counters;
    if (counters !== undefined) {
      counters.active--;
      counters.bytesIn += bytesIn;
      counters.bytesOut += client.bytesWritten;
    }
    ctx.fds.give(this.#fds);
    this.#fds = 0;
    ctx.stats.terminated(termination);
    if (this.#admittedIp !== undefined) ctx.perSource!.release(this.#admittedIp);
    // Every finished connection gets a line; those that never reached a server at a bounded rate.
    if (ctx.accessLog !== null && (counters !== undefined || ctx.limiter.allow(ctx.accessLog, ctx.listener.name))) {
      const t = this.#tls;
      logAccess(ctx.accessLog, {
        listener: ctx.listener.name,
        client: this.#clientText(),
        sni: this.#sni,
        pool: this.#pool.name,
        server: this.#server?.name ?? null,
        connect_ms: this.#connectMs,
        duration_ms: Math.round(performance.now() - this.#startedAt),
        bytes_in: bytesIn,
        bytes_out: client.bytesWritten,
        termination,
        ...(this.#reason !== undefined ? { reason: this.#reason } : {}),
        ...(t !== null ? { alpn: t.alpn, ...(t.clientCn !== null ? { client_cn: t.clientCn } : {}) } : {}),
      });
    }
    ctx.onClosed(this);
  }

  #clientText(): string | null {
    return this.#clientIp === '' ? null : formatEndpoint(this.#clientIp, this.#clientPort);
  }
}
