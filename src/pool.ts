/**
 * A pool: its servers, their state and connection counts, and the pickers
 * built from the servers usable right now. Server state lives here (one place
 * a later multi-process design can broadcast from); whenever the usable set
 * or a weight changes the pickers are rebuilt and swapped, so picking only reads.
 */
import type { Candidate, Picker } from './balance/picker.js';
import { createPicker } from './balance/index.js';
import type { Endpoint, PoolModel, ServerModel } from './config/model.js';
import { HealthState } from './health/state.js';
import type tls from 'node:tls';
import { backendTlsOptions } from './tls/backend.js';

/** The operator's wish for a server, kept apart from its health. */
export type AdminState = 'ready' | 'drain' | 'maint';

/** An open connection as the pool sees it: something it can close. */
export interface ServerConnection {
  closeForServerDown(): void;
}

/** Slow start begins at this share of the configured weight. */
const SLOW_START_FLOOR = 0.1;
/** Weight steps per slow-start window: smooth enough, few picker rebuilds. */
const SLOW_START_STEPS = 20;

export class Server implements Candidate {
  readonly name: string;
  readonly address: Endpoint;
  backup: boolean;
  /** The configured weight. */
  baseWeight: number;
  /** The weight pickers use: lower while slow start ramps up. */
  weight: number;
  /** Connections assigned to this server and not yet closed (connecting included). */
  active = 0;
  /** Connections that reached this server. */
  total = 0;
  /** Failed connects, for metrics. */
  connectFailures = 0;
  /** Latest active probe's duration. */
  checkDurationMs = 0;
  admin: AdminState = 'ready';
  readonly health: HealthState;
  /** Connections spliced to this server, for `on_server_down: close`. */
  readonly connections = new Set<ServerConnection>();
  /** When slow start began (ms since epoch), or 0. */
  slowStartSince = 0;
  /** A reload removed this server: it takes no new connection; its open ones finish. */
  retired = false;

  constructor(model: ServerModel, rise: number, fall: number) {
    this.name = model.name;
    this.address = model.address;
    this.baseWeight = model.weight;
    this.weight = model.weight;
    this.backup = model.backup;
    this.health = new HealthState(rise, fall);
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
}

/** Listens for connect failures so a health checker can act on them. */
export type ConnectFailureListener = (server: Server, reason: string) => void;

export class Pool {
  readonly model: PoolModel;
  readonly name: string;
  readonly servers: readonly Server[];
  #primary: Picker<Server>;
  #backup: Picker<Server>;
  #onConnectFailure: ConnectFailureListener | undefined;
  #slowStartTimer: NodeJS.Timeout | undefined;
  /** Servers taken from the previous pool, with their new settings (see activate()). */
  readonly #carriedOver: Array<[Server, ServerModel]> = [];
  /** Servers of the previous pool that this one does not keep (marked retired by activate()). */
  readonly #dropped: Server[] = [];
  /** TLS to the servers: options built once, when the configuration loaded (see tls/backend.ts), or null for plain TCP. */
  readonly tlsOptions: tls.ConnectionOptions | null;

  /**
   * @param previous the pool of the same name before a reload: servers with
   *   the same name and address are carried over with their health, admin
   *   state, counters and open connections.
   */
  constructor(model: PoolModel, previous?: Pool) {
    this.model = model;
    this.name = model.name;
    this.tlsOptions = model.tls !== null ? backendTlsOptions(model.tls, `pool ${model.name}: tls`) : null;
    const { rise, fall } = model.health;
    this.servers = model.servers.map((s) => {
      const kept = previous?.server(s.name);
      if (kept !== undefined && kept.address.text === s.address.text && kept.address.host === s.address.host) {
        // Applied by activate(): until the reload commits, the old pool still serves with these servers.
        this.#carriedOver.push([kept, s]);
        return kept;
      }
      return new Server(s, rise, fall);
    });
    if (previous !== undefined) for (const s of previous.servers) if (!this.servers.includes(s)) this.#dropped.push(s);
    this.#primary = this.#build(false);
    this.#backup = this.#build(true);
  }

