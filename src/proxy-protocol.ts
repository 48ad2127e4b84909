/**
 * PROXY protocol v1 (text) and v2 (binary) header codec, after HAProxy's
 * doc/proxy-protocol.txt.
 *
 * - Encoders: {@link encodeV1}, {@link encodeV1Local}, {@link encodeV1Unknown},
 *   {@link encodeV2} (with ALPN, AUTHORITY, CRC32C, UNIQUE_ID and SSL TLVs).
 * - Parser: {@link ProxyHeaderParser}, incremental and strict; every rejection
 *   is a {@link ProxyHeaderError} carrying a stable `reason`.
 *
 * proxy-protocol-js 4.0.6 is right only for plain headers (no TLVs, no
 * UNKNOWN, no partial input), so both directions are implemented here and the
 * library serves as an independent cross-check in the tests.
 *
 * Address convention (shared with the balancers and the access log): IPv4 and
 * IPv4-mapped IPv6 addresses come out as dotted IPv4 text, other IPv6
 * addresses in RFC 5952 form (lower case, longest zero run compressed).
 *
 * Receiver policy where the spec leaves a choice:
 * - v1: exactly one space between fields; no lone CR or LF anywhere, even in
 *   the ignored tail of `UNKNOWN`. IPv6 may use `::` and a trailing dotted
 *   quad (HAProxy's inet_ntop writes `::ffff:1.2.3.4`), but no zone id.
 * - v2 family byte: only the seven combinations the spec lists (0x00, 0x11,
 *   0x12, 0x21, 0x22, 0x31, 0x32). With PROXY, TCP over IPv4/IPv6 yields
 *   addresses; AF_UNSPEC and AF_UNIX stream fall back to the real connection
 *   addresses (the spec's required fallback for families a receiver does not
 *   support); any datagram transport is rejected, since l4lb relays TCP only
 *   and a UDP header on a TCP connection means a misconfigured sender. LOCAL
 *   accepts any listed family and ignores its addresses.
 * - v2 layout, for both commands: the length must cover the family's address
 *   block and the TLVs after it must tile the rest exactly; known TLVs must be
 *   well formed (CRC32C 4 bytes, SSL ≥ 5 bytes with tiling sub-TLVs, UTF-8
 *   AUTHORITY and CN, UNIQUE_ID ≤ 128 bytes) and appear at most once.
 * - v2 size: at most `maxHeaderBytes` (default 4096), checked from the length
 *   field before any body byte is buffered.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { L4lbError } from './errors.js';

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/** The 12-byte v2 signature `\r\n\r\n\0\r\nQUIT\n`. */
export const V2_SIGNATURE: Buffer = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
/** Longest v1 line a receiver must accept, CRLF included (spec section 2.1). */
export const V1_MAX_LENGTH = 107;
/** Fixed part of a v2 header: signature, version/command, family, length. */
export const V2_FIXED_LENGTH = 16;
/**
 * Default cap on a whole v2 header (fixed part + address block + TLVs).
 * Real senders (HAProxy, cloud NLBs) stay far below 1 KiB; 4 KiB leaves room
 * for large custom TLVs while bounding what an upstream can make us buffer.
 */
export const DEFAULT_MAX_HEADER_BYTES = 4096;
/** Smallest accepted `maxHeaderBytes`: a v2 TCP/IPv6 header without TLVs. */
export const MIN_MAX_HEADER_BYTES = V2_FIXED_LENGTH + 36;
/** Largest possible v2 header: the length field is 16 bits. */
export const MAX_MAX_HEADER_BYTES = V2_FIXED_LENGTH + 0xffff;

export const PP2_TYPE_ALPN = 0x01;
export const PP2_TYPE_AUTHORITY = 0x02;
export const PP2_TYPE_CRC32C = 0x03;
export const PP2_TYPE_NOOP = 0x04;
export const PP2_TYPE_UNIQUE_ID = 0x05;
export const PP2_TYPE_SSL = 0x20;
export const PP2_SUBTYPE_SSL_VERSION = 0x21;
export const PP2_SUBTYPE_SSL_CN = 0x22;
export const PP2_SUBTYPE_SSL_CIPHER = 0x23;
export const PP2_SUBTYPE_SSL_SIG_ALG = 0x24;
export const PP2_SUBTYPE_SSL_KEY_ALG = 0x25;
export const PP2_TYPE_NETNS = 0x30;

/** SSL TLV `client` bit: the client connected over TLS. */
export const PP2_CLIENT_SSL = 0x01;
/** SSL TLV `client` bit: the client presented a certificate on this connection. */
export const PP2_CLIENT_CERT_CONN = 0x02;
/** SSL TLV `client` bit: the client presented a certificate in this TLS session. */
export const PP2_CLIENT_CERT_SESS = 0x04;

/** Spec section 2.2.5: a unique ID is at most 128 bytes. */
const UNIQUE_ID_MAX = 128;

const CR = 0x0d;
const LF = 0x0a;
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

/** An IP address and TCP port. */
export interface ProxyEndpoint {
  address: string;
  port: number;
}

/** One TLV as it appeared on the wire. */
export interface ProxyTlv {
  type: number;
  value: Buffer;
}

