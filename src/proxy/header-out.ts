/**
 * The PROXY header a pool sends to its servers before any client byte, built
 * from what the front end learned: the client and destination (the incoming
 * header's, or our own sockets'), and in v2 the SNI and, when TLS was
 * terminated here, the ALPN and SSL details.
 */
import type { ProxyProtocolVersion } from '../config/model.js';
import { PP2_CLIENT_CERT_CONN, PP2_CLIENT_SSL, encodeV1, encodeV2, type ProxyTlvInput } from '../proxy-protocol/index.js';
import { normaliseIp } from '../net/ip.js';
import type { FrontState } from './front/stage.js';

/**
 * The header for `version`, or null when the pool sends none.
 * @throws when an address is gone (the client vanished mid-connect): nothing to relay for
 */
export function outgoingHeader(version: ProxyProtocolVersion, front: FrontState): Buffer | null {
  if (version === 'off') return null;
  const raw = front.raw;
  const src = { address: front.clientIp, port: front.clientPort ?? 0 };
  const dst = {
    address: front.destIp ?? normaliseIp(raw.localAddress),
    port: front.destPort ?? raw.localPort ?? 0,
  };
  if (version === 'v1') return encodeV1(src, dst);
  return encodeV2({ command: 'PROXY', src, dst, tlvs: tlvs(front) });
}

/** v2 TLVs: the SNI when known; ALPN and SSL details when TLS was terminated here. */
function tlvs(front: FrontState): ProxyTlvInput | undefined {
  const t = front.tls;
  if (t === null) return front.sni === null ? undefined : { authority: front.sni };
  return {
    ...(t.sni !== null ? { authority: t.sni } : {}),
    ...(t.alpn !== null ? { alpn: t.alpn } : {}),
    ssl: {
      client: PP2_CLIENT_SSL | (t.clientCertPresented ? PP2_CLIENT_CERT_CONN : 0),
      // 0 = a client certificate was presented and verified.
      verify: t.clientCertVerified ? 0 : 1,
      ...(t.version !== null ? { version: t.version } : {}),
      ...(t.cipher !== null ? { cipher: t.cipher } : {}),
      ...(t.clientCn !== null ? { cn: t.clientCn } : {}),
    },
  };
}
