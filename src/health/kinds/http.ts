/**
 * kind http: one HTTP/1.1 request, judged by the status code alone. Made for
 * REST health endpoints such as Patroni's (`GET /primary` answers 200 on the
 * leader and 503 elsewhere, `/replica` the reverse). Only the status line is
 * read, at most {@link MAX_STATUS_LINE_BYTES}; the body is never waited for:
 * once the status is known the probe ends its side (a FIN, or close_notify
 * over TLS) and drops the rest while the server closes (`Connection:
 * close`), so the server never writes into a reset connection.
 */
import type net from 'node:net';
import type { Endpoint, HealthHttpModel } from '../../config/model.js';
import { LEAVE, describeReply, fail, type Conversation, type Verdict } from './conversation.js';

/** The request of an http probe, its Host header decided. */
export interface HttpProbeRequest {
  readonly method: HealthHttpModel['method'];
  readonly path: string;
  readonly expectStatus: readonly number[];
  /** The Host header's value. */
  readonly host: string;
}

/** A status line is some 20 bytes; a peer that sends this much without a line break is not an HTTP server. */
const MAX_STATUS_LINE_BYTES = 4096;
/** `HTTP/1.1 200 OK`: version, a three-digit code, then an optional reason phrase. */
const STATUS_LINE = /^HTTP\/\d\.\d (\d{3})(?:[ \t].*)?$/s;

/**
 * The Host header when none is configured: the server's host as its
 * address was written (a name, not what it resolved to), and the port
 * unless it is HTTP's default.
 */
export function defaultHostHeader(address: Endpoint, port: number): string {
  const text = address.text;
  let host: string;
  if (text === '') host = address.host.includes(':') ? `[${address.host}]` : address.host;
  else if (text.startsWith('[')) host = text.slice(0, text.lastIndexOf(']') + 1);
  else host = text.slice(0, text.lastIndexOf(':'));
  return port === 80 ? host : `${host}:${port}`;
}

export function httpConversation(request: HttpProbeRequest): Conversation {
  const what = `${request.method} ${request.path}`;
  let received: Buffer = Buffer.alloc(0);
  return {
    start(socket: net.Socket): Verdict | undefined {
      // Connection: close: the server ends the connection after its answer.
      socket.write(
        `${what} HTTP/1.1\r\nHost: ${request.host}\r\nUser-Agent: l4lb-health\r\nAccept: */*\r\nConnection: close\r\n\r\n`,
        'latin1',
      );
      return undefined;
    },
    data(chunk: Buffer): Verdict | undefined {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const eol = received.indexOf(0x0a);
      if (eol < 0) {
        return received.length > MAX_STATUS_LINE_BYTES ? fail(describeReply(`no http status line in the first ${MAX_STATUS_LINE_BYTES} bytes`, received)) : undefined;
      }
      const line = received.toString('latin1', 0, eol).replace(/\r$/, '');
      const m = STATUS_LINE.exec(line);
      if (m === null) return fail(describeReply(`malformed http status line from ${what}`, received));
      const status = Number(m[1]);
      return request.expectStatus.includes(status)
        ? { ok: true, reason: '', farewell: LEAVE }
        : { ok: false, reason: `http status ${status} from ${what}`, farewell: LEAVE };
    },
    closed(): Verdict {
      return fail(describeReply(`connection closed before the http status line from ${what}`, received));
    },
  };
}
