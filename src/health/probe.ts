/**
 * One active health probe: a TCP connect, the PROXY header if the pool sends
 * one, then the conversation of the probe's kind (./kinds/): tcp (optional
 * send / expect), http (a request, judged by its status) or postgres (a
 * StartupMessage, judged by the first reply). Resolves (never rejects) with
 * ok and, on failure, a reason an operator can act on: `connect
 * ECONNREFUSED`, `timeout after 1s`, `expect mismatch: got "-ERR"`, `http
 * status 503 from GET /primary`.
 *
 * This file owns everything a probe holds: the socket, the timer (which
 * bounds the whole conversation, a clean goodbye included), the abort
 * listener and the descriptor taken from the budget; all are released
 * exactly once, whatever ends the probe.
 *
 * The pool's `tls` is not applied to any kind: probes speak plaintext (TLS
 * probes are a kind of their own, yet to come).
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { formatDuration } from '../config/duration.js';
import type { Endpoint, HealthKind, HealthModel } from '../config/model.js';
import { DEFAULTS } from '../defaults.js';
import { localResourceCode } from '../errors.js';
import type { FdBudget } from '../net/fd-budget.js';
import { fail, type Conversation, type Verdict } from './kinds/conversation.js';
import { defaultHostHeader, httpConversation, type HttpProbeRequest } from './kinds/http.js';
import { postgresConversation, type PostgresProbeLogin } from './kinds/postgres.js';
import { tcpConversation } from './kinds/tcp.js';

export interface ProbeTarget {
  readonly host: string;
  readonly port: number;
}

export interface ProbeOptions {
  readonly timeoutMs: number;
  /** kind tcp: sent right after connect (after the PROXY header, if any). */
  readonly send: Buffer | null;
  /** kind tcp: the reply must start with these bytes. */
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
}

/** Where and how a server at `address` is probed under `health` (everything but the timeout, header, signal and budget). */
export interface ProbePlan {
  readonly target: ProbeTarget;
  readonly options: Pick<ProbeOptions, 'kind' | 'send' | 'expect' | 'http' | 'postgres'>;
}

export function planProbe(health: HealthModel, address: Endpoint): ProbePlan {
  const target = { host: address.host, port: health.port ?? address.port };
  const http = health.http === null ? undefined : { ...health.http, host: health.http.host ?? defaultHostHeader(address, target.port) };
  return {
    target,
    options: { kind: health.kind, send: health.send, expect: health.expect, http, postgres: health.postgres ?? undefined },
  };
}

export function probe(target: ProbeTarget, options: ProbeOptions): Promise<ProbeResult> {
  const fds = options.fds;
  if (fds !== undefined && !fds.take('connect')) {
    return Promise.resolve({ ok: false, reason: 'descriptor reserve reached: EMFILE', latencyMs: 0, local: 'EMFILE' });
  }
  const talk = conversationFor(target, options);
  return new Promise((resolve) => {
    const started = performance.now();
    let result: ProbeResult | undefined;
    let released = false;
    let connected = false;
    const socket = net.connect({ host: target.host, port: target.port, noDelay: true });

    /** The probe is over: give everything back and resolve, once. */
    const release = (): void => {
      if (released) return;
      released = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.removeAllListeners('data');
      // A probe leaves nothing half-open on the backend.
      socket.destroy();
      fds?.give();
      resolve(result!);
    };
    /** The verdict is in: kept once, then the socket is closed (cleanly, when the kind asks for it). */
    const decide = (verdict: Verdict, local?: string): void => {
      if (result !== undefined) return;
      const { ok, reason } = verdict;
      const latencyMs = Math.round((performance.now() - started) * 10) / 10;
      result = local === undefined ? { ok, reason, latencyMs } : { ok, reason, latencyMs, local };
      if (verdict.farewell === undefined || !connected || socket.destroyed) return release();
      // FIN after the goodbye; the server's close (or the timer) releases.
      socket.end(verdict.farewell);
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

    socket.on('error', (err: NodeJS.ErrnoException) => {
      // An error during the goodbye changes nothing: the verdict stands.
      if (result !== undefined) return release();
      const local = connected ? undefined : localResourceCode(err);
      if (local === 'EMFILE' || local === 'ENFILE') fds?.exhausted();
      decide(fail(`${connected ? 'read' : 'connect'} ${err.code ?? err.message}`), local);
    });
    socket.on('close', () => {
      if (result === undefined) decide(talk.closed());
      release();
    });
    socket.on('connect', () => {
      connected = true;
      if (options.proxyHeader !== null) socket.write(options.proxyHeader(socket));
      const verdict = talk.start(socket);
      if (verdict !== undefined) decide(verdict);
    });
    socket.on('data', (chunk: Buffer) => {
      // After the verdict, whatever still comes is read and dropped, so the close stays clean.
      if (result !== undefined) return;
      const verdict = talk.data(chunk);
      if (verdict !== undefined) decide(verdict);
    });
  });
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
  }
}
