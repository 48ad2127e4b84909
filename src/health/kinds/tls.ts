/**
 * kind tls: the probe's transport (../probe.ts) has done the whole handshake,
 * the server's certificate verified as the pool's `tls` says (or, for a
 * passthrough pool without one, not verified: the point is liveness); this
 * kind only says up, and leaves with a close_notify before its FIN, so the
 * server logs a client that said goodbye, not a handshake cut short
 * (OpenSSL's `unexpected eof while reading`).
 */
import { LEAVE, fail, type Conversation, type Verdict } from './conversation.js';

export function tlsConversation(): Conversation {
  const done: Verdict = { ok: true, reason: '', farewell: LEAVE };
  return {
    start: () => done,
    data: () => done,
    // Never before the verdict: start() gives it as soon as the handshake is done.
    closed: () => fail('connection closed after the TLS handshake'),
  };
}
