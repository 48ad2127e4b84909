/**
 * The running load balancer: pools and listeners built from one model.
 * Phases: created → running → draining → stopped. `start()` binds every
 * listener or none; `stop()` stops accepting at once, waits for open
 * connections up to the drain timeout, then closes what remains.
 */
import type { Model } from '../config/model.js';
import type { Logger } from '../log.js';
import { Pool } from '../pool.js';
import { Listener } from '../proxy/listener.js';
import { HealthChecker } from '../health/checker.js';
import type { ProxyProtocolVersion } from '../config/model.js';
import { encodeV1Local, encodeV2 } from '../proxy-protocol.js';
import type net from 'node:net';
import { AdminServer } from '../admin/server.js';

/** Probes of a pool that sends PROXY headers carry one too, so strict backends accept them. */
function probeHeader(version: ProxyProtocolVersion): ((socket: net.Socket) => Buffer) | null {
  if (version === 'v2') {
    const local = encodeV2({ command: 'LOCAL' });
    return () => local;
  }
  if (version === 'v1') return (socket) => encodeV1Local(socket);
  return null;
}

export type Phase = 'created' | 'running' | 'draining' | 'stopped';

export class App {
  readonly model: Model;
  readonly pools: ReadonlyMap<string, Pool>;
  readonly listeners: readonly Listener[];
  readonly checkers: readonly HealthChecker[];
  /** The admin HTTP server (`admin:`), or null. Up from start() until the very end of stop(). */
  readonly admin: AdminServer | null;
  readonly #logger: Logger;
  #phase: Phase = 'created';
  #stopping: Promise<void> | undefined;

  constructor(model: Model, logger: Logger) {
    this.model = model;
    this.#logger = logger;
    const pools = new Map<string, Pool>();
    for (const p of model.pools) pools.set(p.name, new Pool(p));
    this.pools = pools;
    this.listeners = model.listeners.map((l) => new Listener(l, pools, logger, model.log.access));
    this.checkers = [...pools.values()].map((p) => new HealthChecker(p, logger, { proxyHeader: probeHeader(p.model.proxyProtocol) }));
    this.admin = model.admin === null ? null : new AdminServer(this, model.admin, logger);
  }

  get phase(): Phase {
    return this.#phase;
  }

  /** Open connections across all listeners. */
  get connections(): number {
    let n = 0;
    for (const l of this.listeners) n += l.connections;
    return n;
  }

  /** Bind every listener; if one fails, close those already bound and reject. */
  async start(): Promise<void> {
    if (this.#phase !== 'created') throw new Error(`App.start() in phase ${this.#phase}`);
    const results = await Promise.allSettled([
      ...this.listeners.map(async (l) => {
        await l.prepare();
        await l.start();
      }),
      this.admin?.start(),
    ]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await Promise.all([...this.listeners.map((l) => l.destroy()), this.admin?.close()]);
      this.#phase = 'stopped';
      throw failed.reason;
    }
    for (const c of this.checkers) c.start();
    this.#phase = 'running';
  }

  /**
   * Graceful stop: no new connections from now on; open ones may finish
   * within `drainMs`, then they are closed with termination `shutdown`.
   * Idempotent: every call returns the same promise.
   */
  stop(drainMs: number): Promise<void> {
    this.#stopping ??= this.#drain(drainMs);
    return this.#stopping;
  }

  async #drain(drainMs: number): Promise<void> {
    this.#phase = 'draining';
    await Promise.all(this.listeners.map((l) => l.close()));
    const open = this.connections;
    this.#logger.info({ connections: open, drain_timeout_ms: drainMs }, 'draining');
    if (open > 0) await this.#waitForConnections(drainMs);
    const left = this.connections;
    if (left > 0) {
      this.#logger.info({ connections: left }, 'drain timeout reached, closing open connections');
      for (const l of this.listeners) l.shutdown();
      await this.#waitForConnections(1_000);
    }
    await Promise.all(this.listeners.map((l) => l.destroy()));
    for (const c of this.checkers) c.close();
    for (const p of this.pools.values()) p.close();
    // Last: /healthz answered "draining" all along.
    await this.admin?.close();
    this.#phase = 'stopped';
  }

  #waitForConnections(withinMs: number): Promise<void> {
    return new Promise((resolve) => {
      const deadline = Date.now() + withinMs;
      const tick = (): void => {
        if (this.connections === 0 || Date.now() >= deadline) {
          clearInterval(timer);
          resolve();
        }
      };
      const timer = setInterval(tick, 50);
      tick();
    });
  }
}
