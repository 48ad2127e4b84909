/**
 * A pool: its servers, the pickers built from the servers usable right now,
 * and the accounting of connections to them. Whenever the usable set or a
 * weight changes the pickers are rebuilt and swapped, so picking only reads;
 * a connection's claim on a server is a lease taken here (`acquire`) and
 * given back once.
 *
 * With several serving threads (see src/shared/), every thread has its own
 * Pool of the same servers, their counts in shared memory. The main thread's
 * pool decides health, admin state and slow-start weights and publishes
 * them; the other threads' pools follow: at each pick they compare the
 * published generation and, when it moved, re-read the servers' state and
 * rebuild their pickers (closing their own connections to a server that went
 * down, with `on_server_down: close`). Nothing but the shared memory is read.
 *
 * Lifecycle: the constructor only builds objects; `start()` prepares what
 * can fail (TLS to the servers); `activate()` commits a reload; `close()`
 * stops the pool's timers.
 */
import type tls from 'node:tls';
import type { Picker } from './balance/picker.js';
import { StickTable, newStickBuffer } from './balance/stick-table.js';
import { createPicker, medianResponse } from './balance/index.js';
import { sameServer } from './config/identity.js';
import type { LeastTimeMeasure, PoolModel, ServerModel } from './config/model.js';
import { reasonOf, type L4lbError } from './errors.js';
import { Server, type AdminState, type ServerLease } from './server.js';
import { PL_ROUND_ROBIN, PL_ROUND_ROBIN_BACKUP, POOL_STATE, type SharedMemory } from './shared/memory.js';
import { SharedServerCounts, publishDone, publishServerState, readServerState, stateGeneration } from './shared/server-counts.js';
import { backendTlsOptions } from './tls/backend.js';

export { Server, ServerLease, type AdminState, type ServerConnection } from './server.js';

/** Slow start begins at this share of the configured weight. */
const SLOW_START_FLOOR = 0.1;
/** Weight steps per slow-start window: smooth enough, few picker rebuilds. */
const SLOW_START_STEPS = 20;

/** Listens for connect failures so a health checker can act on them (`reason`: the failure's short why). */
export type ConnectFailureListener = (server: Server, reason: string) => void;

/** Where a pool's servers live in shared memory, and whether this pool decides their state or follows it. */
export interface PoolSharing {
  readonly memory: SharedMemory;
  /** The pool's own slot: the round-robin positions every thread takes turns from. */
  readonly poolSlot: number;
  /** The slot of each server of the model, in order. */
  readonly slots: readonly number[];
  /** true: the main thread's pool (health, admin, weights published from here); false: a serving thread's. */
  readonly owner: boolean;
  /** The pool's stick table made by the main thread (absent: the main thread's pool makes one, or keeps its previous one). */
  readonly stick?: SharedArrayBuffer | undefined;
}

