/**
 * Per-listener counters, updated at connect and at close only (never per
 * chunk), and read by the metrics and status endpoints at scrape time.
 */
import type { Server } from '../pool.js';
import type { Termination } from './termination.js';

export interface ServerCounters {
  /** Connections from this listener that reached the server. */
  total: number;
  /** Open now. */
  active: number;
  /** Client → server bytes of closed connections. */
  bytesIn: number;
  /** Server → client bytes of closed connections. */
  bytesOut: number;
}

export type RejectReason = 'acl' | 'limit' | 'proxy_header' | 'tls';

export class ListenerStats {
  readonly #servers = new Map<Server, ServerCounters>();
  /** Connections accepted. */
  accepted = 0;
  /** Closed before reaching a server, by reason. */
  readonly rejected = new Map<RejectReason, number>();
  tlsHandshakeFailures = 0;
  /** Every finished connection, by termination. */
  readonly terminations = new Map<Termination, number>();

  for(server: Server): ServerCounters {
    let c = this.#servers.get(server);
    if (c === undefined) {
      c = { total: 0, active: 0, bytesIn: 0, bytesOut: 0 };
      this.#servers.set(server, c);
    }
    return c;
  }

  servers(): IterableIterator<[Server, ServerCounters]> {
    return this.#servers.entries();
  }

  reject(reason: RejectReason): void {
    this.rejected.set(reason, (this.rejected.get(reason) ?? 0) + 1);
  }

  terminated(t: Termination): void {
    this.terminations.set(t, (this.terminations.get(t) ?? 0) + 1);
  }
}
