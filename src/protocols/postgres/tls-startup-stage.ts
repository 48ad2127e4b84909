/**
 * The first packet inside a TLS session terminated here (protocol postgres,
 * tls.mode terminate): a StartupMessage, given back untouched for the
 * server, or a CancelRequest, which PostgreSQL 17's libpq sends over TLS
 * when the session it cancels used TLS. The cancel is taken whole and the
 * front ends there, as for a plaintext one.
 */
import { ClientSilentError, type L4lbError } from '../../errors.js';
import { readSocket } from '../../net/socket-reader.js';
import type { FrontStage, FrontState, StageDone } from '../../proxy/front/stage.js';
import { CANCEL_REQUEST_CODE, MAX_CANCEL_KEY_BYTES } from './messages.js';

export class PostgresTlsStartupStage implements FrontStage {
  readonly waits = true;

  timeout(after: string): L4lbError {
    return new ClientSilentError(after);
  }

  run(state: FrontState, done: StageDone): () => void {
    const client = state.client;
    let buf: Buffer = Buffer.alloc(0);
    const stop = readSocket(client, {
      data(chunk) {
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
        if (buf.length < 8) return;
        const length = buf.readInt32BE(0);
        const isCancel = buf.readInt32BE(4) === CANCEL_REQUEST_CODE && length >= 16 && length <= 12 + MAX_CANCEL_KEY_BYTES;
        if (!isCancel) {
          // Whatever it is, the server reads it and answers for itself.
          stop();
          client.unshift(buf);
          return done.next();
        }
        if (buf.length < length) return;
        stop();
        state.postgres!.cancel = { pid: buf.readInt32BE(8), secret: Buffer.from(buf.subarray(12, length)) };
        done.finish();
      },
      end() {
        stop();
        done.gone();
      },
      close() {
        stop();
        done.gone();
      },
    });
    return stop;
  }
}
