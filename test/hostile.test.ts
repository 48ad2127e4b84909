/**
 * Hostile clients against an in-process l4lb: idle TLS clients that never
 * send a ClientHello, thousands of garbage connections on every kind of
 * listener, and slowloris clients that trickle a header. l4lb runs in this
 * process so that /proc/self/fd counts its sockets: after the storm the open
 * file count must be back where it started.
 */
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { readdirSync } from 'node:fs';
import { closedWithin, connect, readLine, sleep, startBackend, waitFor, type Backend } from './helpers/net.js';
import { testCerts } from './helpers/certs.js';
import { captureClientHello } from './helpers/client-hello.js';
import { backendFor, lbFor } from './helpers/lb.js';
import { seedFrom, seededRandom } from './helpers/random.js';
import { encodeV1 } from '../src/proxy-protocol/index.js';
import { ClientHelloReader } from '../src/tls/client-hello.js';

const certs = testCerts();
const CA = certs.ca;
const TERMINATE = { mode: 'terminate', certs: [certs.pair('default.test'), certs.pair('a.test')] };

const seed = seedFrom(t, 'HOSTILE_SEED', 'hostile');

function noop(): void {}

/** Open file descriptors of this process (l4lb runs in it). */
function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** A TLS echo server (the passthrough listener's backend) with a short handshake timeout of its own. */
function tlsEchoBackend(): Promise<Backend> {
  const server = tls.createServer({ ...certs.pem('default.test'), handshakeTimeout: 1_000 }, (s) => s.pipe(s));
  // With a tlsClientError listener, closing the socket is up to us.
  server.on('tlsClientError', (_err: Error, s: tls.TLSSocket) => s.destroy());
  // The TCP side is startBackend's (counted, closed with it); the TLS server only handshakes.
  return startBackend((s) => server.emit('connection', s));
}

/** A real TLS client: handshake (certificate verified), a line echoed through, close. */
async function tlsEcho(port: number, servername = 'a.test'): Promise<string> {
  const s = tls.connect({ host: '127.0.0.1', port, servername, ca: CA });
  s.on('error', noop);
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', resolve);
      s.once('close', () => reject(new Error('closed before the handshake finished')));
    });
    s.write('hello tls\n');
    return await readLine(s, 5_000);
  } finally {
    s.destroy();
  }
}

/** A real plain client, optionally sending a PROXY header first. */
async function plainEcho(port: number, header?: Buffer): Promise<string> {
  const s = net.connect({ host: '127.0.0.1', port });
  s.on('error', noop);
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('close', () => reject(new Error('closed before connecting')));
    });
    if (header) s.write(header);
    s.write('hello plain\n');
    return await readLine(s, 5_000);
  } finally {
    s.destroy();
  }
}

/** Connect; resolves with the socket once connected (errors swallowed from then on). */
function open(port: number): Promise<net.Socket> {
  return connect(port).then((s) => s.on('error', noop));
}

/** Run `jobs` with at most `limit` at a time. */
async function pooled<T>(jobs: Array<() => Promise<T>>, limit: number): Promise<T[]> {
  const results: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
  return results;
}

/** Standard pools: a plain echo and a TLS echo, never probed during the test. */
function pools(echo: Backend, tlsEcho?: Backend) {
  return [
    { name: 'echo', servers: [{ address: echo.address }], health: { interval: '1h' } },
    ...(tlsEcho ? [{ name: 'tlsecho', servers: [{ address: tlsEcho.address }], health: { interval: '1h' } }] : []),
  ];
}

// A real ClientHello with SNI a.test.
const HELLO = await captureClientHello({ servername: 'a.test' });
t.comment(`captured ClientHello: ${HELLO.length} bytes`);

// ---------------------------------------------------------------------------

