/**
 * PostgreSQL wire facts l4lb needs before and around the startup: the
 * opening packets a client may send first (SSLRequest, GSSENCRequest,
 * CancelRequest, StartupMessage), the server's one-byte answers, the
 * ErrorResponse it sends to refuse, and the BackendKeyData it reads.
 * From the "Message Formats" chapter of the PostgreSQL documentation.
 *
 * An opening packet has no type byte: Int32 length (itself included), Int32
 * code, then the body. Every message after it has a type byte first.
 */

/** SSLRequest: "1234" in the high 16 bits, "5679" in the low. */
export const SSL_REQUEST_CODE = 80877103;
/** GSSENCRequest: 1234/5680. */
export const GSSENC_REQUEST_CODE = 80877104;
/** CancelRequest: 1234/5678. */
export const CANCEL_REQUEST_CODE = 80877102;
/** StartupMessage codes are protocol versions: major in the high 16 bits. */
export const PROTOCOL_3_0 = 3 << 16;

/** Largest opening packet a server accepts (PostgreSQL's MAX_STARTUP_PACKET_LENGTH). */
export const MAX_OPENING_BYTES = 10_000;
/** Protocol 3.2 cancel keys are up to 256 bytes (3.0: 4 bytes). */
export const MAX_CANCEL_KEY_BYTES = 256;

/** The 8 bytes of an SSLRequest. */
export const SSL_REQUEST = opening(SSL_REQUEST_CODE);

/** Answers to SSLRequest and GSSENCRequest: one byte, no message framing. */
export const ANSWER_YES_SSL = 0x53; // 'S'
export const ANSWER_YES_GSS = 0x47; // 'G'
export const ANSWER_NO = 0x4e; // 'N'
export const ANSWER_NO_BYTE = Buffer.from([ANSWER_NO]);
export const ANSWER_YES_SSL_BYTE = Buffer.from([ANSWER_YES_SSL]);

/** Message type bytes l4lb reads. */
export const MSG_AUTHENTICATION = 0x52; // 'R'
export const MSG_BACKEND_KEY_DATA = 0x4b; // 'K'
export const MSG_ERROR_RESPONSE = 0x45; // 'E'
export const MSG_READY_FOR_QUERY = 0x5a; // 'Z'
export const MSG_TERMINATE = 0x58; // 'X'

/** The first byte of a TLS record carrying a handshake (direct TLS, PostgreSQL 17). */
export const TLS_HANDSHAKE_RECORD = 0x16;

/**
 * What a PostgreSQL listener's front end learned of a connection: how the
 * client opened it, and the key when it came to cancel a query.
 */
export interface PostgresFront {
  /** ssl/gssenc: it asked first; startup: it began in plaintext; direct_tls: a ClientHello first; other: bytes no server would take. */
  opening: 'ssl' | 'gssenc' | 'startup' | 'direct_tls' | 'other' | null;
  /** Set on a CancelRequest connection: it goes to the server that issued this key. */
  cancel: CancelKey | null;
}

/** What a client's opening packet is. */
export type OpeningKind = 'ssl' | 'gssenc' | 'cancel' | 'startup';

export function openingKind(code: number): OpeningKind {
  if (code === SSL_REQUEST_CODE) return 'ssl';
  if (code === GSSENC_REQUEST_CODE) return 'gssenc';
  if (code === CANCEL_REQUEST_CODE) return 'cancel';
  return 'startup';
}

/** An 8-byte opening packet with no body (SSLRequest, GSSENCRequest). */
function opening(code: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(code, 4);
  return b;
}

/** A StartupMessage for protocol 3.0 with the given parameters (user is required by servers). */
export function startupMessage(params: Readonly<Record<string, string>>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(params)) parts.push(Buffer.from(`${k}\0${v}\0`, 'utf8'));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const b = Buffer.alloc(8 + body.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(PROTOCOL_3_0, 4);
  body.copy(b, 8);
  return b;
}

/** A Terminate message: how a client ends a session cleanly. */
export const TERMINATE = Buffer.from([MSG_TERMINATE, 0, 0, 0, 4]);

/**
 * An ErrorResponse with severity, SQLSTATE and message: how a server (and
 * l4lb in its place) refuses a client before or during the startup.
 */
export function errorResponse(severity: 'FATAL' | 'ERROR', sqlstate: string, message: string, hint?: string): Buffer {
  const h = hint === undefined ? '' : `H${hint}\0`;
  const body = Buffer.from(`S${severity}\0V${severity}\0C${sqlstate}\0M${message}\0${h}\0`, 'utf8');
  const b = Buffer.alloc(5 + body.length);
  b[0] = MSG_ERROR_RESPONSE;
  b.writeInt32BE(4 + body.length, 1);
  body.copy(b, 5);
  return b;
}

/** The fields of an ErrorResponse (or NoticeResponse) body, by their one-letter codes. */
export function errorFields(body: Buffer): Map<string, string> {
  const fields = new Map<string, string>();
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const code = String.fromCharCode(body[i]!);
    const end = body.indexOf(0, i + 1);
    if (end < 0) break;
    fields.set(code, body.toString('utf8', i + 1, end));
    i = end + 1;
  }
  return fields;
}

/** A session's cancel key, as BackendKeyData gave it and a CancelRequest repeats it. */
export interface CancelKey {
  readonly pid: number;
  /** 4 bytes in protocol 3.0, up to 256 in 3.2. */
  readonly secret: Buffer;
}

/** A CancelRequest packet for `key` (what l4lb forwards to the server). */
export function cancelRequest(key: CancelKey): Buffer {
  const b = Buffer.alloc(12 + key.secret.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  b.writeInt32BE(key.pid, 8);
  key.secret.copy(b, 12);
  return b;
}
