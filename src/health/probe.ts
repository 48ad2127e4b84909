/**
 * One active health probe: a TCP connect, the PROXY header if the pool sends
 * one, a TLS handshake when the kind talks TLS to these servers, then the
 * conversation of the probe's kind (./kinds/): tcp (optional send / expect),
 * tls (the handshake itself), http (a request, judged by its status),
 * postgres (a StartupMessage, judged by the first reply), mysql (the
 * greeting, then a login and COM_QUIT), redis (AUTH, PING, QUIT) or smtp
 * (the greeting, then QUIT). Resolves (never rejects) with ok and, on
 * failure, a reason an operator can act on: `connect ECONNREFUSED`,
 * `timeout after 1s`, `tls handshake ERR_SSL_WRONG_VERSION_NUMBER`,
 * `expect mismatch: got "-ERR"`, `http status 503 from GET /primary`,
 * `mysql error 1040: Too many connections`, `redis PING: LOADING ...`.
 *
 * This file owns everything a probe holds: the socket (and the TLS socket
 * over it), the timer (which bounds the whole conversation, handshake and a
 * clean goodbye included), the abort listener and the descriptor taken from
 * the budget; all are released exactly once, whatever ends the probe.
 *
 * A conversation ends as its protocol expects (see Verdict.farewell): over
 * TLS, ending the TLS socket sends close_notify before the FIN.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import { formatDuration } from '../config/duration.js';
import type { Endpoint, HealthKind, HealthModel } from '../config/model.js';
import { DEFAULTS } from '../defaults.js';
import { localResourceCode } from '../errors.js';
import type { FdBudget } from '../net/fd-budget.js';
import { backendConnectOptions, serverName } from '../tls/backend.js';
import { fail, type Conversation, type Verdict } from './kinds/conversation.js';
import { defaultHostHeader, httpConversation, type HttpProbeRequest } from './kinds/http.js';
import { mysqlConversation, type MysqlProbeLogin } from './kinds/mysql.js';
import { postgresConversation, type PostgresProbeLogin } from './kinds/postgres.js';
import { redisConversation, type RedisProbeLogin } from './kinds/redis.js';
import { smtpConversation } from './kinds/smtp.js';
import { tcpConversation } from './kinds/tcp.js';
import { tlsConversation } from './kinds/tls.js';

export interface ProbeTarget {
  readonly host: string;
  readonly port: number;
}

export interface ProbeOptions {
  readonly timeoutMs: number;
  /** kind tcp: sent right after connect (after the PROXY header, if any). */
  readonly send: Buffer | null;
  /** kind tcp: the reply must start with these bytes. kind smtp: the greeting must (null: `220`). */
  readonly expect: Buffer | null;
  /**
   * Builds the PROXY header a strict backend requires, from the probe's own
   * socket (v2 LOCAL, or v1 with the probe's addresses). Null: none.
   */
  readonly proxyHeader: ((socket: net.Socket) => Buffer) | null;
  /** Abandons the probe (its owner is closing). */
  readonly signal?: AbortSignal;
  /** The process's descriptors: no probe is started when only the reserve is left. */
  readonly fds?: FdBudget;
  /** How the server is probed; default tcp. */
  readonly kind?: HealthKind;
  /** kind http: the request; default GET / expecting 200, with the target as Host. */
  readonly http?: HttpProbeRequest;
  /** kind postgres: whom the StartupMessage names; default the default probe role. */
  readonly postgres?: PostgresProbeLogin;
  /** kind mysql: the login; default none (greeting only). */
  readonly mysql?: MysqlProbeLogin;
  /** kind redis: the AUTH password; default none. */
  readonly redis?: RedisProbeLogin;
  /**
   * Talk TLS: the options for `tls.connect` over the connected socket (after
   * the PROXY header). Undefined or null: plaintext, except kind tls, which
   * then does a handshake that verifies nothing.
   */
  readonly tls?: ((socket: net.Socket) => tls.ConnectionOptions) | null;
}

