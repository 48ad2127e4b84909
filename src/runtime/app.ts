/**
 * The running load balancer: pools and listeners built from one model.
 * Phases: created → running → draining → stopped. The constructor only
 * builds objects; `start()` binds every listener or none; `close()`
 * (graceful) stops accepting at once, waits for open connections up to the
 * drain timeout, then closes what remains; `destroy()` (forced) closes
 * everything at once, whatever the phase. Both are idempotent.
 */
import type { ListenerModel, Model } from '../config/model.js';
import type { Logger } from '../log.js';
import { Pool } from '../pool.js';
import { Listener } from '../proxy/listener.js';
import { HealthChecker } from '../health/checker.js';
import type { ProxyProtocolVersion } from '../config/model.js';
import { encodeV1Local, encodeV2 } from '../proxy-protocol/index.js';
import type net from 'node:net';
import { AdminServer } from '../admin/server.js';
// One rule for "same socket", shared with the reload preview (l4lb check --diff).
import { sameSocket } from '../config/identity.js';

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

/** What a reload changed, for the log line and the caller. */
export interface ReloadSummary {
  readonly listenersAdded: readonly string[];
  readonly listenersRemoved: readonly string[];
  readonly listenersKept: readonly string[];
  readonly poolsAdded: readonly string[];
  readonly poolsRemoved: readonly string[];
}

export class App {
  #model: Model;
  #pools: Map<string, Pool>;
  #listeners: Listener[];
  /** Listeners a reload removed: no longer accepting, their connections finishing. */
  readonly #retired = new Set<Listener>();
  #checkers: HealthChecker[];
  /** The admin HTTP server (`admin:`), or null. Up from start() until the very end of stop(). */
  readonly admin: AdminServer | null;
  readonly #logger: Logger;
  #phase: Phase = 'created';
  #stopping: Promise<void> | undefined;
  /** Set by destroy(): everything is closed; a start or reload in flight closes what it opened. */
  #destroying: Promise<void> | undefined;
  /** Reloads run one at a time. */
  #reloading: Promise<unknown> = Promise.resolve();
  /** Reload outcomes, for metrics and status. */
  readonly reloads = { succeeded: 0, failed: 0, lastSucceeded: true, lastAt: 0 };

  constructor(model: Model, logger: Logger) {
    this.#model = model;
    this.#logger = logger;
    this.#pools = this.#buildPools(model, new Map());
    this.#listeners = model.listeners.map((l) => new Listener(l, this.#pools, logger, model.log.access));
    this.#checkers = this.#buildCheckers(this.#pools);
    this.admin = model.admin === null ? null : new AdminServer(this, model.admin, logger);
  }

  get model(): Model {
    return this.#model;
  }

  get pools(): ReadonlyMap<string, Pool> {
    return this.#pools;
  }

  /** The listeners of the running configuration. */
  get listeners(): readonly Listener[] {
    return this.#listeners;
  }

  get checkers(): readonly HealthChecker[] {
    return this.#checkers;
  }

  get phase(): Phase {
    return this.#phase;
  }

