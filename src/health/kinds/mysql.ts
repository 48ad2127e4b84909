/**
 * kind mysql (MySQL, MariaDB): the server speaks first, so the probe waits
 * for its greeting (a protocol 10 handshake packet) and a frozen server
 * fails within the timeout. An error packet in its place (`Too many
 * connections`, `Host ... is blocked`) is down with the server's message.
 *
 * What the server logs decides the rest. Measured on MariaDB 10.11: a client
 * that leaves after the greeting, with a FIN or a reset, is logged at the
 * default log_warnings=2 as `Aborted connection ... (This connection closed
 * normally without authentication)` and counted in Aborted_connects; a
 * COM_QUIT before the login is answered `Got packets out of order` and
 * logged the same way. Only a completed login leaves nothing. So, with
 * `mysql.user`, the probe logs in as that user with an empty password
 * (HandshakeResponse41, mysql_native_password, as HAProxy's mysql-check
 * post-41 does) and, after the OK packet, sends COM_QUIT; the server closes,
 * then the probe. Without a user it reads the greeting and closes, and the
 * checker warns once that the server logs each probe.
 *
 * A refused login (access denied) still shows a server that answers: up,
 * with a note (the server logs every refused login) that the checker
 * passes on once. Any other error after the login is down with its message.
 */
import { describeReply, fail, LEAVE, shown, type Conversation, type Verdict } from './conversation.js';

export interface MysqlProbeLogin {
  /** Log in as this user (no password); null = greeting only. */
  readonly user: string | null;
}

/** Protocol 10 greetings are about 100 bytes; packets after the login are small too. */
const MAX_PACKET_BYTES = 64 * 1024;
const GREETING_PROTOCOL_10 = 0x0a;
const OK_PACKET = 0x00;
const ERR_PACKET = 0xff;
const AUTH_SWITCH_REQUEST = 0xfe;
const AUTH_MORE_DATA = 0x01;
/** caching_sha2_password's "fast auth succeeded": an OK packet follows. */
const FAST_AUTH_SUCCESS = 0x03;

const CLIENT_LONG_PASSWORD = 0x1;
const CLIENT_PROTOCOL_41 = 0x200;
const CLIENT_SECURE_CONNECTION = 0x8000;
const CLIENT_PLUGIN_AUTH = 0x80000;
/** What the probe asks for; never more than the server offers. */
const CLIENT_CAPABILITIES = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
/** utf8_general_ci: known to every server since 4.1. */
const CHARSET_UTF8 = 33;
const MAX_CLIENT_PACKET = 16 * 1024 * 1024;
const AUTH_PLUGIN = 'mysql_native_password';

/** ER_DBACCESS_DENIED_ERROR, ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR: the server is fine, the login is not. */
const ACCESS_DENIED = new Set([1044, 1045, 1698]);

/** A packet: 3-byte length (little-endian), sequence id, body. */
function packet(seq: number, body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUIntLE(body.length, 0, 3);
  head[3] = seq & 0xff;
  return Buffer.concat([head, body]);
}

/** COM_QUIT opens a new command: sequence 0. */
const COM_QUIT = packet(0, Buffer.from([0x01]));

/** `1045: Access denied for user ...`, from an error packet's body. */
function errorText(body: Buffer): { code: number; text: string } {
  if (body.length < 3) return { code: 0, text: 'malformed error packet' };
  const code = body.readUInt16LE(1);
  // Protocol 4.1: '#' and a five-character SQLSTATE before the message (absent in early errors such as "Host is blocked").
  const message = body[3] === 0x23 ? body.subarray(9) : body.subarray(3);
  return { code, text: `${code}: ${shown(message.toString('utf8'))}` };
}

/** The capability flags of a protocol 10 greeting, or a reason it is not one. */
function greetingCapabilities(body: Buffer): number | string {
  const versionEnd = body.indexOf(0, 1);
  // version NUL, connection id (4), scramble part 1 (8), filler (1), capabilities low (2)
  const low = versionEnd + 1 + 4 + 8 + 1;
  if (versionEnd < 0 || body.length < low + 2) return 'truncated mysql greeting';
  let caps = body.readUInt16LE(low);
  // charset (1), status (2), capabilities high (2): present in every server since 4.1.
  if (body.length >= low + 2 + 3 + 2) caps |= body.readUInt16LE(low + 5) << 16;
  return caps >>> 0;
}