export interface ProbeResult {
  readonly ok: boolean;
  /** Why it failed; empty when ok. */
  readonly reason: string;
  readonly latencyMs: number;
  /**
   * Set when the probe could not run for want of a local resource (EMFILE,
   * EADDRNOTAVAIL...): the errno code. Says nothing about the server.
   */
  readonly local?: string;
  /** A passing probe the server still logs as a problem: why, and the fix. */
  readonly note?: string;
  /** ms from the start to connected (TLS done, when the kind talks TLS); set once connected. */
  readonly connectMs?: number;
  /** ms from connected to the server's first byte (its greeting, or the reply to the probe's request); set when one came. */
  readonly firstByteMs?: number;
}

/** Where and how a server at `address` is probed under `health` (everything but the timeout, header, signal and budget). */
export interface ProbePlan {
  readonly target: ProbeTarget;
  readonly options: Pick<ProbeOptions, 'kind' | 'send' | 'expect' | 'http' | 'postgres' | 'mysql' | 'redis' | 'tls'>;
}

/** Kinds that talk TLS when the servers do (on their own port): their protocols run over TLS as they are. */
const OVER_SERVERS_TLS: ReadonlySet<HealthKind> = new Set(['http', 'redis', 'smtp']);

/**
 * @param poolTls the pool's TLS to its servers (Pool.tlsOptions), or null:
 *   kind tls, and kinds http, redis and smtp on a pool whose servers speak
 *   TLS, handshake with it, verifying as a client connection would; without
 *   it (a passthrough pool), with a handshake that verifies nothing, the
 *   server's host as written for SNI.
 */
export function planProbe(health: HealthModel, address: Endpoint, poolTls: tls.ConnectionOptions | null = null): ProbePlan {
  const target = { host: address.host, port: health.port ?? address.port };
  const http = health.http === null ? undefined : { ...health.http, host: health.http.host ?? defaultHostHeader(address, target.port) };
  const overTls = health.kind === 'tls' || (health.serversTls && health.port === null && OVER_SERVERS_TLS.has(health.kind));
  return {
    target,
    options: {
      kind: health.kind,
      send: health.send,
      expect: health.expect,
      http,
      postgres: health.postgres ?? undefined,
      mysql: health.mysql ?? undefined,
      redis: health.redis ?? undefined,
      tls: overTls ? probeTls(poolTls, address) : null,
    },
  };
}

/** Options for the probe's handshake with the server at `address`. */
function probeTls(poolTls: tls.ConnectionOptions | null, address: Endpoint): (socket: net.Socket) => tls.ConnectionOptions {
  if (poolTls !== null) return (socket) => backendConnectOptions(poolTls, socket, address);
  const servername = serverName(address);
  return (socket) => ({
    socket,
    // Liveness only: a passthrough pool's certificates are for its clients to check, with CAs l4lb does not have.
    rejectUnauthorized: false,
    minVersion: DEFAULTS.tlsMinVersion,
    ...(servername !== null ? { servername } : {}),
  });
}

