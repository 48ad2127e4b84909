/**
 * PROXY header encoders: v1 lines and v2 binary headers with ALPN,
 * AUTHORITY, SSL, UNIQUE_ID and CRC32C TLVs. Addresses go through
 * src/net/ip.ts: IPv4-mapped IPv6 is sent as IPv4, zone ids are dropped.
 */
import { formatIpv4, formatIpv6, ipFamily, isV4Mapped, parseIpInto } from '../net/ip.js';
import {
  PP2_SUBTYPE_SSL_CIPHER,
  PP2_SUBTYPE_SSL_CN,
  PP2_SUBTYPE_SSL_KEY_ALG,
  PP2_SUBTYPE_SSL_SIG_ALG,
  PP2_SUBTYPE_SSL_VERSION,
  PP2_TYPE_ALPN,
  PP2_TYPE_AUTHORITY,
  PP2_TYPE_CRC32C,
  PP2_TYPE_SSL,
  PP2_TYPE_UNIQUE_ID,
  UNIQUE_ID_MAX,
  V2_FIXED_LENGTH,
  V2_SIGNATURE,
} from './constants.js';
import { crc32c } from './crc32c.js';
import type { ProxyEndpoint, ProxySslInfo } from './header.js';

/** 16 address bytes (IPv4 as IPv4-mapped), or a RangeError naming the side. */
function requireIp(what: string, address: string): Buffer {
  const bytes = Buffer.allocUnsafe(16);
  if (parseIpInto(address, bytes) === 0) {
    throw new RangeError(`PROXY header ${what} address is not an IP address: ${JSON.stringify(address)}`);
  }
  return bytes;
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
  if (isV4Mapped(s) && isV4Mapped(d)) return { family: 4, s: s.subarray(12), d: d.subarray(12) };
  // Mixed families: the spec wants one family per header, so IPv4 goes as
  // IPv4-mapped IPv6 (what HAProxy does too), which its 16 bytes already are.
  return { family: 6, s, d };
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
      ? `PROXY TCP4 ${formatIpv4(p.s, 0)} ${formatIpv4(p.d, 0)} ${src.port} ${dst.port}\r\n`
      : `PROXY TCP6 ${formatIpv6(p.s)} ${formatIpv6(p.d)} ${src.port} ${dst.port}\r\n`;
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
  if (ipFamily(localAddress) === 0 || ipFamily(remoteAddress) === 0) return encodeV1Unknown();
  return encodeV1({ address: localAddress, port: localPort }, { address: remoteAddress, port: remotePort });
}

/** PP2_TYPE_SSL contents for {@link encodeV2}: the decoded form's fields, sub-TLVs written from them. */
export type ProxySslInput = Omit<ProxySslInfo, 'subTlvs'>;

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
