/**
 * A pool: its servers, their state and connection counts, and the pickers
 * built from the servers usable right now. Server state lives here (one place
 * a later multi-process design can broadcast from); whenever the usable set
 * changes the pickers are rebuilt and swapped, so picking only reads.
 */
import type { Candidate, Picker } from './balance/picker.js';
import { createPicker } from './balance/index.js';
import type { Endpoint, PoolModel, ServerModel } from './config/model.js';

/** The operator's wish for a server, kept apart from its health. */
export type AdminState = 'ready' | 'drain' | 'maint';

export class Server implements Candidate {
  readonly name: string;
  readonly address: Endpoint;
  readonly backup: boolean;
  weight: number;
  /** Connections assigned to this server and not yet closed (connecting included). */
  active = 0;
  /** Connections that reached this server. */
  total = 0;
  /** Failed connects, for the health logic and metrics. */
  connectFailures = 0;
  /** Health: servers start up, as in HAProxy. */
  up = true;
  admin: AdminState = 'ready';

  constructor(model: ServerModel) {
    this.name = model.name;
    this.address = model.address;
    this.weight = model.weight;
    this.backup = model.backup;
  }

  /** May take new connections. */
  get usable(): boolean {
    return this.up && this.admin === 'ready';
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

  constructor(model: PoolModel) {
    this.model = model;
    this.name = model.name;
    this.servers = model.servers.map((s) => new Server(s));
    this.#primary = this.#build(false);
    this.#backup = this.#build(true);
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

  /** A real client connect to `server` failed. */
  reportConnectFailure(server: Server, reason: string): void {
    server.connectFailures++;
    this.#onConnectFailure?.(server, reason);
  }

  /** The health checker registers here to count failed client connects. */
  onConnectFailure(listener: ConnectFailureListener | undefined): void {
    this.#onConnectFailure = listener;
  }

  server(name: string): Server | undefined {
    return this.servers.find((s) => s.name === name);
  }

  #build(backup: boolean): Picker<Server> {
    const usable = this.servers.filter((s) => s.backup === backup && s.usable);
    return createPicker(this.model.balance, usable);
  }
}