export function probe(target: ProbeTarget, options: ProbeOptions): Promise<ProbeResult> {
  const fds = options.fds;
  if (fds !== undefined && !fds.take('connect')) {
    return Promise.resolve({ ok: false, reason: 'descriptor reserve reached: EMFILE', latencyMs: 0, local: 'EMFILE' });
  }
  const talk = conversationFor(target, options);
  const secureWith = options.tls ?? (options.kind === 'tls' ? unverified : null);
  return new Promise((resolve) => {
    const started = performance.now();
    let result: ProbeResult | undefined;
    let released = false;
    let connected = false;
    /** Between the TCP connect and the end of the TLS handshake. */
    let handshaking = false;
    /** When the conversation began (connected, TLS done) and when its first byte came (performance.now() ms; 0: not yet). */
    let beganAt = 0;
    let firstByteAt = 0;
    const socket = net.connect({ host: target.host, port: target.port, noDelay: true });
    /** What the conversation talks over: the TCP socket, or the TLS socket on it. */
    let stream: net.Socket = socket;

    /** The probe is over: give everything back and resolve, once. */
    const release = (): void => {
      if (released) return;
      released = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      stream.removeAllListeners('data');
      // A probe leaves nothing half-open on the backend.
      stream.destroy();
      socket.destroy();
      fds?.give();
      resolve(result!);
    };
    /** The verdict is in: kept once, then the connection is closed (cleanly, when the kind asks for it). */
    const decide = (verdict: Verdict, local?: string): void => {
      if (result !== undefined) return;
      const { ok, reason, note } = verdict;
      const latencyMs = Math.round((performance.now() - started) * 10) / 10;
      result = {
        ok,
        reason,
        latencyMs,
        ...(local !== undefined ? { local } : {}),
        ...(note !== undefined ? { note } : {}),
        ...(beganAt > 0 ? { connectMs: beganAt - started } : {}),
        ...(firstByteAt > 0 ? { firstByteMs: firstByteAt - beganAt } : {}),
      };
      if (verdict.farewell === undefined || !connected || handshaking || stream.destroyed) return release();
      if (verdict.serverCloses === true) {
        // The goodbye asks the server to close: its FIN (or close_notify) comes first, ours answers it, then 'close' releases.
        stream.write(verdict.farewell);
        return;
      }
      // The goodbye, then our close_notify (over TLS) and FIN; the server's close (or the timer) releases.
      stream.end(verdict.farewell);
    };
    const onAbort = (): void => {
      decide(fail('aborted'));
      release();
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => {
      decide(fail(`timeout after ${formatDuration(options.timeoutMs)}`));
      release();
    }, options.timeoutMs);

    const onError = (err: NodeJS.ErrnoException): void => {
      // An error during the goodbye changes nothing: the verdict stands.
      if (result !== undefined) return release();
      const local = connected ? undefined : localResourceCode(err);
      if (local === 'EMFILE' || local === 'ENFILE') fds?.exhausted();
      const phase = !connected ? 'connect' : handshaking ? 'tls handshake' : 'read';
      decide(fail(`${phase} ${err.code ?? err.message}`), local);
    };
    const onClose = (): void => {
      if (result === undefined) decide(handshaking ? fail('connection closed during the TLS handshake') : talk.closed());
      release();
    };
    const onData = (chunk: Buffer): void => {
      // After the verdict, whatever still comes is read and dropped, so the close stays clean.
      if (result !== undefined) return;
      if (firstByteAt === 0 && beganAt > 0) firstByteAt = performance.now();
      const verdict = talk.data(chunk);
      if (verdict !== undefined) decide(verdict);
    };
    /** The conversation begins on `over`. */
    const begin = (over: net.Socket): void => {
      beganAt = performance.now();
      const verdict = talk.start(over);
      if (verdict !== undefined) decide(verdict);
    };

    socket.on('error', onError);
    socket.on('close', onClose);
    // Over TLS only the TLS socket reads: the TCP socket is never put in flowing mode.
    if (secureWith === null) socket.on('data', onData);
    socket.on('connect', () => {
      connected = true;
      if (options.proxyHeader !== null) socket.write(options.proxyHeader(socket));
      if (secureWith === null) return begin(socket);
      handshaking = true;
      // From here the TLS socket reports the errors and the close.
      socket.removeListener('close', onClose);
      const secure = tls.connect(secureWith(socket));
      stream = secure;
      secure.on('error', onError);
      secure.on('close', onClose);
      secure.on('data', onData);
      secure.once('secureConnect', () => {
        handshaking = false;
        if (result === undefined) begin(secure);
      });
    });
  });
}

/** kind tls without TLS options (a probe() call of its own): a handshake that verifies nothing. */
function unverified(socket: net.Socket): tls.ConnectionOptions {
  return { socket, rejectUnauthorized: false, minVersion: DEFAULTS.tlsMinVersion };
}

function conversationFor(target: ProbeTarget, options: ProbeOptions): Conversation {
  switch (options.kind ?? 'tcp') {
    case 'http':
      return httpConversation(
        options.http ?? {
          method: DEFAULTS.healthHttpMethod,
          path: DEFAULTS.healthHttpPath,
          expectStatus: DEFAULTS.healthHttpExpectStatus,
          host: defaultHostHeader({ host: target.host, port: target.port, text: '' }, target.port),
        },
      );
    case 'postgres':
      return postgresConversation(options.postgres ?? { user: DEFAULTS.healthPostgresUser, database: DEFAULTS.healthPostgresUser });
    case 'tcp':
      return tcpConversation(options.send, options.expect);
    case 'tls':
      return tlsConversation();
    case 'mysql':
      return mysqlConversation(options.mysql ?? { user: null });
    case 'redis':
      return redisConversation(options.redis ?? { password: null });
    case 'smtp':
      return smtpConversation(options.expect);
  }
}
