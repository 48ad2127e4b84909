/**
 * The way to a server for one connection: pick (skipping servers already
 * tried), connect under the pool's connect timeout, retry another server on
 * failure, send the PROXY header first, then TLS to the server when the pool
 * says so (a PostgreSQL server first gets an SSLRequest and must answer `S`). The upstream owns each backend socket and the server lease until
 * it hands both to its owner on success; on failure it has closed them.
 *
 * Failures are typed: a server's own failure (refused, reset, timeout, TLS)
 * is reported to the pool, which tells health; the balancer's own shortage
 * (EMFILE...) is not, and is not retried either (it would fail alike).
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import { formatDuration } from '../config/duration.js';
import {
  BackendTlsError,
  ConnectFailedError,
  ConnectTimeoutError,
  LocalResourceError,
  NoServerError,
  localResourceCode,
  reasonOf,
  type L4lbError,
} from '../errors.js';
import type { FdBudget } from '../net/fd-budget.js';
import type { Pool, Server, ServerLease } from '../pool.js';
import { backendConnectOptions } from '../tls/backend.js';
import { ANSWER_NO, ANSWER_YES_SSL, SSL_REQUEST } from '../protocols/postgres/messages.js';

/** A connect attempt that failed for the server's sake: the access line's `tried`. */
export interface FailedAttempt {
  /** The server's name (as in the `server` field and label). */
  readonly server: string;
  /** Why, as the `reason` field words it: `connect ECONNREFUSED`, `connect timeout after 3s`, `tls …`. */
  readonly error: string;
}

export interface UpstreamOwner {
  /**
   * Connected (and TLS done, when the pool re-encrypts): the backend socket
   * (`raw`: its TCP socket, the same unless TLS) and the lease are the owner's now.
   */
  upstreamReady(backend: net.Socket, raw: net.Socket, lease: ServerLease): void;
  /**
   * No server could be reached: the last failure (NoServerError when none
   * could be picked), or null when the client's addresses vanished mid-connect
   * (it is gone: nothing to relay for).
   */
  upstreamFailed(err: L4lbError | null): void;
}

function noop(): void {}

const NO_FAILURES: readonly FailedAttempt[] = Object.freeze([]);

export class Upstream {
  readonly #pool: Pool;
  readonly #key: string;
  readonly #fds: FdBudget;
  /** The PROXY header to send first, built when the socket connects (null: none). */
  readonly #header: () => Buffer | null;
  readonly #owner: UpstreamOwner;
  /** PostgreSQL: ask the server for TLS (SSLRequest, answer `S`) before TLS or the client's ClientHello. */
  readonly #sslRequest: boolean;
  #tried: Set<Server> | undefined;
  /** Each failed attempt, in order (at most 1 + retries); made at the first failure. */
  #failures: FailedAttempt[] | undefined;
  #attempts = 0;
  #socket: net.Socket | undefined;
  /** The TCP socket of the attempt (under the TLS one, when the pool re-encrypts). */
  #raw: net.Socket | undefined;
  #lease: ServerLease | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastFailure: L4lbError | undefined;
  #over = false;
  /** When the attempt under way began (performance.now() ms). */
  #connectStart = 0;

  constructor(pool: Pool, key: string, fds: FdBudget, header: () => Buffer | null, owner: UpstreamOwner, sslRequest = false) {
    this.#sslRequest = sslRequest;
    this.#pool = pool;
    this.#key = key;
    this.#fds = fds;
    this.#header = header;
    this.#owner = owner;
  }


  start(): void {
    this.#next();
  }

  /** The attempts that failed for their server's sake, in order (empty when the first one connected). */
  get failures(): readonly FailedAttempt[] {
    return this.#failures ?? NO_FAILURES;
  }

