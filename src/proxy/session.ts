/**
 * One client connection from accept to close. The session owns both sockets
 * and every timer; whatever happens first, teardown runs exactly once and
 * writes one access log line.
 *
 * Path: (PROXY header in) → pick → connect (retrying other servers) →
 * (PROXY header out) → splice → close and log. The client is not read until
 * its backend is connected (the listener accepts with pauseOnConnect), except
 * for the PROXY header, so nothing is buffered for a backend that might never
 * answer.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { ListenerModel } from '../config/model.js';
import { formatDuration } from '../config/duration.js';
import type { Logger } from '../log.js';
import type { Pool, Server, ServerConnection } from '../pool.js';
import { formatEndpoint, logAccess, normaliseIp } from './access-log.js';
import type { Termination } from './termination.js';
import type { CidrList } from '../net/cidr.js';
import type { ListenerStats, ServerCounters } from './stats.js';
import type { PerSourceTable } from '../protect/per-source.js';
import { ProxyHeaderError, ProxyHeaderParser, encodeV1, encodeV2, type ProxyHeader } from '../proxy-protocol.js';

/** TCP keep-alive probes start after this much silence (dead peers behind NAT are found eventually). */
const KEEPALIVE_DELAY_MS = 60_000;

/** What every session of one listener shares. */
export interface SessionContext {
  readonly listener: ListenerModel;
  readonly pool: Pool;
  /** Access log sink; null when access logging is off. */
  readonly accessLog: Logger | null;
  /** Debug-level events (rejected headers); the listener's logger. */
  readonly logger: Logger;
  /** With accept_proxy: who may send a PROXY header; null = anyone. */
  readonly trustedProxies: CidrList | null;
  readonly stats: ListenerStats;
  /** Access lists; null when the listener has none. */
  readonly allow: CidrList | null;
  readonly deny: CidrList | null;
  /** Per client IP limits; null when the listener has none. */
  readonly perSource: PerSourceTable | null;
  /** Called once, after teardown. */
  readonly onClosed: (session: Session) => void;
}

const enum Phase {
  Connecting,
  Spliced,
  Closed,
}

function noop(): void {}

/** end() only if pipe() has not already: a second end() builds an error with a stack trace, per connection. */
function endOnce(socket: net.Socket | undefined): void {
  if (socket !== undefined && !socket.writableEnded && !socket.destroyed) socket.end();
}

export class Session implements ServerConnection {
  readonly #ctx: SessionContext;
  readonly #client: net.Socket;
  /** The client as everything after accept sees it: from the PROXY header when one was accepted. */
  #clientIp: string;
  #clientPort: number | undefined;
  /** Where the client connected to (from the PROXY header, or our socket). */
  #destIp: string | undefined;
  #destPort: number | undefined;
  #headerTimer: NodeJS.Timeout | undefined;
  #headerParser: ProxyHeaderParser | undefined;
  readonly #startedAt = performance.now();
  #phase = Phase.Connecting;
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
  /** PROXY header bytes read from the client: not part of bytes_in. */
  #headerBytes = 0;
  /** Idle bookkeeping for checkIdle(). */
  #idleMs = 0;
  #lastActive = 0;
  #lastMoved = 0;
  /** The address a per-source slot was taken for, to give it back at close. */
  #admittedIp: string | undefined;

  constructor(client: net.Socket, ctx: SessionContext) {
    this.#ctx = ctx;
    this.#client = client;
    this.#clientIp = normaliseIp(client.remoteAddress);
    this.#clientPort = client.remotePort;
  }

  /** The normalised client IP (IPv4-mapped IPv6 written as IPv4). */
  get clientIp(): string {
    return this.#clientIp;
  }

  start(): void {
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
    if (this.#ctx.listener.acceptProxy) {
      const trusted = this.#ctx.trustedProxies;
      if (trusted !== null && !trusted.has(client.remoteAddress)) {
        // Not an upstream we trust: close before reading a single byte.
        this.#ctx.logger.debug({ client: formatEndpoint(this.#clientIp, this.#clientPort) }, 'PROXY header from an untrusted address');
        this.#end('proxy_header_error');
        return;
      }
      this.#readProxyHeader();
      return;
    }
    if (this.#admit()) this.#connectNext();
  }

  /**
   * Access lists and per-source limits, checked against the client address
   * (the PROXY header's, when there is one) before any byte goes anywhere.
   */
  #admit(): boolean {
    const ctx = this.#ctx;
    const ip = this.#clientIp;
    if ((ctx.deny !== null && ctx.deny.has(ip)) || (ctx.allow !== null && !ctx.allow.has(ip))) {
      ctx.stats.reject('acl');
      this.#end('rejected_acl');
      return false;
    }
    if (ctx.perSource !== null) {
      if (!ctx.perSource.admit(ip)) {
        ctx.stats.reject('limit');
        this.#end('rejected_limit');
        return false;
      }
      this.#admittedIp = ip;
    }
    return true;
  }