t.test('a thousand idle TLS clients are closed at the handshake deadline while a real client is served', async (t) => {
  const HANDSHAKE_MS = 1_000;
  const N = 1_000;
  const echo = await backendFor(t);
  const lb = await lbFor(t, {
    log: { access: false },
    listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'echo', tls: TERMINATE, timeouts: { handshake: `${HANDSHAKE_MS}ms` } }],
    pools: pools(echo),
  });
  const port = lb.port();

  const idle: Array<{ socket: net.Socket; openedAt: number; closedAt?: number }> = [];
  t.teardown(() => idle.forEach((c) => c.socket.destroy()));
  const started = Date.now();
  // Connect in batches of 100: all of them connected, none sends a byte.
  for (let i = 0; i < N; i += 100) {
    const batch = await Promise.all(Array.from({ length: 100 }, () => open(port)));
    for (const socket of batch) {
      const c: { socket: net.Socket; openedAt: number; closedAt?: number } = { socket, openedAt: Date.now() };
      socket.once('close', () => (c.closedAt = Date.now()));
      socket.resume();
      idle.push(c);
    }
  }
  const connectMs = Date.now() - started;
  t.comment(`${N} idle clients connected in ${connectMs} ms`);

  // Meanwhile a real client does a full handshake and gets its echo.
  const before = Date.now();
  t.equal(await tlsEcho(port), 'hello tls', 'a real TLS client is served while the idle ones wait');
  const stillOpen = idle.filter((c) => c.closedAt === undefined).length;
  t.comment(`real client served in ${Date.now() - before} ms with ${stillOpen} idle clients still open`);
  t.ok(stillOpen > 0, 'the real client was served while idle clients were still connected');

  // Every idle client is closed by l4lb after the handshake timeout (+ a generous margin).
  const MARGIN_MS = 5_000;
  await waitFor(() => idle.every((c) => c.closedAt !== undefined), HANDSHAKE_MS + MARGIN_MS + connectMs, 'every idle client to be closed');
  const lifetimes = idle.map((c) => c.closedAt! - c.openedAt).sort((a, b) => a - b);
  const early = lifetimes.filter((ms) => ms < HANDSHAKE_MS - 100).length;
  const late = lifetimes.filter((ms) => ms > HANDSHAKE_MS + MARGIN_MS).length;
  t.comment(`idle lifetimes: min ${lifetimes[0]} ms, median ${lifetimes[N >> 1]} ms, max ${lifetimes[N - 1]} ms`);
  t.equal(early, 0, 'none closed before the handshake timeout');
  t.equal(late, 0, `all ${N} closed within the timeout + ${MARGIN_MS} ms`);
  t.ok(lb.app.listeners[0]!.stats.tlsHandshakeFailures >= N, 'each counted as a failed TLS handshake');
  await waitFor(() => lb.app.connections === 0, 5_000, 'no session left');
  t.equal(await tlsEcho(port), 'hello tls', 'still serving afterwards');
});

// ---------------------------------------------------------------------------

const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

type ListenerKind = 'plain' | 'terminate' | 'passthrough' | 'proxy';

interface Payload {
  readonly name: string;
  /** Complete and valid for this listener: the connection may be spliced and stay open until the client closes. */
  splices(kind: ListenerKind): boolean;
  make(rnd: () => number): Buffer;
}

function junk(rnd: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}
const int = (rnd: () => number, n: number): number => Math.floor(rnd() * n);

const PAYLOADS: Payload[] = [
  { name: 'nothing', splices: (k) => k === 'plain', make: () => Buffer.alloc(0) },
  { name: 'random bytes', splices: (k) => k === 'plain', make: (r) => junk(r, 1 + int(r, 4096)) },
  {
    name: 'HTTP request',
    splices: (k) => k === 'plain',
    make: (r) => Buffer.from(`GET /${'x'.repeat(int(r, 200))} HTTP/1.1\r\nHost: example.com\r\nUser-Agent: hostile\r\n\r\n`),
  },
  {
    name: 'half a PROXY v1 line',
    splices: (k) => k === 'plain',
    make: (r) => Buffer.from('PROXY TCP4 192.0.2.1 198.51.100.1 1234 80\r\n').subarray(0, 1 + int(r, 40)),
  },
  { name: 'half a PROXY v2 signature', splices: (k) => k === 'plain', make: (r) => V2_SIGNATURE.subarray(0, 1 + int(r, 12)) },
  {
    name: 'PROXY v2 header announcing 65535 bytes',
    splices: (k) => k === 'plain',
    make: (r) => Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0xff, 0xff]), junk(r, int(r, 64))]),
  },
  { name: 'oversized PROXY line', splices: (k) => k === 'plain', make: (r) => Buffer.from(`PROXY ${'A'.repeat(100 + int(r, 5000))}\r\n`) },
  {
    name: 'valid PROXY header + junk',
    splices: (k) => k === 'plain' || k === 'proxy',
    make: (r) => Buffer.concat([encodeV1({ address: '192.0.2.7', port: 4000 + int(r, 1000) }, { address: '127.0.0.1', port: 80 }), junk(r, int(r, 256))]),
  },
  { name: 'half a ClientHello', splices: (k) => k === 'plain', make: (r) => HELLO.subarray(0, 1 + int(r, HELLO.length - 1)) },
  {
    name: 'ClientHello + junk',
    // Passthrough forwards it to the TLS backend, whose own 1 s handshake timeout ends it.
    splices: (k) => k === 'plain',
    make: (r) => Buffer.concat([HELLO, junk(r, int(r, 512))]),
  },
  { name: 'TLS record announcing 65535 bytes', splices: (k) => k === 'plain', make: () => Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]) },
];

