/**
 * Incremental TLS ClientHello reader for passthrough mode: finds the SNI and
 * ALPN offer without terminating TLS, so the connection can be routed and the
 * untouched bytes forwarded to the chosen backend.
 *
 * Formats: TLS record layer (RFC 8446 §5.1, RFC 5246 §6.2), ClientHello
 * (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2), server_name (RFC 6066 §3),
 * ALPN (RFC 7301 §3.1), supported_versions (RFC 8446 §4.2.1),
 * session_ticket (RFC 5077 §3.2), pre_shared_key (RFC 8446 §4.2.11).
 * The last two let TLS termination see which ticket key a resumption
 * attempt names (src/tls/terminator.ts).
 *
 * The reader is strict: anything that is not a well-formed ClientHello is
 * rejected with a {@link ClientHelloError} carrying a stable `reason`, as early
 * as the bytes allow (the very first byte of an HTTP request or SSH banner is
 * enough). It copes with a ClientHello split across any number of TCP
 * segments and across several handshake records, and it never holds more
 * than `maxBytes` of ClientHello.
 */
import { L4lbError } from '../errors.js';

/** Default bound on the bytes (record headers included) a ClientHello may take. */
export const DEFAULT_MAX_CLIENT_HELLO_BYTES = 16384;

const CONTENT_TYPE_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const RECORD_HEADER_BYTES = 5;
const HANDSHAKE_HEADER_BYTES = 4;
/** RFC 8446 §5.1: a plaintext fragment is at most 2^14 bytes. */
const MAX_FRAGMENT_BYTES = 16384;
/** version(2) random(32) session_id<0>(1) cipher_suites<2>(2+2) compression<1>(1+1). */
const MIN_CLIENT_HELLO_BODY = 41;
/** Smallest sensible `maxBytes`: one record holding the smallest possible ClientHello. */
const MIN_MAX_BYTES = RECORD_HEADER_BYTES + HANDSHAKE_HEADER_BYTES + MIN_CLIENT_HELLO_BODY;
/** Received chunks kept by reference before they are copied into one buffer. */
const MAX_HELD_CHUNKS = 16;

const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const EXT_SESSION_TICKET = 35;
const EXT_PRE_SHARED_KEY = 41;
const EXT_SUPPORTED_VERSIONS = 43;
const SERVER_NAME_HOST_NAME = 0;

/**
 * Why a byte stream was rejected. Stable: logs and metrics may use it.
 *
 * - `not_tls`: the first record header cannot be TLS (HTTP, SSH, SSLv2, ...).
 * - `bad_record`: a later record header is wrong (content type, version,
 *   zero or oversized length).
 * - `not_client_hello`: a TLS handshake, but its first message is not a ClientHello.
 * - `too_large`: the ClientHello would take more than `maxBytes`.
 * - `bad_length`: a length field disagrees with the bytes around it.
 * - `bad_version`: `legacy_version` is not TLS (major version 3).
 * - `bad_extension`: an extension is malformed, duplicated or misplaced.
 * - `bad_server_name`: the server_name is not a valid DNS host name.
 */
export type ClientHelloErrorReason =
  | 'not_tls'
  | 'bad_record'
  | 'not_client_hello'
  | 'too_large'
  | 'bad_length'
  | 'bad_version'
  | 'bad_extension'
  | 'bad_server_name';

/** The bytes received are not a (well-formed, small enough) TLS ClientHello. */
export class ClientHelloError extends L4lbError {
  /** Machine-readable cause; see {@link ClientHelloErrorReason}. */
  readonly reason: ClientHelloErrorReason;
  constructor(reason: ClientHelloErrorReason, message: string) {
    super('L4LB_CLIENT_HELLO_INVALID', `invalid TLS ClientHello (${reason}): ${message}`);
    this.reason = reason;
  }
}

/** What routing and logging need from a ClientHello. */
export interface ClientHelloInfo {
  /** server_name host_name, lower-cased, trailing dot removed; null when absent. */
  sni: string | null;
  /** ALPN protocol names offered, in the client's order (bytes as latin1); empty when absent. */
  alpn: string[];
  /** `legacy_version` (0x0303 for TLS 1.2 and 1.3 clients). */
  legacyVersion: number;
  /** supported_versions offered (e.g. 0x0304, 0x0303), GREASE values included; empty when absent. */
  supportedVersions: number[];
  /**
   * TLS 1.2 session ticket (session_ticket extension), or null when absent
   * or empty (an empty one only asks for a ticket). A view into the
   * ClientHello's bytes: copy it to keep it.
   */
  sessionTicket: Buffer | null;
  /**
   * TLS 1.3 pre_shared_key identities (resumption tickets), in the client's
   * order; views like `sessionTicket`. Empty when absent, or when the list
   * is malformed (the TLS server refuses that itself; routing needs none).
   */
  pskIdentities: Buffer[];
}

