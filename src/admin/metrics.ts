/**
 * Prometheus metrics. Every l4lb metric is computed at scrape time from the
 * live pools, servers and listener counters (prom-client `collect()`), so
 * the connection path never touches a metric object. Counters are rebuilt
 * from their source on each scrape; the sources only ever grow, so the
 * exported values behave as Prometheus counters should.
 *
 * The registry is our own, never prom-client's global one: two App
 * instances in one process (tests, a future reload) cannot collide.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Pool, Server } from '../pool.js';
import { REJECT_REASONS, type ServerCounters } from '../proxy/stats.js';
import type { AdminSource } from './status.js';
import { droppedLogLines } from '../log.js';


const ADMIN_STATES = ['ready', 'drain', 'maint'] as const;

const ZERO: ServerCounters = Object.freeze({ total: 0, active: 0, bytesIn: 0, bytesOut: 0 });

interface ListenerServer {
  readonly listener: string;
  readonly pool: string;
  readonly server: string;
  readonly counters: ServerCounters;
}

/**
 * Each listener × server pair: every server of the listener's pool (at 0
 * before its first connection), and any other server the listener reached
 * (through a route to another pool).
 */
function listenerServers(source: AdminSource): ListenerServer[] {
  const poolOf = new Map<Server, Pool>();
  for (const p of source.pools.values()) for (const s of p.servers) poolOf.set(s, p);
  const out: ListenerServer[] = [];
  for (const l of source.listeners) {
    const seen = new Map<Server, ServerCounters>(l.stats.servers());
    const own = source.pools.get(l.model.pool);
    for (const s of own?.servers ?? []) {
      out.push({ listener: l.model.name, pool: own!.name, server: s.name, counters: seen.get(s) ?? ZERO });
      seen.delete(s);
    }
    for (const [s, counters] of seen) {
      const p = poolOf.get(s);
      // A server no longer in any pool (removed by a reload) has no pool to name; its series ends.
      if (p !== undefined) out.push({ listener: l.model.name, pool: p.name, server: s.name, counters });
    }
  }
  return out;
}

function* servers(source: AdminSource): Generator<[Pool, Server]> {
  for (const p of source.pools.values()) for (const s of p.servers) yield [p, s];
}