/** Decoded PP2_TYPE_SSL TLV. */
export interface ProxySslInfo {
  /** Bit field of PP2_CLIENT_SSL, PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS. */
  client: number;
  /** 0 when a client certificate was presented and verified, non-zero otherwise. */
  verify: number;
  version?: string;
  /** Common Name of the client certificate's subject. */
  cn?: string;
  cipher?: string;
  sigAlg?: string;
  keyAlg?: string;
  /** Every sub-TLV in wire order, known ones included. */
  subTlvs: ProxyTlv[];
}

/** TLVs of a parsed v2 header (always empty for v1). */
export interface ProxyTlvs {
  /** PP2_TYPE_ALPN; bytes as latin1 text, the way Node reports `alpnProtocol`. */
  alpn?: string;
  /** PP2_TYPE_AUTHORITY (the SNI), UTF-8. */
  authority?: string;
  /** PP2_TYPE_CRC32C value; present only after it was verified. */
  crc32c?: number;
  /** PP2_TYPE_UNIQUE_ID. */
  uniqueId?: Buffer;
  ssl?: ProxySslInfo;
  /** Every TLV in wire order, known ones and PP2_TYPE_NOOP included. */
  raw: ProxyTlv[];
}

/** A complete, valid PROXY header. */
export interface ProxyHeader {
  version: 1 | 2;
  /** v1 headers are always 'PROXY'; v2 LOCAL means a connection made by the proxy itself (a health check). */
  command: 'PROXY' | 'LOCAL';
  /** Client address; undefined means "use the real connection addresses" (v1 UNKNOWN, v2 LOCAL/UNSPEC/UNIX). */
  source?: ProxyEndpoint;
  /** Address the client connected to; present exactly when `source` is. */
  destination?: ProxyEndpoint;
  tlvs: ProxyTlvs;
  /** Bytes the header occupied on the wire. */
  length: number;
}

/** What {@link ProxyHeaderParser.push} returns. */
export type ParseResult =
  | { state: 'need_more' }
  | { state: 'done'; header: ProxyHeader; rest: Buffer };

/** Stable sub-codes of {@link ProxyHeaderError}. */
export type ProxyHeaderErrorReason =
  /** Neither "PROXY " nor the v2 signature. */
  | 'bad_signature'
  /** No CRLF within 107 bytes. */
  | 'v1_too_long'
  /** A lone CR or LF. */
  | 'v1_no_crlf'
  /** Protocol other than TCP4, TCP6, UNKNOWN. */
  | 'v1_bad_protocol'
  /** Missing or extra fields, or not exactly one space between them. */
  | 'v1_bad_format'
  | 'v1_bad_address'
  | 'v1_bad_port'
  /** Version nibble other than 2. */
  | 'v2_bad_version'
  /** Command other than LOCAL (0) and PROXY (1). */
  | 'v2_bad_command'
  /** Unassigned family/transport, or a datagram transport with PROXY. */
  | 'v2_bad_family'
  /** Length field smaller than the family's address block. */
  | 'v2_bad_length'
  /** Header larger than the parser's `maxHeaderBytes`. */
  | 'v2_too_long'
  /** TLVs that do not exactly tile the rest of the header, or a malformed known TLV. */
  | 'v2_bad_tlv'
  | 'v2_crc_mismatch';

/** A PROXY header that cannot be accepted; `reason` says which rule it broke. */
export class ProxyHeaderError extends L4lbError {
  readonly reason: ProxyHeaderErrorReason;
  constructor(reason: ProxyHeaderErrorReason, detail: string) {
    super('L4LB_PROXY_HEADER_INVALID', `invalid PROXY protocol header (${reason}): ${detail}`);
    this.reason = reason;
  }
}

function fail(reason: ProxyHeaderErrorReason, detail: string): never {
  throw new ProxyHeaderError(reason, detail);
}

// ---------------------------------------------------------------------------
// CRC32C (Castagnoli), table-driven, reflected polynomial 0x82F63B78
// ---------------------------------------------------------------------------

