/**
 * Active and passive health checking for one pool. Each server has its own
 * probe timer, spread by jitter so a hundred servers are not probed in the
 * same millisecond. After a failure the next probe comes sooner (HAProxy's
 * fastinter), so a dead server is found within about `fall × timeout`. A
 * real client connect that fails counts as a failed check and brings the
 * next probe forward. Servers in `maint` are not probed. A probe that passes
 * but that the server still logs (a mysql probe without a user, a refused
 * login) is warned about once per server, not once per probe.
 */
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../log.js';
import type { Pool, Server } from '../pool.js';
import { planProbe, probe, type ProbeResult } from './probe.js';
import type { LastCheck } from './state.js';
import { processFds, type FdBudget } from '../net/fd-budget.js';

/** Quickest re-probe after a failure; keeps a flapping server from being hammered. */
const MIN_FAST_INTERVAL_MS = 50;
/** First probes land within this window after start, spread at random. */
const START_SPREAD_MS = 50;
/** ±10% on every delay, so probes of many servers do not line up. */
const JITTER = 0.1;
/** Probes skipped for a local shortage are worth a warning, but one per this interval per pool (with a count). */
const LOCAL_ERROR_WARN_EVERY_MS = 10_000;

export interface HealthCheckerOptions {
  /** Builds the PROXY header for probes of pools that send one. */
  readonly proxyHeader: ((socket: net.Socket) => Buffer) | null;
  /** The process's descriptors (default: the process budget). */
  readonly fds?: FdBudget;
}

interface Slot {
  timer: NodeJS.Timeout | undefined;
  /** When `timer` fires (performance.now() ms). */
  dueAt: number;
  inFlight: boolean;
  /** The last note warned about (a passing probe the server logs as a problem), so each is warned once. */
  note: string | undefined;
}

export class HealthChecker {
  readonly #pool: Pool;
  readonly #logger: Logger;
  readonly #options: HealthCheckerOptions;
  readonly #slots = new Map<Server, Slot>();
  readonly #abort = new AbortController();
  #closed = false;
  /** Probes under way: close() waits for them to settle, so no probe socket outlives the checker. */
  readonly #inFlight = new Set<Promise<ProbeResult>>();
  #closing: Promise<void> | undefined;
  /** Probes that could not run for a local shortage since the last warning, and when that was. */
  #localSkipped = 0;
  #localWarnedAt = -Infinity;

  constructor(pool: Pool, logger: Logger, options: HealthCheckerOptions = { proxyHeader: null }) {
    this.#pool = pool;
    this.#logger = logger;
    this.#options = options;
  }

  /**
   * Probe every server at once (with a little spread), then every interval.
   * Lifecycle: the constructor only stores; `start()` arms the timers;
   * `close()` and `destroy()` stop them and abandon probes in flight.
   */
  start(): void {
    this.#pool.onConnectFailure((server, reason) => this.recordPassiveFailure(server, reason));
    for (const server of this.#pool.servers) {
      const slot: Slot = { timer: undefined, dueAt: 0, inFlight: false, note: undefined };
      this.#slots.set(server, slot);
      this.#schedule(server, slot, Math.random() * START_SPREAD_MS);
    }
  }

  /**
   * Stop every timer and abandon probes in flight (a probe's verdict is of no
   * use once the checker is gone); resolves when their sockets are closed.
   * Idempotent: one shared promise.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#pool.onConnectFailure(undefined);
      for (const slot of this.#slots.values()) clearTimeout(slot.timer);
      this.#abort.abort();
      await Promise.all(this.#inFlight);
    })();
    return this.#closing;
  }

  /** The same as close(): a checker has nothing to let finish. */
  destroy(): Promise<void> {
    return this.close();
  }

