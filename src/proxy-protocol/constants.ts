/** PROXY protocol wire constants (HAProxy's doc/proxy-protocol.txt) and l4lb's size bounds. */

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
export const UNIQUE_ID_MAX = 128;

/** Address block size by v2 family nibble: UNSPEC, INET, INET6, UNIX. */
export const V2_ADDRESS_BYTES = [0, 12, 36, 216] as const;

export const CR = 0x0d;
export const LF = 0x0a;
/** How every v1 header starts. */
export const V1_PREFIX: Buffer = Buffer.from('PROXY ', 'latin1');
