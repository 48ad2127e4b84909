/**
 * A backend server as the running balancer sees it: its address, weight,
 * health, the operator's admin state, and its connection counts.
 *
 * The counts are kept behind {@link ServerCounts}, so that where they live
 * (this thread's memory, or memory shared by worker threads) is decided in
 * one place; nothing outside src/pool.ts and this file changes them, and
 * they change only through a {@link ServerLease}.
 */
import { blendResponse } from './balance/least-time.js';
import type { Candidate } from './balance/picker.js';
import type { Endpoint, ServerModel } from './config/model.js';
import { HealthState } from './health/state.js';

/** The operator's wish for a server, kept apart from its health. */
export type AdminState = 'ready' | 'drain' | 'maint';

/** An open connection as the server sees it: something it can close. */
export interface ServerConnection {
  closeForServerDown(): void;
}

/** A server's connection counts; read at pick time, changed only through leases and failure reports. */
export interface ServerCounts {
  /** Connections assigned to the server and not yet closed (connecting included). */
  readonly active: number;
  /** Connections that reached the server. */
  readonly total: number;
  /** Failed connects (each attempt). */
  readonly connectFailures: number;
  addActive(delta: 1 | -1): void;
  addTotal(): void;
  addConnectFailure(): void;
  /** least_time's average response time in µs (0: none yet). */
  readonly responseUs: number;
  /** Replace the average by `next(previous)`, as one step even when threads race. */
  updateResponse(next: (previousUs: number) => number): void;
}

/** Counts in this thread's memory. */
export class LocalServerCounts implements ServerCounts {
  active = 0;
  total = 0;
  connectFailures = 0;

  addActive(delta: 1 | -1): void {
    this.active += delta;
  }

  addTotal(): void {
    this.total++;
  }

  addConnectFailure(): void {
    this.connectFailures++;
  }

  responseUs = 0;

  updateResponse(next: (previousUs: number) => number): void {
    this.responseUs = next(this.responseUs);
  }
}

export class Server implements Candidate {
  readonly name: string;
  readonly address: Endpoint;
  backup: boolean;
  /** The configured weight. */
  baseWeight: number;
  /** The weight pickers use: lower while slow start ramps up. */
  weight: number;
  /** Latest active probe's duration. */
  checkDurationMs = 0;
  admin: AdminState = 'ready';
  readonly health: HealthState;
  /** When slow start began (ms since epoch), or 0. */
  slowStartSince = 0;
  /** A reload removed this server: it takes no new connection; its open ones finish. */
  retired = false;
  /** Its place in shared memory (see src/shared/), or -1 when its counts are this thread's own. */
  readonly slot: number;
  readonly #counts: ServerCounts;
  /** Connections spliced to this server, for `on_server_down: close`. */
  readonly #connections = new Set<ServerConnection>();

  constructor(model: ServerModel, rise: number, fall: number, counts: ServerCounts = new LocalServerCounts(), slot = -1) {
    this.slot = slot;
    this.name = model.name;
    this.address = model.address;
    this.baseWeight = model.weight;
    this.weight = model.weight;
    this.backup = model.backup;
    this.health = new HealthState(rise, fall);
    this.#counts = counts;
  }

  /** A reload kept this server (same name and address): take the new weight, role and thresholds, keep all state. */
  reconfigure(model: ServerModel, rise: number, fall: number): void {
    this.baseWeight = model.weight;
    if (this.slowStartSince === 0) this.weight = model.weight;
    this.backup = model.backup;
    this.health.setThresholds(rise, fall);
  }

  /** Health says up (servers start up, as in HAProxy). */
  get up(): boolean {
    return this.health.up;
  }

  /** May take new connections. */
  get usable(): boolean {
    return this.health.up && this.admin === 'ready';
  }

  /** Connections assigned and not yet closed (connecting included); what least_conn compares. */
  get active(): number {
    return this.#counts.active;
  }

  /** Connections that reached the server. */
  get total(): number {
    return this.#counts.total;
  }

  /** Failed connects. */
  get connectFailures(): number {
    return this.#counts.connectFailures;
  }

  /** least_time's average response time in µs (of the pool's measure); 0: none yet. */
  get responseUs(): number {
    return this.#counts.responseUs;
  }

  /** One more response time sample (µs), blended into the average; `seedUs`: where a server with none starts. */
  recordResponse(sampleUs: number, seedUs: number): void {
    this.#counts.updateResponse((previous) => blendResponse(previous, sampleUs, seedUs));
  }

  /** Start the average over at `us` (a recovered server, at the pool's median). */
  resetResponse(us: number): void {
    this.#counts.updateResponse(() => Math.max(0, Math.round(us)));
  }

  /** Open connections spliced to this server, right now. */
  get connections(): ReadonlySet<ServerConnection> {
    return this.#connections;
  }

  /** Take a connection slot: counted as active until the lease is released. */
  lease(): ServerLease {
    return new ServerLease(this, this.#counts, this.#connections);
  }

  /** A connect to the server failed (counted for metrics). */
  countConnectFailure(): void {
    this.#counts.addConnectFailure();
  }
}

/**
 * One connection's claim on a server, from the pick to the close: active
 * from the start, counted as reaching the server once connected, and given
 * back exactly once.
 */
export class ServerLease {
  readonly server: Server;
  readonly #counts: ServerCounts;
  readonly #connections: Set<ServerConnection>;
  #connection: ServerConnection | undefined;
  #released = false;

  constructor(server: Server, counts: ServerCounts, connections: Set<ServerConnection>) {
    this.server = server;
    this.#counts = counts;
    this.#connections = connections;
    counts.addActive(1);
  }

  /** The connection reached the server; `on_server_down: close` may now close it. */
  connected(connection: ServerConnection): void {
    if (this.#released) return;
    this.#counts.addTotal();
    this.#connection = connection;
    this.#connections.add(connection);
  }

  /** Called once when the lease is released (the pool's stick table lets the client's entry go). */
  onRelease: (() => void) | undefined;

  /** The connection is over (or its connect failed). Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.onRelease?.();
    this.#counts.addActive(-1);
    if (this.#connection !== undefined) this.#connections.delete(this.#connection);
  }
}