function handshakeResponse(seq: number, user: string, serverCaps: number): Buffer {
  const caps = (CLIENT_CAPABILITIES & serverCaps) | CLIENT_PROTOCOL_41;
  const head = Buffer.alloc(32);
  head.writeUInt32LE(caps >>> 0, 0);
  head.writeUInt32LE(MAX_CLIENT_PACKET, 4);
  head[8] = CHARSET_UTF8;
  // 23 reserved zero bytes follow (MariaDB reads its own capabilities from the last 4: none).
  const parts = [head, Buffer.from(`${user}\0`, 'utf8'), Buffer.from([0])];
  if ((caps & CLIENT_PLUGIN_AUTH) !== 0) parts.push(Buffer.from(`${AUTH_PLUGIN}\0`, 'latin1'));
  // An empty auth response: one length byte 0 (secure connection), or an empty NUL-terminated string: the same byte.
  return packet(seq, Buffer.concat(parts));
}

export function mysqlConversation(login: MysqlProbeLogin): Conversation {
  const user = login.user;
  let received: Buffer = Buffer.alloc(0);
  let stage: 'greeting' | 'login' | 'switched' = 'greeting';
  let socket: { write(b: Buffer): unknown } | undefined;

  const up = (note?: string): Verdict => (note === undefined ? { ok: true, reason: '', farewell: LEAVE } : { ok: true, reason: '', farewell: LEAVE, note });
  const refusedNote = (why: string): string =>
    `mysql probe login as ${user} refused (${why}); the server logs every refused login: create the user without a password and grants (CREATE USER '${user}'@'PROBE_ADDRESS')`;

  const greeting = (seq: number, body: Buffer): Verdict | undefined => {
    if (body[0] === ERR_PACKET) return { ...fail(`mysql error ${errorText(body).text}`), farewell: LEAVE };
    if (body[0] !== GREETING_PROTOCOL_10) return fail(describeReply(`not a mysql greeting (protocol ${body[0] ?? 'none'})`, body));
    const caps = greetingCapabilities(body);
    if (typeof caps === 'string') return fail(caps);
    if (user === null) return up('mysql probe without health.mysql.user: the server logs an aborted connection for every probe; set mysql.user (see README)');
    if ((caps & CLIENT_PROTOCOL_41) === 0) return up('mysql server does not speak protocol 4.1: the probe reads its greeting only, and the server logs each probe');
    socket!.write(handshakeResponse(seq + 1, user, caps));
    stage = 'login';
    return undefined;
  };

  const afterLogin = (seq: number, body: Buffer): Verdict | undefined => {
    switch (body[0]) {
      case OK_PACKET:
        return { ok: true, reason: '', farewell: COM_QUIT, serverCloses: true };
      case ERR_PACKET: {
        const { code, text } = errorText(body);
        if (ACCESS_DENIED.has(code)) return up(refusedNote(text));
        return { ...fail(`mysql error ${text}`), farewell: LEAVE };
      }
      case AUTH_SWITCH_REQUEST: {
        const plugin = body.toString('latin1', 1, Math.max(1, body.indexOf(0, 1)));
        if (stage === 'switched') return up(refusedNote(`asked again to switch authentication, to ${plugin}`));
        // An empty password's answer is empty for mysql_native_password and caching_sha2_password alike.
        socket!.write(packet(seq + 1, Buffer.alloc(0)));
        stage = 'switched';
        return undefined;
      }
      case AUTH_MORE_DATA:
        if (body[1] === FAST_AUTH_SUCCESS) return undefined;
        return up(refusedNote('the server asks for a full authentication'));
      default:
        return fail(describeReply('unexpected mysql packet after the login', body));
    }
  };

  return {
    start(s): Verdict | undefined {
      socket = s;
      return undefined;
    },
    data(chunk: Buffer): Verdict | undefined {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      while (received.length >= 4) {
        const length = received.readUIntLE(0, 3);
        if (length > MAX_PACKET_BYTES) return fail(describeReply(`not a mysql packet (length ${length})`, received));
        if (received.length < 4 + length) return undefined;
        const seq = received[3]!;
        const body = received.subarray(4, 4 + length);
        received = received.subarray(4 + length);
        const verdict = stage === 'greeting' ? greeting(seq, body) : afterLogin(seq, body);
        if (verdict !== undefined) return verdict;
      }
      return undefined;
    },
    closed(): Verdict {
      return fail(describeReply(stage === 'greeting' ? 'connection closed before the mysql greeting' : 'connection closed during the mysql login', received));
    },
  };
}
