/**
 * A strict Node backend that expects a PROXY protocol header (v1 or v2) on
 * every connection, parses it with l4lb's own ProxyHeaderParser, records what
 * it saw, and then echoes the bytes that follow. A connection whose first
 * bytes are not a valid header (or that sends none within `headerTimeoutMs`)
 * is closed at once, as a real PROXY-protocol server does.
 */
import type net from 'node:net';
import { ProxyHeaderParser, type ProxyHeader } from '../../src/proxy-protocol/index.js';
import { sleep, startBackend, type Backend } from './net.js';

export interface ProxiedConnection {
  /** The backend's view of the TCP peer (l4lb, a probe, HAProxy...). */
  readonly remoteAddress: string;
  readonly remotePort: number;
  header?: ProxyHeader;
  /** The header exactly as it came on the wire. */
  raw?: Buffer;
  /** Why the header was refused ('timeout' when none came in time). */
  error?: string;
  /** Bytes received after the header (echoed back). */
  data: Buffer;
  closed: boolean;
}

export interface ProxyBackend extends Backend {
  readonly conns: ProxiedConnection[];
  /** Total bytes received on every connection, header bytes included. */
  readonly bytesReceived: number;
  /** Waits until a connection satisfies `pred` (checked every 20ms) and returns it. */
  waitForConn(pred: (c: ProxiedConnection) => boolean, timeoutMs?: number, what?: string): Promise<ProxiedConnection>;
}

export async function proxyBackend(options: { headerTimeoutMs?: number; echo?: boolean } = {}): Promise<ProxyBackend> {
  const conns: ProxiedConnection[] = [];
  const headerTimeoutMs = options.headerTimeoutMs ?? 5_000;
  const echo = options.echo ?? true;
  let bytes = 0;
  const backend = await startBackend(
    (s: net.Socket) => {
      const c: ProxiedConnection = {
        remoteAddress: s.remoteAddress ?? '',
        remotePort: s.remotePort ?? 0,
        data: Buffer.alloc(0),
        closed: false,
      };
      conns.push(c);
      const parser = new ProxyHeaderParser();
      let seen: Buffer = Buffer.alloc(0);
      const timer = setTimeout(() => {
        c.error = 'timeout';
        s.destroy();
      }, headerTimeoutMs);
      s.on('close', () => {
        c.closed = true;
        clearTimeout(timer);
      });
      s.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        let rest: Buffer;
        if (c.header === undefined) {
          try {
            seen = Buffer.concat([seen, chunk]);
            const r = parser.push(chunk);
            if (r.state === 'need_more') return;
            c.header = r.header;
            c.raw = seen.subarray(0, r.header.length);
            rest = r.rest;
            clearTimeout(timer);
          } catch (err) {
            c.error = (err as { reason?: string }).reason ?? String(err);
            clearTimeout(timer);
            s.destroy();
            return;
          }
        } else {
          rest = chunk;
        }
        if (rest.length === 0) return;
        c.data = Buffer.concat([c.data, rest]);
        if (echo) s.write(rest);
      });
      s.on('end', () => s.end());
    },
    { allowHalfOpen: true },
  );
  const out = backend as ProxyBackend;
  Object.defineProperties(out, {
    conns: { value: conns },
    // A getter: Object.assign would copy today's value only.
    bytesReceived: { get: () => bytes },
    waitForConn: {
      value: async (pred: (c: ProxiedConnection) => boolean, timeoutMs = 10_000, what = 'a matching proxied connection') => {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const found = conns.find(pred);
          if (found !== undefined) return found;
          if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}; seen: ${describe(conns)}`);
          await sleep(20);
        }
      },
    },
  });
  return out;
}

function describe(conns: ProxiedConnection[]): string {
  return JSON.stringify(
    conns.slice(-10).map((c) => ({
      from: `${c.remoteAddress}:${c.remotePort}`,
      v: c.header?.version,
      cmd: c.header?.command,
      src: c.header?.source,
      dst: c.header?.destination,
      err: c.error,
      bytes: c.data.length,
    })),
  );
}
