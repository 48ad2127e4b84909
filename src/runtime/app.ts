/**
 * The running load balancer. The main thread owns the configuration,
 * reloads, health probes and the admin server, and serves too: it is thread
 * 0 of `workers` serving threads; the others are worker threads (see
 * workers.ts). Every serving thread runs the same data plane (pools and
 * listeners, bound to the same ports with SO_REUSEPORT) built from one plan,
 * and what must be global (open-connection counts, server state, limits,
 * counters, ticket keys) lives in shared memory (src/shared/).
 *
 * Phases: created → running → stopping → draining → stopped. The constructor only
 * builds objects; `start()` binds every listener in every thread or none;
 * `close()` (graceful) first keeps accepting for `grace` while `/ready`
 * answers 503 (phase stopping; skipGrace() cuts it short), then stops
 * accepting, waits for open connections up to the drain timeout, then
 * closes what remains; `destroy()` (forced)
 * closes everything at once, whatever the phase. Both are idempotent.
 */
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { AdminServer } from '../admin/server.js';
import { diffModels, type ConfigDiff } from '../config/diff.js';
import { formatDuration } from '../config/duration.js';
import type { Model, ProxyProtocolVersion } from '../config/model.js';
import { redactModel } from '../config/model-json.js';
import { readSecretFile, secretFiles } from '../config/secret-file.js';
import { HealthChecker } from '../health/checker.js';
import type { Logger } from '../log.js';
import { processFds } from '../net/fd-budget.js';
import type { Pool } from '../pool.js';
import { encodeV1Local, encodeV2 } from '../proxy-protocol/index.js';
import type { Listener } from '../proxy/listener.js';
import { C_FDS_HELD, C_WORKER_RESTARTS, SharedMemory } from '../shared/memory.js';
import { DataPlane, type ReloadSummary } from './data-plane.js';
import { Planner, type Plan } from './plan.js';
import { Workers } from './workers.js';
import { withAddresses } from '../dns/servers.js';
import { DnsRefresh, type DnsFailureCounts } from './dns-refresh.js';
import { RuntimeChangeError, RuntimeChanges, type RuntimeStep } from './runtime-changes.js';

export type { ReloadSummary } from './data-plane.js';

/** What a reload changed: the listeners and pools it added and removed, and everything else it changed, compared as `check --diff` compares. */
export interface ReloadResult extends ReloadSummary {
  /** The running model against the new one (probe payloads redacted: they may hold a password). No client-move sample is taken. */
  readonly changes: ConfigDiff;
}

/** The reload comparison samples no client addresses (a million source_hash picks would stall the event loop). */
const NO_SAMPLE = { ipv4: 0, ipv6: 0 } as const;

/**
 * A graceful stop's steps after the drain (closing what remains, the admin
 * server's last answers) each get at most this long; what is still open
 * then is closed by force, so the exit comes within the drain timeout plus
 * a fraction of a second.
 */
const STOP_STEP_MS = 250;

/** Probes of a pool that sends PROXY headers carry one too, so strict backends accept them. */
function probeHeader(version: ProxyProtocolVersion): ((socket: net.Socket) => Buffer) | null {
  if (version === 'v2') {
    const local = encodeV2({ command: 'LOCAL' });
    return () => local;
  }
  if (version === 'v1') return (socket) => encodeV1Local(socket);
  return null;
}

/** `stopping`: the grace after a stop signal (still accepting, `/ready` 503); `draining`: no longer accepting. */
export type Phase = 'created' | 'running' | 'stopping' | 'draining' | 'stopped';

/** Slots the shared memory starts with beyond the first configuration's needs (reloads grow it further). */
const SPARE_SLOTS = 64;