/** How often the main thread's pool forgets expired stick entries (and at least this often per expire). */
const STICK_SWEEP_MS = 1_000;

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
  /** Servers reloads removed from this pool, kept while they have open connections (see removedServers()). */
  #removed: Server[] = [];
  #tlsOptions: tls.ConnectionOptions | null = null;
  readonly #sharing: PoolSharing | null;
  /** The published generation this (following) pool last read. */
  #seen = -1;
  /** `stick`: the table shared by every thread; null when off (or for a pool without shared memory). */
  readonly stick: StickTable | null;
  #stickTimer: NodeJS.Timeout | undefined;

  /**
   * @param previous the pool of the same name before a reload: servers with
   *   the same name and address are carried over with their health, admin
   *   state, counters and open connections.
   * @param sharing where the counts live when several threads serve; null:
   *   this thread's own memory (a pool on its own, as in unit tests).
   */
  constructor(model: PoolModel, previous?: Pool, sharing: PoolSharing | null = null) {
    this.model = model;
    this.name = model.name;
    this.#sharing = sharing;
    const { rise, fall } = model.health;
    this.servers = model.servers.map((s, i) => {
      const kept = previous?.server(s.name);
      if (kept !== undefined && sameServer(kept, s)) {
        // Applied by activate(): until the reload commits, the old pool still serves with these servers.
        this.#carriedOver.push([kept, s]);
        return kept;
      }
      if (sharing === null) return new Server(s, rise, fall);
      const slot = sharing.slots[i]!;
      return new Server(s, rise, fall, new SharedServerCounts(sharing.memory, slot), slot);
    });
    if (previous !== undefined) {
      for (const s of previous.servers) if (!this.servers.includes(s)) this.#dropped.push(s);
      // A server added back gets its old slot (same identity): its open connections count there, not as removed.
      const slots = new Set(this.servers.map((s) => s.slot).filter((slot) => slot >= 0));
      this.#removed = [...previous.removedServers(), ...this.#dropped].filter((s) => !slots.has(s.slot));
    }
    this.stick = stickTableFor(model, previous, sharing);
    this.#primary = this.#build(false);
    this.#backup = this.#build(true);
  }

  /**
   * Prepare what can fail before the pool serves: TLS to its servers (the
   * context built when the configuration loaded). Throws ConfigError naming
   * the file. Idempotent.
   */
  start(): void {
    if (this.model.tls !== null) this.#tlsOptions ??= backendTlsOptions(this.model.tls, `pool ${this.name}: tls`);
    this.#publish();
    const stick = this.stick;
    if (stick !== null && this.#sharing?.owner === true && this.#stickTimer === undefined) {
      this.#stickTimer = setInterval(() => stick.sweep(), Math.min(STICK_SWEEP_MS, stick.settings.expireMs));
      this.#stickTimer.unref();
    }
  }

  /** TLS to the servers (options built once by start()), or null for plain TCP. */
  get tlsOptions(): tls.ConnectionOptions | null {
    return this.#tlsOptions;
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
    this.#publish(this.#dropped);
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
    this.sync();
    if (this.stick !== null) {
      const stuck = this.#stuck(this.stick.lookup(key), exclude);
      // A client stuck to a backup goes back to the primaries once one is up (backups serve only when none is).
      if (stuck !== undefined && (!stuck.backup || this.#primary.pick(key, exclude) === undefined)) return stuck;
    }
    return this.#primary.pick(key, exclude) ?? this.#backup.pick(key, exclude);
  }

  /** The server in `slot` if it is still one of this pool's, usable and not excluded: a client stuck to it stays. */
  #stuck(slot: number, exclude: ReadonlySet<Server> | undefined): Server | undefined {
    if (slot < 0) return undefined;
    const server = this.servers.find((s) => s.slot === slot);
    return server !== undefined && server.usable && !server.retired && exclude?.has(server) !== true ? server : undefined;
  }

  /**
   * A serving thread's pool: take what the main thread published, if it
   * changed (one atomic read otherwise). Called at every pick, and by the
   * thread's timer, so a server going down closes this thread's connections
   * to it (`on_server_down: close`) even when no new connection comes.
   */
  sync(): void {
    const sharing = this.#sharing;
    if (sharing === null || sharing.owner) return;
    const generation = stateGeneration(sharing.memory);
    if (generation !== this.#seen) this.#follow(generation);
  }

  /** A serving thread's pool takes the state the main thread published, and rebuilds its pickers. */
  #follow(generation: number): void {
    this.#seen = generation;
    const memory = this.#sharing!.memory;
    for (const server of this.servers) {
      const state = readServerState(memory, server.slot);
      const wentDown = server.up && !state.up;
      server.health.follow(state.up);
      server.admin = state.admin;
      server.weight = state.weight > 0 ? state.weight : server.baseWeight;
      server.retired = state.retired;
      if (wentDown && this.model.onServerDown === 'close') {
        for (const c of [...server.connections]) c.closeForServerDown();
      }
    }
    this.#primary = this.#build(false);
    this.#backup = this.#build(true);
  }

  /**
   * A connection's claim on `server`, counted as active until released
   * (once). With `stick`, client `key` sticks to `server` from now on, and
   * its entry is held while the lease is.
   */
  acquire(server: Server, key?: string): ServerLease {
    const lease = server.lease();
    const stick = this.stick;
    if (stick !== null && key !== undefined && server.slot >= 0 && stick.hold(key, server.slot)) lease.onRelease = () => stick.release(key);
    return lease;
  }

  /** A real client connect to `server` failed: counted, and told to the health checker. */
  reportConnectFailure(server: Server, failure: L4lbError): void {
    server.countConnectFailure();
    this.#onConnectFailure?.(server, reasonOf(failure));
  }

  /**
   * A response time measured for `server` (ms), by a client connection or a
   * probe: folded into its average when it is what the pool measures
   * (`least_time.measure`). Any thread may report; the average is shared.
   */
  reportResponse(server: Server, measure: LeastTimeMeasure, ms: number): void {
    if (measure !== this.model.leastTime.measure || !(ms >= 0) || !Number.isFinite(ms)) return;
    const seed = server.responseUs > 0 ? 0 : medianResponse(this.servers, server);
    server.recordResponse(ms * 1000, seed);
  }

  /** A connect failed in another thread (which counted it): only the health checker hears of it. */
  reportFailureElsewhere(server: Server, reason: string): void {
    this.#onConnectFailure?.(server, reason);
  }

  /** Rebuild the pickers; call whenever a server's usability or weight changes (the main thread then publishes). */
  rebuild(): void {
    this.#primary = this.#build(false);
    this.#backup = this.#build(true);
    this.#publish();
  }

  /** The main thread's pool: every thread picks by what is written here. */
  #publish(servers: readonly Server[] = this.servers): void {
    const sharing = this.#sharing;
    if (sharing === null || !sharing.owner) return;
    for (const s of servers) publishServerState(sharing.memory, s.slot, { up: s.up, backup: s.backup, retired: s.retired, admin: s.admin, weight: s.weight });
    publishDone(sharing.memory);
  }

  /** Health flipped (called by the health checker). */
  setHealth(server: Server, up: boolean): void {
    if (up) {
      // A recovered server starts at the pool's median, not at a figure from before it failed (or none: a stampede).
      const median = medianResponse(this.servers, server);
      if (median > 0) server.resetResponse(median);
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

  /** The health checker registers here to count failed client connects. */
  onConnectFailure(listener: ConnectFailureListener | undefined): void {
    this.#onConnectFailure = listener;
  }

  /** A reload removed this whole pool: every server of it is retired. */
  retire(): void {
    for (const s of this.servers) s.retired = true;
    this.#publish();
  }

  server(name: string): Server | undefined {
    return this.servers.find((s) => s.name === name);
  }

  /**
   * Servers reloads removed from this pool that still have open connections
   * (counted in every thread), oldest first: `/status` lists them as removed
   * until their last connection closes. One that has none is forgotten here.
   */
  removedServers(): readonly Server[] {
    if (this.#removed.some((s) => s.active <= 0)) this.#removed = this.#removed.filter((s) => s.active > 0);
    return this.#removed;
  }

  /** Stop timers this pool owns. Idempotent. */
  close(): void {
    clearInterval(this.#slowStartTimer);
    this.#slowStartTimer = undefined;
    clearInterval(this.#stickTimer);
    this.#stickTimer = undefined;
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
    if (!ramping) {
      clearInterval(this.#slowStartTimer);
      this.#slowStartTimer = undefined;
    }
  }

  #build(backup: boolean): Picker<Server> {
    const usable = this.servers.filter((s) => s.backup === backup && s.usable);
    const sharing = this.#sharing;
    if (sharing === null) return createPicker(this.model.balance, usable);
    const state = sharing.memory.poolState;
    const at = sharing.poolSlot * POOL_STATE + (backup ? PL_ROUND_ROBIN_BACKUP : PL_ROUND_ROBIN);
    return createPicker(this.model.balance, usable, { position: { next: () => Atomics.add(state, at, 1) } });
  }
}

/**
 * The stick table of a pool with `stick`: the one the main thread made
 * (attached once per thread: a reload that keeps it keeps the handle, with
 * its waiting releases); in the main thread, the previous pool's when the
 * settings are unchanged (so clients keep their servers across a reload),
 * else a new one. Only pools in shared memory have one: entries name
 * servers by their shared-memory slot.
 */
function stickTableFor(model: PoolModel, previous: Pool | undefined, sharing: PoolSharing | null): StickTable | null {
  const settings = model.stick;
  if (settings === null || sharing === null) return null;
  const kept = previous?.stick ?? null;
  if (sharing.stick !== undefined) return kept?.buffer === sharing.stick ? kept : new StickTable(sharing.stick, sharing.memory.thread);
  if (!sharing.owner) return null;
  if (kept !== null && kept.settings.expireMs === settings.expireMs && kept.settings.size === settings.size) return kept;
  return new StickTable(newStickBuffer(settings, sharing.memory.threads), sharing.memory.thread);
}
