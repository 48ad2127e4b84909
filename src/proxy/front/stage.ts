/**
 * The front end of a connection: the steps that run on the accepted socket
 * before any server is chosen (PROXY header in, access lists and limits, TLS
 * termination or the ClientHello peek). Each step is a stage with one shape:
 * it runs against the client socket under the listener's handshake
 * deadline, owns the event listeners it adds, writes what it learned into
 * the connection's {@link FrontState}, and ends with `next()`, a typed
 * failure, or `gone()` (the client left: `client_close`). A new step (a
 * protocol's own opening, say) is one new stage file and one line in
 * `frontStages()`.
 */
import type net from 'node:net';
import type { L4lbError } from '../../errors.js';
import type { PostgresFront } from '../../protocols/postgres/messages.js';
import type { ClientHelloInfo } from '../../tls/client-hello.js';
import type { TlsDetails } from '../../tls/terminator.js';

/** What the front end knows of a connection; stages fill it in, the rest of the path reads it. */
export interface FrontState {
  /** The accepted TCP socket. */
  readonly raw: net.Socket;
  /** What the splice uses: the raw socket, or the TLS socket over it. */
  client: net.Socket;
  /** The client as everything after accept sees it: from the PROXY header when one was accepted. */
  clientIp: string;
  clientPort: number | undefined;
  /** Where the client connected to, from the PROXY header; undefined: our own socket's. */
  destIp: string | undefined;
  destPort: number | undefined;
  /** PROXY header bytes read from the client: not part of bytes_in. */
  headerBytes: number;
  sni: string | null;
  /** The ClientHello, when a stage read it (passthrough, or a terminating listener that must look first). */
  hello: ClientHelloInfo | null;
  /** Set when TLS was terminated here. */
  tls: TlsDetails | null;
  /** The address a per-source slot was taken for, given back when the connection closes. */
  admittedIp: string | undefined;
  /** protocol postgres: how the client opened (null on other listeners). */
  postgres: PostgresFront | null;
}

/** How a stage ends. Exactly one of these is called, once. */
export interface StageDone {
  /** Go on with the next stage (or route, after the last). */
  next(): void;
  /** The front is complete without the stages left (a PostgreSQL CancelRequest needs no TLS): route now. */
  finish(): void;
  /** The connection fails: the error's code picks the termination. */
  fail(err: L4lbError): void;
  /** The client went away (nothing to blame it for): `client_close`. */
  gone(): void;
}

export interface FrontStage {
  /** true when the stage waits for bytes or a handshake (then the handshake deadline runs). */
  readonly waits: boolean;
  /** The failure when the handshake deadline passes during this stage (`after`: the deadline, formatted). */
  timeout(after: string): L4lbError;
  /**
   * Run on one connection. Returns what stops it early (its listeners
   * removed, nothing more reported) when the connection ends first; nothing
   * for a stage that decides at once.
   */
  run(state: FrontState, done: StageDone): (() => void) | void;
}