export class App {
  #model: Model;
  readonly #memory: SharedMemory;
  readonly #planner: Planner;
  readonly #plane: DataPlane;
  readonly #workers: Workers;
  #checkers: HealthChecker[];
  /** The admin HTTP server (`admin:`), or null. Up from start() until the very end of stop(). */
  readonly admin: AdminServer | null;
  readonly #logger: Logger;
  #phase: Phase = 'created';
  #stopping: Promise<void> | undefined;
  /** Ends the grace now (set while it runs). */
  #endGrace: (() => void) | null = null;
  /** Set by destroy(): everything is closed; a start or reload in flight closes what it opened. */
  #destroying: Promise<void> | undefined;
  /** Reloads run one at a time. */
  #reloading: Promise<unknown> = Promise.resolve();
  /** Reload outcomes, for metrics and status. */
  readonly reloads = { succeeded: 0, failed: 0, lastSucceeded: true, lastAt: 0 };
  /** Pools a reload removed whose servers still have open connections (see removedPools). */
  #removedPools: Pool[] = [];
  /** Asks again for the servers' host names (main thread only); replaced by each reload from the file. */
  #dns: DnsRefresh | null = null;
  /** Failed lookups per pool and server since start, for l4lb_dns_failures_total. */
  readonly dnsFailures: DnsFailureCounts = new Map();
  /** Redacts probe payloads in reload comparisons: a key of this process only, so a MAC tells changed from unchanged and nothing else. */
  readonly #redactKey = randomBytes(32);
  /** Servers and denies changed through the admin API since the last reload from the file (they last until then). */
  readonly runtime: RuntimeChanges;

