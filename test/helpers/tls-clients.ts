/**
 * Node TLS clients for tests against a terminating listener: they trust the
 * test CA (see certs.ts) and check the chain, not the name (each test checks
 * which certificate it got); each is destroyed when its test ends.
 */
import tls from 'node:tls';
import { testCerts } from './certs.js';
import type { Owner } from './lb.js';

/** With the test CA trusted; the chain is verified, the name each test checks itself. */
function connectOptions(port: number, options: tls.ConnectionOptions): tls.ConnectionOptions {
  return { host: '127.0.0.1', port, ca: testCerts().ca, checkServerIdentity: () => undefined, ...options };
}

/** A TLS client that resolves once its handshake is done; its local port, and every session it is given, are kept. */
export async function tlsClient(t: Owner, port: number, options: tls.ConnectionOptions = {}): Promise<tls.TLSSocket & { lport: number; sessions: Buffer[] }> {
  const sessions: Buffer[] = [];
  const s = await new Promise<tls.TLSSocket>((resolve, reject) => {
    const socket = tls.connect(connectOptions(port, options));
    t.teardown(() => socket.destroy());
    socket.on('session', (session: Buffer) => sessions.push(session));
    const timer = setTimeout(() => reject(new Error('no TLS handshake within 10s')), 10_000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  s.on('error', () => {});
  return Object.assign(s, { lport: s.localPort!, sessions });
}

/** How a refused client ended. */
export interface Refusal {
  /** Its local port (to find its access line). */
  readonly lport: number;
  /** The first error code (or message) it saw. */
  readonly error: string;
  /** Whether its side of the handshake completed (TLS 1.3 clients may see that before a certificate is refused). */
  readonly secure: boolean;
  /** What came back after the line it then wrote: '' when refused. */
  readonly echoed: string;
}

/**
 * A client the listener should refuse: connects, writes a line if its side
 * of the handshake completes, and resolves with how it ended. Never resolves
 * with an echo unless the listener let it through.
 */
export function refusedClient(t: Owner, port: number, options: tls.ConnectionOptions): Promise<Refusal> {
  return new Promise((resolve, reject) => {
    let lport = 0;
    let error = '';
    let secure = false;
    let echoed = '';
    const socket = tls.connect(connectOptions(port, options));
    t.teardown(() => socket.destroy());
    socket.on('connect', () => (lport = socket.localPort!));
    socket.on('secureConnect', () => {
      secure = true;
      socket.write('must not pass\n');
    });
    socket.on('data', (d: Buffer) => (echoed += d.toString()));
    socket.on('error', (err: NodeJS.ErrnoException) => (error ||= err.code ?? err.message));
    const timer = setTimeout(() => reject(new Error('a refused client was still open after 10s')), 10_000);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ lport, error, secure, echoed });
    });
  });
}
