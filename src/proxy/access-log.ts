/** One JSON line per finished connection, with the contract's field names. */
import type { Logger } from '../log.js';
import type { Termination } from './termination.js';

export interface AccessRecord {
  listener: string;
  /** `ip:port` of the client (`[v6]:port` for IPv6); null if it left before its address was known. */
  client: string | null;
  sni: string | null;
  pool: string;
  server: string | null;
  /** Accept to backend connected; null when no backend was reached. */
  connect_ms: number | null;
  duration_ms: number;
  /** Bytes received from the client. */
  bytes_in: number;
  /** Bytes sent to the client. */
  bytes_out: number;
  termination: Termination;
  /** Before the splice: why, in words (the TLS alert, the PROXY header problem, `per_source`, `connect: EMFILE`...). */
  reason?: string;
  /** Connect attempts that failed, in order, each server with its error (connect_failed, or reached after a retry). */
  tried?: ReadonlyArray<{ readonly server: string; readonly error: string }>;
  /** TLS terminated here: the negotiated ALPN protocol (null: none). */
  alpn?: string | null;
  /** TLS terminated here with a client certificate: its subject CN. */
  client_cn?: string;
}

/**
 * One line per finished connection, rejections included, all at the same
 * level; the caller bounds the rate of lines for connections that never
 * reached a server (see LineLimiter).
 */
export function logAccess(logger: Logger, record: AccessRecord): void {
  logger.info(record, 'connection');
}
