/**
 * The runtime model: the one normalised, frozen view of a configuration that
 * the rest of l4lb receives. Nothing outside src/config reads the raw file.
 * All durations are milliseconds; all addresses are resolved IP endpoints.
 */

import type { BALANCES, HEALTH_HTTP_METHODS, HEALTH_KINDS, LEAST_TIME_MEASURES, LISTENER_PROTOCOLS, LOG_LEVELS, ON_SERVER_DOWN, PROXY_PROTOCOL_VERSIONS, TLS_MODES, TLS_VERSIONS } from './enums.js';

export type LogLevel = (typeof LOG_LEVELS)[number];
export type Balance = (typeof BALANCES)[number];

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

export interface HealthModel {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Consecutive successes that mark a down server up. */
  readonly rise: number;
  /** Consecutive failures that mark an up server down. */
  readonly fall: number;
  /** How a server is probed. */
  readonly kind: HealthKind;
  /** Probe this port of each server instead of its own (Patroni's REST API); null = the server's port. */
  readonly port: number | null;
  /** kind tcp: payload sent after connect; null = plain TCP connect check. */
  readonly send: Buffer | null;
  /** kind tcp: the reply must start with these bytes; null = connect is enough. kind smtp: the greeting's start; null = `220`. */
  readonly expect: Buffer | null;
  /** kind http: the request and the statuses that mean up; null for other kinds. */
  readonly http: HealthHttpModel | null;
  /** kind postgres: whom the StartupMessage names; null for other kinds. */
  readonly postgres: HealthPostgresModel | null;
  /** kind mysql: the login; null for other kinds. */
  readonly mysql: HealthMysqlModel | null;
  /** kind redis: the AUTH password; null for other kinds. */
  readonly redis: HealthRedisModel | null;
  /**
   * The servers speak TLS from the first byte: the pool has `tls`, or a
   * passthrough listener reaches it (and no `protocol: postgres` listener,
   * whose TLS starts after an SSLRequest). Decides the default kind (tls),
   * and kinds http, redis and smtp then talk TLS on the server's own port.
   */
  readonly serversTls: boolean;
}

export type HealthKind = (typeof HEALTH_KINDS)[number];

export interface HealthHttpModel {
  readonly method: (typeof HEALTH_HTTP_METHODS)[number];
  /** Starts with "/"; printable ASCII without spaces. */
  readonly path: string;
  /** Statuses that mean up. */
  readonly expectStatus: readonly number[];
  /** The Host header; null = the server's host as written in its address. */
  readonly host: string | null;
}

export interface HealthPostgresModel {
  readonly user: string;
  readonly database: string;
}

export interface HealthMysqlModel {
  /** Logs in as this user (no password) and leaves with COM_QUIT; null = read the greeting and close (the server logs an aborted connection). */
  readonly user: string | null;
}

export interface HealthRedisModel {
  /** Where the password was read from; null = no AUTH. */
  readonly passwordFile: string | null;
  /** The file's first line, read when the configuration loads (redacted in GET /config, never logged); null = no AUTH. */
  readonly password: Buffer | null;
}

export type OnServerDown = (typeof ON_SERVER_DOWN)[number];

export type LeastTimeMeasure = (typeof LEAST_TIME_MEASURES)[number];

export interface PoolModel {
  readonly name: string;
  readonly balance: Balance;
  /** Further servers tried after a failed connect (0 = no retry). */
  readonly retries: number;
  readonly timeouts: { readonly connectMs: number; readonly idleMs: number };
  readonly servers: readonly ServerModel[];
  readonly health: HealthModel;
  /** A recovered server's weight ramps from ~10% to 100% over this time; 0 = off. */
  readonly slowStartMs: number;
  /** `close`: close the open connections of a server marked down. */
  readonly onServerDown: OnServerDown;
  /** PROXY protocol header sent to each backend before any client byte. */
  readonly proxyProtocol: ProxyProtocolVersion;
  readonly tls: PoolTlsModel | null;
  /** What least_time averages per server (also shown in /status and metrics for every pool). */
  readonly leastTime: { readonly measure: LeastTimeMeasure };
  /** Stick table (`stick`): a client address keeps its server; null = off. */
  readonly stick: StickModel | null;
  /**
   * The servers whose address is a host name, re-resolved every
   * `dns.interval` (src/runtime/dns-refresh.ts). Each stands for the
   * servers `servers[at]` to `servers[at + addresses.length - 1]`: one
   * named as configured for one address, `NAME/ADDRESS` each for several,
   * none while it is unresolved. Absent: none.
   */
  readonly hostnames?: readonly HostnameServerModel[];
}

/** `pools[].stick`: how long an idle client keeps its server, and how many clients are remembered. */
export interface StickModel {
  /** After a client's last connection closes, its entry lasts this long. */
  readonly expireMs: number;
  /** Most clients remembered; idle ones are forgotten oldest first to make room. */
  readonly size: number;
}