  /** A real client connect failed: count it as a failed check and re-probe soon. */
  recordPassiveFailure(server: Server, reason: string): void {
    if (this.#closed) return;
    this.#record(server, { ok: false, reason, latencyMs: 0, at: Date.now(), source: 'passive' });
    const slot = this.#slots.get(server);
    if (slot === undefined || slot.inFlight) return;
    // Only ever bring the next probe forward. Rescheduling unconditionally let
    // a stream of failed client connects (one per fast interval or more often)
    // push the probe back again and again, so no active probe ever ran.
    const delayMs = this.#fastIntervalMs();
    if (slot.timer === undefined || performance.now() + delayMs < slot.dueAt) this.#schedule(server, slot, delayMs);
  }

  #schedule(server: Server, slot: Slot, delayMs: number): void {
    clearTimeout(slot.timer);
    slot.dueAt = performance.now() + delayMs;
    slot.timer = setTimeout(() => void this.#run(server, slot), delayMs);
  }

  async #run(server: Server, slot: Slot): Promise<void> {
    slot.timer = undefined;
    const health = this.#pool.model.health;
    if (server.admin === 'maint') {
      // No probes in maintenance; look again after an interval.
      this.#schedule(server, slot, jitter(health.intervalMs));
      return;
    }
    slot.inFlight = true;
    // The pool's TLS to its servers (built by Pool.start()): kind tls and TLS servers' probes verify as clients do.
    const plan = planProbe(health, server.address, this.#pool.tlsOptions);
    const running = probe(plan.target, {
      ...plan.options,
      timeoutMs: health.timeoutMs,
      // health.port names another service (Patroni's REST API): it never takes the pool's PROXY header.
      proxyHeader: health.port === null ? this.#options.proxyHeader : null,
      signal: this.#abort.signal,
      fds: this.#options.fds ?? processFds,
    });
    this.#inFlight.add(running);
    let result: ProbeResult;
    try {
      // probe() never rejects.
      result = await running;
    } finally {
      slot.inFlight = false;
      this.#inFlight.delete(running);
    }
    if (this.#closed) return;
    if (result.local !== undefined) {
      // The balancer's own shortage says nothing of the server: no verdict, try again next interval.
      this.#localSkip(server, result);
      this.#schedule(server, slot, jitter(health.intervalMs));
      return;
    }
    server.checkDurationMs = result.latencyMs;
    if (result.ok) {
      // Probes feed least_time's averages too, so an idle server's figure stays fresh. The first byte only
      // from the server's own port: another service's (health.port) replies say nothing of it.
      if (result.connectMs !== undefined) this.#pool.reportResponse(server, 'connect', result.connectMs);
      if (result.firstByteMs !== undefined && health.port === null) this.#pool.reportResponse(server, 'first_byte', result.firstByteMs);
    }
    this.#noteOnce(server, slot, result);
    this.#record(server, { ok: result.ok, reason: result.reason, latencyMs: result.latencyMs, at: Date.now(), source: 'active' });
    // Failing but not yet down: look again soon, so `fall` is reached quickly.
    const next = server.health.failing ? this.#fastIntervalMs() : jitter(health.intervalMs);
    this.#schedule(server, slot, next);
  }

  #record(server: Server, check: LastCheck): void {
    const flip = server.health.record(check);
    if (flip === undefined) return;
    this.#pool.setHealth(server, flip === 'up');
    const fields = { pool: this.#pool.name, server: server.name, address: server.address.text, check: check.source };
    if (flip === 'down') this.#logger.warn({ ...fields, reason: check.reason }, 'server down');
    else this.#logger.info({ ...fields, latency_ms: check.latencyMs }, 'server up');
  }

  /** A passing probe the server still logs (a refused login, a probe without a user): warned once per server, again only if the note changes. */
  #noteOnce(server: Server, slot: Slot, result: ProbeResult): void {
    if (!result.ok || result.note === slot.note) return;
    slot.note = result.note;
    if (result.note !== undefined) this.#logger.warn({ pool: this.#pool.name, server: server.name, note: result.note }, 'health probe passes, but the server logs it');
  }

  #localSkip(server: Server, result: ProbeResult): void {
    this.#localSkipped++;
    const now = performance.now();
    if (now - this.#localWarnedAt < LOCAL_ERROR_WARN_EVERY_MS) return;
    this.#localWarnedAt = now;
    this.#logger.warn(
      { pool: this.#pool.name, server: server.name, code: result.local, reason: result.reason, skipped: this.#localSkipped },
      'health probes skipped: out of local resources (the servers are not blamed)',
    );
    this.#localSkipped = 0;
  }

  #fastIntervalMs(): number {
    const { intervalMs, timeoutMs } = this.#pool.model.health;
    return jitter(Math.max(MIN_FAST_INTERVAL_MS, Math.min(intervalMs, timeoutMs) / 2));
  }
}

function jitter(ms: number): number {
  return ms * (1 - JITTER + Math.random() * 2 * JITTER);
}
