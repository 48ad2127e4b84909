/**
 * What a connection to a TLS listener sent instead of a ClientHello, in
 * words an operator can act on. A PostgreSQL client on a TLS listener
 * without `protocol: postgres`, a balancer sending PROXY headers to a
 * listener without `accept_proxy`, a plaintext client on the wrong port:
 * each is named, with the fix where there is one. One wording, "not TLS:
 * ...", whether the listener terminates or passes TLS through.
 */
import { SSL_REQUEST } from '../protocols/postgres/messages.js';

/** The first byte of a TLS handshake record. */
export const TLS_HANDSHAKE = 0x16;

const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const HTTP_METHODS = ['GET ', 'POST', 'HEAD', 'PUT ', 'DELE', 'OPTI', 'PATC', 'CONN', 'PRI '];

function startsWith(bytes: Buffer, prefix: Buffer): boolean {
  return bytes.length >= prefix.length && bytes.subarray(0, prefix.length).equals(prefix);
}

/** Why `first` (the first bytes a client sent, at least one) is not TLS. */
export function describeNotTls(first: Buffer): string {
  const text = first.toString('latin1', 0, Math.min(first.length, 16));
  if (startsWith(first, SSL_REQUEST)) return 'not TLS: a PostgreSQL SSLRequest (set protocol: postgres on this listener)';
  if (text.startsWith('PROXY ') || startsWith(first, PROXY_V2_SIGNATURE)) {
    return 'not TLS: a PROXY protocol header (set accept_proxy and trusted_proxies on this listener, or stop sending it)';
  }
  if (HTTP_METHODS.some((m) => text.startsWith(m))) return 'not TLS: a plaintext HTTP request';
  if (text.startsWith('SSH-')) return 'not TLS: an SSH client';
  if (/^\*[0-9]/.test(text) || /^(PING|AUTH|HELLO)\b/i.test(text)) return 'not TLS: a plaintext Redis command';
  if (first[0] === 0x10 && text.includes('MQTT')) return 'not TLS: a plaintext MQTT CONNECT';
  if ((first[0]! & 0x80) !== 0 && first[2] === 0x01) return 'not TLS: an SSLv2-format ClientHello (SSL 2 and 3 are not supported)';
  const hex = [...first.subarray(0, 4)].map((b) => `0x${b.toString(16).padStart(2, '0')}`).join(' ');
  return `not TLS: the first bytes (${hex}) are not a TLS handshake record`;
}
