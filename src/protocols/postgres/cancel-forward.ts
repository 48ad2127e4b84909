/**
 * Delivers one CancelRequest to the servers that may hold its session: the
 * one that issued the key, or, when l4lb could not see the key (TLS passed
 * through, a table neighbourhood full), every up server the listener can
 * reach; a server ignores a key it did not issue. Like libpq, it writes
 * the packet, half-closes, and waits for the server to close: PostgreSQL
 * sends no reply. Each delivery is bounded by its pool's connect timeout.
 */
import net from 'node:net';
import { localResourceCode } from '../../errors.js';
import type { FdBudget } from '../../net/fd-budget.js';
import type { Server } from '../../pool.js';

export interface CancelTarget {
  readonly server: Server;
  /** The PROXY header its pool sends first, or null. */
  readonly header: Buffer | null;
  readonly timeoutMs: number;
}

/** How the deliveries went: servers reached, and why the others were not. */
export interface CancelOutcome {
  readonly delivered: number;
  readonly failures: readonly string[];
}

function noop(): void {}

export class CancelForwarder {
  readonly #packet: Buffer;
  readonly #fds: FdBudget;
  readonly #done: (outcome: CancelOutcome) => void;
  readonly #sockets = new Set<net.Socket>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #pending = 0;
  #delivered = 0;
  readonly #failures: string[] = [];
  #over = false;

  constructor(packet: Buffer, fds: FdBudget, done: (outcome: CancelOutcome) => void) {
    this.#packet = packet;
    this.#fds = fds;
    this.#done = done;
  }

  start(targets: readonly CancelTarget[]): void {
    this.#pending = targets.length;
    if (targets.length === 0) return this.#finish();
    for (const t of targets) this.#deliver(t);
  }

  /** The session ends first (shutdown): close every delivery under way. Idempotent. */
  abort(): void {
    if (this.#over) return;
    this.#over = true;
    this.#release();
  }

  #deliver(target: CancelTarget): void {
    const name = target.server.name;
    if (!this.#fds.take('connect')) return this.#settled(null, `${name}: descriptor reserve reached`);
    const socket = net.connect({ host: target.server.address.host, port: target.server.address.port, noDelay: true });
    this.#sockets.add(socket);
    let settled = false;
    const settle = (failure: string | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.#timers.delete(timer);
      this.#sockets.delete(socket);
      socket.removeAllListeners();
      socket.on('error', noop);
      socket.destroy();
      this.#fds.give();
      this.#settled(failure === null ? name : null, failure);
    };
    const timer = setTimeout(() => settle(`${name}: no close within the connect timeout`), target.timeoutMs);
    this.#timers.add(timer);
    socket.on('connect', () => {
      if (target.header !== null) socket.write(target.header);
      socket.end(this.#packet);
    });
    // The server reads the packet and closes; whatever it might send is not for us.
    socket.on('data', noop);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (localResourceCode(err) !== undefined && (err.code === 'EMFILE' || err.code === 'ENFILE')) this.#fds.exhausted();
      settle(`${name}: ${err.code ?? err.message}`);
    });
    socket.on('close', () => settle(null));
  }

  #settled(delivered: string | null, failure: string | null): void {
    if (delivered !== null) this.#delivered++;
    if (failure !== null) this.#failures.push(failure);
    if (--this.#pending === 0) this.#finish();
  }

  #finish(): void {
    if (this.#over) return;
    this.#over = true;
    this.#done({ delivered: this.#delivered, failures: this.#failures });
  }

  #release(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    for (const s of this.#sockets) {
      s.removeAllListeners();
      s.on('error', noop);
      s.destroy();
      this.#fds.give();
    }
    this.#sockets.clear();
  }
}
