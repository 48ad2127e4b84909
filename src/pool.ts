/**
 * A pool: its servers, the pickers built from the servers usable right now,
 * and the accounting of connections to them. Whenever the usable set or a
 * weight changes the pickers are rebuilt and swapped, so picking only reads;
 * a connection's claim on a server is a lease taken here (`acquire`) and
 * given back once.
 *
 * Lifecycle: the constructor only builds objects; `start()` prepares what
 * can fail (TLS to the servers); `activate()` commits a reload; `close()`
 * stops the pool's timers.
 */
import type tls from 'node:tls';
import type { Picker } from './balance/picker.js';
import { createPicker } from './balance/index.js';
import { sameServer } from './config/identity.js';
import type { PoolModel, ServerModel } from './config/model.js';
import type { L4lbError } from './errors.js';
import { Server, type AdminState, type ServerLease } from './server.js';
import { backendTlsOptions } from './tls/backend.js';

export { Server, ServerLease, type AdminState, type ServerConnection } from './server.js';

/** Slow start begins at this share of the configured weight. */
const SLOW_START_FLOOR = 0.1;
/** Weight steps per slow-start window: smooth enough, few picker rebuilds. */
const SLOW_START_STEPS = 20;

/** Listens for connect failures so a health checker can act on them. */
export type ConnectFailureListener = (server: Server, failure: L4lbError) => void;

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
  #tlsOptions: tls.ConnectionOptions | null = null;

  /**
   * @param previous the pool of the same name before a reload: servers with
   *   the same name and address are carried over with their health, admin
   *   state, counters and open connections.
   */
  constructor(model: PoolModel, previous?: Pool) {
    this.model = model;
    this.name = model.name;
    const { rise, fall } = model.health;
    this.servers = model.servers.map((s) => {
      const kept = previous?.server(s.name);
      if (kept !== undefined && sameServer(kept, s)) {
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
   * Prepare what can fail before the pool serves: TLS to its servers (the
   * context built when the configuration loaded). Throws ConfigError naming
   * the file. Idempotent.
   */
  start(): void {
    if (this.model.tls !== null) this.#tlsOptions ??= backendTlsOptions(this.model.tls, `pool ${this.name}: tls`);
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

  /** A connection's claim on `server`, counted as active until released (once). */
  acquire(server: Server): ServerLease {
    return server.lease();
  }

  /** A real client connect to `server` failed: counted, and told to the health checker. */
  reportConnectFailure(server: Server, failure: L4lbError): void {
    server.countConnectFailure();
    this.#onConnectFailure?.(server, failure);
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