  /** Read the PROXY header (and only that) before anything else, within the handshake timeout. */
  #readProxyHeader(): void {
    this.#headerParser = new ProxyHeaderParser();
    this.#headerTimer = setTimeout(this.#onHeaderTimeout, this.#ctx.listener.timeouts.handshakeMs);
    this.#client.on('data', this.#onHeaderData);
    this.#client.resume();
  }

  #onHeaderData = (chunk: Buffer): void => {
    let result;
    try {
      result = this.#headerParser!.push(chunk);
    } catch (err) {
      const reason = err instanceof ProxyHeaderError ? err.reason : 'internal';
      this.#ctx.logger.debug({ client: formatEndpoint(this.#clientIp, this.#clientPort), reason }, 'invalid PROXY header');
      this.#end('proxy_header_error');
      return;
    }
    if (result.state === 'need_more') return;
    const client = this.#client;
    client.pause();
    client.removeListener('data', this.#onHeaderData);
    clearTimeout(this.#headerTimer);
    this.#headerTimer = undefined;
    this.#headerParser = undefined;
    // Bytes after the header belong to the client's stream: they go first to the backend.
    if (result.rest.length > 0) client.unshift(result.rest);
    this.#headerBytes = result.header.length;
    this.#useProxyHeader(result.header);
    if (this.#admit()) this.#connectNext();
  };

  #onHeaderTimeout = (): void => {
    this.#headerTimer = undefined;
    this.#ctx.logger.debug({ client: formatEndpoint(this.#clientIp, this.#clientPort), reason: 'timeout' }, 'invalid PROXY header');
    this.#end('proxy_header_error');
  };

  /** From here on the client is the one the header names (unless LOCAL/UNKNOWN: the real peer). */
  #useProxyHeader(header: ProxyHeader): void {
    if (header.source === undefined || header.destination === undefined) return;
    this.#clientIp = normaliseIp(header.source.address);
    this.#clientPort = header.source.port;
    this.#destIp = normaliseIp(header.destination.address);
    this.#destPort = header.destination.port;
  }

  /** The PROXY header for the backend, or null when the pool sends none. */
  #outgoingHeader(): Buffer | null {
    const version = this.#ctx.pool.model.proxyProtocol;
    if (version === 'off') return null;
    const client = this.#client;
    const src = { address: this.#clientIp, port: this.#clientPort ?? 0 };
    const dst = {
      address: this.#destIp ?? normaliseIp(client.localAddress),
      port: this.#destPort ?? client.localPort ?? 0,
    };
    return version === 'v1' ? encodeV1(src, dst) : encodeV2({ command: 'PROXY', src, dst });
  }

  /** Close both sides now (drain timeout reached). */
  shutdown(): void {
    this.#end('shutdown');
  }

  /** The server was marked down and its pool says `on_server_down: close`. */
  closeForServerDown(): void {
    this.#end('server_close');
  }

  #connectNext(): void {
    const pool = this.#ctx.pool;
    const server = pool.pick(this.#clientIp, this.#tried);
    if (server === undefined) {
      this.#end(this.#attempts === 0 ? 'no_server' : 'connect_failed');
      return;
    }
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
    backend.on('error', this.#onBackendError);
    backend.on('end', this.#onBackendEnd);
    backend.on('close', this.#onBackendClose);
    this.#connectTimer = setTimeout(this.#onConnectTimeout, pool.model.timeouts.connectMs);
  }

  /** A connect attempt failed: count it, forget that socket, try another server or give up. */
  #connectFailed(reason: string): void {
    const backend = this.#backend!;
    const server = this.#server!;
    clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    backend.removeAllListeners();
    backend.on('error', noop);
    backend.destroy();
    this.#backend = undefined;
    this.#backendClosed = true;
    server.active--;
    this.#server = undefined;
    this.#ctx.pool.reportConnectFailure(server, reason);
    (this.#tried ??= new Set()).add(server);
    if (this.#clientClosed) {
      this.#end('client_close');
    } else if (this.#attempts <= this.#ctx.pool.model.retries) {
      this.#connectNext();
    } else {
      this.#end('connect_failed');
    }
  }

  #onConnectTimeout = (): void => {
    this.#connectTimer = undefined;
    this.#connectFailed(`connect timeout after ${formatDuration(this.#ctx.pool.model.timeouts.connectMs)}`);
  };

  #onBackendConnect = (): void => {
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
    let header: Buffer | null;
    try {
      header = this.#outgoingHeader();
    } catch {
      // Addresses gone (the client vanished mid-connect): nothing to relay for.
      this.#end('client_close');
      return;
    }
    // The header goes out first, before any client byte.
    if (header !== null) backend.write(header);
    this.#phase = Phase.Spliced;
    // Idle time is checked by the listener's sweep (see checkIdle), not by a
    // timer per socket: a timer per connection, refreshed on every chunk, costs
    // more than the splice itself on short connections.
    this.#idleMs = Math.min(this.#ctx.listener.timeouts.idleMs, this.#ctx.pool.model.timeouts.idleMs);
    this.#lastActive = performance.now();
    // pipe() gives backpressure both ways and passes the FIN on (allowHalfOpen
    // keeps the other direction open); it also resumes the paused client.
    client.pipe(backend);
    backend.pipe(client);
  };

  #onBackendError = (err: NodeJS.ErrnoException): void => {
    if (this.#phase === Phase.Connecting) {
      this.#connectFailed(err.code ? `connect ${err.code}` : `connect ${err.message}`);
      return;
    }
    this.#end('server_close', true);
  };

  #onClientError = (): void => {
    this.#end('client_close', true);
  };

  #onClientEnd = (): void => {
    this.#termination ??= 'client_close';
  };

  #onBackendEnd = (): void => {
    this.#termination ??= 'server_close';
  };

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
      this.#end('idle_timeout', true);
    }
  }

  #onClientClose = (hadError: boolean): void => {
    this.#clientClosed = true;
    if (this.#phase === Phase.Connecting) {
      // The client gave up while we were connecting: stop the attempt.
      this.#end('client_close', true);
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
    this.#termination ??= 'server_close';
    if (hadError) this.#client.destroy();
    else endOnce(this.#client);
    this.#maybeFinish();
  };

  /**
   * Record why the connection ends (the first reason wins) and close. With
   * `force` or outside the splice, both sockets are destroyed at once.
   */
  #end(reason: Termination, force = true): void {
    this.#termination ??= reason;
    if (force || this.#phase !== Phase.Spliced) {
      if (this.#connectTimer !== undefined) {
        clearTimeout(this.#connectTimer);
        this.#connectTimer = undefined;
      }
      if (this.#headerTimer !== undefined) {
        clearTimeout(this.#headerTimer);
        this.#headerTimer = undefined;
      }
      this.#client.destroy();
      this.#backend?.destroy();
      if (this.#phase === Phase.Connecting) {
        // Connect listeners may never fire now; close events settle the rest.
        this.#backend?.removeListener('connect', this.#onBackendConnect);
      }
    }
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
    const counters = this.#counters;
    if (counters !== undefined) {
      counters.active--;
      counters.bytesIn += client.bytesRead - this.#headerBytes;
      counters.bytesOut += client.bytesWritten;
    }
    ctx.stats.terminated(termination);
    if (this.#admittedIp !== undefined) ctx.perSource!.release(this.#admittedIp);
    if (termination === 'proxy_header_error') ctx.stats.reject('proxy_header');
    if (ctx.accessLog !== null) {
      logAccess(ctx.accessLog, termination === 'rejected_acl' || termination === 'rejected_limit', {
        listener: ctx.listener.name,
        client: this.#clientIp === '' ? null : formatEndpoint(this.#clientIp, this.#clientPort),
        sni: null,
        pool: ctx.pool.name,
        server: this.#server?.name ?? null,
        connect_ms: this.#connectMs,
        duration_ms: Math.round(performance.now() - this.#startedAt),
        bytes_in: client.bytesRead - this.#headerBytes,
        bytes_out: client.bytesWritten,
        termination,
      });
    }
    ctx.onClosed(this);
  }
}
