/**
 * What one serving thread runs: its pools and listeners, built from a plan,
 * and the way a reload changes them. The main thread has one (it serves
 * too) and each worker thread has one; the main thread's pools decide the
 * servers' state (health, admin, weights) and the others follow it through
 * shared memory (see pool.ts).
 *
 * A reload is two steps, so that every thread changes together or none
 * does: `prepare()` builds everything the new plan needs (certificates read,
 * new ports bound) without touching what serves, and returns a commit that
 * cannot fail, or rejects having changed nothing.
 */
import type { ListenerModel } from '../config/model.js';
import type { Logger } from '../log.js';
import type { FdBudget } from '../net/fd-budget.js';
import { Pool } from '../pool.js';
import { Listener } from '../proxy/listener.js';
import { PlannedPairSlots } from '../proxy/stats.js';
import type { SharedMemory } from '../shared/memory.js';
import { CancelKeyTable } from '../protocols/postgres/cancel-keys.js';
import type { Plan } from './plan.js';

/** What a reload changed, for the log line and the caller. */
export interface ReloadSummary {
  readonly listenersAdded: readonly string[];
  readonly listenersRemoved: readonly string[];
  readonly listenersKept: readonly string[];
  readonly poolsAdded: readonly string[];
  readonly poolsRemoved: readonly string[];
}

/** A reload ready to take effect: `commit()` cannot fail; `abort()` undoes what `prepare()` opened. */
export interface PreparedReload {
  /** The ports of the new configuration's listeners (new ones are bound already), by name. */
  readonly ports: Readonly<Record<string, number>>;
  /** The per-source tables of the new configuration's listeners, by name (for the other threads). */
  readonly perSource: Readonly<Record<string, SharedArrayBuffer>>;
  commit(): ReloadSummary;
  abort(): Promise<void>;
}

/** How often a worker thread checks the published server state when no connection asks (a server down closes its connections within this). */
const FOLLOW_EVERY_MS = 100;

export interface PlaneEnv {
  readonly memory: SharedMemory;
  readonly logger: Logger;
  readonly fds: FdBudget;
}

export class DataPlane {
  readonly #env: PlaneEnv;
  #plan: Plan;
  #pools: Map<string, Pool>;
  #listeners: Listener[];
  /** Listeners a reload removed: no longer accepting, their connections finishing. */
  readonly #retired = new Set<Listener>();
  #destroying: Promise<void> | undefined;
  /** A worker thread looks at the published server state this often, besides at every pick. */
  #followTimer: NodeJS.Timeout | undefined;

  constructor(plan: Plan, env: PlaneEnv) {
    this.#env = env;
    this.#plan = plan;
    this.#pools = this.#buildPools(plan, new Map());
    this.#listeners = this.#servedBy(plan).map((lm) => this.#listener(lm, plan, this.#pools));
    this.#trackPairs();
  }

  /** The main thread's plane decides the servers' state; the others follow it. */
  get owner(): boolean {
    return this.#env.memory.thread === 0;
  }

  get plan(): Plan {
    return this.#plan;
  }

  get pools(): ReadonlyMap<string, Pool> {
    return this.#pools;
  }

  /** The listeners of the running configuration (this thread's copies). */
  get listeners(): readonly Listener[] {
    return this.#listeners;
  }