/** Result of {@link ClientHelloReader.push}. */
export type ClientHelloResult =
  | { state: 'need_more' }
  | {
      state: 'done';
      hello: ClientHelloInfo;
      /** Every byte pushed so far, unchanged and in order: forward it to the backend. */
      buffered: Buffer;
    };

/** Options for {@link ClientHelloReader}. */
export interface ClientHelloReaderOptions {
  /** Most bytes (record headers included) the ClientHello may take; default 16384. */
  maxBytes?: number;
}

const NEED_MORE: { state: 'need_more' } = Object.freeze({ state: 'need_more' as const });

/**
 * Reads a ClientHello from a byte stream, one `push()` per received chunk.
 *
 * ```ts
 * const reader = new ClientHelloReader();
 * socket.on('data', (chunk) => {
 *   const r = reader.push(chunk);           // throws ClientHelloError
 *   if (r.state === 'done') route(r.hello.sni, r.buffered);
 * });
 * ```
 *
 * Once `push()` has returned `done` or thrown, the reader is finished: a
 * failed reader throws the same error again, a done one throws an `Error`.
 */
export class ClientHelloReader {
  private readonly maxBytes: number;
  /** Chunks as pushed; kept by reference, concatenated once at the end. */
  private chunks: Buffer[] = [];
  private received = 0;
  /** ClientHello bytes parsed so far, record headers included. */
  private consumed = 0;
  private records = 0;
  // Current record header, assembled byte by byte (it may straddle chunks).
  private hdrPos = 0;
  private recLen = 0;
  /** Payload bytes of the current record not yet consumed. */
  private recLeft = 0;
  // Handshake message header (it may straddle records).
  private hsPos = 0;
  private hsLen = 0;
  /** Reassembly buffer for the handshake body; only when it is fragmented. */
  private msg: Buffer | null = null;
  private msgPos = 0;
  private failure: ClientHelloError | null = null;
  private finished = false;

  constructor(opts: ClientHelloReaderOptions = {}) {
    const max = opts.maxBytes ?? DEFAULT_MAX_CLIENT_HELLO_BYTES;
    if (!Number.isSafeInteger(max) || max < MIN_MAX_BYTES) {
      throw new RangeError(`maxBytes must be an integer >= ${MIN_MAX_BYTES}, got ${String(max)}`);
    }
    this.maxBytes = max;
  }

  /** Bytes pushed so far. */
  get bytesReceived(): number {
    return this.received;
  }

  /**
   * Feeds the next chunk of the stream.
   * @returns `need_more` until the ClientHello is complete, then `done`.
   * @throws {ClientHelloError} as soon as the bytes cannot be a valid ClientHello.
   */
  push(chunk: Buffer): ClientHelloResult {
    if (this.failure) throw this.failure;
    if (this.finished) throw new Error('ClientHelloReader: push() after the ClientHello was complete');
    if (chunk.length === 0) return NEED_MORE;
    this.chunks.push(chunk);
    this.received += chunk.length;
    let hello: ClientHelloInfo | null;
    try {
      hello = this.consume(chunk);
    } catch (err) {
      if (err instanceof ClientHelloError) {
        this.failure = err;
        this.release();
      }
      throw err;
    }
    if (hello === null) {
      // A client that trickles its ClientHello a byte per packet would leave
      // thousands of 1-byte Buffers here (hundreds of bytes of overhead each:
      // megabytes per connection for 16 KiB): fold them into one copy now and
      // then, so what is held stays close to the bytes received.
      if (this.chunks.length >= MAX_HELD_CHUNKS) this.chunks = [Buffer.concat(this.chunks, this.received)];
      return NEED_MORE;
    }
    this.finished = true;
    const buffered = this.chunks.length === 1 ? chunk : Buffer.concat(this.chunks, this.received);
    this.release();
    return { state: 'done', hello, buffered };
  }

  private release(): void {
    this.chunks = [];
    this.msg = null;
  }

