/**
 * PROXY protocol v1 (text) and v2 (binary) header codec, after HAProxy's
 * doc/proxy-protocol.txt.
 *
 * - Encoders ({@link encodeV1}, {@link encodeV1Local}, {@link encodeV1Unknown},
 *   {@link encodeV2} with ALPN, AUTHORITY, CRC32C, UNIQUE_ID and SSL TLVs):
 *   ./encode.ts.
 * - Parser ({@link ProxyHeaderParser}, incremental and strict; every
 *   rejection is a {@link ProxyHeaderError} carrying a stable `reason`):
 *   ./parser.ts, reading v1 lines with ./v1.ts and v2 headers with ./v2.ts,
 *   whose headers state the receiver policy where the spec leaves a choice.
 *   A v2 header is at most `maxHeaderBytes` (default 4096), checked from its
 *   length field before any body byte is buffered.
 *
 * proxy-protocol-js 4.0.6 is right only for plain headers (no TLVs, no
 * UNKNOWN, no partial input), so both directions are implemented here and the
 * library serves as an independent cross-check in the tests.
 *
 * Addresses come out as src/net/ip.ts prints them for all of l4lb: IPv4 and
 * IPv4-mapped IPv6 as dotted IPv4, other IPv6 in RFC 5952 form.
 */
export {
  DEFAULT_MAX_HEADER_BYTES,
  MAX_MAX_HEADER_BYTES,
  MIN_MAX_HEADER_BYTES,
  PP2_CLIENT_CERT_CONN,
  PP2_CLIENT_CERT_SESS,
  PP2_CLIENT_SSL,
  PP2_SUBTYPE_SSL_CIPHER,
  PP2_SUBTYPE_SSL_CN,
  PP2_SUBTYPE_SSL_KEY_ALG,
  PP2_SUBTYPE_SSL_SIG_ALG,
  PP2_SUBTYPE_SSL_VERSION,
  PP2_TYPE_ALPN,
  PP2_TYPE_AUTHORITY,
  PP2_TYPE_CRC32C,
  PP2_TYPE_NETNS,
  PP2_TYPE_NOOP,
  PP2_TYPE_SSL,
  PP2_TYPE_UNIQUE_ID,
  V1_MAX_LENGTH,
  V2_FIXED_LENGTH,
  V2_SIGNATURE,
} from './constants.js';
export { crc32c } from './crc32c.js';
export {
  encodeV1,
  encodeV1Local,
  encodeV1Unknown,
  encodeV2,
  type EncodeV2Options,
  type ProxySslInput,
  type ProxyTlvInput,
  type SocketAddresses,
} from './encode.js';
export {
  ProxyHeaderError,
  type ParseResult,
  type ProxyEndpoint,
  type ProxyHeader,
  type ProxyHeaderErrorReason,
  type ProxySslInfo,
  type ProxyTlv,
  type ProxyTlvs,
} from './header.js';
export { parseProxyHeader, ProxyHeaderParser, type ProxyHeaderParserOptions } from './parser.js';
