/**
 * Read the ClientHello (and only that): for passthrough, to learn the SNI
 * for routing; for termination, when the terminator must look first
 * (strict_sni, or a ticket of the previous key). The bytes are given back
 * untouched, for whoever answers the handshake. When the hello itself is
 * not needed, only the first chunk is looked at, so that a client that
 * does not speak TLS is told apart (and named: see not-tls.ts) instead of
 * failing with OpenSSL's "wrong version number".
 */
import { HandshakeTimeoutError, IncompleteHandshakeError, TlsHandshakeError, type L4lbError } from '../../errors.js';
import { ClientHelloError, ClientHelloReader } from '../../tls/client-hello.js';
import { readSocket } from '../../net/socket-reader.js';
import { TLS_HANDSHAKE, describeNotTls } from '../../tls/not-tls.js';
import type { FrontStage, FrontState, StageDone } from './stage.js';

export class ClientHelloStage implements FrontStage {
  readonly waits = true;
  readonly #wanted: (() => boolean) | null;

  /** @param wanted asked per connection: false skips the read (no cost). Default: always read. */
  constructor(wanted: (() => boolean) | null = null) {
    this.#wanted = wanted;
  }

  timeout(after: string): L4lbError {
    return new HandshakeTimeoutError('L4LB_TLS_HANDSHAKE', after);
  }

  run(state: FrontState, done: StageDone): (() => void) | void {
    const raw = state.raw;
    const peekOnly = this.#wanted !== null && !this.#wanted();
    const reader = peekOnly ? null : new ClientHelloReader();
    /** The first bytes, for naming what a client that is not TLS sent. */
    let first: Buffer | null = null;
    // The client left (FIN, reset) before its ClientHello was complete: a
    // failed handshake if it sent part of one; a plain close if it sent
    // nothing (a TCP health check or a port scan is no TLS failure).
    const left = (): void => {
      stop();
      if (raw.bytesRead > state.headerBytes) done.fail(new IncompleteHandshakeError('L4LB_TLS_HANDSHAKE'));
      else done.gone();
    };
    const stop = readSocket(raw, {
      data(chunk) {
        first ??= chunk;
        if (reader === null) {
          stop();
          if (chunk[0] !== TLS_HANDSHAKE) return done.fail(new TlsHandshakeError(describeNotTls(chunk)));
          raw.unshift(chunk);
          return done.next();
        }
        let result;
        try {
          result = reader.push(chunk);
        } catch (err) {
          stop();
          const notTls = err instanceof ClientHelloError && err.reason === 'not_tls';
          done.fail(new TlsHandshakeError(notTls ? describeNotTls(first) : err instanceof ClientHelloError ? `ClientHello ${err.reason}` : 'ClientHello unreadable', err));
          return;
        }
        if (result.state === 'need_more') return;
        stop();
        if (result.buffered.length > 0) raw.unshift(result.buffered);
        state.hello = result.hello;
        state.sni = result.hello.sni;
        done.next();
      },
      end: left,
      close: left,
    });
    return stop;
  }
}