  /** Walks one chunk through the record/handshake state machine. */
  private consume(chunk: Buffer): ClientHelloInfo | null {
    const n = chunk.length;
    let pos = 0;
    while (pos < n) {
      if (this.hdrPos < RECORD_HEADER_BYTES) {
        this.consumed++;
        this.recordHeaderByte(chunk[pos++] as number);
        continue;
      }
      if (this.hsPos < HANDSHAKE_HEADER_BYTES) {
        this.consumed++;
        this.recLeft--;
        this.handshakeHeaderByte(chunk[pos++] as number);
        if (this.hsPos === HANDSHAKE_HEADER_BYTES) {
          // Common case: the whole body sits in this record and this chunk;
          // parse it in place instead of copying.
          if (this.recLeft === this.hsLen && n - pos >= this.hsLen) {
            this.consumed += this.hsLen;
            return parseClientHelloBody(chunk.subarray(pos, pos + this.hsLen));
          }
          this.msg = Buffer.allocUnsafe(this.hsLen);
        }
        if (this.recLeft === 0) this.hdrPos = 0;
        continue;
      }
      // recordHeaderByte/handshakeHeaderByte ensure recLeft <= what the body still needs.
      const msg = this.msg as Buffer;
      const take = Math.min(this.recLeft, n - pos);
      chunk.copy(msg, this.msgPos, pos, pos + take);
      pos += take;
      this.msgPos += take;
      this.recLeft -= take;
      this.consumed += take;
      if (this.msgPos === this.hsLen) return parseClientHelloBody(msg);
      if (this.recLeft === 0) this.hdrPos = 0;
    }
    return null;
  }

  private recordHeaderByte(b: number): void {
    const first = this.records === 0;
    switch (this.hdrPos) {
      case 0:
        if (b !== CONTENT_TYPE_HANDSHAKE) {
          throw first
            ? new ClientHelloError('not_tls', `first byte 0x${hex2(b)} is not a TLS handshake record`)
            : new ClientHelloError('bad_record', `record of content type ${b} before the ClientHello was complete`);
        }
        // A further record needs its header and at least one payload byte.
        if (this.consumed - 1 + RECORD_HEADER_BYTES + 1 > this.maxBytes) throw tooLarge(this.maxBytes);
        break;
      case 1:
        if (b !== 3) {
          throw first
            ? new ClientHelloError('not_tls', `record version major ${b} is not TLS`)
            : new ClientHelloError('bad_record', `record version major ${b} is not TLS`);
        }
        break;
      case 2:
        // 3.0 (SSL 3) .. 3.4; anything above is no TLS record layer.
        if (b > 4) {
          throw first
            ? new ClientHelloError('not_tls', `record version 3.${b} is not TLS`)
            : new ClientHelloError('bad_record', `record version 3.${b} is not TLS`);
        }
        break;
      case 3:
        this.recLen = b << 8;
        break;
      default: {
        const len = this.recLen | b;
        this.recLen = len;
        if (len === 0) throw new ClientHelloError('bad_record', 'zero-length handshake record');
        if (len > MAX_FRAGMENT_BYTES) {
          throw new ClientHelloError('bad_record', `record length ${len} exceeds ${MAX_FRAGMENT_BYTES}`);
        }
        if (this.consumed + len > this.maxBytes) throw tooLarge(this.maxBytes);
        if (this.hsPos === HANDSHAKE_HEADER_BYTES && len > this.hsLen - this.msgPos) {
          throw new ClientHelloError('bad_length', 'record carries bytes past the end of the ClientHello');
        }
        this.recLeft = len;
        this.records++;
      }
    }
    this.hdrPos++;
  }

  private handshakeHeaderByte(b: number): void {
    switch (this.hsPos) {
      case 0:
        if (b !== HANDSHAKE_CLIENT_HELLO) {
          throw new ClientHelloError('not_client_hello', `handshake message type ${b} is not ClientHello (1)`);
        }
        break;
      case 1:
        this.hsLen = b << 16;
        break;
      case 2:
        this.hsLen |= b << 8;
        break;
      default: {
        const len = this.hsLen | b;
        this.hsLen = len;
        if (len < MIN_CLIENT_HELLO_BODY) {
          throw new ClientHelloError('bad_length', `ClientHello length ${len} is below the minimum ${MIN_CLIENT_HELLO_BODY}`);
        }
        // Lower bound of the total: the body, plus one more record header if
        // the body does not fit in the rest of this record.
        const more = this.recLeft < len ? RECORD_HEADER_BYTES : 0;
        if (this.consumed + len + more > this.maxBytes) throw tooLarge(this.maxBytes);
        if (this.recLeft > len) {
          throw new ClientHelloError('bad_length', 'record carries bytes past the end of the ClientHello');
        }
      }
    }
    this.hsPos++;
  }
}

