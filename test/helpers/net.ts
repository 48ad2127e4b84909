/** Real loopback peers for tests: echo and named backends, clients, an in-process l4lb. */
import net from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { buildModel } from '../../src/config/load.js';
import { App } from '../../src/runtime/app.js';

export interface Backend {
  readonly port: number;
  readonly address: string;
  /** Connections accepted so far. */
  accepted: number;
  /** Connections open now. */
  readonly open: Set<net.Socket>;
  close(): Promise<void>;
}

/** A backend whose per-connection behaviour is `handler`; tracked so close() ends everything. */
export async function startBackend(handler: (socket: net.Socket) => void, options: net.ServerOpts = {}): Promise<Backend> {
  const server = net.createServer(options);
  const open = new Set<net.Socket>();
  const backend: Backend = {
    port: 0,
    address: '',
    accepted: 0,
    open,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        if (!server.listening) return resolve();
        server.close(() => resolve());
      }),
  };
  server.on('connection', (socket) => {
    backend.accepted++;
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => {});
    handler(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  Object.assign(backend, { port, address: `127.0.0.1:${port}` });
  return backend;
}

/** Echoes every byte back, and passes half-close on. */
export function echoBackend(): Promise<Backend> {
  return startBackend((s) => s.pipe(s), { allowHalfOpen: true });
}

/** Writes its name on connect, then echoes. */
export function namedBackend(name: string): Promise<Backend> {
  return startBackend((s) => {
    s.write(`${name}\n`);
    s.pipe(s);
  });
}

/** A loopback port that nothing listens on (bound, then closed). */
export async function deadPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface Running {
  readonly app: App;
  /** Port of listener `name` (default: the first). */
  port(name?: string): number;
  /** Access-log lines written so far (parsed JSON). */
  readonly lines: Array<Record<string, unknown>>;
  stop(drainMs?: number): Promise<void>;
}

/** Start l4lb in this process from a raw config object (listeners default to 127.0.0.1:0). */
export async function startL4lb(raw: unknown): Promise<Running> {
  const model = await buildModel(raw);
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const logger = pino({ level: 'debug' }, sink);
  const app = new App(model, logger);
  await app.start();
  return {
    app,
    lines,
    port: (name) => {
      const l = name === undefined ? app.listeners[0] : app.listeners.find((x) => x.model.name === name);
      if (!l) throw new Error(`no listener ${name}`);
      return l.address().port;
    },
    stop: (drainMs = 0) => app.stop(drainMs),
  };
}

/** Connect to 127.0.0.1:port, optionally from a chosen local address (127.0.0.X). */
export function connect(port: number, localAddress?: string, options: Partial<net.TcpNetConnectOpts> = {}): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress, ...options }, () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Read until `n` bytes or a newline-terminated line arrives. */
export function readLine(socket: net.Socket, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => done(new Error(`no line within ${timeoutMs}ms (got ${JSON.stringify(buf)})`)), timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) done(undefined, buf.slice(0, i));
    };
    const onClose = (): void => done(new Error(`closed before a line (got ${JSON.stringify(buf)})`));
    function done(err?: Error, line?: string): void {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve(line!);
    }
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

/** Resolves when the socket closes; rejects after `timeoutMs`. */
export function closed(socket: net.Socket, timeoutMs = 5_000): Promise<number> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return resolve(0);
    const timer = setTimeout(() => reject(new Error(`socket still open after ${timeoutMs}ms`)), timeoutMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
    socket.resume();
  });
}

/** Connect, read the backend's name line, close. */
export async function whoAnswers(port: number, localAddress?: string): Promise<string> {
  const s = await connect(port, localAddress);
  s.on('error', () => {});
  try {
    return await readLine(s);
  } finally {
    s.destroy();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `cond` every 20ms until true or `timeoutMs` passes. */
export async function waitFor(cond: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
