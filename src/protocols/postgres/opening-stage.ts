/**
 * The first packets of a PostgreSQL connection, read before any server is
 * chosen (front stage of `protocol: postgres` listeners).
 *
 * - A CancelRequest is taken whole and the front ends there: the session
 *   sends it to the server that issued its key.
 * - With TLS on the listener (terminate or passthrough), l4lb answers in the
 *   server's place: SSLRequest gets `S` and the TLS stages follow;
 *   GSSENCRequest gets `N` (libpq then asks for SSL); a StartupMessage in
 *   plaintext gets an ErrorResponse (FATAL, 28000) and the connection ends
 *   as `tls_required`; a ClientHello first (direct TLS, PostgreSQL 17) goes
 *   straight to the TLS stages. Bytes sent after a request, before its
 *   answer, are refused, as PostgreSQL refuses them (they would be read as
 *   if they had come over TLS).
 * - Without TLS (plain), every packet but a cancel is given back untouched
 *   for the server, which answers for itself; so are bytes no server would
 *   take (the server says why). A listener whose pool speaks TLS to its
 *   servers answers SSLRequest and GSSENCRequest with `N` itself: its
 *   clients talk plaintext to l4lb, l4lb talks TLS to the server.
 */
import {
  ClientSilentError,
  HandshakeTimeoutError,
  IncompleteHandshakeError,
  PostgresProtocolError,
  TlsRequiredError,
  type L4lbError,
} from '../../errors.js';
import { readSocket } from '../../net/socket-reader.js';
import type { FrontStage, FrontState, StageDone } from '../../proxy/front/stage.js';
import {
  ANSWER_NO_BYTE,
  ANSWER_YES_SSL_BYTE,
  MAX_CANCEL_KEY_BYTES,
  MAX_OPENING_BYTES,
  TLS_HANDSHAKE_RECORD,
  errorResponse,
  openingKind,
  type PostgresFront,
} from './messages.js';

/** How a listener meets PostgreSQL clients: its `tls.mode`, or plain. */
export type PostgresListenerMode = 'plain' | 'terminate' | 'passthrough';

/** What a client that began in plaintext is told (libpq prints it: "FATAL:  SSL required by the balancer"). */
const TLS_REQUIRED_RESPONSE = errorResponse(
  'FATAL',
  '28000',
  'SSL required by the balancer',
  'Connect with sslmode=require (or verify-ca, verify-full).',
);

export class PostgresOpeningStage implements FrontStage {
  readonly waits = true;
  readonly #mode: PostgresListenerMode;
  /** plain only: answer SSLRequest/GSSENCRequest with N here (the pool speaks TLS to its servers). */
  readonly #refuseEncryption: boolean;

  constructor(mode: PostgresListenerMode, refuseEncryption = false) {
    this.#mode = mode;
    this.#refuseEncryption = refuseEncryption;
  }

  timeout(after: string): L4lbError {
    return this.#mode === 'plain' ? new ClientSilentError(after) : new HandshakeTimeoutError('L4LB_TLS_HANDSHAKE', after);
  }

  run(state: FrontState, done: StageDone): () => void {
    const raw = state.raw;
    const tls = this.#mode !== 'plain';
    const answersItself = tls || this.#refuseEncryption;
    const pg: PostgresFront = { opening: null, cancel: null };
    state.postgres = pg;
    let buf: Buffer = Buffer.alloc(0);
    /** Requests answered here; a FIN after one (a client that did not like the answer) is no failure. */
    let answered = 0;

    /** Give what was read back to the socket, for the next stage or the server. */
    const handOn = (opening: PostgresFront['opening']): void => {
      stop();
      pg.opening = opening;
      if (buf.length > 0) raw.unshift(buf);
      done.next();
    };
    const refuse = (err: L4lbError): void => {
      stop();
      done.fail(err);
    };

    const decide = (): void => {
      for (;;) {
        if (buf.length === 0) return;
        if (buf[0] === TLS_HANDSHAKE_RECORD) return handOn('direct_tls');
        if (buf.length < 8) return;
        const length = buf.readInt32BE(0);
        if (length < 8 || length > MAX_OPENING_BYTES) {
          if (!tls) return handOn('other');
          return refuse(new PostgresProtocolError(`opening packet of ${length} bytes`));
        }
        if (buf.length < length) return;
        const kind = openingKind(buf.readInt32BE(4));
        if (kind === 'cancel') {
          if (length < 16 || length > 12 + MAX_CANCEL_KEY_BYTES) {
            if (!tls) return handOn('other');
            return refuse(new PostgresProtocolError(`CancelRequest of ${length} bytes`));
          }
          stop();
          // Anything after it is ignored, as the server ignores it.
          pg.cancel = { pid: buf.readInt32BE(8), secret: Buffer.from(buf.subarray(12, length)) };
          return done.finish();
        }
        if (kind === 'startup') {
          if (!tls) return handOn('startup');
          stop();
          // Told why, then closed: psql shows the message instead of a reset.
          raw.write(TLS_REQUIRED_RESPONSE, () => done.fail(new TlsRequiredError()));
          return;
        }
        // SSLRequest or GSSENCRequest.
        if (!answersItself) return handOn(kind);
        if (buf.length > length) return refuse(new PostgresProtocolError(`data after ${kind === 'ssl' ? 'SSLRequest' : 'GSSENCRequest'}, before its answer`));
        buf = Buffer.alloc(0);
        if (kind === 'ssl' && tls) {
          stop();
          pg.opening = 'ssl';
          raw.write(ANSWER_YES_SSL_BYTE);
          return done.next();
        }
        // No GSS here (nor SSL, when plain): the client goes on with its next packet.
        answered++;
        raw.write(ANSWER_NO_BYTE);
      }
    };

    const stop = readSocket(raw, {
      data(chunk) {
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
        decide();
      },
      // A FIN before a whole packet: it never will be. Nothing sent (a TCP
      // health check), or nothing after an answer it did not like, is a plain close.
      end() {
        stop();
        if (!tls || (buf.length === 0 && (answered > 0 || raw.bytesRead === state.headerBytes))) done.gone();
        else done.fail(new IncompleteHandshakeError('L4LB_TLS_HANDSHAKE'));
      },
      close() {
        stop();
        done.gone();
      },
    });
    return stop;
  }
}
