/**
 * The ClientHello message itself, once the reader (./client-hello.ts) has
 * reassembled it from its records: legacy fields, then the extensions
 * routing and TLS termination need (server_name RFC 6066 §3, ALPN RFC 7301
 * §3.1, supported_versions RFC 8446 §4.2.1, session_ticket RFC 5077 §3.2,
 * pre_shared_key RFC 8446 §4.2.11), and what a rejection says.
 */
import { L4lbError } from '../errors.js';
import { isValidDnsName, normaliseServerName } from './server-name.js';

/** version(2) random(32) session_id<0>(1) cipher_suites<2>(2+2) compression<1>(1+1). */
export const MIN_CLIENT_HELLO_BODY = 41;

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

function u16(b: Buffer, p: number): number {
  return ((b[p] as number) << 8) | (b[p + 1] as number);
}

/**
 * Parses a complete ClientHello body (after the 4-byte handshake header).
 * Every read is bounds-checked against `b.length` first.
 */
export function parseClientHelloBody(b: Buffer): ClientHelloInfo {
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
