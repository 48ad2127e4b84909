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

/**
 * Why a connection was closed before reaching a server: the `reason` label of
 * l4lb_rejected_connections_total, every one exported (at 0 too), so
 * dashboards and alerts see the series before the first rejection.
 */
export const REJECT_REASONS = ['acl', 'limit', 'proxy_header', 'tls', 'no_server', 'local'] as const;

export type RejectReason = (typeof REJECT_REASONS)[number];

/** The reject reason a termination counts under, if it is a rejection. */
export const REJECT_REASON_OF: Partial<Readonly<Record<Termination, RejectReason>>> = {
  rejected_acl: 'acl',
  rejected_limit: 'limit',
  proxy_header_error: 'proxy_header',
  tls_error: 'tls',
  no_server: 'no_server',
  local_error: 'local',
};

export class ListenerStats {
  readonly #servers = new Map<Server, ServerCounters>();
  /** Connections accepted. */
  accepted = 0;
  /** Closed before reaching a server, by reason. */
  readonly rejected = new Map<RejectReason, number>();
  tlsHandshakeFailures = 0;
  /** Every finished connection, by termination. */
  readonly terminations = new Map<Termination, number>();
  /** The balancer's own shortages (EMFILE, EADDRNOTAVAIL...), by errno code. */
  readonly localErrors = new Map<string, number>();

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

  /** Forget servers a reload removed once none of their connections is open (the map would grow with every reload). */
  forgetRetired(): void {
    for (const [server, c] of this.#servers) if (server.retired && c.active === 0) this.#servers.delete(server);
  }

  reject(reason: RejectReason): void {
    this.rejected.set(reason, (this.rejected.get(reason) ?? 0) + 1);
  }

  localError(code: string): void {
    this.localErrors.set(code, (this.localErrors.get(code) ?? 0) + 1);
  }

  /** Count a finished connection: its termination, and its rejection reason if it was one. */
  terminated(t: Termination): void {
    this.terminations.set(t, (this.terminations.get(t) ?? 0) + 1);
    // tls_error is always a client's failed handshake (TLS to servers fails as connect_failed).
    if (t === 'tls_error') this.tlsHandshakeFailures++;
    const reason = REJECT_REASON_OF[t];
    if (reason !== undefined) this.reject(reason);
  }
}
