/**
 * kind postgres: a protocol 3.0 StartupMessage, judged by the server's first
 * message. Any authentication request means the server is accepting
 * sessions: up. An ErrorResponse with SQLSTATE 57P03 (cannot_connect_now:
 * starting up, shutting down, in recovery without hot standby) means down;
 * any other error (no such role, wrong database, pg_hba refusal) still shows
 * a server that is alive and answering: up.
 *
 * The probe leaves nothing in the server's log: at a password or SASL prompt
 * it just closes (PostgreSQL logs nothing for a client that leaves there,
 * provided it sends a FIN, not a reset); after AuthenticationOk (trust) it
 * reads on to ReadyForQuery and sends Terminate, as a client would.
 */
import type net from 'node:net';
import {
  MSG_AUTHENTICATION,
  MSG_ERROR_RESPONSE,
  MSG_READY_FOR_QUERY,
  TERMINATE,
  errorFields,
  startupMessage,
} from '../../protocols/postgres/messages.js';
import { describeReply, fail, type Conversation, type Verdict } from './conversation.js';

export interface PostgresProbeLogin {
  readonly user: string;
  readonly database: string;
}

/** SQLSTATE cannot_connect_now: the server is up as a process but takes no sessions. */
const CANNOT_CONNECT_NOW = '57P03';
/** AuthenticationOk's code, after the length: no password needed. */
const AUTH_OK = 0;
/** A message longer than this is not a startup reply (real ones are a few hundred bytes). */
const MAX_MESSAGE_BYTES = 64 * 1024;
/** All that may arrive between AuthenticationOk and ReadyForQuery (ParameterStatus, BackendKeyData, notices). */
const MAX_STARTUP_REPLY_BYTES = 256 * 1024;
/** Longest server message quoted in a reason. */
const MAX_SHOWN_MESSAGE = 200;
/** How the probe names itself in pg_stat_activity and the server's log lines. */
const APPLICATION_NAME = 'l4lb-health';

/** Closes with a FIN and waits for the server's; with Terminate first when a session was opened. */
const LEAVE: Buffer = Buffer.alloc(0);

export function postgresConversation(login: PostgresProbeLogin): Conversation {
  let received: Buffer = Buffer.alloc(0);
  let total = 0;
  /** AuthenticationOk came: read on to ReadyForQuery. */
  let authenticated = false;

  /** One complete message: a verdict, or undefined to read the next. */
  const judge = (type: number, body: Buffer): Verdict | undefined => {
    if (type === MSG_ERROR_RESPONSE) return judgeError(body);
    if (!authenticated) {
      if (type !== MSG_AUTHENTICATION) return fail(`unexpected postgres message ${describeType(type)} before authentication`);
      if (body.length < 4) return fail('malformed postgres authentication request');
      if (body.readInt32BE(0) !== AUTH_OK) return { ok: true, reason: '', farewell: LEAVE };
      authenticated = true;
      return undefined;
    }
    // ParameterStatus, BackendKeyData and notices come before ReadyForQuery: skip them.
    return type === MSG_READY_FOR_QUERY ? { ok: true, reason: '', farewell: TERMINATE } : undefined;
  };

  return {
    start(socket: net.Socket): Verdict | undefined {
      socket.write(startupMessage({ user: login.user, database: login.database, application_name: APPLICATION_NAME }));
      return undefined;
    },
    data(chunk: Buffer): Verdict | undefined {
      total += chunk.length;
      if (total > MAX_STARTUP_REPLY_BYTES) return fail(`postgres server sent over ${MAX_STARTUP_REPLY_BYTES} bytes without ReadyForQuery`);
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      // Every message: a type byte, then an Int32 length that counts itself but not the type.
      while (received.length >= 5) {
        const type = received[0]!;
        const length = received.readInt32BE(1);
        if (length < 4 || length > MAX_MESSAGE_BYTES) {
          return fail(describeReply(`not a postgres message (type ${describeType(type)}, length ${length})`, received));
        }
        if (received.length < 1 + length) return undefined;
        const verdict = judge(type, received.subarray(5, 1 + length));
        if (verdict !== undefined) return verdict;
        received = received.subarray(1 + length);
      }
      return undefined;
    },
    closed(): Verdict {
      const what = authenticated ? 'connection closed before ReadyForQuery' : 'connection closed before a complete postgres message';
      return fail(describeReply(what, received));
    },
  };
}

/** An ErrorResponse: down only for cannot_connect_now; the server closes after it. */
function judgeError(body: Buffer): Verdict {
  const fields = errorFields(body);
  const code = fields.get('C') ?? '';
  if (code !== CANNOT_CONNECT_NOW) return { ok: true, reason: '', farewell: LEAVE };
  const message = (fields.get('M') ?? 'cannot connect now').slice(0, MAX_SHOWN_MESSAGE);
  return { ok: false, reason: `postgres ${code}: ${message}`, farewell: LEAVE };
}

/** `'R'`, or `0x01` for a byte that is not a printable letter. */
function describeType(type: number): string {
  return type >= 0x21 && type <= 0x7e ? `'${String.fromCharCode(type)}'` : `0x${type.toString(16).padStart(2, '0')}`;
}
