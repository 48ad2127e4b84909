/**
 * The status document served as JSON by `GET /status`, rendered as HTML by
 * `GET /` and as a table by `l4lb status`. Built from the live objects at
 * request time; nothing here is kept between requests.
 */
import type net from 'node:net';
import type { Pool, Server, AdminState } from '../pool.js';
import type { Listener } from '../proxy/listener.js';
import type { Model, RouteModel } from '../config/model.js';

/** What the admin server reads: the running App, or whatever replaces it on reload. */
export interface AdminSource {
  /** `running` until a stop begins (`stopping` during the grace); `/healthz` answers 503 from `draining` on, `/ready` from `stopping` on. */
  readonly phase: string;
  readonly pools: ReadonlyMap<string, Pool>;
  readonly listeners: readonly Listener[];
  /** The model now running, served by `GET /config`; absent: `GET /config` answers 404. */
  readonly model?: Model;
  /** Reload outcomes (SIGHUP), when the source reloads. */
  readonly reloads?: { readonly succeeded: number; readonly failed: number; readonly lastSucceeded: boolean; readonly lastAt: number };
  /** Threads serving traffic (the main thread and the worker threads). */
  readonly threads?: number;
  /** Worker threads that died and were replaced since start. */
  readonly workerRestarts?: number;
  /** Pools a reload removed whose servers still have open connections. */
  readonly removedPools?: readonly Pool[];
  /** Failed lookups of servers' host names, by pool and server as configured (l4lb_dns_failures_total). */
  readonly dnsFailures?: ReadonlyMap<string, { readonly pool: string; readonly server: string; readonly count: number }>;
}

export interface LastCheckStatus {
  readonly ok: boolean;
  /** Why it failed (`ECONNREFUSED`, `timeout`, …); empty when it succeeded. */
  readonly reason: string;
  readonly latency_ms: number;
  /** ISO 8601 time of the check. */
  readonly at: string;
  /** `active` probe, or `passive`: a client connect that failed. */
  readonly source: 'active' | 'passive';
}

export interface ServerStatus {
  readonly name: string;
  readonly address: string;
  readonly backup: boolean;
  /**
   * Health; `removed`: a reload removed the server (or its pool) and its
   * open connections (`active`) are finishing; listed until the last closes.
   */
  /** `unresolved`: a host name that has not resolved yet (no probes, never picked; asked again every dns.interval). */
  readonly state: 'up' | 'down' | 'removed' | 'unresolved';
  /** The operator's state. */
  readonly admin: AdminState;
  /** Configured weight. */
  readonly weight: number;
  /** The weight used now (lower during slow start). */
  readonly effective_weight: number;
  /** Open connections (connecting included). */
  readonly active: number;
  /** Connections that reached the server. */
  readonly total: number;
  readonly connect_failures: number;
  /** Client → server bytes of closed connections. */
  readonly bytes_in: number;
  /** Server → client bytes of closed connections. */
  readonly bytes_out: number;
  readonly last_check: LastCheckStatus | null;
  /** least_time's average response time (the pool's `measure`), in ms; null: none yet. */
  readonly response_ms: number | null;
}

export interface PoolStatus {
  readonly name: string;
  readonly balance: string;
  /** What the servers' `response_ms` measure: `connect` or `first_byte` (`least_time.measure`). */
  readonly measure: string;
  /** The listeners that send connections here: as their default pool, or through a route. */
  readonly listeners: readonly string[];
  /** A reload removed the pool; it is listed while its servers have open connections. */
  readonly removed: boolean;
  /** `stick`: clients the stick table remembers now (all threads'); null when the pool has no stick table. */
  readonly stick_entries: number | null;
  /** The configured servers, then those a reload removed that still have open connections (state `removed`). */
  readonly servers: readonly ServerStatus[];
}

/** One route of a listener: what it matches (every key given must match) and where it sends. */
export interface RouteStatus {
  /** Exact name or `*.suffix`. */
  readonly sni?: string;
  /** Client networks, as configured. */
  readonly source?: readonly string[];
  /** Client countries, as configured. */
  readonly country?: readonly string[];
  readonly pool: string;
}

export interface ListenerStatus {
  readonly name: string;
  /** As configured, e.g. `0.0.0.0:5432`. */
  readonly bind: string;
  /** The port actually bound (differs from `bind` with port 0); the configured one once closed. */
  readonly port: number;
  /** The pool used when no route matches. */
  readonly pool: string;
  /** Routes in order (the first that matches picks the pool). */
  readonly routes: readonly RouteStatus[];
  /** Open client connections now. */
  readonly connections: number;
  /** Connections accepted since start. */
  readonly accepted: number;
}

export interface StatusDoc {
  readonly phase: string;
  /** ISO 8601 time the document was built. */
  readonly time: string;
  /** Threads serving traffic; the counts below are all of theirs. */
  readonly workers: number;
  /** Worker threads that died and were replaced since start. */
  readonly worker_restarts: number;
  readonly listeners: readonly ListenerStatus[];
  readonly pools: readonly PoolStatus[];
}

/** What a route matches on, copied key by key (a string, or a list of strings). */
function routeStatus(route: RouteModel): RouteStatus {
  const r = route as unknown as Readonly<Record<string, unknown>>;
  const strings = (v: unknown): readonly string[] | undefined =>
    Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]).slice() : undefined;
  const source = strings(r.source);
  const country = strings(r.country);
  return {
    ...(typeof r.sni === 'string' ? { sni: r.sni } : {}),
    ...(source !== undefined ? { source } : {}),
    ...(country !== undefined ? { country } : {}),
    pool: route.pool,
  };
}

