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
   * Over TLS the end is a close_notify, then the FIN.
   * Unset: the socket is destroyed at once.
   */
  readonly farewell?: Buffer;
  /**
   * With farewell: the goodbye asks the server to close (QUIT, COM_QUIT), so
   * the probe writes it and waits for the server's close before ending its
   * own side, as a client of that protocol does; a FIN right behind the
   * goodbye could reach the server first and read as a client that vanished.
   */
  readonly serverCloses?: boolean;
  /**
   * A passing probe that the server still logs as a problem (a refused
   * login): why, and what fixes it. The checker warns once per server.
   */
  readonly note?: string;
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

/** Ends the connection with a FIN (or close_notify) and nothing before it. */
export const LEAVE: Buffer = Buffer.alloc(0);

/**
 * Complete lines of a reply, each handed to `line` (without its CRLF) until
 * it returns a verdict; at most `maxLine` bytes wait for a line break.
 */
export function lineReader(maxLine: number, what: string, line: (text: string) => Verdict | undefined): (chunk: Buffer) => Verdict | undefined {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    for (;;) {
      const eol = pending.indexOf(0x0a);
      if (eol < 0 ? pending.length > maxLine : eol > maxLine) return fail(describeReply(`no line break in the first ${maxLine} bytes of the ${what}`, pending));
      if (eol < 0) return undefined;
      const text = pending.toString('latin1', 0, eol).replace(/\r$/, '');
      pending = pending.subarray(eol + 1);
      const verdict = line(text);
      if (verdict !== undefined) return verdict;
    }
  };
}

/** At most this many characters of a server's message go into a reason. */
export const MAX_SHOWN_MESSAGE = 200;

/** A server's message as a reason shows it: printable, and cut to {@link MAX_SHOWN_MESSAGE}. */
export function shown(message: string): string {
  const printable = message.replace(/[\x00-\x1f\x7f]/g, '?');
  return printable.length > MAX_SHOWN_MESSAGE ? `${printable.slice(0, MAX_SHOWN_MESSAGE)}…` : printable;
}
