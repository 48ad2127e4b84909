/**
 * What every probe kind plugs into the probe's socket lifecycle (../probe.ts):
 * the bytes it sends once connected and how it judges what comes back. The
 * lifecycle owns the socket, the timer, the abort signal and the descriptor;
 * a conversation only reads and decides, so a kind cannot leak any of them.
 */
import type net from 'node:net';

/** A probe's outcome, as a conversation decides it. */
export interface Verdict {
  readonly ok: boolean;
  /** Why it failed; empty when ok. */
  readonly reason: string;
  /**
   * Set: end the connection cleanly instead of dropping it, writing these
   * bytes first (a protocol's goodbye, or nothing), then wait (within the
   * probe's timeout) for the server to close, so it has nothing to log.
   * Unset: the socket is destroyed at once.
   */
  readonly farewell?: Buffer;
}

export interface Conversation {
  /** Connected (the PROXY header, if any, is written): send the request; a verdict here ends the probe. */
  start(socket: net.Socket): Verdict | undefined;
  /** Bytes arrived: a verdict, or undefined to read on. Each kind bounds what it keeps. */
  data(chunk: Buffer): Verdict | undefined;
  /** The server closed the connection before a verdict. */
  closed(): Verdict;
}

/** Longest reply prefix shown in a reason. */
const SHOWN_REPLY_BYTES = 32;

export const OK: Verdict = Object.freeze({ ok: true, reason: '' });

export function fail(reason: string): Verdict {
  return { ok: false, reason };
}

/** `what: got "first line of the reply"`, or `what: got nothing`. */
export function describeReply(what: string, received: Buffer): string {
  if (received.length === 0) return `${what}: got nothing`;
  const shown = received.subarray(0, SHOWN_REPLY_BYTES).toString('latin1').replace(/\r?\n.*$/s, '');
  return `${what}: got ${JSON.stringify(shown)}`;
}