/** Two decimals are plenty for a latency in milliseconds. */
function ms(value: number): number {
  return Math.round(value * 100) / 100;
}

export function buildStatus(source: AdminSource, now = Date.now()): StatusDoc {
  // Bytes are counted per listener; a server's total is the sum over listeners.
  const bytes = new Map<Server, { in: number; out: number }>();
  for (const l of source.listeners) {
    for (const [server, c] of l.stats.servers()) {
      const b = bytes.get(server);
      if (b === undefined) bytes.set(server, { in: c.bytesIn, out: c.bytesOut });
      else {
        b.in += c.bytesIn;
        b.out += c.bytesOut;
      }
    }
  }
  const listeners = source.listeners.map((l): ListenerStatus => {
    // address() is null once the listener stopped accepting (draining).
    const bound = l.address() as net.AddressInfo | null;
    return {
      name: l.model.name,
      bind: l.model.bind.text,
      port: bound?.port ?? l.model.bind.port,
      pool: l.model.pool,
      routes: l.model.routes.map(routeStatus),
      connections: l.connections,
      accepted: l.stats.accepted,
    };
  });
  // Which listeners reach each pool, by default or through a route: a pool reached only by a route is attached too.
  const reachedFrom = new Map<string, string[]>();
  for (const l of source.listeners) {
    for (const name of new Set([l.model.pool, ...l.model.routes.map((r) => r.pool)])) {
      const names = reachedFrom.get(name);
      if (names === undefined) reachedFrom.set(name, [l.model.name]);
      else names.push(l.model.name);
    }
  }
  const server = (s: Server, removed: boolean): ServerStatus => {
    const last = s.health.last;
    const b = bytes.get(s);
    return {
      name: s.name,
      address: s.address.text,
      backup: s.backup,
      state: removed ? 'removed' : s.up ? 'up' : 'down',
      admin: s.admin,
      weight: s.baseWeight,
      effective_weight: ms(s.weight),
      active: s.active,
      total: s.total,
      connect_failures: s.connectFailures,
      bytes_in: b?.in ?? 0,
      bytes_out: b?.out ?? 0,
      last_check:
        last === null
          ? null
          : { ok: last.ok, reason: last.reason, latency_ms: ms(last.latencyMs), at: new Date(last.at).toISOString(), source: last.source },
      response_ms: s.responseUs > 0 ? ms(s.responseUs / 1000) : null,
    };
  };
  // A server added back takes its old slot (and counts its connections there): it is listed once, as configured.
  const live = new Set([...source.pools.values()].flatMap((p) => p.servers.map((s) => s.slot)).filter((slot) => slot >= 0));
  const draining = (list: readonly Server[]): ServerStatus[] => list.filter((s) => s.active > 0 && !live.has(s.slot)).map((s) => server(s, true));
  const unresolved = (p: Pool): ServerStatus[] =>
    (p.model.hostnames ?? [])
      .filter((h) => h.addresses.length === 0)
      .map((h) => ({
        name: h.name,
        address: h.text,
        backup: h.backup,
        state: 'unresolved',
        admin: 'ready',
        weight: h.weight,
        effective_weight: 0,
        active: 0,
        total: 0,
        connect_failures: 0,
        bytes_in: 0,
        bytes_out: 0,
        last_check: null,
        response_ms: null,
      }));
  const pools = [...source.pools.values()].map(
    (p): PoolStatus => ({
      name: p.name,
      balance: p.model.balance,
      measure: p.model.leastTime.measure,
      listeners: reachedFrom.get(p.name) ?? [],
      removed: false,
      stick_entries: p.stick?.entries ?? null,
      servers: [...p.servers.map((s) => server(s, false)), ...unresolved(p), ...draining(p.removedServers())],
    }),
  );
  for (const p of source.removedPools ?? []) {
    const servers = draining([...p.servers, ...p.removedServers()]);
    if (servers.length > 0) pools.push({ name: p.name, balance: p.model.balance, measure: p.model.leastTime.measure, listeners: [], removed: true, stick_entries: null, servers });
  }
  return { phase: source.phase, time: new Date(now).toISOString(), workers: source.threads ?? 1, worker_restarts: source.workerRestarts ?? 0, listeners, pools };
}

/** What `GET /ready` answers: ready, or every reason it is not. */
export interface Readiness {
  readonly ready: boolean;
  /** Empty when ready; else one sentence per reason, e.g. `no up server in pool pg`. */
  readonly reasons: readonly string[];
}

/**
 * Readiness for route health checks (keepalived, ExaBGP): running (not
 * starting, not in the grace or the drain of a stop), every listener
 * accepting, and in every listener's default pool a server that is up and
 * ready (not drain or maint). Routed pools are not required: a listener
 * with its default pool up still serves. Server state is the main thread's,
 * which decides it for every thread.
 */
export function readiness(source: AdminSource): Readiness {
  if (source.phase !== 'running') {
    return { ready: false, reasons: [source.phase === 'created' ? 'starting' : `shutting down (${source.phase})`] };
  }
  const reasons: string[] = [];
  const pools = new Set<string>();
  for (const l of source.listeners) {
    if ((l.address() as net.AddressInfo | null) === null) reasons.push(`listener ${l.model.name} is not accepting`);
    pools.add(l.model.pool);
  }
  for (const name of pools) {
    const pool = source.pools.get(name);
    if (pool === undefined) reasons.push(`no pool ${name}`);
    else if (!pool.servers.some((s) => s.usable)) reasons.push(`no up server in pool ${name}`);
  }
  return { ready: reasons.length === 0, reasons };
}