/** A configured server whose address is a host name (see PoolModel.hostnames). */
export interface HostnameServerModel {
  /** As configured: its name (default the address as written), the address as written, weight and role. */
  readonly name: string;
  readonly text: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  readonly backup: boolean;
  /** The IP addresses of the last good answer, sorted; empty: never resolved (the server is `unresolved`). */
  readonly addresses: readonly string[];
  /** Where its servers start in the pool's `servers`. */
  readonly at: number;
}

/** `dns:` how server host names are re-resolved. */
export interface DnsModel {
  /** Resolvers to ask (`ip:port`); empty: the system's (resolv.conf, and /etc/hosts). */
  readonly servers: readonly string[];
  readonly intervalMs: number;
}

export type ProxyProtocolVersion = (typeof PROXY_PROTOCOL_VERSIONS)[number];

export type TlsVersion = (typeof TLS_VERSIONS)[number];

export type TlsMode = (typeof TLS_MODES)[number];

/** `tcp`: bytes from the first; `postgres`: SSLRequest, GSSENCRequest and CancelRequest are understood (src/protocols/postgres). */
export type ListenerProtocol = (typeof LISTENER_PROTOCOLS)[number];

/** TLS on a listener: terminated here, or passed through after reading the ClientHello's SNI. */
export interface ListenerTlsModel {
  readonly mode: TlsMode;
  /** terminate: certificate and key files; the first is the default. */
  readonly certs: readonly { readonly cert: string; readonly key: string }[];
  readonly minVersion: TlsVersion;
  readonly ciphers: string | null;
  readonly alpn: readonly string[];
  /** terminate: CA file for mutual TLS (a client certificate is then required). */
  readonly clientCa: string | null;
  /** terminate: refuse a ClientHello without SNI or whose SNI no certificate covers. */
  readonly strictSni: boolean;
  /** terminate: issue session tickets (keys rotated, the previous one kept); false = no resumption. */
  readonly sessionTickets: boolean;
}

/** A route: the first whose every given key matches picks the pool (at least one of sni and source is given). */
export interface RouteModel {
  /** Exact name or `*.suffix`; absent: any name, or none. */
  readonly sni?: string;
  /** Client networks as configured: CIDRs and `@FILE` names; absent: any client. */
  readonly source?: readonly string[];
  /** With source: what is matched, the CIDRs with each `@FILE`'s lines in its place (files read at load and reload). */
  readonly sourceCidrs?: readonly string[];
  readonly pool: string;
}

/** TLS from l4lb to the servers of a pool. */
export interface PoolTlsModel {
  /**
   * SNI sent and name verified; null = each server's host name as written in
   * its address (none for an IP literal, whose address is then verified).
   */
  readonly servername: string | null;
  /** CA file to verify servers against; null = the system's trusted CAs. */
  readonly ca: string | null;
  readonly verify: boolean;
  /** Client certificate for servers that require one. */
  readonly cert: string | null;
  readonly key: string | null;
}

export interface ListenerModel {
  readonly name: string;
  readonly bind: Endpoint;
  readonly pool: string;
  readonly protocol: ListenerProtocol;
  readonly timeouts: { readonly idleMs: number; readonly handshakeMs: number };
  /** Every connection must start with a PROXY v1/v2 header from an upstream balancer. */
  readonly acceptProxy: boolean;
  /** With acceptProxy: the only peers allowed to send one (CIDR text); never empty then (the loader requires it). */
  readonly trustedProxies: readonly string[];
  /** Client CIDRs allowed (empty = everyone not denied). */
  readonly allow: readonly string[];
  /** Client CIDRs refused; deny wins over allow. */
  readonly deny: readonly string[];
  /** Open connections on this listener; 0 = unlimited. */
  readonly maxConnections: number;
  /** Per client IP: concurrent connections and new connections per second; 0 = unlimited. IPv6 clients count per /ipv6Prefix network. */
  readonly perSource: { readonly maxConnections: number; readonly connectRate: number; readonly ipv6Prefix: number };
  readonly tls: ListenerTlsModel | null;
  readonly routes: readonly RouteModel[];
  /** `bind: systemd:NAME`: the socket systemd passes with this FileDescriptorName (bind is then unresolved). */
  readonly systemdSocket: string | null;
}

/** The HTTP admin server (`admin:`). */
export interface AdminModel {
  readonly listen: Endpoint;
  /** File holding the bearer token for state changes; null = state changes are refused. Read at start, never kept here. */
  readonly tokenFile: string | null;
}

export interface Model {
  /** null: no admin server. */
  readonly admin: AdminModel | null;
  /** Doubts that do not stop the configuration (expired certificate, verify: false); logged at start. */
  readonly warnings: readonly string[];
  /** Drop privileges to this user (and group) once every socket is bound; null = stay as started. */
  readonly user: string | null;
  readonly group: string | null;
  readonly log: { readonly level: LogLevel; readonly access: boolean };
  /** Threads that serve traffic (`auto` resolved to the available cores). */
  readonly workers: number;
  /** How server host names are re-resolved; absent: the defaults (system resolver, 30 s). */
  readonly dns?: DnsModel;
  /** After SIGTERM/SIGINT: ms during which `/ready` answers 503 while listeners keep accepting, before the drain. */
  readonly grace: number;
  readonly listeners: readonly ListenerModel[];
  readonly pools: readonly PoolModel[];
}
