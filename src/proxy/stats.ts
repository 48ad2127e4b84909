/**
 * Per-listener counters, updated at connect, at close and, for the bytes of
 * open connections, by the listener's idle sweep (about once a second, never
 * per chunk), and read by the metrics and status endpoints at scrape time. They
 * live in shared memory (src/shared/memory.ts): each serving thread adds to
 * its own row, and what is read is the sum over every thread, so one
 * /metrics shows one instance whatever the number of workers.
 */
import { LOCAL_RESOURCE_CODES } from '../errors.js';
import type { Server } from '../pool.js';
import {
  LISTENER_ROW,
  L_ACCEPTED,
  L_LOCAL_ERRORS,
  L_REJECTIONS,
  L_TERMINATIONS,
  L_TLS_FAILURES,
  PAIR_ROW,
  P_ACTIVE,
  P_BYTES_IN,
  P_BYTES_OUT,
  P_TOTAL,
  SharedMemory,
} from '../shared/memory.js';
import { TERMINATIONS, type Termination } from './termination.js';

/**
 * Why a connection was closed before reaching a server: the `reason` label of
 * l4lb_rejected_connections_total, every one exported (at 0 too), so
 * dashboards and alerts see the series before the first rejection.
 */
export const REJECT_REASONS = ['acl', 'limit', 'proxy_header', 'tls', 'tls_required', 'no_server', 'local'] as const;

export type RejectReason = (typeof REJECT_REASONS)[number];

/** The reject reason a termination counts under, if it is a rejection. */
export const REJECT_REASON_OF: Partial<Readonly<Record<Termination, RejectReason>>> = {
  rejected_acl: 'acl',
  rejected_limit: 'limit',
  proxy_header_error: 'proxy_header',
  tls_error: 'tls',
  tls_required: 'tls_required',
  no_server: 'no_server',
  local_error: 'local',
};

const TERMINATION_INDEX = new Map<Termination, number>(TERMINATIONS.map((t, i) => [t, i]));
const REJECT_INDEX = new Map<RejectReason, number>(REJECT_REASONS.map((r, i) => [r, i]));
const LOCAL_CODES = [...LOCAL_RESOURCE_CODES];
const LOCAL_INDEX = new Map<string, number>(LOCAL_CODES.map((c, i) => [c, i]));

/** One listener's counters for one server. */
export interface ServerCounters {
  /** Connections from this listener that reached the server. */
  readonly total: number;
  /** Open now. */
  readonly active: number;
  /** Client → server bytes, of open connections too (as of the last sweep, about a second old). */
  readonly bytesIn: number;
  /** Server → client bytes, of open connections too (as of the last sweep). */
  readonly bytesOut: number;
}

/** The counters of a listener × server pair, written by one connection at a time (of this thread). */
export class PairCounters implements ServerCounters {
  readonly #memory: SharedMemory;
  /** Thread 0's row of this pair. */
  readonly #rows: number;
  readonly #row: number;

  constructor(memory: SharedMemory, slot: number) {
    this.#memory = memory;
    this.#rows = slot * memory.threads * PAIR_ROW;
    this.#row = this.#rows + memory.thread * PAIR_ROW;
  }

