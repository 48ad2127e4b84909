/**
 * Resources a test starts and must not leave behind: each helper starts one
 * (an in-process l4lb, a backend, a set of named backends, a client) and
 * registers its teardown on the test right after it exists. Also what tests
 * read back from a running l4lb: its admin port, its access lines.
 */
import type net from 'node:net';
import type { Test } from 'tap';
import { connect, echoBackend, namedBackend, startL4lb, waitFor, type Backend, type Running } from './net.js';

/** What the helpers need of a test: somewhere to register the teardown. */
export type Owner = Pick<Test, 'teardown'>;

/** Anything a backend helper can return: it closes. */
interface Closable {
  close(): Promise<void>;
}

/** An in-process l4lb started from `raw`, stopped when `t` ends. */
export async function lbFor(t: Owner, raw: unknown): Promise<Running> {
  const lb = await startL4lb(raw);
  t.teardown(() => lb.stop());
  return lb;
}

/** An echo backend (see echoBackend), closed when `t` ends. */
export function backendFor(t: Owner): Promise<Backend>;
/** The backend `started` resolves to, closed when `t` ends. */
export function backendFor<B extends Closable>(t: Owner, started: Promise<B>): Promise<B>;
export async function backendFor(t: Owner, started: Promise<Closable> = echoBackend()): Promise<Closable> {
  const b = await started;
  t.teardown(() => b.close());
  return b;
}

/** One named backend per name (each writes its name on connect, then echoes), in order, all closed when `t` ends. */
export async function namedBackendsFor<const N extends readonly string[]>(t: Owner, names: N): Promise<{ -readonly [K in keyof N]: Backend }> {
  const list = await Promise.all(names.map((n) => namedBackend(n)));
  t.teardown(() => Promise.all(list.map((b) => b.close())));
  return list as { -readonly [K in keyof N]: Backend };
}

/**
 * A plain TCP client connected to 127.0.0.1:`port` (from `localAddress` if
 * given), destroyed when `t` ends, that never throws on a reset; `lport`
 * keeps its local port (Node forgets it once the socket is closed).
 */
export async function clientFor(t: Owner, port: number, localAddress?: string): Promise<net.Socket & { readonly lport: number }> {
  const s = await connect(port, localAddress);
  s.on('error', () => {});
  t.teardown(() => s.destroy());
  return Object.assign(s, { lport: s.localPort! });
}

/** The port of the running l4lb's admin server; throws when it has none. */
export function adminPort(lb: Running): number {
  const a = lb.app.admin?.address();
  if (!a) throw new Error('admin server not listening');
  return a.port;
}

/** The access-log lines (`msg: connection`) the running l4lb wrote so far. */
export function accessLines(lb: Running): Array<Record<string, unknown>> {
  return lb.lines.filter((l) => l.msg === 'connection');
}

/**
 * Waits for the access-log line of the connection from local port `client`
 * on 127.0.0.1 (or from `client` as `ip:port`), on `listener` if given. The
 * newest match: the kernel may hand an earlier connection to another
 * listener the same local port.
 */
export async function accessLine(lb: Running, client: number | string, timeoutMs = 10_000, listener?: string): Promise<Record<string, unknown>> {
  const text = typeof client === 'number' ? `127.0.0.1:${client}` : client;
  const matches = (l: Record<string, unknown>): boolean => l.client === text && (listener === undefined || l.listener === listener);
  await waitFor(() => accessLines(lb).some(matches), timeoutMs, `access log line for ${text}`);
  return accessLines(lb).filter(matches).at(-1)!;
}