function tooLarge(max: number): ClientHelloError {
  return new ClientHelloError('too_large', `ClientHello exceeds ${max} bytes`);
}

function hex2(b: number): string {
  return b.toString(16).padStart(2, '0');
}

function u16(b: Buffer, p: number): number {
  return ((b[p] as number) << 8) | (b[p + 1] as number);
}

/**
 * Parses a complete ClientHello body (after the 4-byte handshake header).
 * Every read is bounds-checked against `b.length` first.
 */
function parseClientHelloBody(b: Buffer): ClientHelloInfo {
  const end = b.length; // >= MIN_CLIENT_HELLO_BODY, checked by the reader
  const legacyVersion = u16(b, 0);
  if (b[0] !== 3) throw new ClientHelloError('bad_version', `legacy_version 0x${legacyVersion.toString(16)} is not TLS`);
  let p = 2 + 32;
  const sessionIdLen = b[p++] as number;
  if (sessionIdLen > 32) throw new ClientHelloError('bad_length', `legacy_session_id of ${sessionIdLen} bytes (max 32)`);
  p += sessionIdLen;
  if (p + 2 > end) throw truncated('cipher_suites');
  const suitesLen = u16(b, p);
  p += 2;
  if (suitesLen < 2 || suitesLen % 2 !== 0) throw new ClientHelloError('bad_length', `cipher_suites length ${suitesLen}`);
  p += suitesLen;
  if (p + 1 > end) throw truncated('cipher_suites');
  const compressionLen = b[p++] as number;
  if (compressionLen < 1) throw new ClientHelloError('bad_length', 'empty legacy_compression_methods');
  p += compressionLen;
  if (p > end) throw truncated('legacy_compression_methods');

  const info: ClientHelloInfo = { sni: null, alpn: [], legacyVersion, supportedVersions: [], sessionTicket: null, pskIdentities: [] };
  // RFC 5246 §7.4.1.2: a TLS 1.2 ClientHello may end without an extensions block.
  if (p === end) return info;
  if (p + 2 > end) throw truncated('extensions');
  const extensionsLen = u16(b, p);
  p += 2;
  if (p + extensionsLen !== end) {
    throw new ClientHelloError('bad_length', 'extensions length does not match the ClientHello length');
  }
  // At most (end - p) / 4 extensions fit, so this set is bounded by maxBytes.
  const seen = new Set<number>();
  while (p < end) {
    if (p + 4 > end) throw new ClientHelloError('bad_extension', 'truncated extension header');
    const type = u16(b, p);
    const len = u16(b, p + 2);
    p += 4;
    if (p + len > end) throw new ClientHelloError('bad_extension', `extension ${type} overruns the ClientHello`);
    // RFC 8446 §4.2: no extension type may appear twice.
    if (seen.has(type)) throw new ClientHelloError('bad_extension', `duplicate extension ${type}`);
    seen.add(type);
    switch (type) {
      case EXT_SERVER_NAME:
        info.sni = parseServerName(b, p, p + len);
        break;
      case EXT_ALPN:
        info.alpn = parseAlpn(b, p, p + len);
        break;
      case EXT_SUPPORTED_VERSIONS:
        info.supportedVersions = parseSupportedVersions(b, p, p + len);
        break;
      case EXT_SESSION_TICKET:
        if (len > 0) info.sessionTicket = b.subarray(p, p + len);
        break;
      case EXT_PRE_SHARED_KEY:
        // RFC 8446 §4.2.11: pre_shared_key MUST be the last extension.
        if (p + len !== end) throw new ClientHelloError('bad_extension', 'pre_shared_key is not the last extension');
        info.pskIdentities = parsePskIdentities(b, p, p + len);
        break;
      default:
        break;
    }
    p += len;
  }
  return info;
}

function truncated(field: string): ClientHelloError {
  return new ClientHelloError('bad_length', `ClientHello ends inside ${field}`);
}