  /** The connection ended first (the client left, shutdown): close the attempt under way. Idempotent. */
  abort(): void {
    if (this.#over) return;
    this.#over = true;
    this.#drop();
  }

  #next(): void {
    const pool = this.#pool;
    const server = pool.pick(this.#key, this.#tried);
    if (server === undefined) {
      return this.#fail(this.#lastFailure ?? new NoServerError(pool.name));
    }
    // Room for the backend's descriptor, or the connect would fail with EMFILE anyway.
    if (!this.#fds.take('connect')) return this.#fail(new LocalResourceError('EMFILE', 'descriptor reserve reached'));
    this.#attempts++;
    this.#lease = pool.acquire(server, this.#key);
    this.#connectStart = performance.now();
    const socket = net.connect({
      host: server.address.host,
      port: server.address.port,
      allowHalfOpen: true,
      noDelay: true,
    });
    this.#raw = socket;
    this.#socket = socket;
    socket.once('connect', this.#onConnect);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    this.#timer = setTimeout(this.#onTimeout, pool.model.timeouts.connectMs);
  }

  /** TCP is up: the PROXY header goes first, then TLS to the server or the splice. */
  #onConnect = (): void => {
    const raw = this.#socket!;
    let header: Buffer | null;
    try {
      header = this.#header();
    } catch {
      // Addresses gone (the client vanished mid-connect).
      return this.#fail(null);
    }
    if (header !== null) raw.write(header);
    if (this.#sslRequest) {
      raw.write(SSL_REQUEST);
      raw.on('data', this.#onSslAnswer);
      return;
    }
    this.#secure();
  };

  /** The server's one-byte answer to SSLRequest: `S` and nothing more, or this server cannot be used. */
  #onSslAnswer = (chunk: Buffer): void => {
    const raw = this.#socket!;
    raw.removeListener('data', this.#onSslAnswer);
    // Nothing more is read until TLS or the splice takes the socket.
    raw.pause();
    if (chunk[0] === ANSWER_YES_SSL && chunk.length === 1) return this.#secure();
    const why =
      chunk[0] === ANSWER_NO
        ? 'the server answered N to SSLRequest: it does not accept TLS (ssl = off?)'
        : chunk[0] === ANSWER_YES_SSL
          ? 'the server sent bytes after its S, before the TLS handshake'
          : `the server answered 0x${chunk[0]!.toString(16)} to SSLRequest`;
    this.#failed(new BackendTlsError(this.#lease!.server.address.text, new Error(why)));
  };

  /** TLS to the server when the pool says so, else ready. */
  #secure(): void {
    const raw = this.#socket!;
    const options = this.#pool.tlsOptions;
    if (options === null) return this.#ready();
    raw.removeListener('error', this.#onError);
    raw.removeListener('close', this.#onClose);
    // The TLS socket owns the raw one now and reports its errors.
    raw.on('error', noop);
    const secure = tls.connect(backendConnectOptions(options, raw, this.#lease!.server.address));
    this.#socket = secure;
    secure.once('secureConnect', this.#ready);
    secure.on('error', this.#onError);
    secure.on('close', this.#onClose);
  }

  #ready = (): void => {
    // least_time's `connect` figure: TCP, the PROXY header and SSLRequest when sent, and TLS.
    this.#pool.reportResponse(this.#lease!.server, 'connect', performance.now() - this.#connectStart);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const socket = this.#socket!;
    socket.removeListener('error', this.#onError);
    socket.removeListener('close', this.#onClose);
    this.#over = true;
    this.#owner.upstreamReady(socket, this.#raw!, this.#lease!);
  };

  #onError = (err: NodeJS.ErrnoException): void => {
    const local = localResourceCode(err);
    if (local !== undefined) {
      // Our shortage, not the server's: no health report, no retry.
      if (local === 'EMFILE' || local === 'ENFILE') this.#fds.exhausted();
      return this.#fail(new LocalResourceError(local, 'connect'));
    }
    const address = this.#lease!.server.address.text;
    this.#failed(this.#socket instanceof tls.TLSSocket ? new BackendTlsError(address, err) : new ConnectFailedError(address, err));
  };

  /** Closed during the TLS handshake to the server without an error of its own. */
  #onClose = (): void => {
    this.#failed(new BackendTlsError(this.#lease!.server.address.text, new Error('closed during the handshake')));
  };

  #onTimeout = (): void => {
    this.#timer = undefined;
    this.#failed(new ConnectTimeoutError(this.#lease!.server.address.text, formatDuration(this.#pool.model.timeouts.connectMs)));
  };

  /** This attempt failed for the server's sake: count it, forget the socket, try another server or give up. */
  #failed(err: L4lbError): void {
    if (this.#over) return;
    const server = this.#lease!.server;
    this.#drop();
    this.#lastFailure = err;
    (this.#failures ??= []).push({ server: server.name, error: reasonOf(err) });
    this.#pool.reportConnectFailure(server, err);
    (this.#tried ??= new Set()).add(server);
    if (this.#attempts <= this.#pool.model.retries) this.#next();
    else this.#fail(err);
  }

  /** Close the attempt under way: its socket, its descriptor, its lease. */
  #drop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const socket = this.#socket;
    if (socket !== undefined) {
      this.#socket = undefined;
      socket.removeAllListeners();
      socket.on('error', noop);
      socket.destroy();
      this.#fds.give();
    }
    this.#lease?.release();
  }

  /** Give up (null: the client is gone). */
  #fail(err: L4lbError | null): void {
    if (this.#over) return;
    this.#over = true;
    this.#drop();
    this.#owner.upstreamFailed(err);
  }
}