type Ending = 'end' | 'destroy' | 'reset' | 'hold';
const ENDINGS: Ending[] = ['end', 'destroy', 'reset', 'hold'];

interface GarbageResult {
  readonly outcome: 'closed' | 'stuck' | 'connect_failed';
  readonly what: string;
}

/**
 * One hostile connection: connect, then reset at once, or send a payload
 * (sometimes in pieces) and end with a FIN, a destroy, an RST, or by holding
 * the connection open until l4lb closes it. A connection l4lb should close
 * that is still open after 5 s is "stuck".
 */
async function garbage(port: number, kind: ListenerKind, rnd: () => number): Promise<GarbageResult> {
  let s: net.Socket;
  try {
    s = await open(port);
  } catch {
    return { outcome: 'connect_failed', what: 'connect' };
  }
  try {
    if (rnd() < 0.08) {
      s.resetAndDestroy();
      return { outcome: 'closed', what: 'immediate RST' };
    }
    const payload = PAYLOADS[int(rnd, PAYLOADS.length)]!;
    let ending = ENDINGS[int(rnd, ENDINGS.length)]!;
    // Holding a spliced connection open would wait for l4lb's idle timeout (1 h): end those instead.
    if (ending === 'hold' && payload.splices(kind)) ending = 'end';
    const data = payload.make(rnd);
    const what = `${payload.name}, ${ending}`;
    if (data.length > 1 && rnd() < 0.3) {
      // In two pieces, a moment apart.
      const cut = 1 + int(rnd, data.length - 1);
      s.write(data.subarray(0, cut));
      await sleep(int(rnd, 20));
      if (!s.destroyed) s.write(data.subarray(cut));
    } else if (data.length > 0) {
      s.write(data);
    }
    switch (ending) {
      case 'end':
        s.end();
        break;
      case 'destroy':
        await sleep(int(rnd, 50));
        s.destroy();
        return { outcome: 'closed', what };
      case 'reset':
        await sleep(int(rnd, 20));
        if (!s.destroyed) s.resetAndDestroy();
        return { outcome: 'closed', what };
      case 'hold':
        break;
    }
    return { outcome: (await closedWithin(s, 5_000)) ? 'closed' : 'stuck', what };
  } finally {
    s.destroy();
  }
}

