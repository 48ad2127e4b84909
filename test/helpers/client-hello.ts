/**
 * Real ClientHellos for tests: the bytes a TLS client (Node's tls.connect,
 * or any other pointed at the capture port) sends first, read by a plain
 * TCP server. The record parsing here is written apart from
 * src/tls/client-hello.ts, so a shared misunderstanding cannot hide.
 */
import net from 'node:net';
import tls from 'node:tls';

/** Whether `buf` holds a complete first handshake message (records reassembled). */
export function helloComplete(buf: Buffer): boolean {
  let payload = Buffer.alloc(0);
  for (let p = 0; p + 5 <= buf.length; ) {
    const len = buf.readUInt16BE(p + 3);
    if (p + 5 + len > buf.length) return false;
    payload = Buffer.concat([payload, buf.subarray(p + 5, p + 5 + len)]);
    p += 5 + len;
    if (payload.length >= 4 && payload.length >= 4 + payload.readUIntBE(1, 3)) return true;
  }
  return false;
}

export interface HelloCapture {
  /** Where a client should connect. */
  readonly port: number;
  /** What the first client sent until its ClientHello was complete; rejects after `timeoutMs`. */
  readonly hello: Promise<Buffer>;
  /** Stops listening (the client's connection is already closed once `hello` resolves). */
  close(): void;
}

/** A plain TCP server on 127.0.0.1 that records what a client sends until a whole ClientHello arrived. */
export async function captureServer(timeoutMs = 10_000): Promise<HelloCapture> {
  const server = net.createServer();
  let timer: NodeJS.Timeout | undefined;
  const hello = new Promise<Buffer>((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no complete ClientHello within ${timeoutMs}ms`)), timeoutMs);
    server.on('connection', (socket) => {
      socket.on('error', () => {});
      let buf = Buffer.alloc(0);
      socket.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (helloComplete(buf)) {
          clearTimeout(timer);
          resolve(buf);
          socket.destroy();
        }
      });
    });
  });
  // A caller that gives up early (close() first) must not leave an unhandled rejection behind.
  hello.catch(() => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const close = (): void => {
    clearTimeout(timer);
    server.close();
  };
  return { port: (server.address() as net.AddressInfo).port, hello, close };
}

/** The bytes Node's TLS client sends first with these options (a real ClientHello; no handshake follows). */
export async function captureClientHello(options: tls.ConnectionOptions = {}): Promise<Buffer> {
  const cap = await captureServer();
  const client = tls.connect({ host: '127.0.0.1', port: cap.port, rejectUnauthorized: false, ...options });
  client.on('error', () => {});
  try {
    return await cap.hello;
  } finally {
    client.destroy();
    cap.close();
  }
}
