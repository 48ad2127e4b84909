/**
 * kind tcp: the connect is the check; optionally a payload is sent and the
 * reply must start with the expected bytes (`PING` / `+PONG` for Redis, an
 * SMTP banner's `220`). Only as many bytes as `expect` holds are kept.
 */
import type net from 'node:net';
import { OK, describeReply, fail, type Conversation, type Verdict } from './conversation.js';

export function tcpConversation(send: Buffer | null, expect: Buffer | null): Conversation {
  let received: Buffer = Buffer.alloc(0);
  return {
    start(socket: net.Socket): Verdict | undefined {
      if (send !== null) socket.write(send);
      return expect === null ? OK : undefined;
    },
    data(chunk: Buffer): Verdict | undefined {
      if (expect === null) return OK;
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const n = Math.min(received.length, expect.length);
      if (received.compare(expect, 0, n, 0, n) !== 0) return fail(describeReply('expect mismatch', received));
      return received.length >= expect.length ? OK : undefined;
    },
    closed(): Verdict {
      return fail(describeReply('connection closed', received));
    },
  };
}