/** RFC 6066 §3: ServerNameList with exactly one host_name entry. */
function parseServerName(b: Buffer, start: number, end: number): string {
  if (end - start < 2 || u16(b, start) !== end - start - 2) {
    throw new ClientHelloError('bad_extension', 'server_name list length mismatch');
  }
  let p = start + 2;
  if (p === end) throw new ClientHelloError('bad_extension', 'empty server_name list');
  let name: string | null = null;
  while (p < end) {
    if (p + 3 > end) throw new ClientHelloError('bad_extension', 'truncated server_name entry');
    const nameType = b[p] as number;
    const len = u16(b, p + 1);
    p += 3;
    // Only host_name is defined, and entries of other types cannot even be
    // skipped reliably (RFC 6066 gives them no common length prefix).
    if (nameType !== SERVER_NAME_HOST_NAME) throw new ClientHelloError('bad_extension', `server_name type ${nameType}`);
    if (name !== null) throw new ClientHelloError('bad_extension', 'more than one host_name');
    if (len === 0 || p + len > end) throw new ClientHelloError('bad_extension', 'bad host_name length');
    const raw = b.toString('latin1', p, p + len);
    p += len;
    name = normaliseServerName(raw);
    if (!isValidDnsName(name)) throw new ClientHelloError('bad_server_name', 'server_name is not a valid DNS host name');
  }
  return name as string;
}

/** RFC 7301 §3.1: ProtocolNameList of non-empty names. */
function parseAlpn(b: Buffer, start: number, end: number): string[] {
  if (end - start < 2 || u16(b, start) !== end - start - 2) {
    throw new ClientHelloError('bad_extension', 'ALPN list length mismatch');
  }
  let p = start + 2;
  if (p === end) throw new ClientHelloError('bad_extension', 'empty ALPN list');
  const names: string[] = [];
  while (p < end) {
    const len = b[p++] as number;
    if (len === 0 || p + len > end) throw new ClientHelloError('bad_extension', 'bad ALPN protocol name length');
    names.push(b.toString('latin1', p, p + len));
    p += len;
  }
  return names;
}

/**
 * RFC 8446 §4.2.11: `PskIdentity identities<7..2^16-1>` (each an opaque
 * `identity<1..2^16-1>` and a uint32 age), then the binders. Malformed: none.
 */
function parsePskIdentities(b: Buffer, start: number, end: number): Buffer[] {
  if (end - start < 2) return [];
  const listEnd = start + 2 + u16(b, start);
  if (listEnd > end) return [];
  const identities: Buffer[] = [];
  let p = start + 2;
  while (p < listEnd) {
    if (p + 2 > listEnd) return [];
    const len = u16(b, p);
    p += 2;
    if (len === 0 || p + len + 4 > listEnd) return [];
    identities.push(b.subarray(p, p + len));
    p += len + 4;
  }
  return identities;
}

/** RFC 8446 §4.2.1: ClientHello form, `ProtocolVersion versions<2..254>`. */
function parseSupportedVersions(b: Buffer, start: number, end: number): number[] {
  const listLen = end - start - 1;
  if (end - start < 1 || b[start] !== listLen || listLen < 2 || listLen % 2 !== 0) {
    throw new ClientHelloError('bad_extension', 'bad supported_versions length');
  }
  const versions: number[] = [];
  for (let p = start + 1; p < end; p += 2) versions.push(u16(b, p));
  return versions;
}

/**
 * Canonical form of a TLS server name for comparisons: ASCII lower case, one
 * trailing dot removed (`Example.COM.` → `example.com`).
 */
export function normaliseServerName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * Whether `name` (already normalised, no trailing dot) is a DNS host name:
 * 1-253 characters, dot-separated labels of 1-63 letters, digits, hyphens
 * and underscores, no label starting or ending with a hyphen.
 *
 * Underscores are tolerated because internal names use them and TLS stacks
 * accept them; IP-address-shaped names pass too (RFC 6066 forbids them,
 * but they are harmless for routing and some clients send them).
 */
export function isValidDnsName(name: string): boolean {
  const n = name.length;
  if (n === 0 || n > 253) return false;
  let labelLen = 0;
  let prev = 0x2e;
  for (let i = 0; i < n; i++) {
    const c = name.charCodeAt(i);
    if (c === 0x2e /* . */) {
      if (labelLen === 0 || prev === 0x2d) return false;
      labelLen = 0;
    } else {
      const ok =
        (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x5f || c === 0x2d;
      if (!ok) return false;
      if (c === 0x2d && labelLen === 0) return false;
      if (++labelLen > 63) return false;
    }
    prev = c;
  }
  return labelLen > 0 && prev !== 0x2d;
}