const CRC32C_TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** Feeds bytes into a running (pre-inverted) CRC32C register. */
function crc32cUpdate(crc: number, data: Uint8Array, start: number, end: number): number {
  for (let i = start; i < end; i++) {
    crc = CRC32C_TABLE[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  }
  return crc;
}

/**
 * CRC32C (RFC 4960 appendix B, as the PROXY protocol requires) of `data`.
 * `crc32c(Buffer.from('123456789'))` is `0xe3069283`.
 */
export function crc32c(data: Uint8Array): number {
  return (crc32cUpdate(0xffffffff, data, 0, data.length) ^ 0xffffffff) >>> 0;
}

/** CRC32C of `header` with the 4 bytes at `zeroAt` read as zeros (no copy). */
function crc32cWithHole(header: Uint8Array, zeroAt: number): number {
  let crc = crc32cUpdate(0xffffffff, header, 0, zeroAt);
  for (let i = 0; i < 4; i++) crc = CRC32C_TABLE[crc & 0xff]! ^ (crc >>> 8);
  crc = crc32cUpdate(crc, header, zeroAt + 4, header.length);
  return (crc ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

type IpBytes = { family: 4; bytes: Buffer } | { family: 6; bytes: Buffer };

/** Strict dotted quad (no leading zeros, each part 0..255) to 4 bytes. */
function ipv4ToBytes(s: string): Buffer | undefined {
  if (!isIPv4(s)) return undefined;
  const parts = s.split('.');
  // net.isIPv4 already rejects leading zeros and values above 255.
  return Buffer.from(parts.map(Number));
}

/** Any net.isIPv6 text (compressed, embedded IPv4, zone id) to 16 bytes. */
function ipv6ToBytes(input: string): Buffer | undefined {
  const zone = input.indexOf('%');
  const s = zone >= 0 ? input.slice(0, zone) : input;
  if (!isIPv6(s)) return undefined;
  let text = s;
  if (text.includes('.')) {
    // Rewrite the trailing dotted quad as two hex groups.
    const colon = text.lastIndexOf(':');
    const v4 = ipv4ToBytes(text.slice(colon + 1));
    if (!v4) return undefined;
    text = `${text.slice(0, colon + 1)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const out = Buffer.alloc(16);
  const gap = text.indexOf('::');
  const head = gap >= 0 ? text.slice(0, gap) : text;
  const tail = gap >= 0 ? text.slice(gap + 2) : '';
  const left = head === '' ? [] : head.split(':');
  const right = tail === '' ? [] : tail.split(':');
  left.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  right.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), (8 - right.length + i) * 2));
  return out;
}

function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

function formatIPv4(b: Uint8Array, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

/** RFC 5952 text: lower case, no leading zeros, first longest run (≥ 2) of zero groups as `::`. */
function formatIPv6(b: Uint8Array, at = 0): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((b[at + 2 * i]! << 8) | b[at + 2 * i + 1]!);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]): string => g.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** 16 address bytes as text, IPv4-mapped ones as dotted IPv4. */
function formatIPv6OrMapped(b: Uint8Array, at = 0): string {
  return isV4Mapped(b.subarray(at, at + 16)) ? formatIPv4(b, at + 12) : formatIPv6(b, at);
}

function parseIp(address: string): IpBytes | undefined {
  const v4 = ipv4ToBytes(address);
  if (v4) return { family: 4, bytes: v4 };
  const v6 = ipv6ToBytes(address);
  if (!v6) return undefined;
  // v4-mapped addresses go out as IPv4 (TCP4 / AF_INET), as the issue asks.
  if (isV4Mapped(v6)) return { family: 4, bytes: v6.subarray(12) };
  return { family: 6, bytes: v6 };
}

function toV6(ip: IpBytes): Buffer {
  if (ip.family === 6) return ip.bytes;
  const out = Buffer.alloc(16);
  out[10] = 0xff;
  out[11] = 0xff;
  ip.bytes.copy(out, 12);
  return out;
}

/**
 * One textual form per IP address, as every l4lb component uses it: IPv4 and
 * IPv4-mapped IPv6 as dotted IPv4, other IPv6 in RFC 5952 form without a zone
 * id. Returns undefined for anything that is not an IP address.
 */
export function normalizeAddress(address: string): string | undefined {
  const ip = parseIp(address);
  if (!ip) return undefined;
  return ip.family === 4 ? formatIPv4(ip.bytes, 0) : formatIPv6(ip.bytes);
}

// ---------------------------------------------------------------------------
// Encoders
// ---------------------------------------------------------------------------

function requireIp(what: string, address: string): IpBytes {
  const ip = parseIp(address);
  if (!ip) throw new RangeError(`PROXY header ${what} address is not an IP address: ${JSON.stringify(address)}`);
  return ip;
}

function requirePort(what: string, port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new RangeError(`PROXY header ${what} port out of range 0..65535: ${port}`);
  }
  return port;
}

/** Both endpoints in one family: IPv4 when both are (or map to) IPv4, IPv6 otherwise. */
function pairAddresses(src: ProxyEndpoint, dst: ProxyEndpoint): { family: 4 | 6; s: Buffer; d: Buffer } {
  const s = requireIp('source', src.address);
  const d = requireIp('destination', dst.address);
  requirePort('source', src.port);
  requirePort('destination', dst.port);
  if (s.family === 4 && d.family === 4) return { family: 4, s: s.bytes, d: d.bytes };
  // Mixed families: the spec wants one family per header, so lift IPv4 into
  // IPv4-mapped IPv6 (what HAProxy does too).
  return { family: 6, s: toV6(s), d: toV6(d) };
}

/**
 * A v1 line `PROXY TCP4|TCP6 src dst sport dport\r\n`. IPv4-mapped IPv6
 * addresses are written as IPv4; if only one side is IPv4 it is written as
 * IPv4-mapped IPv6 in hex groups so both sides share TCP6. Zone ids are
 * dropped.
 * @throws RangeError for a non-IP address or a port outside 0..65535.
 */
export function encodeV1(src: ProxyEndpoint, dst: ProxyEndpoint): Buffer {
  const p = pairAddresses(src, dst);
  const line =
    p.family === 4
      ? `PROXY TCP4 ${formatIPv4(p.s, 0)} ${formatIPv4(p.d, 0)} ${src.port} ${dst.port}\r\n`
      : `PROXY TCP6 ${formatIPv6(p.s)} ${formatIPv6(p.d)} ${src.port} ${dst.port}\r\n`;
  return Buffer.from(line, 'latin1');
}

/** `PROXY UNKNOWN\r\n`: only for when no valid line can be built (spec 2.1). */
export function encodeV1Unknown(): Buffer {
  return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
}

/** The parts of a connected `net.Socket` a probe header needs. */
export interface SocketAddresses {
  localAddress?: string | undefined;
  localPort?: number | undefined;
  remoteAddress?: string | undefined;
  remotePort?: number | undefined;
}

/**
 * v1 line for a health probe: the spec recommends a valid line filled from
 * getsockname()/getpeername() rather than UNKNOWN, which strict backends
 * reject. Pass the connected probe socket. Falls back to `PROXY UNKNOWN` only
 * when the socket no longer knows its addresses (already closed).
 */
export function encodeV1Local(socket: SocketAddresses): Buffer {
  const { localAddress, localPort, remoteAddress, remotePort } = socket;
  if (localAddress === undefined || localPort === undefined || remoteAddress === undefined || remotePort === undefined) {
    return encodeV1Unknown();
  }
  if (!parseIp(localAddress) || !parseIp(remoteAddress)) return encodeV1Unknown();
  return encodeV1({ address: localAddress, port: localPort }, { address: remoteAddress, port: remotePort });
}

/** PP2_TYPE_SSL contents for {@link encodeV2}. */
export interface ProxySslInput {
  /** PP2_CLIENT_* bits. */
  client: number;
  /** 0 = client certificate presented and verified; non-zero otherwise. */
  verify: number;
  /** PP2_SUBTYPE_SSL_VERSION, e.g. "TLSv1.3". */
  version?: string;
  /** PP2_SUBTYPE_SSL_CN, client certificate subject CN (UTF-8). */
  cn?: string;
  /** PP2_SUBTYPE_SSL_CIPHER, e.g. "TLS_AES_128_GCM_SHA256". */
  cipher?: string;
  /** PP2_SUBTYPE_SSL_SIG_ALG. */
  sigAlg?: string;
  /** PP2_SUBTYPE_SSL_KEY_ALG. */
  keyAlg?: string;
}

/** TLVs for {@link encodeV2}; written in this order: ALPN, AUTHORITY, SSL, UNIQUE_ID, extra, CRC32C. */
export interface ProxyTlvInput {
  /** PP2_TYPE_ALPN; a string is written as latin1 bytes (the form Node's `alpnProtocol` has). */
  alpn?: string | Uint8Array;
  /** PP2_TYPE_AUTHORITY, the SNI host name (UTF-8). */
  authority?: string;
  ssl?: ProxySslInput;
  /** PP2_TYPE_UNIQUE_ID, at most 128 bytes. */
  uniqueId?: Uint8Array;
  /** Further TLVs written verbatim (custom types 0xE0..0xEF, NOOP padding, ...). */
  extra?: ReadonlyArray<{ type: number; value: Uint8Array }>;
  /** Append a PP2_TYPE_CRC32C TLV with the checksum of the whole header. */
  crc32c?: boolean;
}

/** Arguments of {@link encodeV2}. */
export interface EncodeV2Options {
  /** PROXY: relayed connection; LOCAL: made by l4lb itself (health probes), carries no addresses. */
  command: 'PROXY' | 'LOCAL';
  /** Client address; with PROXY give both or neither (neither = AF_UNSPEC). */
  src?: ProxyEndpoint;
  dst?: ProxyEndpoint;
  tlvs?: ProxyTlvInput;
}

function tlv(type: number, value: Uint8Array): Buffer {
  if (!Number.isInteger(type) || type < 0 || type > 0xff) throw new RangeError(`TLV type out of range 0..255: ${type}`);
  if (value.length > 0xffff) throw new RangeError(`TLV 0x${type.toString(16)} value longer than 65535 bytes`);
  const out = Buffer.allocUnsafe(3 + value.length);
  out[0] = type;
  out.writeUInt16BE(value.length, 1);
  out.set(value, 3);
  return out;
}

function sslTlv(ssl: ProxySslInput): Buffer {
  if (!Number.isInteger(ssl.client) || ssl.client < 0 || ssl.client > 0xff) {
    throw new RangeError(`SSL TLV client flags out of range 0..255: ${ssl.client}`);
  }
  if (!Number.isInteger(ssl.verify) || ssl.verify < 0 || ssl.verify > 0xffffffff) {
    throw new RangeError(`SSL TLV verify out of range 0..2^32-1: ${ssl.verify}`);
  }
  const head = Buffer.allocUnsafe(5);
  head[0] = ssl.client;
  head.writeUInt32BE(ssl.verify, 1);
  const parts: Buffer[] = [head];
  if (ssl.version !== undefined) parts.push(tlv(PP2_SUBTYPE_SSL_VERSION, Buffer.from(ssl.version, 'latin1')));
  if (ssl.cn !== undefined) parts.push(tlv(PP2_SUBTYPE_SSL_CN, Buffer.from(ssl.cn, 'utf8')));
  if (ssl.cipher !== undefined) parts.push(tlv(PP2_SUBTYPE_SSL_CIPHER, Buffer.from(ssl.cipher, 'latin1')));
  if (ssl.sigAlg !== undefined) parts.push(tlv(PP2_SUBTYPE_SSL_SIG_ALG, Buffer.from(ssl.sigAlg, 'latin1')));
  if (ssl.keyAlg !== undefined) parts.push(tlv(PP2_SUBTYPE_SSL_KEY_ALG, Buffer.from(ssl.keyAlg, 'latin1')));
  return tlv(PP2_TYPE_SSL, Buffer.concat(parts));
}

/**
 * A v2 binary header. PROXY with both endpoints writes TCP over IPv4 (0x11)
 * or IPv6 (0x21) by the same family rules as {@link encodeV1}; PROXY without
 * endpoints and LOCAL write AF_UNSPEC (0x00) with no address block. The
 * length field covers the address block and every TLV.
 * @throws RangeError for bad addresses, ports, TLV sizes, or a header over 65535 bytes of payload.
 */
export function encodeV2(options: EncodeV2Options): Buffer {
  const { command, src, dst, tlvs } = options;
  if (command !== 'PROXY' && command !== 'LOCAL') throw new RangeError(`unknown PROXY v2 command: ${String(command)}`);
  if (command === 'LOCAL' && (src || dst)) throw new RangeError('a PROXY v2 LOCAL header carries no addresses');
  if ((src === undefined) !== (dst === undefined)) throw new RangeError('PROXY v2 needs both src and dst, or neither');

  let fam = 0x00;
  let addr: Buffer = Buffer.alloc(0);
  if (src && dst) {
    const p = pairAddresses(src, dst);
    const n = p.family === 4 ? 4 : 16;
    fam = p.family === 4 ? 0x11 : 0x21;
    addr = Buffer.allocUnsafe(2 * n + 4);
    p.s.copy(addr, 0);
    p.d.copy(addr, n);
    addr.writeUInt16BE(src.port, 2 * n);
    addr.writeUInt16BE(dst.port, 2 * n + 2);
  }

  const parts: Buffer[] = [];
  if (tlvs) {
    if (tlvs.alpn !== undefined) {
      parts.push(tlv(PP2_TYPE_ALPN, typeof tlvs.alpn === 'string' ? Buffer.from(tlvs.alpn, 'latin1') : tlvs.alpn));
    }
    if (tlvs.authority !== undefined) parts.push(tlv(PP2_TYPE_AUTHORITY, Buffer.from(tlvs.authority, 'utf8')));
    if (tlvs.ssl) parts.push(sslTlv(tlvs.ssl));
    if (tlvs.uniqueId !== undefined) {
      if (tlvs.uniqueId.length > UNIQUE_ID_MAX) throw new RangeError(`unique ID longer than ${UNIQUE_ID_MAX} bytes`);
      parts.push(tlv(PP2_TYPE_UNIQUE_ID, tlvs.uniqueId));
    }
    for (const t of tlvs.extra ?? []) parts.push(tlv(t.type, t.value));
    if (tlvs.crc32c) parts.push(tlv(PP2_TYPE_CRC32C, Buffer.alloc(4)));
  }

  const bodyLength = addr.length + parts.reduce((n, b) => n + b.length, 0);
  if (bodyLength > 0xffff) throw new RangeError(`PROXY v2 header payload of ${bodyLength} bytes exceeds 65535`);
  const head = Buffer.allocUnsafe(V2_FIXED_LENGTH);
  V2_SIGNATURE.copy(head, 0);
  head[12] = 0x20 | (command === 'PROXY' ? 0x01 : 0x00);
  head[13] = fam;
  head.writeUInt16BE(bodyLength, 14);
  const out = Buffer.concat([head, addr, ...parts], V2_FIXED_LENGTH + bodyLength);
  if (tlvs?.crc32c) {
    // The CRC TLV is last; its 4 value bytes are still zero, as the spec requires while summing.
    const at = out.length - 4;
    out.writeUInt32BE(crc32c(out), at);
  }
  return out;
}

// ---------------------------------------------------------------------------
// v1 parsing
// ---------------------------------------------------------------------------

const V1_PROTOCOLS = ['TCP4', 'TCP6', 'UNKNOWN'] as const;

/** Could `s` still grow into a strict dotted quad? */
function isIPv4Prefix(s: string): boolean {
  const parts = s.split('.');
  if (parts.length > 4) return false;
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (p === '') {
      if (i < parts.length - 1) return false; // empty part before a dot
      continue;
    }
    if (!/^[0-9]{1,3}$/.test(p)) return false;
    if (p.length > 1 && p[0] === '0') return false;
    if (Number(p) > 255) return false;
  }
  return true;
}

/** Longest IPv6 text we accept: eight groups, or six groups plus a dotted quad. */
const V6_TEXT_MAX = 45;
const V6_CHARS = /^[0-9A-Fa-f:.]*$/;

/** Cheap viability check for a partial IPv6 token; the full check runs once the token ends. */
function isIPv6Prefix(s: string): boolean {
  return s.length <= V6_TEXT_MAX && V6_CHARS.test(s) && !s.includes(':::');
}

function isIPv6Full(s: string): boolean {
  // Character class first: net.isIPv6 also takes zone ids ("%eth0"), which a header must not carry.
  return s.length <= V6_TEXT_MAX && V6_CHARS.test(s) && isIPv6(s);
}

function isPortPrefix(s: string): boolean {
  if (!/^[0-9]{0,5}$/.test(s)) return false;
  if (s.length > 1 && s[0] === '0') return false;
  return s.length < 5 || Number(s) <= 0xffff;
}

function isPortFull(s: string): boolean {
  return s.length > 0 && isPortPrefix(s);
}

/**
 * Validates the v1 bytes received so far. Returns the header once the CRLF
 * is in, undefined while the prefix can still become valid, and throws as
 * soon as it cannot. `len` never exceeds 107 and the LF, when present, is the
 * last byte (the caller stops buffering there).
 */
function scanV1(buf: Buffer, len: number): ProxyHeader | undefined {
  const n = Math.min(len, V1_PREFIX.length);
  for (let i = 0; i < n; i++) {
    if (buf[i] !== V1_PREFIX[i]) fail('bad_signature', 'expected "PROXY "');
  }
  if (len <= V1_PREFIX.length) return undefined;

  let crAt = -1; // index of the CR of the final CRLF
  for (let i = V1_PREFIX.length; i < len; i++) {
    const b = buf[i];
    if (b === LF) {
      if (buf[i - 1] !== CR) fail('v1_no_crlf', 'LF without CR');
      crAt = i - 1;
      break;
    }
    if (b === CR && i + 1 < len && buf[i + 1] !== LF) fail('v1_no_crlf', 'CR not followed by LF');
  }
  if (crAt < 0 && len >= V1_MAX_LENGTH) fail('v1_too_long', `no CRLF within ${V1_MAX_LENGTH} bytes`);

  const complete = crAt >= 0;
  // A trailing CR ends the fields even before its LF arrives.
  const fieldsEnd = complete ? crAt : buf[len - 1] === CR ? len - 1 : len;
  const terminated = complete || fieldsEnd < len;
  const line = buf.toString('latin1', V1_PREFIX.length, fieldsEnd);

  const sp = line.indexOf(' ');
  const proto = sp < 0 ? line : line.slice(0, sp);
  if (sp >= 0 || terminated) {
    if (proto === 'UNKNOWN') {
      // Anything may follow UNKNOWN up to the CRLF; the receiver ignores it.
      return complete ? { version: 1, command: 'PROXY', tlvs: { raw: [] }, length: len } : undefined;
    }
    if (proto !== 'TCP4' && proto !== 'TCP6') fail('v1_bad_protocol', `unknown protocol ${JSON.stringify(proto)}`);
  } else {
    if (!V1_PROTOCOLS.some((p) => p.startsWith(proto))) fail('v1_bad_protocol', `unknown protocol ${JSON.stringify(proto)}`);
    return undefined;
  }

  const v4 = proto === 'TCP4';
  const fields = sp < 0 ? [] : line.slice(sp + 1).split(' ');
  if (fields.length > 4) fail('v1_bad_format', 'too many fields or spaces');
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    const whole = i < fields.length - 1 || terminated;
    if (whole && f === '') fail('v1_bad_format', 'empty field (not exactly one space)');
    if (i < 2) {
      const ok = v4 ? (whole ? isIPv4(f) : isIPv4Prefix(f)) : whole ? isIPv6Full(f) : isIPv6Prefix(f);
      if (!ok) fail('v1_bad_address', `bad ${v4 ? 'IPv4' : 'IPv6'} address ${JSON.stringify(f)}`);
    } else if (!(whole ? isPortFull(f) : isPortPrefix(f))) {
      fail('v1_bad_port', `bad port ${JSON.stringify(f)}`);
    }
  }
  if (terminated && fields.length < 4) fail('v1_bad_format', 'missing fields');
  if (!complete) return undefined;

  const [sa, da, spt, dpt] = fields as [string, string, string, string];
  const norm = (a: string): string => (v4 ? a : formatIPv6OrMapped(ipv6ToBytes(a)!));
  return {
    version: 1,
    command: 'PROXY',
    source: { address: norm(sa), port: Number(spt) },
    destination: { address: norm(da), port: Number(dpt) },
    tlvs: { raw: [] },
    length: len,
  };
}

// ---------------------------------------------------------------------------
// v2 parsing
// ---------------------------------------------------------------------------

/** Address block size by family nibble: UNSPEC, INET, INET6, UNIX. */
const V2_ADDRESS_BYTES = [0, 12, 36, 216] as const;

const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decodeUtf8(value: Buffer, what: string): string {
  try {
    return utf8Strict.decode(value);
  } catch {
    return fail('v2_bad_tlv', `${what} is not valid UTF-8`);
  }
}

function parseSsl(value: Buffer): ProxySslInfo {
  if (value.length < 5) fail('v2_bad_tlv', 'SSL TLV shorter than its 5-byte head');
  const ssl: ProxySslInfo = { client: value[0]!, verify: value.readUInt32BE(1), subTlvs: [] };
  let p = 5;
  while (p < value.length) {
    if (value.length - p < 3) fail('v2_bad_tlv', 'truncated SSL sub-TLV');
    const type = value[p]!;
    const end = p + 3 + value.readUInt16BE(p + 1);
    if (end > value.length) fail('v2_bad_tlv', 'SSL sub-TLV overruns the SSL TLV');
    const v = value.subarray(p + 3, end);
    const once = (key: 'version' | 'cn' | 'cipher' | 'sigAlg' | 'keyAlg', text: string): void => {
      if (ssl[key] !== undefined) fail('v2_bad_tlv', `duplicate SSL sub-TLV 0x${type.toString(16)}`);
      ssl[key] = text;
    };
    switch (type) {
      case PP2_SUBTYPE_SSL_VERSION: once('version', v.toString('latin1')); break;
      case PP2_SUBTYPE_SSL_CN: once('cn', decodeUtf8(v, 'SSL CN')); break;
      case PP2_SUBTYPE_SSL_CIPHER: once('cipher', v.toString('latin1')); break;
      case PP2_SUBTYPE_SSL_SIG_ALG: once('sigAlg', v.toString('latin1')); break;
      case PP2_SUBTYPE_SSL_KEY_ALG: once('keyAlg', v.toString('latin1')); break;
      default: break;
    }
    ssl.subTlvs.push({ type, value: v });
    p = end;
  }
  return ssl;
}

/**
 * TLVs in header[start, header.length): they must tile it exactly. Duplicates
 * of ALPN, AUTHORITY, CRC32C, UNIQUE_ID or SSL are rejected, since which copy
 * a consumer would believe is ambiguous.
 */
function parseTlvs(header: Buffer, start: number): ProxyTlvs {
  const out: ProxyTlvs = { raw: [] };
  let crcAt = -1;
  let p = start;
  while (p < header.length) {
    if (header.length - p < 3) fail('v2_bad_tlv', 'truncated TLV header');
    const type = header[p]!;
    const end = p + 3 + header.readUInt16BE(p + 1);
    if (end > header.length) fail('v2_bad_tlv', `TLV 0x${type.toString(16)} overruns the header length`);
    const value = header.subarray(p + 3, end);
    const dup = (present: boolean): void => {
      if (present) fail('v2_bad_tlv', `duplicate TLV 0x${type.toString(16)}`);
    };
    switch (type) {
      case PP2_TYPE_ALPN:
        dup(out.alpn !== undefined);
        out.alpn = value.toString('latin1');
        break;
      case PP2_TYPE_AUTHORITY:
        dup(out.authority !== undefined);
        out.authority = decodeUtf8(value, 'AUTHORITY');
        break;
      case PP2_TYPE_CRC32C:
        dup(crcAt >= 0);
        if (value.length !== 4) fail('v2_bad_tlv', 'CRC32C TLV value is not 4 bytes');
        crcAt = p + 3;
        break;
      case PP2_TYPE_UNIQUE_ID:
        dup(out.uniqueId !== undefined);
        if (value.length > UNIQUE_ID_MAX) fail('v2_bad_tlv', `UNIQUE_ID longer than ${UNIQUE_ID_MAX} bytes`);
        out.uniqueId = value;
        break;
      case PP2_TYPE_SSL:
        dup(out.ssl !== undefined);
        out.ssl = parseSsl(value);
        break;
      default:
        break; // NOOP and unknown types are kept in raw only
    }
    out.raw.push({ type, value });
    p = end;
  }
  if (crcAt >= 0) {
    const sent = header.readUInt32BE(crcAt);
    const computed = crc32cWithHole(header, crcAt);
    if (sent !== computed) {
      fail('v2_crc_mismatch', `CRC32C 0x${sent.toString(16)} != computed 0x${computed.toString(16)}`);
    }
    out.crc32c = sent;
  }
  return out;
}

/** Checks bytes 12..13 (version/command, family/transport) as soon as they arrive. */
function checkV2Fixed(buf: Buffer, len: number): void {
  if (len > 12) {
    const vc = buf[12]!;
    if (vc >> 4 !== 2) fail('v2_bad_version', `version ${vc >> 4}`);
    if ((vc & 0x0f) > 1) fail('v2_bad_command', `command ${vc & 0x0f}`);
  }
  if (len > 13) {
    const fam = buf[13]!;
    const af = fam >> 4;
    const tp = fam & 0x0f;
    // Only the seven combinations the spec lists: 0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32.
    const listed = fam === 0x00 || (af >= 1 && af <= 3 && (tp === 1 || tp === 2));
    if (!listed) fail('v2_bad_family', `family/transport 0x${fam.toString(16).padStart(2, '0')}`);
    // l4lb relays streams only: a relayed datagram flow on a TCP connection is a misconfigured sender.
    if (tp === 2 && (buf[12]! & 0x0f) === 1) fail('v2_bad_family', 'datagram transport on a stream connection');
  }
}

function decodeV2(header: Buffer): ProxyHeader {
  const command = (header[12]! & 0x0f) === 1 ? 'PROXY' : 'LOCAL';
  const fam = header[13]!;
  const start = V2_FIXED_LENGTH + V2_ADDRESS_BYTES[(fam >> 4) as 0 | 1 | 2 | 3];
  const tlvs = parseTlvs(header, start);
  const out: ProxyHeader = { version: 2, command, tlvs, length: header.length };
  if (command === 'PROXY' && fam === 0x11) {
    out.source = { address: formatIPv4(header, 16), port: header.readUInt16BE(24) };
    out.destination = { address: formatIPv4(header, 20), port: header.readUInt16BE(26) };
  } else if (command === 'PROXY' && fam === 0x21) {
    out.source = { address: formatIPv6OrMapped(header, 16), port: header.readUInt16BE(48) };
    out.destination = { address: formatIPv6OrMapped(header, 32), port: header.readUInt16BE(50) };
  }
  // LOCAL, AF_UNSPEC and AF_UNIX stream: no usable address, the caller keeps the real ones.
  return out;
}

// ---------------------------------------------------------------------------
// Incremental parser
// ---------------------------------------------------------------------------

/** Options of {@link ProxyHeaderParser}. */
export interface ProxyHeaderParserOptions {
  /**
   * Largest v2 header accepted, in bytes, including the 16-byte fixed part
   * (default {@link DEFAULT_MAX_HEADER_BYTES}; range 52..65551). Bounds the
   * memory one connection can pin before it is validated. v1 lines are
   * always capped at 107 bytes.
   */
  maxHeaderBytes?: number;
}

const NEED_MORE: ParseResult = Object.freeze({ state: 'need_more' }) as ParseResult;

/**
 * Strict, incremental PROXY v1/v2 header parser for one connection.
 *
 * Feed each chunk read from the socket to {@link push} until it returns
 * `done`; `rest` holds the bytes that followed the header, unchanged, and
 * must be forwarded as the first client bytes. The parser copies only header
 * bytes (never more than 107 for v1, or the declared v2 length, capped by
 * `maxHeaderBytes`), never reads past the declared length, and throws a
 * {@link ProxyHeaderError} as soon as the bytes seen cannot begin a valid
 * header. After an error every further push rethrows it.
 */
export class ProxyHeaderParser {
  /** The effective v2 size cap. */
  readonly maxHeaderBytes: number;
  #buf: Buffer = Buffer.allocUnsafe(V1_MAX_LENGTH);
  #len = 0;
  #version: 0 | 1 | 2 = 0;
  /** Total v2 header length, once bytes 14..15 are in. */
  #total = 0;
  #done = false;
  #error: ProxyHeaderError | undefined;

  constructor(options: ProxyHeaderParserOptions = {}) {
    const max = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
    if (!Number.isInteger(max) || max < MIN_MAX_HEADER_BYTES || max > MAX_MAX_HEADER_BYTES) {
      throw new RangeError(`maxHeaderBytes must be an integer in ${MIN_MAX_HEADER_BYTES}..${MAX_MAX_HEADER_BYTES}`);
    }
    this.maxHeaderBytes = max;
  }

  /** Header bytes held so far (for metrics and tests). */
  get bufferedBytes(): number {
    return this.#len;
  }

  /**
   * Consumes the next chunk of the connection.
   * @returns `need_more`, or `done` with the header and the bytes after it.
   * @throws ProxyHeaderError when the input cannot be a valid header.
   * @throws Error when called again after `done` (a caller bug, not bad input).
   */
  push(chunk: Uint8Array): ParseResult {
    if (this.#error) throw this.#error;
    if (this.#done) throw new Error('ProxyHeaderParser.push() called after the header was complete');
    const data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    try {
      let off = 0;
      while (off < data.length) {
        const take = this.#wanted(data, off);
        data.copy(this.#buf, this.#len, off, off + take);
        this.#len += take;
        off += take;
        const header = this.#step();
        if (header) {
          this.#done = true;
          this.#buf = Buffer.alloc(0); // release the header bytes
          return { state: 'done', header, rest: data.subarray(off) };
        }
      }
      return NEED_MORE;
    } catch (err) {
      if (err instanceof ProxyHeaderError) this.#error = err;
      throw err;
    }
  }

  /** How many bytes of `data` from `off` belong to the header as far as we know now. */
  #wanted(data: Buffer, off: number): number {
    const avail = data.length - off;
    if (this.#version === 0) return 1; // the first byte picks the version
    if (this.#version === 1) {
      // Stop right after the first LF so `rest` is a plain subarray of the chunk.
      const window = Math.min(avail, V1_MAX_LENGTH - this.#len);
      const lf = data.subarray(off, off + window).indexOf(LF);
      return lf >= 0 ? lf + 1 : window;
    }
    if (this.#total === 0) return Math.min(avail, V2_FIXED_LENGTH - this.#len);
    return Math.min(avail, this.#total - this.#len);
  }

  #step(): ProxyHeader | undefined {
    const buf = this.#buf;
    const len = this.#len;
    if (this.#version === 0) {
      if (buf[0] === V1_PREFIX[0]) this.#version = 1;
      else if (buf[0] === V2_SIGNATURE[0]) this.#version = 2;
      else fail('bad_signature', 'neither "PROXY " nor the v2 signature');
    }
    if (this.#version === 1) return scanV1(buf, len);

    if (this.#total === 0) {
      for (let i = 0; i < Math.min(len, 12); i++) {
        if (buf[i] !== V2_SIGNATURE[i]) fail('bad_signature', 'v2 signature mismatch');
      }
      checkV2Fixed(buf, len);
      if (len < V2_FIXED_LENGTH) return undefined;
      const bodyLength = buf.readUInt16BE(14);
      const total = V2_FIXED_LENGTH + bodyLength;
      if (total > this.maxHeaderBytes) fail('v2_too_long', `${total} bytes > maximum ${this.maxHeaderBytes}`);
      const need = V2_ADDRESS_BYTES[(buf[13]! >> 4) as 0 | 1 | 2 | 3];
      if (bodyLength < need) fail('v2_bad_length', `length ${bodyLength} < address block ${need}`);
      this.#total = total;
      // Exactly the declared size, so nothing past the header is ever copied.
      this.#buf = Buffer.allocUnsafe(total);
      buf.copy(this.#buf, 0, 0, V2_FIXED_LENGTH);
    }
    if (this.#len < this.#total) return undefined;
    return decodeV2(this.#buf);
  }
}

/**
 * Parses one complete header at the start of `data` (a convenience over
 * {@link ProxyHeaderParser} for tests and tools).
 * @returns the header and the bytes after it, or undefined if `data` ends inside a header.
 * @throws ProxyHeaderError for an invalid header.
 */
export function parseProxyHeader(
  data: Uint8Array,
  options?: ProxyHeaderParserOptions,
): { header: ProxyHeader; rest: Buffer } | undefined {
  const r = new ProxyHeaderParser(options).push(data);
  return r.state === 'done' ? { header: r.header, rest: r.rest } : undefined;
}
