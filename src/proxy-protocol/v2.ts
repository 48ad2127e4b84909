/**
 * PROXY v2 decoder: the fixed part's checks, as soon as its bytes arrive,
 * and the address block and TLVs of a complete header.
 *
 * Receiver policy where the spec leaves a choice:
 * - Family byte: only the seven combinations the spec lists (0x00, 0x11,
 *   0x12, 0x21, 0x22, 0x31, 0x32). With PROXY, TCP over IPv4/IPv6 yields
 *   addresses; AF_UNSPEC and AF_UNIX stream fall back to the real connection
 *   addresses (the spec's required fallback for families a receiver does not
 *   support); any datagram transport is rejected, since l4lb relays TCP only
 *   and a UDP header on a TCP connection means a misconfigured sender. LOCAL
 *   accepts any listed family and ignores its addresses.
 * - Layout, for both commands: the length must cover the family's address
 *   block and the TLVs after it must tile the rest exactly; known TLVs must be
 *   well formed (CRC32C 4 bytes, SSL ≥ 5 bytes with tiling sub-TLVs, UTF-8
 *   AUTHORITY and CN, UNIQUE_ID ≤ 128 bytes) and appear at most once.
 */
import { formatIp, formatIpv4 } from '../net/ip.js';
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
  V2_ADDRESS_BYTES,
  V2_FIXED_LENGTH,
} from './constants.js';
import { crc32cWithHole } from './crc32c.js';
import { fail, type ProxyHeader, type ProxySslInfo, type ProxyTlvs } from './header.js';

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
export function checkV2Fixed(buf: Buffer, len: number): void {
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

/** A complete v2 header (its fixed part already checked) as a {@link ProxyHeader}. */
export function decodeV2(header: Buffer): ProxyHeader {
  const command = (header[12]! & 0x0f) === 1 ? 'PROXY' : 'LOCAL';
  const fam = header[13]!;
  const start = V2_FIXED_LENGTH + V2_ADDRESS_BYTES[(fam >> 4) as 0 | 1 | 2 | 3];
  const tlvs = parseTlvs(header, start);
  const out: ProxyHeader = { version: 2, command, tlvs, length: header.length };
  if (command === 'PROXY' && fam === 0x11) {
    out.source = { address: formatIpv4(header, 16), port: header.readUInt16BE(24) };
    out.destination = { address: formatIpv4(header, 20), port: header.readUInt16BE(26) };
  } else if (command === 'PROXY' && fam === 0x21) {
    out.source = { address: formatIp(header, 16), port: header.readUInt16BE(48) };
    out.destination = { address: formatIp(header, 32), port: header.readUInt16BE(50) };
  }
  // LOCAL, AF_UNSPEC and AF_UNIX stream: no usable address, the caller keeps the real ones.
  return out;
}
