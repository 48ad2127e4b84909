/**
 * The runtime model: the one normalised, frozen view of a configuration that
 * the rest of l4lb receives. Nothing outside src/config reads the raw file.
 * All durations are milliseconds; all addresses are resolved IP endpoints.
 */

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';
export type Balance = 'round_robin' | 'least_conn' | 'source_hash' | 'random_two';

/** A resolved address. `host` is an IP literal (v4 or v6, no brackets). */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
  /** As written in the configuration, e.g. `db1.internal:5432` or `[::1]:80`. */
  readonly text: string;
}

export interface ServerModel {
  /** Unique within its pool; defaults to the address as written. */
  readonly name: string;
  readonly address: Endpoint;
  readonly weight: number;
  readonly backup: boolean;
}

export interface PoolModel {
  readonly name: string;
  readonly balance: Balance;
  /** Further servers tried after a failed connect (0 = no retry). */
  readonly retries: number;
  readonly timeouts: { readonly connectMs: number; readonly idleMs: number };
  readonly servers: readonly ServerModel[];
}

export interface ListenerModel {
  readonly name: string;
  readonly bind: Endpoint;
  readonly pool: string;
  readonly timeouts: { readonly idleMs: number };
}

export interface Model {
  readonly log: { readonly level: LogLevel; readonly access: boolean };
  readonly listeners: readonly ListenerModel[];
  readonly pools: readonly PoolModel[];
}
