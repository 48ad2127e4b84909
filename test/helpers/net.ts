/** Real loopback peers for tests: echo and named backends, clients, an in-process l4lb. */
import net from 'node:net';
import { buildModel } from '../../src/config/load.js';
import { App } from '../../src/runtime/app.js';
import { collectingLogger } from './logs.js';

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

/** An echo backend that counts the bytes it received (health probes connect too, but a plain probe sends nothing). */
export async function countingEcho(): Promise<Backend & { readonly received: number }> {
  let received = 0;
  const b = await startBackend(
    (s) => {
      s.on('data', (d: Buffer) => (received += d.length));
      s.pipe(s);
    },
    { allowHalfOpen: true },
  );
  return Object.defineProperty(b, 'received', { get: () => received }) as Backend & { readonly received: number };
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

/**
 * Serving threads of an in-process l4lb whose configuration says nothing of
 * `workers`: 1 by default (the main thread alone, quick to start), or
 * L4LB_TEST_WORKERS, to run every test with worker threads too.
 */
export const TEST_WORKERS = Number(process.env.L4LB_TEST_WORKERS ?? 1);

/** Start l4lb in this process from a raw config object (listeners default to 127.0.0.1:0). */
export async function startL4lb(raw: unknown): Promise<Running> {
  const withWorkers = typeof raw === 'object' && raw !== null && !('workers' in raw) ? { ...raw, workers: TEST_WORKERS } : raw;
  const model = await buildModel(withWorkers);
  const { logger, lines } = collectingLogger('debug');
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

/**
 * Reads from `socket` until `complete` finds what it waits for in all that
 * arrived so far; rejects when the socket closes first or after `timeoutMs`.
 * @param what what is awaited, for the errors
 */
function readUntil<T>(socket: net.Socket, complete: (received: Buffer) => T | undefined, what: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    const got = (): string => JSON.stringify(received.toString());
    const timer = setTimeout(() => done(new Error(`${what} did not arrive within ${timeoutMs}ms (got ${got()})`)), timeoutMs);
    const onData = (d: Buffer): void => {
      received = Buffer.concat([received, d]);
      const result = complete(received);
      if (result !== undefined) done(undefined, result);
    };
    const onClose = (): void => done(new Error(`closed before ${what} arrived (got ${got()})`));
    function done(err?: Error, result?: T): void {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve(result!);
    }
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

/** Reads until a newline-terminated line arrives; resolves with the line, without its newline. */
export function readLine(socket: net.Socket, timeoutMs = 5_000): Promise<string> {
  return readUntil(
    socket,
    (received) => {
      const i = received.indexOf('\n');
      return i >= 0 ? received.subarray(0, i).toString() : undefined;
    },
    'a line',
    timeoutMs,
  );
}

/** Reads until at least `n` bytes arrived; resolves with all that arrived. */
export function readBytes(socket: net.Socket, n: number, timeoutMs = 20_000): Promise<Buffer> {
  return readUntil(socket, (received) => (received.length >= n ? received : undefined), `${n} bytes`, timeoutMs);
}

/** Writes `text` as a line and resolves with the next line that comes back (an echo, through l4lb). */
export async function echoes(socket: net.Socket, text: string, timeoutMs = 10_000): Promise<string> {
  socket.write(`${text}\n`);
  return readLine(socket, timeoutMs);
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

/** Whether the socket closes within `ms` (false: still open then). */
export async function closedWithin(socket: net.Socket, ms: number): Promise<boolean> {
  try {
    await closed(socket, ms);
    return true;
  } catch {
    return false;
  }
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

/** How many times each name occurs (`['a', 'b', 'a']` → `{ a: 2, b: 1 }`): who answered how often. */
export function tally(names: readonly string[]): Record<string, number> {
  const c: Record<string, number> = {};
  for (const n of names) c[n] = (c[n] ?? 0) + 1;
  return c;
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
