/** What a parsed PROXY header is, and why one is refused. */
import { L4lbError } from '../errors.js';

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

/** Decoded PP2_TYPE_SSL TLV; without `subTlvs`, also what `encodeV2` takes (ProxySslInput). */
export interface ProxySslInfo {
  /** Bit field of PP2_CLIENT_SSL, PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS. */
  client: number;
  /** 0 when a client certificate was presented and verified, non-zero otherwise. */
  verify: number;
  /** PP2_SUBTYPE_SSL_VERSION, e.g. "TLSv1.3". */
  version?: string;
  /** PP2_SUBTYPE_SSL_CN: Common Name of the client certificate's subject (UTF-8). */
  cn?: string;
  /** PP2_SUBTYPE_SSL_CIPHER, e.g. "TLS_AES_128_GCM_SHA256". */
  cipher?: string;
  /** PP2_SUBTYPE_SSL_SIG_ALG. */
  sigAlg?: string;
  /** PP2_SUBTYPE_SSL_KEY_ALG. */
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

/** Throws the {@link ProxyHeaderError} for `reason`. */
export function fail(reason: ProxyHeaderErrorReason, detail: string): never {
  throw new ProxyHeaderError(reason, detail);
}