t.test('2,000 garbage connections each to plain, TLS terminate, TLS passthrough and accept_proxy listeners are all closed, real clients stay served, no descriptor leaks', async (t) => {
  const PER_LISTENER = 2_000;
  const echo = await backendFor(t);
  const tlsEcho_ = await backendFor(t, tlsEchoBackend());
  const handshake = { handshake: '500ms' };
  const lb = await lbFor(t, {
    log: { access: false },
    listeners: [
      { name: 'plain', bind: '127.0.0.1:0', pool: 'echo' },
      { name: 'terminate', bind: '127.0.0.1:0', pool: 'echo', tls: TERMINATE, timeouts: handshake },
      { name: 'passthrough', bind: '127.0.0.1:0', pool: 'tlsecho', tls: { mode: 'passthrough' }, timeouts: handshake },
      { name: 'proxy', bind: '127.0.0.1:0', pool: 'echo', accept_proxy: true, trusted_proxies: ['127.0.0.0/8'], timeouts: handshake },
    ],
    pools: pools(echo, tlsEcho_),
  });
  const ports: Record<ListenerKind, number> = {
    plain: lb.port('plain'),
    terminate: lb.port('terminate'),
    passthrough: lb.port('passthrough'),
    proxy: lb.port('proxy'),
  };
  const header = encodeV1({ address: '198.51.100.9', port: 5555 }, { address: '127.0.0.1', port: 80 });
  const realClients = async (): Promise<string[]> => [
    await plainEcho(ports.plain),
    await tlsEcho(ports.terminate),
    await tlsEcho(ports.passthrough, 'default.test'),
    await plainEcho(ports.proxy, header),
  ];
  const served = ['hello plain', 'hello tls', 'hello tls', 'hello plain'];
  t.same(await realClients(), served, 'real clients are served before');
  await waitFor(() => lb.app.connections === 0 && echo.open.size === 0 && tlsEcho_.open.size === 0, 5_000, 'the first clients to go');
  await sleep(200);
  const baseline = openFds();

  const kinds: ListenerKind[] = ['plain', 'terminate', 'passthrough', 'proxy'];
  const jobs: Array<() => Promise<GarbageResult & { kind: ListenerKind }>> = [];
  for (let i = 0; i < PER_LISTENER * kinds.length; i++) {
    const kind = kinds[i % kinds.length]!;
    // One generator per connection: the same seed gives the same connections whatever order they run in.
    const rnd = seededRandom((seed + i * 0x9e3779b1) >>> 0);
    jobs.push(async () => ({ kind, ...(await garbage(ports[kind], kind, rnd)) }));
  }
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, openFds())), 100);
  const started = Date.now();
  const results = await pooled(jobs, 200);
  clearInterval(sampler);
  t.comment(`${jobs.length} garbage connections in ${Date.now() - started} ms; open files: baseline ${baseline}, peak ${peak}`);

  const stuck = results.filter((r) => r.outcome === 'stuck');
  const failed = results.filter((r) => r.outcome === 'connect_failed');
  t.same(stuck.map((r) => `${r.kind}: ${r.what}`), [], 'l4lb closed every connection it had to close (handshake deadline, bad input)');
  t.equal(failed.length, 0, 'every connection was accepted');
  for (const k of kinds) t.equal(results.filter((r) => r.kind === k).length, PER_LISTENER, `${PER_LISTENER} to ${k}`);

  t.same(await realClients(), served, 'real clients are still served afterwards');
  await waitFor(() => lb.app.connections === 0, 10_000, 'every session to end');
  await waitFor(() => echo.open.size === 0 && tlsEcho_.open.size === 0, 10_000, 'every backend connection to close');
  let now = openFds();
  try {
    await waitFor(() => (now = openFds()) <= baseline + 2, 10_000, 'the open file count to return to baseline');
  } catch {
    // Reported below with the numbers.
  }
  t.ok(now <= baseline + 2, `open files back to baseline: ${now} (baseline ${baseline})`);
  const stats = lb.app.listeners.map((l) => `${l.model.name}: ${[...l.stats.terminations].map(([k, v]) => `${k}=${v}`).join(' ')}`);
  t.comment(stats.join('; '));
});

// ---------------------------------------------------------------------------

/** Trickle `bytes` one byte every `everyMs` until l4lb closes; resolves with the time to close. */
async function trickle(port: number, bytes: Buffer, everyMs: number, capMs: number): Promise<number> {
  const s = await open(port);
  const started = Date.now();
  let i = 0;
  s.write(bytes.subarray(i, ++i));
  const timer = setInterval(() => {
    if (i < bytes.length && !s.destroyed) s.write(bytes.subarray(i, ++i));
  }, everyMs);
  try {
    if (!(await closedWithin(s, capMs))) throw new Error(`still open after ${capMs} ms (${i} bytes sent)`);
    return Date.now() - started;
  } finally {
    clearInterval(timer);
    s.destroy();
  }
}