  /**
   * A reload commits: carried-over servers take their new weight, role and
   * health thresholds, and a server mid-ramp keeps ramping (or gets its full
   * weight if slow start is now off). Pools built at start need no call.
   */
  activate(): void {
    const { rise, fall } = this.model.health;
    for (const [server, model] of this.#carriedOver) server.reconfigure(model, rise, fall);
    this.#carriedOver.length = 0;
    for (const server of this.#dropped) server.retired = true;
    this.#dropped.length = 0;
    for (const server of this.servers) {
      if (server.slowStartSince === 0) continue;
      if (this.#slowStartApplies()) {
        this.#ensureSlowStartTimer();
      } else {
        server.slowStartSince = 0;
        server.weight = server.baseWeight;
      }
    }
    this.rebuild();
  }

  /**
   * Choose a server for a new connection, skipping `exclude` (servers already
   * tried). Backups are used only when no primary can be picked.
   */
  pick(key: string, exclude?: ReadonlySet<Server>): Server | undefined {
    return this.#primary.pick(key, exclude) ?? this.#backup.pick(key, exclude);
  }

  /** Rebuild the pickers; call whenever a server's usability or weight changes. */
  rebuild(): void {
    this.#primary = this.#build(false);
    this.#backup = this.#build(true);
  }

  /** Health flipped (called by the health checker). */
  setHealth(server: Server, up: boolean): void {
    if (up) {
      this.#startSlowStart(server);
    } else {
      server.slowStartSince = 0;
      server.weight = server.baseWeight;
      if (this.model.onServerDown === 'close') {
        for (const c of [...server.connections]) c.closeForServerDown();
      }
    }
    this.rebuild();
  }

  /** The operator's state: drain (no new connections) or maint (no probes either). */
  setAdminState(server: Server, state: AdminState): void {
    server.admin = state;
    this.rebuild();
  }

  /** A real client connect to `server` failed. */
  reportConnectFailure(server: Server, reason: string): void {
    server.connectFailures++;
    this.#onConnectFailure?.(server, reason);
  }

  /** The health checker registers here to count failed client connects. */
  onConnectFailure(listener: ConnectFailureListener | undefined): void {
    this.#onConnectFailure = listener;
  }

  /** A reload removed this whole pool: every server of it is retired. */
  retire(): void {
    for (const s of this.servers) s.retired = true;
  }

  server(name: string): Server | undefined {
    return this.servers.find((s) => s.name === name);
  }

  /** Stop timers this pool owns. Idempotent. */
  close(): void {
    clearInterval(this.#slowStartTimer);
    this.#slowStartTimer = undefined;
  }

  /**
   * Ramp a recovered server from ~10% to 100% of its weight. source_hash is
   * left out on purpose: a key's server must not depend on timing, and a
   * weight change there would move clients back and forth during the ramp.
   */
  #startSlowStart(server: Server): void {
    if (!this.#slowStartApplies()) return;
    server.slowStartSince = Date.now();
    server.weight = server.baseWeight * SLOW_START_FLOOR;
    this.#ensureSlowStartTimer();
  }

  #slowStartApplies(): boolean {
    return this.model.slowStartMs > 0 && this.model.balance !== 'source_hash';
  }

  #ensureSlowStartTimer(): void {
    this.#slowStartTimer ??= setInterval(() => this.#stepSlowStart(), Math.max(50, this.model.slowStartMs / SLOW_START_STEPS));
  }

  #stepSlowStart(): void {
    const now = Date.now();
    let ramping = false;
    for (const s of this.servers) {
      if (s.slowStartSince === 0) continue;
      const share = (now - s.slowStartSince) / this.model.slowStartMs;
      if (share >= 1) {
        s.slowStartSince = 0;
        s.weight = s.baseWeight;
      } else {
        s.weight = s.baseWeight * Math.max(SLOW_START_FLOOR, share);
        ramping = true;
      }
    }
    this.rebuild();
    if (!ramping) this.close();
  }

  #build(backup: boolean): Picker<Server> {
    const usable = this.servers.filter((s) => s.backup === backup && s.usable);
    return createPicker(this.model.balance, usable);
  }
}