  constructor(model: Model, logger: Logger) {
    this.#model = model;
    this.#logger = logger;
    const servers = model.pools.reduce((n, p) => n + p.servers.length, 0);
    this.#memory = SharedMemory.create(model.workers, {
      servers: servers + SPARE_SLOTS,
      listeners: model.listeners.length + SPARE_SLOTS,
      pairs: servers * model.listeners.length + SPARE_SLOTS,
      pools: model.pools.length + SPARE_SLOTS,
    });
    this.#planner = new Planner(this.#memory);
    this.#plane = new DataPlane(this.#planner.plan(model), { memory: this.#memory, logger, fds: processFds });
    this.#workers = new Workers(this.#memory, logger, model.log.level, {
      threadGone: (thread) => this.#plane.releaseThread(thread),
      connectFailure: (pool, server, reason) => {
        const p = this.#plane.pools.get(pool);
        const s = p?.server(server);
        if (p !== undefined && s !== undefined) p.reportFailureElsewhere(s, reason);
      },
    });
    this.#checkers = this.#buildCheckers(this.#plane.pools);
    this.runtime = new RuntimeChanges(this, logger);
    this.admin = model.admin === null ? null : new AdminServer(this, model.admin, logger);
  }

  get model(): Model {
    return this.#model;
  }

  /** The pools (the main thread's: they decide the servers' state; counts are every thread's). */
  get pools(): ReadonlyMap<string, Pool> {
    return this.#plane.pools;
  }

  /** The listeners of the running configuration (the main thread's copies; counts are every thread's). */
  get listeners(): readonly Listener[] {
    return this.#plane.listeners;
  }

  /**
   * Pools reloads removed that still have open connections (every
   * thread's), for `/status`; one is forgotten once its last connection
   * has closed.
   */
  get removedPools(): readonly Pool[] {
    if (this.#removedPools.length === 0) return this.#removedPools;
    // A server added back (in a pool of the same name) counts its connections in its old slot: they are its own now.
    const live = new Set([...this.#plane.pools.values()].flatMap((p) => p.servers.map((s) => s.slot)).filter((slot) => slot >= 0));
    const open = (p: Pool): boolean => [...p.servers, ...p.removedServers()].some((s) => s.active > 0 && !live.has(s.slot));
    if (!this.#removedPools.every(open)) this.#removedPools = this.#removedPools.filter(open);
    return this.#removedPools;
  }

  get checkers(): readonly HealthChecker[] {
    return this.#checkers;
  }

  get phase(): Phase {
    return this.#phase;
  }

  /** Threads serving traffic (the main thread and the worker threads). */
  get threads(): number {
    return this.#memory.threads;
  }

  /** The worker thread serving as thread `index` (1 and up), if it is running: for tests and diagnostics. */
  workerThread(index: number): import('node:worker_threads').Worker | undefined {
    return this.#workers.thread(index);
  }

  /** Worker threads that died and were replaced since start. */
  get workerRestarts(): number {
    return Atomics.load(this.#memory.control, C_WORKER_RESTARTS);
  }

  /** Open connections of every thread, on every listener, including those a reload removed. */
  get connections(): number {
    return this.#plane.connections;
  }

  #buildCheckers(pools: ReadonlyMap<string, Pool>): HealthChecker[] {
    return [...pools.values()].map((p) => new HealthChecker(p, this.#logger, { proxyHeader: probeHeader(p.model.proxyProtocol) }));
  }

  /** Bind every listener in every thread; if one fails, close everything already bound and reject. */
  async start(): Promise<void> {
    if (this.#phase !== 'created') throw new Error(`App.start() in phase ${this.#phase}`);
    // Descriptors are the process's: every thread counts in the one shared cell.
    processFds.share(this.#memory.control, C_FDS_HELD, true);
    const results = await Promise.allSettled([this.#startServing(), this.admin?.start()]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed || this.#destroying !== undefined) {
      await Promise.all([this.#workers.destroy(), this.#plane.destroy(), this.admin?.close()]);
      this.#phase = 'stopped';
      throw failed ? failed.reason : new Error('App destroyed during start()');
    }
    for (const c of this.#checkers) c.start();
    this.#phase = 'running';
    this.#restartDns();
  }

  /** A new lookup loop for the running model's host names (the old one stops). */
  #restartDns(): void {
    this.#dns?.close();
    this.#dns = new DnsRefresh(this.#model, this.#logger, (pool, server, addresses) => this.#dnsChange(pool, server, addresses), this.dnsFailures);
    this.#dns.start();
  }

  /**
   * A server's host name answers other addresses: its pool's servers are
   * rebuilt and applied as a reload applies them (new addresses join as new
   * servers, vanished ones leave as removed servers do, with their open
   * connections), in every thread; no file or certificate is read. Logged as
   * `dns change`, not as a configuration reload.
   */
  #dnsChange(pool: string, server: string, addresses: readonly string[]): Promise<boolean> {
    const run = this.#reloading.then(async () => {
      const before = this.#model.pools.find((p) => p.name === pool)?.hostnames?.find((h) => h.name === server);
      const next = withAddresses(this.#model, pool, server, addresses);
      if (before === undefined || next === null) return false;
      await this.#reload(next, true);
      this.#logger.info(
        {
          pool,
          server,
          host: before.host,
          addresses,
          added: addresses.filter((a) => !before.addresses.includes(a)),
          removed: before.addresses.filter((a) => !addresses.includes(a)),
        },
        'dns change',
      );
      return true;
    });
    this.#reloading = run.catch(() => undefined);
    return run;
  }

  /** The main thread binds first (a `:0` port is then known), then the worker threads bind the same ports. */
  async #startServing(): Promise<void> {
    await this.#plane.start();
    const plan = this.#plane.plan;
    Object.assign(plan.ports, this.#plane.ports());
    Object.assign(plan.perSource, this.#plane.perSourceBuffers());
    if (this.#workers.count === 0) return;
    plan.secrets = await this.#secrets(plan.model);
    await this.#workers.start(plan);
  }

  /** The secret files' contents for the worker threads, read by the main thread (it keeps what it read as root). */
  async #secrets(model: Model): Promise<Array<[string, Uint8Array]>> {
    const files = [...new Set(secretFiles(model).map((f) => f.file))];
    return Promise.all(files.map(async (file): Promise<[string, Uint8Array]> => [file, await readSecretFile(file)]));
  }

  /**
   * Apply a new, already validated model; only the difference changes, in
   * every thread at once. Everything that can fail (certificates, binding
   * new ports) happens first in every thread; if any of it fails, every
   * thread keeps the running configuration exactly as it was and this
   * rejects. Then, without a gap: listeners whose bind is unchanged keep
   * their socket (no refused connection) and take the new settings for new
   * connections; new listeners accept; removed ones stop accepting while
   * their connections finish; pools and servers that still exist keep their
   * health, admin state, counters and connections; removed servers take no
   * new connections and their open ones continue. `workers` takes effect at
   * the next restart.
   */
  reload(next: Model): Promise<ReloadResult> {
    const run = this.#reloading.then(async () => {
      const result = await this.#reload(next);
      // The file is the truth again: runtime changes last until a reload (a failed one keeps them).
      this.runtime.reset();
      return result;
    });
    this.#reloading = run.catch(() => undefined);
    return run;
  }

  /**
   * A runtime change (runtime-changes.ts): `build` makes the next model from
   * the running one, in the reload queue, and it is applied as a DNS change
   * is (every thread; no file or certificate read; DNS changes later keep
   * it, as they rebuild the running model). `build` throwing changes nothing.
   */
  applyRuntime(build: (running: Model) => RuntimeStep): Promise<void> {
    const run = this.#reloading.then(async () => {
      if (this.#phase !== 'running' || this.#destroying !== undefined) {
        throw new RuntimeChangeError('unavailable', `l4lb is ${this.#destroying !== undefined ? 'stopped' : this.#phase}: no runtime changes`);
      }
      const step = build(this.#model);
      if (step.model !== null) await this.#reload(step.model, true);
      step.commit();
    });
    this.#reloading = run.catch(() => undefined);
    return run;
  }

  async #reload(next: Model, fromDns = false): Promise<ReloadResult> {
    if (this.#phase !== 'running' || this.#destroying !== undefined) throw new Error(`cannot reload while ${this.#destroying ? 'destroyed' : this.#phase}`);
    const changes = diffModels(redactModel(this.#model, this.#redactKey), redactModel(next, this.#redactKey), NO_SAMPLE);
    const plan = this.#planner.plan(next);
    const prepared = await this.#plane.prepare(plan, { keepCertificates: fromDns });
    try {
      // The main thread bound new listeners first: the workers bind the same ports.
      Object.assign(plan.ports, prepared.ports);
      Object.assign(plan.perSource, prepared.perSource);
      if (this.#workers.count > 0) {
        // A DNS change reads no file: the worker threads get the contents read before.
        plan.secrets = fromDns ? this.#plane.plan.secrets : await this.#secrets(next);
        await this.#workers.prepare(plan);
      }
      if (this.#destroying !== undefined) throw new Error('App destroyed during reload()');
    } catch (err) {
      await prepared.abort();
      throw err;
    }
    // Step two: swap, in this thread and then in every worker thread; nothing here can fail.
    const before = this.#plane.pools;
    const summary = prepared.commit();
    for (const name of summary.poolsRemoved) {
      const removed = before.get(name);
      if (removed !== undefined) this.#removedPools.push(removed);
    }
    for (const c of this.#checkers) void c.close();
    this.#checkers = this.#buildCheckers(this.#plane.pools);
    for (const c of this.#checkers) c.start();
    await this.#workers.commit(plan);
    if (JSON.stringify(next.admin) !== JSON.stringify(this.#model.admin)) {
      this.#logger.warn('admin settings changed: they take effect at the next restart');
    }
    if (next.workers !== this.#model.workers) {
      this.#logger.warn({ workers: this.#memory.threads, configured: next.workers }, 'workers changed: it takes effect at the next restart');
    }
    this.#logger.level = next.log.level;
    this.#workers.level = next.log.level;
    this.#model = next;
    if (!fromDns) this.#restartDns();
    return { ...summary, changes };
  }

  /**
   * Graceful stop: no new connections from now on; open ones may finish
   * within `drainMs`, then they are closed with termination `shutdown`.
   * Idempotent: every call returns the same promise.
   */
  close(drainMs: number): Promise<void> {
    this.#stopping ??= this.#graceThenDrain(drainMs);
    return this.#stopping;
  }

  /**
   * A second stop signal during the grace: the drain starts now. False when
   * no grace is under way (the caller then decides, e.g. a forced stop).
   */
  skipGrace(): boolean {
    const end = this.#endGrace;
    if (end === null) return false;
    end();
    return true;
  }

  /**
   * The grace (HAProxy's `grace`): listeners keep accepting while `/ready`
   * answers 503, so a VRRP or BGP health check moves the address away
   * before connections would be refused. Then the drain.
   */
  async #graceThenDrain(drainMs: number): Promise<void> {
    const graceMs = this.#model.grace;
    if (this.#phase === 'running' && graceMs > 0 && this.#destroying === undefined) {
      this.#phase = 'stopping';
      this.#logger.info({ grace_ms: graceMs }, `shutdown: grace ${formatDuration(graceMs)}, /ready 503`);
      const started = performance.now();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => this.#endGrace?.(), graceMs);
        this.#endGrace = () => {
          this.#endGrace = null;
          clearTimeout(timer);
          resolve();
        };
      });
      this.#logger.info({ grace_ms: graceMs, waited_ms: Math.round(performance.now() - started) }, 'grace over');
      if (this.#destroying !== undefined) return this.#destroying;
    }
    return this.#drain(drainMs);
  }

  /** The same as close(drainMs). */
  stop(drainMs: number): Promise<void> {
    return this.close(drainMs);
  }

  async #drain(drainMs: number): Promise<void> {
    this.#phase = 'draining';
    this.#dns?.close();
    this.runtime.close();
    // A reload in progress finishes first, so nothing it opens is left behind.
    await this.#reloading;
    const drained = Promise.all([this.#plane.drain(), this.#workers.drain()]);
    this.#logger.info({ connections: this.connections, drain_timeout_ms: drainMs }, 'draining');
    if (!(await settlesWithin(drained, drainMs))) {
      this.#logger.info({ connections: this.connections }, 'drain timeout reached, closing open connections');
      this.#plane.shutdown();
      this.#workers.shutdown();
      await settlesWithin(drained, STOP_STEP_MS);
    }
    // Every step from here is bounded: the exit must not wait for a worker thread, a probe or a slow admin client.
    await settlesWithin(Promise.all([this.#plane.destroy(), this.#workers.destroy(), ...this.#checkers.map((c) => c.close())]), STOP_STEP_MS);
    // Last: /healthz answered "draining" all along. Answers in flight may finish; a client still sending a body does not hold the stop.
    const admin = this.admin;
    if (admin !== null && !(await settlesWithin(admin.close(), STOP_STEP_MS))) await settlesWithin(admin.destroy(), STOP_STEP_MS);
    this.#phase = 'stopped';
  }

  /**
   * Forced stop: stop accepting and end every open session now (termination
   * `shutdown`) in every thread, on current listeners and on those a reload
   * retired; stop health probes and pool timers; close the admin server. A
   * graceful stop in progress then completes at once. Idempotent: every call
   * returns the same promise.
   */
  destroy(): Promise<void> {
    this.#destroying ??= this.#destroy();
    return this.#destroying;
  }

  async #destroy(): Promise<void> {
    this.#dns?.close();
    this.runtime.close();
    this.#endGrace?.();
    await Promise.all([this.#plane.destroy(), this.#workers.destroy(), ...this.#checkers.map((c) => c.destroy())]);
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

export type { Plan };
