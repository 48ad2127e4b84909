/**
 * A plan: one configuration as every serving thread builds it. The model
 * itself, plus what only the main thread can decide: the shared-memory slot
 * of each server, listener and listener × server pair (kept across reloads
 * for what a reload keeps, so counters and open-connection counts carry
 * over), the port a `:0` listener got, and the secret files' contents (read
 * once, by the main thread, which keeps what it read as root).
 */
import type { ListenerModel, Model, PoolModel } from '../config/model.js';
import { sameSocket } from '../config/identity.js';
import type { SharedMemory } from '../shared/memory.js';

export interface Plan {
  readonly model: Model;
  /** Per pool name: its slot (the round-robin position all threads share). */
  readonly poolSlots: Readonly<Record<string, number>>;
  /** Per pool name: the slot of each server, in the model's order. */
  readonly serverSlots: Readonly<Record<string, readonly number[]>>;
  /** Per listener name: its slot. */
  readonly listenerSlots: Readonly<Record<string, number>>;
  /** Per listener name: [server slot, pair slot] for every server it can reach. */
  readonly pairSlots: Readonly<Record<string, ReadonlyArray<readonly [number, number]>>>;
  /** Per listener name: the port it is bound to (a `:0` bind resolved by the main thread); filled in once bound. */
  readonly ports: Record<string, number>;
  /** Per listener name: the buffer of its per-source table (made by the main thread); filled in once built. */
  readonly perSource: Record<string, SharedArrayBuffer>;
  /** Per pool name: the buffer of its stick table (made or kept by the main thread's pool); filled in once built. */
  readonly stick: Record<string, SharedArrayBuffer>;
  /** Contents of the secret files the model names (keys, certificates, CAs), by path; filled in by the main thread. */
  secrets: ReadonlyArray<readonly [string, Uint8Array]>;
}

/** A server's identity across reloads: the rule config/identity.ts states (same name, same address as written and resolved). */
function serverKey(pool: string, s: PoolModel['servers'][number]): string {
  return `${pool}\u0000${s.name}\u0000${s.address.text}\u0000${s.address.host}`;
}

/** Hands out slots (main thread only) and keeps them for what a reload keeps. */
export class Planner {
  readonly #memory: SharedMemory;
  readonly #servers = new Map<string, number>();
  readonly #pairs = new Map<string, number>();
  readonly #pools = new Map<string, number>();
  #listeners: Array<{ model: ListenerModel; slot: number }> = [];
  #nextServer = 0;
  #nextListener = 0;
  #nextPair = 0;

  constructor(memory: SharedMemory) {
    this.#memory = memory;
  }

  /**
   * The plan for `model`: slots reused for servers and listeners a reload
   * keeps, new ones for the rest (the shared memory grows to hold them).
   */
  plan(model: Model): Plan {
    const poolSlots: Record<string, number> = {};
    for (const pool of model.pools) {
      let slot = this.#pools.get(pool.name);
      if (slot === undefined) this.#pools.set(pool.name, (slot = this.#pools.size));
      poolSlots[pool.name] = slot;
    }
    const serverSlots: Record<string, number[]> = {};
    const slotOfServer = new Map<string, Map<string, number>>();
    for (const pool of model.pools) {
      const byName = new Map<string, number>();
      serverSlots[pool.name] = pool.servers.map((s) => {
        const key = serverKey(pool.name, s);
        let slot = this.#servers.get(key);
        if (slot === undefined) {
          slot = this.#nextServer++;
          this.#servers.set(key, slot);
        }
        byName.set(s.name, slot);
        return slot;
      });
      slotOfServer.set(pool.name, byName);
    }
    // Listeners: the one a reload keeps (same socket, see sameSocket) keeps its slot.
    const listenerSlots: Record<string, number> = {};
    const claimed = new Set<number>();
    const next: Array<{ model: ListenerModel; slot: number }> = [];
    for (const lm of model.listeners) {
      const same = this.#listeners.find((l) => !claimed.has(l.slot) && sameSocket(l.model, lm));
      const slot = same?.slot ?? this.#nextListener++;
      claimed.add(slot);
      listenerSlots[lm.name] = slot;
      next.push({ model: lm, slot });
    }
    this.#listeners = next;
    const pairSlots: Record<string, Array<[number, number]>> = {};
    for (const lm of model.listeners) {
      const pools = new Set([lm.pool, ...lm.routes.map((r) => r.pool)]);
      const pairs: Array<[number, number]> = [];
      for (const name of pools) {
        for (const serverSlot of slotOfServer.get(name)?.values() ?? []) {
          const key = `${listenerSlots[lm.name]}:${serverSlot}`;
          let slot = this.#pairs.get(key);
          if (slot === undefined) {
            slot = this.#nextPair++;
            this.#pairs.set(key, slot);
          }
          pairs.push([serverSlot, slot]);
        }
      }
      pairSlots[lm.name] = pairs;
    }
    this.#memory.ensure({ servers: this.#nextServer, listeners: this.#nextListener, pairs: this.#nextPair, pools: this.#pools.size });
    return { model, poolSlots, serverSlots, listenerSlots, pairSlots, ports: {}, perSource: {}, stick: {}, secrets: [] };
  }
}