  /** A connection reached the server. */
  connected(): void {
    const rows = this.#memory.pairRows;
    rows[this.#row + P_TOTAL]! += 1;
    rows[this.#row + P_ACTIVE]! += 1;
  }

  /**
   * A connection moved these bytes since it last said so: while it is open
   * (the listener's sweep) and once more at close, so that what it adds over
   * its life is exactly its bytes.
   */
  moved(bytesIn: number, bytesOut: number): void {
    const rows = this.#memory.pairRows;
    rows[this.#row + P_BYTES_IN]! += bytesIn;
    rows[this.#row + P_BYTES_OUT]! += bytesOut;
  }

  /** A connection that reached the server closed (its last bytes given to moved() first). */
  closed(): void {
    this.#memory.pairRows[this.#row + P_ACTIVE]! -= 1;
  }

  get total(): number {
    return this.#sum(P_TOTAL);
  }

  get active(): number {
    return this.#sum(P_ACTIVE);
  }

  get bytesIn(): number {
    return this.#sum(P_BYTES_IN);
  }

  get bytesOut(): number {
    return this.#sum(P_BYTES_OUT);
  }

  #sum(field: number): number {
    return this.#memory.sumRows(this.#memory.pairRows, this.#rows + field, PAIR_ROW);
  }
}

/** Where a listener × server pair's counters are: a slot the main thread hands out. */
export interface PairSlots {
  /** The pair slot of this listener with `server`. */
  slotFor(server: Server): number;
}

/** Pair slots of a listener that is alone in its memory (a listener built on its own, as in unit tests). */
class OwnPairSlots implements PairSlots {
  readonly #memory: SharedMemory;
  readonly #slots = new Map<Server, number>();

  constructor(memory: SharedMemory) {
    this.#memory = memory;
  }

  slotFor(server: Server): number {
    let slot = this.#slots.get(server);
    if (slot === undefined) {
      slot = this.#slots.size;
      this.#memory.ensure({ servers: 0, listeners: 1, pairs: slot + 1, pools: 0 });
      this.#slots.set(server, slot);
    }
    return slot;
  }
}

export class ListenerStats {
  readonly #memory: SharedMemory;
  #pairSlots: PairSlots;
  readonly #servers = new Map<Server, PairCounters>();
  /** Thread 0's row of this listener, and this thread's. */
  readonly #rows: number;
  readonly #row: number;

  /**
   * @param memory the shared counters (default: memory of its own, for a listener on its own)
   * @param slot this listener's slot in it
   */
  constructor(memory?: SharedMemory, slot = 0, pairSlots?: PairSlots) {
    this.#memory = memory ?? SharedMemory.create(1, { servers: 0, listeners: 1, pairs: 0, pools: 0 });
    this.#pairSlots = pairSlots ?? new OwnPairSlots(this.#memory);
    this.#rows = slot * this.#memory.threads * LISTENER_ROW;
    this.#row = this.#rows + this.#memory.thread * LISTENER_ROW;
  }

  /** A reload changed which servers the listener reaches: their slots from now on (counters already made are kept). */
  usePairSlots(pairSlots: PairSlots): void {
    // A connection begun before the reload may still reach a server the reload removed.
    if (pairSlots instanceof PlannedPairSlots && this.#pairSlots instanceof PlannedPairSlots) pairSlots.keep(this.#pairSlots);
    this.#pairSlots = pairSlots;
  }

  for(server: Server): PairCounters {
    let c = this.#servers.get(server);
    if (c === undefined) {
      c = new PairCounters(this.#memory, this.#pairSlots.slotFor(server));
      this.#servers.set(server, c);
    }
    return c;
  }

  servers(): IterableIterator<[Server, PairCounters]> {
    return this.#servers.entries();
  }

  /** Forget servers a reload removed once none of their connections is open (the map would grow with every reload). */
  forgetRetired(): void {
    for (const [server, c] of this.#servers) if (server.retired && c.active === 0) this.#servers.delete(server);
  }

  /** A connection was accepted. */
  accept(): void {
    this.#memory.listenerRows[this.#row + L_ACCEPTED]! += 1;
  }

  /** Connections accepted. */
  get accepted(): number {
    return this.#sum(L_ACCEPTED);
  }

  /** Connections accepted by each serving thread (index 0: the main thread). */
  acceptedByThread(): number[] {
    return Array.from({ length: this.#memory.threads }, (_, t) => this.#memory.listenerRows[this.#rows + t * LISTENER_ROW + L_ACCEPTED]!);
  }

  /** Failed TLS handshakes with clients. */
  get tlsHandshakeFailures(): number {
    return this.#sum(L_TLS_FAILURES);
  }

  /** Closed before reaching a server, by reason (only reasons seen). */
  get rejected(): ReadonlyMap<RejectReason, number> {
    return this.#counts(REJECT_REASONS, L_REJECTIONS);
  }

  /** Every finished connection, by termination (only terminations seen). */
  get terminations(): ReadonlyMap<Termination, number> {
    return this.#counts(TERMINATIONS, L_TERMINATIONS);
  }

  /** The balancer's own shortages (EMFILE, EADDRNOTAVAIL...), by errno code (only codes seen). */
  get localErrors(): ReadonlyMap<string, number> {
    return this.#counts(LOCAL_CODES, L_LOCAL_ERRORS);
  }

  localError(code: string): void {
    const i = LOCAL_INDEX.get(code);
    if (i !== undefined) this.#memory.listenerRows[this.#row + L_LOCAL_ERRORS + i]! += 1;
  }

  /** Count a finished connection: its termination, and its rejection reason if it was one. */
  terminated(t: Termination): void {
    const rows = this.#memory.listenerRows;
    rows[this.#row + L_TERMINATIONS + TERMINATION_INDEX.get(t)!]! += 1;
    // tls_error is always a client's failed handshake (TLS to servers fails as connect_failed).
    if (t === 'tls_error') rows[this.#row + L_TLS_FAILURES]! += 1;
    const reason = REJECT_REASON_OF[t];
    if (reason !== undefined) rows[this.#row + L_REJECTIONS + REJECT_INDEX.get(reason)!]! += 1;
  }

  #sum(field: number): number {
    return this.#memory.sumRows(this.#memory.listenerRows, this.#rows + field, LISTENER_ROW);
  }

  #counts<K extends string>(keys: readonly K[], base: number): Map<K, number> {
    const out = new Map<K, number>();
    keys.forEach((k, i) => {
      const n = this.#sum(base + i);
      if (n > 0) out.set(k, n);
    });
    return out;
  }
}

/** Pair slots as a plan lists them: [server slot, pair slot] for every server a listener can reach. */
export class PlannedPairSlots implements PairSlots {
  readonly #slots: Map<number, number>;

  constructor(pairs: ReadonlyArray<readonly [number, number]>) {
    this.#slots = new Map(pairs);
  }

  slotFor(server: Server): number {
    const slot = this.#slots.get(server.slot);
    if (slot === undefined) throw new Error(`no counters planned for server ${server.name} (slot ${server.slot}) on this listener`);
    return slot;
  }

  /** Keep the slots of `previous` this plan no longer lists (servers a reload removed, their connections still open). */
  keep(previous: PlannedPairSlots): void {
    for (const [server, slot] of previous.#slots) if (!this.#slots.has(server)) this.#slots.set(server, slot);
  }
}
