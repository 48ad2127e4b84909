/**
 * One active health probe: a TCP connect, optionally a payload sent and a
 * reply prefix expected. Resolves (never rejects) with ok and, on failure, a
 * reason an operator can act on: `connect ECONNREFUSED`, `timeout after 1s`,
 * `expect mismatch: got "-ERR"`.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { formatDuration } from '../config/duration.js';
import { localResourceCode } from '../errors.js';
import type { FdBudget } from '../net/fd-budget.js';

export interface ProbeTarget {
  readonly host: string;
  readonly port: number;
}

export interface ProbeOptions {
  readonly timeoutMs: number;
  /** Sent right after connect (after the PROXY header, if any). */
  readonly send: Buffer | null;
  /** The reply must start with these bytes. */
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

/** Longest reply prefix shown in a mismatch reason. */
const SHOWN_REPLY_BYTES = 32;

export function probe(target: ProbeTarget, options: ProbeOptions): Promise<ProbeResult> {
  const fds = options.fds;
  if (fds !== undefined && !fds.take('connect')) {
    return Promise.resolve({ ok: false, reason: 'descriptor reserve reached: EMFILE', latencyMs: 0, local: 'EMFILE' });
  }
  return new Promise((resolve) => {
    const started = performance.now();
    let settled = false;
    let connected = false;
    let received: Buffer = Buffer.alloc(0);
    const socket = net.connect({ host: target.host, port: target.port, noDelay: true });

    const finish = (ok: boolean, reason: string, local?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.removeAllListeners('data');
      // A probe leaves nothing half-open on the backend.
      socket.destroy();
      fds?.give();
      const latencyMs = Math.round((performance.now() - started) * 10) / 10;
      resolve(local === undefined ? { ok, reason, latencyMs } : { ok, reason, latencyMs, local });
    };
    const onAbort = (): void => finish(false, 'aborted');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => finish(false, `timeout after ${formatDuration(options.timeoutMs)}`), options.timeoutMs);

    socket.on('error', (err: NodeJS.ErrnoException) => {
      const local = connected ? undefined : localResourceCode(err);
      if (local === 'EMFILE' || local === 'ENFILE') fds?.exhausted();
      finish(false, `${connected ? 'read' : 'connect'} ${err.code ?? err.message}`, local);
    });
    socket.on('close', () => {
      if (options.expect !== null) finish(false, describeMismatch('connection closed', received));
    });
    socket.on('connect', () => {
      connected = true;
      if (options.proxyHeader !== null) socket.write(options.proxyHeader(socket));
      if (options.send !== null) socket.write(options.send);
      if (options.expect === null) finish(true, '');
    });
    socket.on('data', (chunk: Buffer) => {
      const expect = options.expect!;
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const n = Math.min(received.length, expect.length);
      if (received.compare(expect, 0, n, 0, n) !== 0) {
        finish(false, describeMismatch('expect mismatch', received));
      } else if (received.length >= expect.length) {
        finish(true, '');
      }
    });
  });
}

function describeMismatch(what: string, received: Buffer): string {
  if (received.length === 0) return `${what}: got nothing`;
  const shown = received.subarray(0, SHOWN_REPLY_BYTES).toString('latin1').replace(/\r?\n.*$/s, '');
  return `${what}: got ${JSON.stringify(shown)}`;
}
