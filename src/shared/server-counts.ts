/**
 * A server's counts and state in shared memory (see memory.ts): the open
 * connections and response time averages every thread compares at pick time
 * (least_conn, random_two, least_time),
 * each thread's counters, and the health, admin state and weight that the
 * main thread decides and every thread picks by.
 */
import type { ServerCounts } from '../server.js';
import {
  ADMIN_MASK,
  ADMIN_SHIFT,
  C_GENERATION,
  FLAG_BACKUP,
  FLAG_RETIRED,
  FLAG_UP,
  R_CONNECT_FAILURES,
  R_TOTAL,
  SERVER_ROW,
  SERVER_STATE,
  S_ACTIVE,
  S_FLAGS,
  S_RESPONSE_US,
  S_WEIGHT,
  type SharedMemory,
} from './memory.js';

export class SharedServerCounts implements ServerCounts {
  readonly #memory: SharedMemory;
  readonly #state: number;
  readonly #share: number;
  /** This thread's row. */
  readonly #row: number;
  /** Thread 0's row and the distance between threads' rows, for sums. */
  readonly #rows: number;

  constructor(memory: SharedMemory, slot: number) {
    this.#memory = memory;
    this.#state = slot * SERVER_STATE;
    this.#share = slot * memory.threads + memory.thread;
    this.#rows = slot * memory.threads * SERVER_ROW;
    this.#row = this.#rows + memory.thread * SERVER_ROW;
  }

  get active(): number {
    return Atomics.load(this.#memory.serverState, this.#state + S_ACTIVE);
  }

  get total(): number {
    return this.#memory.sumRows(this.#memory.serverRows, this.#rows + R_TOTAL, SERVER_ROW);
  }

  get connectFailures(): number {
    return this.#memory.sumRows(this.#memory.serverRows, this.#rows + R_CONNECT_FAILURES, SERVER_ROW);
  }

  addActive(delta: 1 | -1): void {
    Atomics.add(this.#memory.serverState, this.#state + S_ACTIVE, delta);
    // Only this thread writes its share: no atomics needed.
    this.#memory.serverShare[this.#share]! += delta;
  }

  addTotal(): void {
    this.#memory.serverRows[this.#row + R_TOTAL]! += 1;
  }

  addConnectFailure(): void {
    this.#memory.serverRows[this.#row + R_CONNECT_FAILURES]! += 1;
  }

  get responseUs(): number {
    return Atomics.load(this.#memory.serverState, this.#state + S_RESPONSE_US);
  }

  updateResponse(next: (previousUs: number) => number): void {
    const state = this.#memory.serverState;
    const at = this.#state + S_RESPONSE_US;
    // Compare-and-swap, so two threads' samples both count; bounded: under a
    // storm of writers a lost sample costs nothing (the next one comes soon).
    for (let i = 0; i < 8; i++) {
      const previous = Atomics.load(state, at);
      if (Atomics.compareExchange(state, at, previous, next(previous)) === previous) return;
    }
  }
}

/** What every thread picks by, as the main thread decided it. */
export interface ServerPickState {
  readonly up: boolean;
  readonly backup: boolean;
  readonly retired: boolean;
  readonly admin: 'ready' | 'drain' | 'maint';
  /** The weight pickers use now (lower during slow start). */
  readonly weight: number;
}

const ADMIN_STATES = ['ready', 'drain', 'maint'] as const;

/** The main thread writes a server's pick state (then bumps the generation, see publishDone). */
export function publishServerState(memory: SharedMemory, slot: number, s: ServerPickState): void {
  const flags =
    (s.up ? FLAG_UP : 0) | (s.backup ? FLAG_BACKUP : 0) | (s.retired ? FLAG_RETIRED : 0) | (ADMIN_STATES.indexOf(s.admin) << ADMIN_SHIFT);
  Atomics.store(memory.serverState, slot * SERVER_STATE + S_FLAGS, flags);
  Atomics.store(memory.serverState, slot * SERVER_STATE + S_WEIGHT, Math.round(s.weight * 1000));
}

/** Tell every thread to re-read the pick state (their pools compare the generation at each pick). */
export function publishDone(memory: SharedMemory): void {
  Atomics.add(memory.control, C_GENERATION, 1);
}

/** The generation of the pick state: changes whenever the main thread publishes. */
export function stateGeneration(memory: SharedMemory): number {
  return Atomics.load(memory.control, C_GENERATION);
}

export function readServerState(memory: SharedMemory, slot: number): ServerPickState {
  const flags = Atomics.load(memory.serverState, slot * SERVER_STATE + S_FLAGS);
  return {
    up: (flags & FLAG_UP) !== 0,
    backup: (flags & FLAG_BACKUP) !== 0,
    retired: (flags & FLAG_RETIRED) !== 0,
    admin: ADMIN_STATES[(flags & ADMIN_MASK) >> ADMIN_SHIFT] ?? 'ready',
    weight: Atomics.load(memory.serverState, slot * SERVER_STATE + S_WEIGHT) / 1000,
  };
}
