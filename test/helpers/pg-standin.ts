/**
 * A PostgreSQL stand-in for tests that need to see exactly what l4lb sends
 * a server and to answer in ways a real server rarely does (`N` to
 * SSLRequest, a chosen cancel key). It speaks just enough of the protocol:
 * SSLRequest (answers `S` with TLS, or `N`), StartupMessage (answers
 * AuthenticationOk, BackendKeyData with a fresh key, ReadyForQuery), and
 * records every CancelRequest it receives.
 */
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import {
  CANCEL_REQUEST_CODE,
  SSL_REQUEST_CODE,
  type CancelKey,
} from '../../src/protocols/postgres/messages.js';

export interface StandinOptions {
  /** Answer SSLRequest with S and do TLS with these; absent: answer N. */
  readonly tls?: tls.SecureContextOptions;
}

export interface Standin {
  readonly name: string;
  readonly port: number;
  readonly address: string;
  /** The keys it issued, in order. */
  readonly issued: CancelKey[];
  /** The CancelRequests it received. */
  readonly cancels: CancelKey[];
  /** What each connection began with: 'ssl', 'startup', 'cancel' or 'other'. */
  readonly openings: string[];
  /** Connections accepted. */
  accepted: number;
  close(): Promise<void>;
}

let nextPid = 1000;

function message(type: string, body: Buffer): Buffer {
  const b = Buffer.alloc(5 + body.length);
  b.write(type, 0, 'latin1');
  b.writeInt32BE(4 + body.length, 1);
  body.copy(b, 5);
  return b;
}

/** AuthenticationOk, BackendKeyData (pid, 4-byte secret), ReadyForQuery. */
export function startupReply(key: CancelKey): Buffer {
  const keyBody = Buffer.alloc(4 + key.secret.length);
  keyBody.writeInt32BE(key.pid, 0);
  key.secret.copy(keyBody, 4);
  return Buffer.concat([message('R', Buffer.from([0, 0, 0, 0])), message('S', Buffer.from('server_version\u000015.0\u0000')), message('K', keyBody), message('Z', Buffer.from('I'))]);
}

export async function startStandin(name: string, options: StandinOptions = {}): Promise<Standin> {
  const sockets = new Set<net.Socket>();
  const state = { issued: [] as CancelKey[], cancels: [] as CancelKey[], openings: [] as string[], accepted: 0 };

  /** Reads opening packets from `s` (plain, or TLS after an `S`). */
  const serve = (s: net.Socket, encrypted: boolean): void => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 8) return;
      const length = buf.readInt32BE(0);
      if (length < 8 || length > 10_000) {
        state.openings.push('other');
        s.destroy();
        return;
      }
      if (buf.length < length) return;
      const code = buf.readInt32BE(4);
      s.removeListener('data', onData);
      if (code === SSL_REQUEST_CODE && !encrypted) {
        state.openings.push('ssl');
        if (options.tls === undefined) {
          s.write('N');
          buf = buf.subarray(length);
          s.on('data', onData);
          return;
        }
        s.write('S');
        const secure = new tls.TLSSocket(s, { isServer: true, ...options.tls, ALPNProtocols: ['postgresql'] });
        secure.on('error', () => {});
        sockets.add(secure);
        serve(secure, true);
        return;
      }
      if (code === CANCEL_REQUEST_CODE && length >= 16) {
        state.openings.push('cancel');
        state.cancels.push({ pid: buf.readInt32BE(8), secret: Buffer.from(buf.subarray(12, length)) });
        s.end();
        return;
      }
      if (code === 3 << 16) {
        state.openings.push('startup');
        const key = { pid: nextPid++, secret: randomBytes(4) };
        state.issued.push(key);
        s.write(startupReply(key));
        // Then it idles like a session waiting for queries; Terminate or a close ends it.
        s.on('data', () => {});
        return;
      }
      state.openings.push('other');
      s.destroy();
    };
    s.on('data', onData);
  };

  const server = net.createServer((s) => {
    state.accepted++;
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    serve(s, false);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return Object.assign(state, {
    name,
    port,
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  });
}

/** A StartupMessage (protocol 3.0) for user postgres. */
export function startup(): Buffer {
  const body = Buffer.from('user\u0000postgres\u0000database\u0000postgres\u0000\u0000');
  const b = Buffer.alloc(8 + body.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(3 << 16, 4);
  body.copy(b, 8);
  return b;
}

/** The BackendKeyData in a server's reply, or undefined while it has not all arrived. */
export function keyIn(reply: Buffer): CancelKey | undefined {
  let i = 0;
  while (i + 5 <= reply.length) {
    const type = String.fromCharCode(reply[i]!);
    const len = reply.readInt32BE(i + 1);
    if (i + 1 + len > reply.length) return undefined;
    if (type === 'K') return { pid: reply.readInt32BE(i + 5), secret: Buffer.from(reply.subarray(i + 9, i + 1 + len)) };
    i += 1 + len;
  }
  return undefined;
}