  /** Open connections of every thread, on every listener, including those a reload removed. */
  get connections(): number {
    let n = 0;
    for (const l of this.#listeners) n += l.connections;
    for (const l of this.#retired) n += l.connections;
    return n;
  }

  /** Prepare the pools (TLS to servers), then bind every listener; on failure nothing stays open. */
  async start(): Promise<void> {
    try {
      for (const p of this.#pools.values()) p.start();
      await Promise.all(this.#listeners.map((l) => l.start()));
    } catch (err) {
      await Promise.all(this.#listeners.map((l) => l.destroy()));
      throw err;
    }
    if (!this.owner) this.#followTimer = setInterval(() => this.#follow(), FOLLOW_EVERY_MS);
  }

  /** Take the server state the main thread published (health flips close connections with on_server_down: close). */
  #follow(): void {
    for (const p of this.#pools.values()) p.sync();
  }

  /**
   * Reload, step one: everything that can fail (certificates, new binds).
   * Listeners whose socket is unchanged are kept (same slot in the plan) and
   * take the new settings at commit; pools and servers that still exist keep
   * their state.
   */
  async prepare(next: Plan, options: { keepCertificates?: boolean } = {}): Promise<PreparedReload> {
    const pools = this.#buildPools(next, this.#pools);
    const kept = new Map<Listener, ListenerModel>();
    const added: Listener[] = [];
    for (const lm of this.#servedBy(next)) {
      const slot = next.listenerSlots[lm.name];
      const same = this.#listeners.find((l) => l.slot === slot);
      if (same !== undefined) kept.set(same, lm);
      else added.push(this.#listener(lm, next, pools));
    }
    const removed = this.#listeners.filter((l) => !kept.has(l));
    const commits: Array<() => void> = [];
    const perSource: Record<string, SharedArrayBuffer> = {};
    const abort = async (): Promise<void> => {
      await Promise.all(added.map((l) => l.destroy()));
      for (const p of pools.values()) p.close();
    };
    try {
      for (const p of pools.values()) p.start();
      for (const [listener, lm] of kept) {
        const prepared = await listener.prepareUpdate(lm, pools, next.model.log.access, {
          pairSlots: new PlannedPairSlots(next.pairSlots[lm.name] ?? []),
          ...(options.keepCertificates === true ? { keepCertificates: true } : {}),
          ...(next.perSource[lm.name] !== undefined ? { perSourceBuffer: next.perSource[lm.name] } : {}),
        });
        commits.push(prepared.commit);
        if (prepared.perSourceBuffer !== undefined) perSource[lm.name] = prepared.perSourceBuffer;
      }
      for (const l of added) {
        await l.start();
        if (l.perSource !== null) perSource[l.model.name] = l.perSource.buffer;
      }
      // A forced stop came while this reload bound: it must not leave a listener behind.
      if (this.#destroying !== undefined) throw new Error('destroyed during a reload');
    } catch (err) {
      await abort();
      throw err;
    }
    return {
      abort,
      ports: portsOf([...kept.keys(), ...added]),
      perSource,
      commit: () => {
        const poolsAdded = next.model.pools.filter((p) => !this.#pools.has(p.name)).map((p) => p.name);
        const poolsRemoved = [...this.#pools.keys()].filter((name) => !pools.has(name));
        for (const p of pools.values()) p.activate();
        for (const commit of commits) commit();
        for (const l of removed) this.#retire(l);
        for (const [name, p] of this.#pools) {
          p.close();
          // A pool the reload removed: its servers are gone too (counters forgotten once their connections close).
          if (!pools.has(name)) p.retire();
        }
        this.#pools = pools;
        this.#listeners = [...kept.keys(), ...added];
        this.#plan = next;
        this.#trackPairs();
        return {
          listenersAdded: added.map((l) => l.model.name),
          listenersRemoved: removed.map((l) => l.model.name),
          listenersKept: [...kept.keys()].map((l) => l.model.name),
          poolsAdded,
          poolsRemoved,
        };
      },
    };
  }

  /** The ports this plane's listeners are bound to, by name (for the other threads to bind the same). */
  ports(): Record<string, number> {
    return portsOf(this.#listeners);
  }

  /** The per-source tables of this plane's listeners, by name (for the other threads to count in the same). */
  perSourceBuffers(): Record<string, SharedArrayBuffer> {
    const out: Record<string, SharedArrayBuffer> = {};
    for (const l of this.#listeners) if (l.perSource !== null) out[l.model.name] = l.perSource.buffer;
    return out;
  }

  /** A serving thread died: give back in every per-source table what it held, and forget its sessions' cancel keys. */
  async releaseThread(thread: number): Promise<void> {
    new CancelKeyTable(this.#env.memory.handles().cancelKeys, 0).releaseThread(thread);
    const tables = new Set([...this.#listeners, ...this.#retired].map((l) => l.perSource).filter((t) => t !== null));
    await Promise.all([...tables].map((t) => t.releaseWorker(thread)));
    for (const p of this.#pools.values()) p.stick?.releaseWorker(thread);
  }

  /**
   * Stop accepting; resolves once every open connection of this thread has
   * ended. The caller bounds the wait and then calls shutdown().
   */
  drain(): Promise<void> {
    return Promise.all([...this.#listeners, ...this.#retired].map((l) => l.close())).then(() => undefined);
  }

  /** End every open connection of this thread now. */
  shutdown(): void {
    for (const l of [...this.#listeners, ...this.#retired]) l.shutdown();
  }

  /** Close everything this thread opened, now. Idempotent. */
  destroy(): Promise<void> {
    this.#destroying ??= (async () => {
      clearInterval(this.#followTimer);
      this.#followTimer = undefined;
      await Promise.all([...this.#listeners, ...this.#retired].map((l) => l.destroy()));
      for (const p of this.#pools.values()) p.close();
    })();
    return this.#destroying;
  }

  /**
   * The listeners this thread serves: every one in the main thread; in the
   * others every one but those on a systemd socket (one inherited
   * descriptor: the main thread alone accepts on it, so no thread's exit
   * closes it under the others).
   */
  #servedBy(plan: Plan): readonly ListenerModel[] {
    return this.owner ? plan.model.listeners : plan.model.listeners.filter((l) => l.systemdSocket === null);
  }

  #listener(lm: ListenerModel, plan: Plan, pools: ReadonlyMap<string, Pool>): Listener {
    const port = plan.ports[lm.name];
    const perSourceBuffer = plan.perSource[lm.name];
    return new Listener(lm, pools, this.#env.logger, plan.model.log.access, {
      memory: this.#env.memory,
      slot: plan.listenerSlots[lm.name]!,
      pairSlots: new PlannedPairSlots(plan.pairSlots[lm.name] ?? []),
      fds: this.#env.fds,
      ...(port !== undefined ? { port } : {}),
      ...(perSourceBuffer !== undefined ? { perSourceBuffer } : {}),
    });
  }

  #buildPools(plan: Plan, previous: ReadonlyMap<string, Pool>): Map<string, Pool> {
    const memory = this.#env.memory;
    const pools = new Map<string, Pool>();
    for (const p of plan.model.pools) {
      const sharing = { memory, poolSlot: plan.poolSlots[p.name]!, slots: plan.serverSlots[p.name]!, owner: this.owner, stick: plan.stick[p.name] };
      const pool = new Pool(p, previous.get(p.name), sharing);
      // The main thread's pool made (or kept) the stick table: the other threads attach to it.
      if (pool.stick !== null) plan.stick[p.name] = pool.stick.buffer;
      pools.set(p.name, pool);
    }
    return pools;
  }

  /**
   * The main thread's listeners report every server they can reach (metrics
   * and status read them): their counts are every thread's, even of servers
   * only other threads' connections reached.
   */
  #trackPairs(): void {
    if (!this.owner) return;
    for (const l of this.#listeners) {
      for (const name of new Set([l.model.pool, ...l.model.routes.map((r) => r.pool)])) {
        for (const server of this.#pools.get(name)?.servers ?? []) l.stats.for(server);
      }
    }
  }

  /** A listener a reload removed: it stops accepting, and is destroyed once its last connection has ended. */
  #retire(listener: Listener): void {
    this.#retired.add(listener);
    void listener.close().then(() => {
      this.#retired.delete(listener);
      return listener.destroy();
    });
  }
}

/** Bound ports by listener name (not those on a systemd socket: the other threads do not serve them). */
function portsOf(listeners: readonly Listener[]): Record<string, number> {
  const ports: Record<string, number> = {};
  for (const l of listeners) if (l.model.systemdSocket === null) ports[l.model.name] = l.address().port;
  return ports;
}
