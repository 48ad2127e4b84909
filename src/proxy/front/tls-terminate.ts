/**
 * TLS termination: the listener's terminator runs the handshake (certificate
 * by SNI, ALPN, mutual TLS) and from then on the TLS socket is the client.
 * The terminator reports exactly once per socket, secure or failed (a
 * client that leaves mid-handshake comes back as ECONNRESET), so this stage
 * needs no listener of its own on the socket.
 */
import { HandshakeTimeoutError, IncompleteHandshakeError, TlsHandshakeError, type L4lbError } from '../../errors.js';
import { tlsDetails, type TlsTerminator } from '../../tls/terminator.js';
import type { FrontStage, FrontState, StageDone } from './stage.js';

export class TlsTerminateStage implements FrontStage {
  readonly waits = true;
  readonly #terminator: TlsTerminator;

  constructor(terminator: TlsTerminator) {
    this.#terminator = terminator;
  }

  timeout(after: string): L4lbError {
    return new HandshakeTimeoutError('L4LB_TLS_HANDSHAKE', after);
  }

  run(state: FrontState, done: StageDone): () => void {
    const raw = state.raw;
    let waiting = true;
    // The TLS socket copies allowHalfOpen from the raw one. A FIN before the
    // handshake is done means it never will be (the client can no longer send
    // its Finished): without this the connection would be held, half open,
    // until the deadline, and every TCP health check logged as a timeout.
    raw.allowHalfOpen = false;
    this.#terminator.accept(raw, {
      onTlsSecure: (socket) => {
        if (!waiting) {
          socket.destroy();
          return;
        }
        waiting = false;
        // Half-close passes through the splice again.
        raw.allowHalfOpen = true;
        socket.allowHalfOpen = true;
        // Nothing is read until the backend is connected.
        socket.pause();
        state.client = socket;
        state.tls = tlsDetails(socket);
        state.sni = state.tls.sni;
        done.next();
      },
      onTlsError: (err) => {
        if (!waiting) return;
        waiting = false;
        if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') {
          done.fail(new TlsHandshakeError((err as NodeJS.ErrnoException).code ?? err.message, err));
        } else if (raw.bytesRead > state.headerBytes) {
          // The client went away after sending part of a handshake.
          done.fail(new IncompleteHandshakeError('L4LB_TLS_HANDSHAKE'));
        } else {
          // It sent nothing: a TCP health check or a port scan, no TLS failure.
          done.gone();
        }
      },
    }, state.hello);
    return () => {
      waiting = false;
    };
  }
}