/** A registry with process metrics and l4lb's metrics, read from `source` at every scrape. */
export function createMetricsRegistry(source: AdminSource): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  // Each metric walks the (small) object graph itself: prom-client collects metrics one by one.
  const perListener = (): ListenerServer[] => listenerServers(source);

  new Counter({
    name: 'l4lb_connections_total',
    help: 'Client connections that reached a server.',
    labelNames: ['listener', 'pool', 'server'] as const,
    registers,
    collect() {
      this.reset();
      for (const x of perListener()) this.inc({ listener: x.listener, pool: x.pool, server: x.server }, x.counters.total);
    },
  });

  new Gauge({
    name: 'l4lb_active_connections',
    help: 'Client connections open to a server now.',
    labelNames: ['listener', 'pool', 'server'] as const,
    registers,
    collect() {
      this.reset();
      for (const x of perListener()) this.set({ listener: x.listener, pool: x.pool, server: x.server }, x.counters.active);
    },
  });

  new Counter({
    name: 'l4lb_bytes_total',
    // Open connections' bytes are added by each thread's idle sweep (about once a second), never per chunk.
    help: 'Bytes relayed, open connections included (at most about a second behind): direction "in" is client to server, "out" is server to client.',
    labelNames: ['listener', 'pool', 'server', 'direction'] as const,
    registers,
    collect() {
      this.reset();
      for (const x of perListener()) {
        const labels = { listener: x.listener, pool: x.pool, server: x.server };
        this.inc({ ...labels, direction: 'in' }, x.counters.bytesIn);
        this.inc({ ...labels, direction: 'out' }, x.counters.bytesOut);
      }
    },
  });

  new Gauge({
    name: 'l4lb_server_up',
    help: 'Health of a server: 1 up, 0 down (regardless of its admin state).',
    labelNames: ['pool', 'server'] as const,
    registers,
    collect() {
      this.reset();
      for (const [p, s] of servers(source)) this.set({ pool: p.name, server: s.name }, s.up ? 1 : 0);
    },
  });

  new Gauge({
    name: 'l4lb_server_admin_state',
    help: 'The operator\'s state of a server: 1 for its current state (ready, drain or maint), 0 for the others.',
    labelNames: ['pool', 'server', 'state'] as const,
    registers,
    collect() {
      this.reset();
      for (const [p, s] of servers(source)) {
        for (const state of ADMIN_STATES) this.set({ pool: p.name, server: s.name, state }, s.admin === state ? 1 : 0);
      }
    },
  });

  new Counter({
    name: 'l4lb_connect_failures_total',
    help: 'Failed connects to a server (each retry counts).',
    labelNames: ['pool', 'server'] as const,
    registers,
    collect() {
      this.reset();
      for (const [p, s] of servers(source)) this.inc({ pool: p.name, server: s.name }, s.connectFailures);
    },
  });

  new Counter({
    name: 'l4lb_rejected_connections_total',
    help: 'Client connections closed before reaching a server, by reason (acl, limit, proxy_header, tls, tls_required, no_server, local).',
    labelNames: ['listener', 'reason'] as const,
    registers,
    collect() {
      this.reset();
      for (const l of source.listeners) {
        const rejected = new Map<string, number>(REJECT_REASONS.map((r) => [r, 0]));
        for (const [reason, n] of l.stats.rejected) rejected.set(reason, n);
        for (const [reason, n] of rejected) this.inc({ listener: l.model.name, reason }, n);
      }
    },
  });

  new Counter({
    name: 'l4lb_local_errors_total',
    help: 'Connections refused for the balancer\'s own shortage (EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS, ENOMEM), by errno code; never counted against a server.',
    labelNames: ['listener', 'code'] as const,
    registers,
    collect() {
      this.reset();
      for (const l of source.listeners) {
        // EMFILE is always there, so an alert on it sees the series before the first shortage.
        this.inc({ listener: l.model.name, code: 'EMFILE' }, 0);
        for (const [code, n] of l.stats.localErrors) this.inc({ listener: l.model.name, code }, n);
      }
    },
  });

  new Counter({
    name: 'l4lb_log_lines_dropped_total',
    help: 'Log lines dropped because stdout did not take them fast enough (the buffer is bounded).',
    registers,
    collect() {
      this.reset();
      this.inc(droppedLogLines());
    },
  });

  new Counter({
    name: 'l4lb_tls_handshake_failures_total',
    help: 'Failed TLS handshakes with clients.',
    labelNames: ['listener'] as const,
    registers,
    collect() {
      this.reset();
      for (const l of source.listeners) this.inc({ listener: l.model.name }, l.stats.tlsHandshakeFailures);
    },
  });

  new Gauge({
    name: 'l4lb_server_response_seconds',
    help: 'Average response time of a server (least_time\'s moving average, from client connections and probes) by what the pool measures: connect or first_byte. Absent before the first sample.',
    labelNames: ['pool', 'server', 'measure'] as const,
    registers,
    collect() {
      this.reset();
      for (const [p, s] of servers(source)) {
        if (s.responseUs > 0) this.set({ pool: p.name, server: s.name, measure: p.model.leastTime.measure }, s.responseUs / 1e6);
      }
    },
  });

  new Gauge({
    name: 'l4lb_stick_entries',
    help: 'Clients a pool\'s stick table remembers (with open connections, or idle for less than stick.expire); pools with stick only.',
    labelNames: ['pool'] as const,
    registers,
    collect() {
      this.reset();
      for (const p of source.pools.values()) if (p.stick !== null) this.set({ pool: p.name }, p.stick.entries);
    },
  });

  new Gauge({
    name: 'l4lb_health_check_duration_seconds',
    help: 'Duration of the latest active health probe of a server (a gauge of the last probe, not a histogram; 0 before the first).',
    labelNames: ['pool', 'server'] as const,
    registers,
    collect() {
      this.reset();
      for (const [p, s] of servers(source)) this.set({ pool: p.name, server: s.name }, s.checkDurationMs / 1000);
    },
  });

  new Counter({
    name: 'l4lb_dns_failures_total',
    help: 'Failed or empty answers for a server\'s host name (the server kept its last good addresses), by pool and server as configured.',
    labelNames: ['pool', 'server'] as const,
    registers,
    collect() {
      this.reset();
      // Every host-name server is listed from the start, so a rate() has its zero.
      for (const p of source.model?.pools ?? []) for (const h of p.hostnames ?? []) this.inc({ pool: p.name, server: h.name }, 0);
      for (const f of source.dnsFailures?.values() ?? []) this.inc({ pool: f.pool, server: f.server }, f.count);
    },
  });

  new Counter({
    name: 'l4lb_worker_restarts_total',
    help: 'Worker threads that died and were replaced (their own connections were lost).',
    registers,
    collect() {
      this.reset();
      this.inc(source.workerRestarts ?? 0);
    },
  });

  new Gauge({
    name: 'l4lb_workers',
    help: 'Threads serving traffic (the main thread and the worker threads).',
    registers,
    collect() {
      this.set(source.threads ?? 1);
    },
  });

  new Counter({
    name: 'l4lb_reloads_total',
    help: 'Configuration reloads (SIGHUP), by result: success or failure (the running configuration then stays).',
    labelNames: ['result'] as const,
    registers,
    collect() {
      this.reset();
      const r = source.reloads;
      this.inc({ result: 'success' }, r?.succeeded ?? 0);
      this.inc({ result: 'failure' }, r?.failed ?? 0);
    },
  });

  new Gauge({
    name: 'l4lb_config_last_reload_successful',
    help: '1 if the last configuration reload succeeded (or none was tried), 0 if it failed.',
    registers,
    collect() {
      this.set(source.reloads?.lastSucceeded === false ? 0 : 1);
    },
  });

  return registry;
}
