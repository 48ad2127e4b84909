/**
 * The admin server's connection caps: in total, per client, and a few slots
 * only local clients may take. At a cap a newcomer evicts the oldest
 * connection that has no request in flight (a slowloris still sending its
 * head, or an idle keep-alive) rather than being refused, so slow clients
 * cannot lock out a health check: a real client sends its head at once, a
 * slow one is the first to go. Only when every connection of the capped
 * group has a request in flight is the newcomer closed instead.
 *
 * Shedding is logged at once, then at most once per interval with the counts
 * since, so a flood of slow clients cannot flood the log too.
 */
import type http from 'node:http';
import type net from 'node:net';
import type { Logger } from '../log.js';

/** How often a burst of evicted or refused admin connections is logged, at most. */
const SHED_LOG_INTERVAL_MS = 10_000;

/** The caps; see AdminServerOptions for their meaning and defaults. */
export interface CapLimits {
  readonly maxConnections: number;
  readonly maxConnectionsPerClient: number;
  readonly reservedLocal: number;
}

/** Open admin connections now (`busy`: with a request in flight), and those evicted and refused at a cap since start. */
export interface ConnectionStats {
  readonly open: number;
  readonly busy: number;
  readonly evicted: number;
  readonly refused: number;
}

/** One admin connection, as the caps see it. */
interface Conn {
  readonly socket: net.Socket;
  /** Who it counts against: an IPv4 address or an IPv6 /64. */
  readonly client: string;
  /** Loopback, or from this host's own address: may use the reserved slots. */
  readonly local: boolean;
  /** Requests whose head has arrived and whose response has not closed: never evicted while > 0. */
  inFlight: number;
  /** When it last had no request in flight (accepted, or its last response closed): oldest is evicted first. */
  idleSince: number;
}

/** Owns the admin server's open connections: admits, evicts, and closes them. */
export class ConnectionCaps {
  readonly #limits: CapLimits;
  readonly #logger: Logger;
  readonly #conns = new Map<net.Socket, Conn>();
  /** Connections evicted and refused at a cap, since start; `#unreported`: since the last log line. */
  readonly #shed = { evicted: 0, refused: 0 };
  #unreported = { evicted: 0, refused: 0 };
  #shedTimer: NodeJS.Timeout | undefined;
  /** Set by drain(): connections close as soon as they have no request in flight. */
  #draining = false;

  constructor(limits: CapLimits, logger: Logger) {
    this.#limits = limits;
    this.#logger = logger;
  }

  /**
   * Admits a new connection within the caps: per client, the remote share
   * (all but the reserved local slots), and the total; evicting at a cap.
   * A connection that is not admitted is destroyed.
   * @param client who it counts against (an IPv4 address or an IPv6 /64)
   * @param local whether it may take the reserved local slots
   * @returns whether it was admitted
   */
  admit(socket: net.Socket, client: string, local: boolean): boolean {
    if (this.#draining) {
      socket.destroy();
      return false;
    }
    const conn: Conn = { socket, client, local, inFlight: 0, idleSince: performance.now() };
    const o = this.#limits;
    const remoteOnly = (c: Conn): boolean => !c.local;
    const admitted =
      this.#makeRoom((c) => c.client === client, o.maxConnectionsPerClient) &&
      (local || this.#makeRoom(remoteOnly, Math.max(1, o.maxConnections - o.reservedLocal))) &&
      // A remote newcomer never evicts a local client.
      this.#makeRoom(() => true, o.maxConnections, local ? () => true : remoteOnly);
    if (!admitted) {
      this.#noteShed('refused');
      socket.destroy();
      return false;
    }
    this.#conns.set(socket, conn);
    socket.once('close', () => this.#conns.delete(socket));
    return true;
  }

  /**
   * A complete request head arrived on `socket`: its connection cannot be
   * evicted until `res` closes. While draining, the connection closes once
   * its last response is sent.
   */
  requestStarted(socket: net.Socket, res: http.ServerResponse): void {
    const conn = this.#conns.get(socket);
    if (conn === undefined) return;
    conn.inFlight++;
    if (this.#draining && !res.headersSent) res.setHeader('Connection', 'close');
    res.once('close', () => {
      conn.inFlight--;
      if (conn.inFlight > 0) return;
      conn.idleSince = performance.now();
      // end(), not destroy(): what the response wrote is still flushed.
      if (this.#draining) conn.socket.end();
    });
  }

  /** Open connections now, busy ones, and those shed since start. */
  stats(): ConnectionStats {
    let busy = 0;
    for (const c of this.#conns.values()) if (c.inFlight > 0) busy++;
    return { open: this.#conns.size, busy, ...this.#shed };
  }

  /**
   * Graceful: closes every connection without a request in flight now, and
   * each other one once its responses are sent; new connections are closed.
   * Idempotent.
   */
  drain(): void {
    this.#draining = true;
    clearTimeout(this.#shedTimer);
    for (const c of this.#conns.values()) if (c.inFlight === 0) c.socket.destroy();
  }

  /** Forced: destroys every connection now, requests in flight too. Idempotent. */
  destroyAll(): void {
    this.drain();
    for (const c of this.#conns.values()) c.socket.destroy();
  }

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
    if (evicted + refused === 0 || this.#draining) {
      this.#shedTimer = undefined;
      return;
    }
    this.#unreported = { evicted: 0, refused: 0 };
    this.#logger.warn(
      { evicted, refused, open: this.#conns.size, max_connections: this.#limits.maxConnections, max_per_client: this.#limits.maxConnectionsPerClient },
      'admin connection cap reached: evicted connections without a request in flight, refused new ones when none was left',
    );
    this.#shedTimer = setTimeout(this.#reportShed, SHED_LOG_INTERVAL_MS);
    // Only a log line depends on it; drain() clears it.
    this.#shedTimer.unref();
  };
}