  /** Open connections across all listeners, including those a reload removed. */
  get connections(): number {
    let n = 0;
    for (const l of this.#listeners) n += l.connections;
    for (const l of this.#retired) n += l.connections;
    return n;
  }

  #buildPools(model: Model, previous: ReadonlyMap<string, Pool>): Map<string, Pool> {
    const pools = new Map<string, Pool>();
    for (const p of model.pools) pools.set(p.name, new Pool(p, previous.get(p.name)));
    return pools;
  }

  #buildCheckers(pools: ReadonlyMap<string, Pool>): HealthChecker[] {
    return [...pools.values()].map((p) => new HealthChecker(p, this.#logger, { proxyHeader: probeHeader(p.model.proxyProtocol) }));
  }

  /** Bind every listener; if one fails, close those already bound and reject. */
  async start(): Promise<void> {
    if (this.#phase !== 'created') throw new Error(`App.start() in phase ${this.#phase}`);
    const results = await Promise.allSettled([
      // Pools first: TLS to their servers must be ready before a listener accepts.
      (async () => {
        for (const p of this.#pools.values()) p.start();
      })(),
      ...this.#listeners.map((l) => l.start()),
      this.admin?.start(),
    ]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed || this.#destroying !== undefined) {
      await Promise.all([...this.#listeners.map((l) => l.destroy()), this.admin?.close()]);
      this.#phase = 'stopped';
      throw failed ? failed.reason : new Error('App destroyed during start()');
    }
    for (const c of this.#checkers) c.start();
    this.#phase = 'running';
  }

  /**
   * Apply a new, already validated model; only the difference changes.
   * Everything that can fail (certificates, binding new ports) happens
   * first; if any of it fails the running configuration stays exactly as it
   * was and this rejects. Then, without a gap: listeners whose bind is
   * unchanged keep their socket (no refused connection) and take the new
   * settings for new connections; new listeners accept; removed ones stop
   * accepting while their connections finish; pools and servers that still
   * exist keep their health, admin state, counters and connections; removed
   * servers take no new connections and their open ones continue.
   */
  reload(next: Model): Promise<ReloadSummary> {
    const run = this.#reloading.then(() => this.#reload(next));
    this.#reloading = run.catch(() => undefined);
    return run;
  }

  async #reload(next: Model): Promise<ReloadSummary> {
    if (this.#phase !== 'running' || this.#destroying !== undefined) throw new Error(`cannot reload while ${this.#destroying ? 'destroyed' : this.#phase}`);
    const pools = this.#buildPools(next, this.#pools);
    const kept = new Map<Listener, ListenerModel>();
    const added: Listener[] = [];
    const claimed = new Set<Listener>();
    for (const lm of next.listeners) {
      const same = this.#listeners.find((l) => !claimed.has(l) && sameSocket(l.model, lm));
      if (same !== undefined) {
        claimed.add(same);
        kept.set(same, lm);
      } else {
        added.push(new Listener(lm, pools, this.#logger, next.log.access));
      }
    }
    const removed = this.#listeners.filter((l) => !claimed.has(l));

    // Step one: everything that can fail (certificates, new binds).
    const commits: Array<() => void> = [];
    try {
      for (const p of pools.values()) p.start();
      for (const [listener, lm] of kept) commits.push(await listener.prepareUpdate(lm, pools, next.log.access));
      for (const l of added) await l.start();
      // A forced stop came while this reload bound: it must not leave a listener behind.
      if (this.#destroying !== undefined) throw new Error('App destroyed during reload()');
    } catch (err) {
      await Promise.all(added.map((l) => l.destroy()));
      for (const p of pools.values()) p.close();
      throw err;
    }

    // Step two: swap, nothing here can fail.
    const poolsAdded = next.pools.filter((p) => !this.#pools.has(p.name)).map((p) => p.name);
    const poolsRemoved = [...this.#pools.keys()].filter((name) => !pools.has(name));
    for (const p of pools.values()) p.activate();
    for (const commit of commits) commit();
    for (const l of removed) this.#retire(l);
    for (const c of this.#checkers) void c.close();
    for (const [name, p] of this.#pools) {
      p.close();
      // A pool the reload removed: its servers are gone too (counters forgotten once their connections close).
      if (!pools.has(name)) p.retire();
    }
    this.#pools = pools;
    this.#listeners = [...kept.keys(), ...added];
    this.#checkers = this.#buildCheckers(pools);
    for (const c of this.#checkers) c.start();
    if (JSON.stringify(next.admin) !== JSON.stringify(this.#model.admin)) {
      this.#logger.warn('admin settings changed: they take effect at the next restart');
    }
    this.#logger.level = next.log.level;
    this.#model = next;
    return {
      listenersAdded: added.map((l) => l.model.name),
      listenersRemoved: removed.map((l) => l.model.name),
      listenersKept: [...kept.keys()].map((l) => l.model.name),
      poolsAdded,
      poolsRemoved,
    };
  }

  /** A listener a reload removed: it stops accepting, and is destroyed once its last connection has ended. */
  #retire(listener: Listener): void {
    this.#retired.add(listener);
    void listener.close().then(() => {
      this.#retired.delete(listener);
      return listener.destroy();
    });
  }

  /**
   * Graceful stop: no new connections from now on; open ones may finish
   * within `drainMs`, then they are closed with termination `shutdown`.
   * Idempotent: every call returns the same promise.
   */
  close(drainMs: number): Promise<void> {
    this.#stopping ??= this.#drain(drainMs);
    return this.#stopping;
  }

  /** The same as close(drainMs). */
  stop(drainMs: number): Promise<void> {
    return this.close(drainMs);
  }

  async #drain(drainMs: number): Promise<void> {
    this.#phase = 'draining';
    // A reload in progress finishes first, so nothing it opens is left behind.
    await this.#reloading;
    const all = [...this.#listeners, ...this.#retired];
    const drained = Promise.all(all.map((l) => l.close()));
    this.#logger.info({ connections: this.connections, drain_timeout_ms: drainMs }, 'draining');
    if (!(await settlesWithin(drained, drainMs))) {
      this.#logger.info({ connections: this.connections }, 'drain timeout reached, closing open connections');
      for (const l of all) l.shutdown();
      await settlesWithin(drained, 1_000);
    }
    await Promise.all(all.map((l) => l.destroy()));
    await Promise.all(this.#checkers.map((c) => c.close()));
    for (const p of this.pools.values()) p.close();
    // Last: /healthz answered "draining" all along.
    await this.admin?.close();
    this.#phase = 'stopped';
  }

  /**
   * Forced stop: stop accepting and end every open session now (termination
   * `shutdown`), on current listeners and on those a reload retired; stop
   * health probes and pool timers; close the admin server. A graceful stop in
   * progress then completes at once. Idempotent: every call returns the same
   * promise.
   */
  destroy(): Promise<void> {
    this.#destroying ??= this.#destroy();
    return this.#destroying;
  }

  async #destroy(): Promise<void> {
    const all = [...this.#listeners, ...this.#retired];
    await Promise.all([...all.map((l) => l.destroy()), ...this.#checkers.map((c) => c.destroy())]);
    for (const p of this.#pools.values()) p.close();
    await (this.admin?.destroy() ?? this.admin?.close());
    this.#phase = 'stopped';
  }
}

/** Whether `promise` settles within `ms` (the timer does not outlive the answer). */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}