t.test('slowloris: a header trickled one byte every 200 ms is cut off at the 1 s handshake deadline', async (t) => {
  const echo = await backendFor(t);
  const tlsEcho_ = await backendFor(t, tlsEchoBackend());
  const handshake = { handshake: '1s' };
  const lb = await lbFor(t, {
    log: { access: true },
    listeners: [
      { name: 'proxy', bind: '127.0.0.1:0', pool: 'echo', accept_proxy: true, trusted_proxies: ['127.0.0.0/8'], timeouts: handshake },
      { name: 'passthrough', bind: '127.0.0.1:0', pool: 'tlsecho', tls: { mode: 'passthrough' }, timeouts: handshake },
      { name: 'terminate', bind: '127.0.0.1:0', pool: 'echo', tls: TERMINATE, timeouts: handshake },
    ],
    pools: pools(echo, tlsEcho_),
  });
  const header = encodeV1({ address: '192.0.2.1', port: 1234 }, { address: '198.51.100.1', port: 80 });
  const cases: Array<[string, Buffer, string]> = [
    ['proxy', header, 'proxy_header_error'],
    ['passthrough', HELLO, 'tls_error'],
    ['terminate', HELLO, 'tls_error'],
  ];
  // All three at once: each has its own deadline.
  const times = await Promise.all(cases.map(([name, bytes]) => trickle(lb.port(name), bytes, 200, 6_000)));
  for (const [i, [name, bytes, termination]] of cases.entries()) {
    const ms = times[i]!;
    t.ok(ms >= 900 && ms <= 2_500, `${name}: closed after ${ms} ms (≈1 s; the whole ${bytes.length}-byte header would take ${bytes.length / 5} s)`);
    await waitFor(() => lb.lines.some((l) => l.listener === name && l.termination !== undefined), 2_000, `${name} access log line`);
    const line = lb.lines.find((l) => l.listener === name && l.termination !== undefined)!;
    t.match(line, { termination, server: null }, `${name}: logged as ${termination}, no backend touched`);
  }
  // A real client still gets through the same listeners.
  t.equal(await plainEcho(lb.port('proxy'), header), 'hello plain', 'a real client sends its header at once');
  t.equal(await tlsEcho(lb.port('passthrough'), 'default.test'), 'hello tls', 'the passthrough backend answers');
  t.equal(await tlsEcho(lb.port('terminate')), 'hello tls', 'terminate serves a real handshake');
});

t.test('a ClientHello trickled a byte per packet is not held as thousands of Buffers', async (t) => {
  // What a passthrough session's reader holds while a slowloris client sends
  // 1-byte packets: before the fix, one Buffer per packet (~2.7 MB of RSS per
  // connection for 8 KB sent); now a bounded number of chunks.
  const body = 16_000;
  const start = Buffer.from([0x16, 0x03, 0x01, (body + 4) >> 8, (body + 4) & 255, 0x01, 0, body >> 8, body & 255, 0x03, 0x03]);
  const bytes = Buffer.concat([start, Buffer.alloc(body - 2)]);
  const reader = new ClientHelloReader();
  const held = (): number => (reader as unknown as { chunks: Buffer[] }).chunks.length;
  let most = 0;
  let states = '';
  for (let i = 0; i < 10_000; i++) {
    const r = reader.push(Buffer.from(bytes.subarray(i, i + 1)));
    if (r.state !== 'need_more') states += ` ${i}:${r.state}`;
    most = Math.max(most, held());
  }
  t.equal(states, '', 'still waiting for the rest of the ClientHello');
  t.ok(most <= 16, `at most 16 chunks held by reference (${most}) after 10,000 one-byte packets`);

  // And what it hands on is still every byte, in order: a real ClientHello fed byte by byte.
  const real = new ClientHelloReader();
  let result;
  for (let i = 0; i < HELLO.length; i++) result = real.push(Buffer.from(HELLO.subarray(i, i + 1)));
  t.equal(result?.state, 'done');
  if (result?.state === 'done') {
    t.equal(result.hello.sni, 'a.test');
    t.ok(result.buffered.equals(HELLO), 'the buffered bytes are the ClientHello as sent');
  }
});
