/**
 * `protocol: postgres` on real loopback sockets, against PostgreSQL
 * stand-ins that show exactly what l4lb sends a server (test/helpers/
 * pg-standin.ts; the real PostgreSQL is in postgres-interop.test.ts):
 * - what l4lb answers in the server's place (S, N, the ErrorResponse that
 *   refuses a plaintext startup) and what it refuses (bytes after an
 *   SSLRequest, lengths no server takes), each with its termination;
 * - the server's SSLRequest before TLS to it (pool `tls`) and before a
 *   passed-through ClientHello, and a server that answers N;
 * - BackendKeyData read as it passes, and CancelRequests delivered to the
 *   server that issued the key (plaintext, or over TLS as PostgreSQL 17
 *   sends them), or to every up server when the key was never seen.
 */
import net from 'node:net';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { BackendKeyReader } from '../src/protocols/postgres/backend-keys.js';
import { CancelKeyTable, secretHash } from '../src/protocols/postgres/cancel-keys.js';
import { GSSENC_REQUEST_CODE, SSL_REQUEST, cancelRequest, errorFields, type CancelKey } from '../src/protocols/postgres/messages.js';
import { opensslMissing, testCerts } from './helpers/certs.js';
import { accessLines, adminPort, backendFor, lbFor } from './helpers/lb.js';
import { closed, connect, readBytes, sleep, waitFor, type Running } from './helpers/net.js';
import { keyIn, startStandin, startup, startupReply, type Standin } from './helpers/pg-standin.js';
import { need } from './helpers/requirements.js';

// ---------------------------------------------------------------------------
// Units: the key table and the key reader

t.test('the cancel-key table: add, find, remove; a full neighbourhood says so; a dead thread\'s keys go', async (t) => {
  const buffer = CancelKeyTable.newBuffer(64);
  const a = new CancelKeyTable(buffer, 0);
  const b = new CancelKeyTable(buffer, 1);
  const k1 = { pid: 42, secret: Buffer.from([1, 2, 3, 4]) };
  const k2 = { pid: 42, secret: Buffer.from([1, 2, 3, 5]) };
  const long = { pid: 7, secret: Buffer.alloc(32, 9) };
  const e1 = a.add(k1, 3);
  t.ok(e1 >= 0);
  t.equal(b.find(k1), 3, 'another thread finds it');
  t.equal(b.find(k2), -1, 'a different secret is not found');
  t.ok(b.add(long, 8) >= 0);
  t.equal(a.find(long), 8, 'a protocol 3.2 key (32 bytes)');
  t.not(secretHash(long.secret), secretHash(Buffer.alloc(32, 8)));
  a.remove(e1);
  t.equal(a.find(k1), -1, 'removed with its session');
  // Fill the table: 64 entries, then the next has nowhere to go.
  for (let i = 0; a.size < 64 && i < 10_000; i++) a.add({ pid: i, secret: Buffer.from([0, 0, 0, i & 255]) }, 1);
  t.equal(a.size, 64);
  t.equal(a.add({ pid: 99_999, secret: Buffer.from([1, 1, 1, 1]) }, 2), -1, 'full: not recorded (the cancel then goes to every up server)');
  t.equal(a.find(long), 8, 'what was there is still found');
  a.releaseThread(1);
  t.equal(a.find(long), -1, 'thread 1 died: its key is gone');
  t.equal(a.size, 63);
});

t.test('the key reader finds BackendKeyData however the bytes are cut, and stops where it should', async (t) => {
  const key = { pid: 1234, secret: Buffer.from([0xde, 0xad, 0xbe, 0xef]) };
  const reply = startupReply(key);
  for (const step of [1, 2, 3, 7, reply.length]) {
    const r = new BackendKeyReader(false);
    let found: CancelKey | null | undefined;
    for (let i = 0; i < reply.length && found === undefined; i += step) {
      const s = r.push(reply.subarray(i, i + step));
      if (s.state === 'done') found = s.key;
    }
    t.same(found, key, `in chunks of ${step}`);
  }
  const afterNo = new BackendKeyReader(true);
  const s1 = afterNo.push(Buffer.concat([Buffer.from('NN'), reply]));
  t.same(s1.state === 'done' ? s1.key : undefined, key, 'after N answers to SSLRequest and GSSENCRequest');
  t.same(new BackendKeyReader(true).push(Buffer.from('S\x16\x03\x01')), { state: 'done', key: null }, 'S: encrypted, no key to see');
  const noKey = Buffer.concat([Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0]), Buffer.from([0x5a, 0, 0, 0, 5, 0x49])]);
  t.same(new BackendKeyReader(false).push(noKey), { state: 'done', key: null }, 'ReadyForQuery without a key: stop');
  t.same(new BackendKeyReader(false).push(Buffer.from([0x45, 0, 0, 0, 4])), { state: 'done', key: null }, 'an error: stop');
  const big = new BackendKeyReader(false);
  const notice = Buffer.alloc(70_000);
  notice[0] = 0x4e;
  notice.writeInt32BE(notice.length - 1, 1);
  t.same(big.push(notice), { state: 'done', key: null }, 'no key in the first 64 KiB: stop looking');
});

// ---------------------------------------------------------------------------
// On sockets

if (need(t, opensslMissing)) main();

function main(): void {
  const certs = testCerts();
  const serverTls = { ...certs.pem('backend.test') };

  async function standinFor(t: Test, name: string, withTls = false): Promise<Standin> {
    return backendFor(t, startStandin(name, withTls ? { tls: serverTls } : {}));
  }

  function pool(name: string, servers: Standin[], extra: Record<string, unknown> = {}): Record<string, unknown> {
    return { name, balance: 'round_robin', health: { interval: '60s' }, servers: servers.map((s) => ({ name: s.name, address: s.address })), ...extra };
  }

  const terminate = { mode: 'terminate', certs: [certs.pair('a.test'), certs.pair('b.test')] };

  /** A raw client, cleaned up with the test. */
  async function client(t: Test, port: number): Promise<net.Socket> {
    const c = await connect(port);
    c.on('error', () => {});
    t.teardown(() => c.destroy());
    return c;
  }

  /** SSLRequest, expect S, then TLS over the same socket. */
  async function sslClient(t: Test, port: number, servername = 'a.test', alpn?: string[]): Promise<tls.TLSSocket> {
    const c = await client(t, port);
    c.write(SSL_REQUEST);
    t.equal((await readBytes(c, 1, 5_000)).toString(), 'S', 'l4lb answers S');
    return handshake(t, { socket: c, servername, ...(alpn ? { ALPNProtocols: alpn } : {}) });
  }

  function handshake(t: Test, options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ ca: certs.ca, ...options }, () => resolve(s));
      s.once('error', reject);
      t.teardown(() => s.destroy());
    });
  }

  /** Startup through `s`; resolves with the key the server sent. */
  async function session(s: net.Socket): Promise<CancelKey> {
    s.write(startup());
    let got = Buffer.alloc(0);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no BackendKeyData (got ${got.length} bytes)`)), 5_000);
      s.on('data', (d: Buffer) => {
        got = Buffer.concat([got, d]);
        const key = keyIn(got);
        if (key !== undefined) {
          clearTimeout(timer);
          resolve(key);
        }
      });
    });
  }

  /** Send a plaintext CancelRequest on a new connection and wait until l4lb closes it and logs it. */
  async function cancel(t: Test, port: number, key: CancelKey, lb?: Running): Promise<void> {
    const before = lb === undefined ? 0 : accessLines(lb).length;
    const c = await client(t, port);
    c.write(cancelRequest(key));
    await closed(c, 5_000);
    if (lb !== undefined) await waitFor(() => accessLines(lb).length > before, 5_000, 'the cancel\'s access line');
  }

  function lastLine(lb: Running, termination: string): Record<string, unknown> | undefined {
    return accessLines(lb).filter((l) => l.termination === termination).at(-1);
  }

  async function metric(lb: Running, series: string): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${adminPort(lb)}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(series + ' '));
    return line === undefined ? NaN : Number(line.split(' ')[1]);
  }

  t.test('plain: a cancel goes to the server that issued its key, whichever of two it is', async (t) => {
    const a = await standinFor(t, 'a');
    const b = await standinFor(t, 'b');
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [{ name: 'pg', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres' }],
      pools: [pool('p', [a, b])],
    });
    const keys: CancelKey[] = [];
    for (let i = 0; i < 4; i++) keys.push(await session(await client(t, lb.port())));
    t.equal(a.issued.length + b.issued.length, 4);
    t.ok(a.issued.length > 0 && b.issued.length > 0, 'both servers have sessions');
    for (const key of keys) {
      await cancel(t, lb.port(), key, lb);
      const owner = a.issued.some((k) => k.pid === key.pid) ? a : b;
      await waitFor(() => owner.cancels.some((c) => c.pid === key.pid), 5_000, `cancel of ${key.pid} at ${owner.name}`);
      t.ok(owner.cancels.some((c) => c.pid === key.pid && c.secret.equals(key.secret)), `cancel of pid ${key.pid} reached ${owner.name}, key intact`);
      const line = lastLine(lb, 'cancel_forwarded');
      t.match(line, { server: owner.name, pool: 'p', reason: /session's server/ }, 'logged as cancel_forwarded, with its server');
    }
    t.equal(a.cancels.length + b.cancels.length, 4, 'no cancel went anywhere else');
  });

  t.test('plain: the client\'s own SSLRequest is passed on; the server\'s N is seen, then the key', async (t) => {
    const a = await standinFor(t, 'a');
    const b = await standinFor(t, 'b');
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [{ name: 'pg', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres' }],
      pools: [pool('p', [a, b])],
    });
    const c = await client(t, lb.port());
    c.write(SSL_REQUEST);
    t.equal((await readBytes(c, 1, 5_000)).toString(), 'N', 'the server\'s answer, not l4lb\'s');
    const key = await session(c);
    t.same([...a.openings, ...b.openings], ['ssl', 'startup'], 'the server saw the SSLRequest');
    await cancel(t, lb.port(), key, lb);
    const owner = a.issued.length > 0 ? a : b;
    await waitFor(() => owner.cancels.length === 1, 5_000, 'cancel delivered');
    t.equal(a.cancels.length + b.cancels.length, 1, 'to that server only');
    // A key never seen (the session was encrypted end to end): every up server gets it.
    await cancel(t, lb.port(), { pid: 77, secret: Buffer.from([7, 7, 7, 7]) }, lb);
    await waitFor(() => a.cancels.length + b.cancels.length === 3, 5_000, 'unknown key sent to both');
    t.match(lastLine(lb, 'cancel_forwarded'), { server: null, reason: /cancel sent to 2 of 2 up servers/ });
  });

  t.test('terminate: S, TLS with ALPN postgresql, the key behind TLS; cancels plaintext and over TLS reach its server', async (t) => {
    const a = await standinFor(t, 'a');
    const b = await standinFor(t, 'b');
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [{ name: 'pg', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres', tls: terminate }],
      pools: [pool('p', [a, b])],
    });
    const s1 = await sslClient(t, lb.port(), 'a.test', ['postgresql']);
    t.equal(s1.alpnProtocol, 'postgresql', 'ALPN postgresql offered by itself');
    const k1 = await session(s1);
    const s2 = await sslClient(t, lb.port(), 'b.test');
    t.equal(s2.getPeerCertificate().subject.CN, 'b.test', 'certificate by SNI');
    const k2 = await session(s2);
    t.same([...a.openings, ...b.openings].sort(), ['startup', 'startup'], 'the servers got plaintext startups (no SSLRequest: the pool has no tls)');
    await cancel(t, lb.port(), k1);
    // PostgreSQL 17's libpq cancels over TLS when the session used TLS.
    const overTls = await sslClient(t, lb.port());
    overTls.write(cancelRequest(k2));
    await closed(overTls, 5_000);
    await waitFor(() => accessLines(lb).filter((l) => l.termination === 'cancel_forwarded').length === 2, 5_000, 'two cancel lines');
    const ownerOf = (k: CancelKey): Standin => (a.issued.some((x) => x.pid === k.pid) ? a : b);
    await waitFor(() => ownerOf(k1).cancels.some((c) => c.pid === k1.pid) && ownerOf(k2).cancels.some((c) => c.pid === k2.pid), 5_000, 'both cancels');
    t.equal(a.cancels.length + b.cancels.length, 2, 'each to its own server only');
    t.equal(accessLines(lb).filter((l) => l.termination === 'cancel_forwarded').length, 2);
  });

  t.test('terminate: GSSENCRequest gets N, then SSLRequest gets S; a direct TLS client (PostgreSQL 17) works too', async (t) => {
    const a = await standinFor(t, 'a');
    const lb = await lbFor(t, {
      listeners: [{ name: 'pg', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres', tls: terminate }],
      pools: [pool('p', [a])],
    });
    const c = await client(t, lb.port());
    const gss = Buffer.alloc(8);
    gss.writeInt32BE(8, 0);
    gss.writeInt32BE(GSSENC_REQUEST_CODE, 4);
    c.write(gss);
    t.equal((await readBytes(c, 1, 5_000)).toString(), 'N', 'no GSS encryption here');
    c.write(SSL_REQUEST);
    t.equal((await readBytes(c, 1, 5_000)).subarray(-1).toString(), 'S');
    const s = await handshake(t, { socket: c, servername: 'a.test' });
    t.ok((await session(s)).pid > 0, 'a session through TLS');
    const direct = await handshake(t, { host: '127.0.0.1', port: lb.port(), servername: 'a.test', ALPNProtocols: ['postgresql'] });
    t.equal(direct.alpnProtocol, 'postgresql');
    t.ok((await session(direct)).pid > 0, 'a direct TLS session');
  });

  t.test('terminate: a plaintext startup gets FATAL 28000 "SSL required by the balancer", a clean close, tls_required', async (t) => {
    const a = await standinFor(t, 'a');
    const lb = await lbFor(t, {
      admin: { listen: '127.0.0.1:0' },
      log: { level: 'info', access: true },
      listeners: [{ name: 'pg', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres', tls: terminate }],
      pools: [pool('p', [a])],
    });
    const c = await client(t, lb.port());
    let reset = false;
    c.on('error', (e: NodeJS.ErrnoException) => (reset = e.code === 'ECONNRESET'));
    const received: Buffer[] = [];
    c.on('data', (d: Buffer) => received.push(d));
    c.write(startup());
    await closed(c, 5_000);
    t.notOk(reset, 'closed, not reset');
    const reply = Buffer.concat(received);
    t.equal(String.fromCharCode(reply[0]!), 'E', 'an ErrorResponse');
    t.equal(reply.readInt32BE(1), reply.length - 1, 'exactly one message');
    const fields = errorFields(reply.subarray(5));
    t.equal(fields.get('S'), 'FATAL');
    t.equal(fields.get('C'), '28000');
    t.equal(fields.get('M'), 'SSL required by the balancer');
    t.match(fields.get('H'), /sslmode=require/);
    t.same(a.openings, [], 'no server was bothered');
    await waitFor(() => lastLine(lb, 'tls_required') !== undefined, 5_000, 'the access line');
    t.match(lastLine(lb, 'tls_required'), { server: null, reason: /StartupMessage without SSLRequest/ });
    t.equal(await metric(lb, 'l4lb_rejected_connections_total{listener="pg",reason="tls_required"}'), 1, 'counted as rejected, reason tls_required');
  });

  t.test('terminate: openings no server would take end clearly, and nothing reaches a server', async (t) => {
    const a = await standinFor(t, 'a');
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [{ name: 'pg', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres', tls: terminate, timeouts: { handshake: '400ms' } }],
      pools: [pool('p', [a])],
    });
    const cases: Array<{ what: string; bytes: Buffer; fin?: boolean; termination: string; reason?: RegExp }> = [
      { what: 'bytes after an SSLRequest, before its answer', bytes: Buffer.concat([SSL_REQUEST, startup()]), termination: 'tls_error', reason: /data after SSLRequest/ },
      { what: 'a length of 4', bytes: Buffer.from([0, 0, 0, 4, 0, 0, 0, 0]), termination: 'tls_error', reason: /opening packet of 4 bytes/ },
      { what: 'a length of 1 GB', bytes: Buffer.from([0x40, 0, 0, 0, 0, 3, 0, 0]), termination: 'tls_error', reason: /opening packet/ },
      { what: 'a short cancel', bytes: Buffer.from([0, 0, 0, 12, 4, 0xd2, 0x16, 0x2e, 0, 0, 0, 1]), termination: 'tls_error', reason: /CancelRequest of 12 bytes/ },
      { what: 'half a packet, then FIN', bytes: Buffer.from([0, 0, 0, 8, 4]), fin: true, termination: 'tls_error' },
      { what: 'half a packet, then silence', bytes: Buffer.from([0, 0, 0, 8, 4]), termination: 'tls_error', reason: /timed out|timeout/ },
      { what: 'nothing, then FIN (a TCP check)', bytes: Buffer.alloc(0), fin: true, termination: 'client_close' },
    ];
    for (const c of cases) {
      const before = accessLines(lb).length;
      const s = await client(t, lb.port());
      if (c.bytes.length > 0) s.write(c.bytes);
      if (c.fin === true) s.end();
      await closed(s, 5_000);
      await waitFor(() => accessLines(lb).length > before, 5_000, `line for ${c.what}`);
      const line = accessLines(lb).at(-1)!;
      t.equal(line.termination, c.termination, `${c.what}: ${c.termination}`);
      if (c.reason !== undefined) t.match(line.reason, c.reason, `${c.what}: says why`);
    }
    t.same(a.openings, [], 'no server was bothered');
  });

  t.test('plain: a client that says nothing is closed after the handshake timeout (idle_timeout); garbage goes to the server', async (t) => {
    const a = await standinFor(t, 'a');
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [{ name: 'pg', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres', timeouts: { handshake: '300ms' } }],
      pools: [pool('p', [a])],
    });
    const silent = await client(t, lb.port());
    const ms = await closed(silent, 5_000);
    t.ok(ms >= 250, `closed after ${ms} ms`);
    await waitFor(() => lastLine(lb, 'idle_timeout') !== undefined, 5_000, 'the access line');
    t.match(lastLine(lb, 'idle_timeout'), { reason: /nothing received within 300ms/ });
    const g = await client(t, lb.port());
    g.write('GET / HTTP/1.1\r\n\r\n');
    await closed(g, 5_000);
    t.same(a.openings, ['other'], 'plain listeners pass what they do not understand to the server, which refuses it');
  });

  t.test('terminate with pool tls: the server gets an SSLRequest first; one that answers N is a connect failure that says so', async (t) => {
    const good = await standinFor(t, 'good', true);
    const noTls = await standinFor(t, 'no-tls', false);
    const poolTls = { servername: 'backend.test', ca: certs.file('ca.crt') };
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [
        { name: 'pg', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres', tls: terminate },
        { name: 'pgn', bind: '127.0.0.1:0', pool: 'n', protocol: 'postgres', tls: terminate },
      ],
      pools: [pool('p', [good], { tls: poolTls }), pool('n', [noTls], { retries: 0, tls: poolTls })],
    });
    const keys: CancelKey[] = [];
    for (let i = 0; i < 2; i++) keys.push(await session(await sslClient(t, lb.port('pg'))));
    t.equal(good.issued.length, 2, 'both sessions reached the server over TLS');
    t.same(good.openings, ['ssl', 'startup', 'ssl', 'startup'], 'SSLRequest, then (inside TLS) the startup');
    await cancel(t, lb.port('pg'), keys[0]!, lb);
    await waitFor(() => good.cancels.length === 1, 5_000, 'the cancel reached the TLS server');

    const refused = await sslClient(t, lb.port('pgn'));
    refused.write(startup());
    await closed(refused, 5_000);
    t.same(noTls.openings, ['ssl'], 'the server was asked, and said N');
    await waitFor(() => lastLine(lb, 'connect_failed') !== undefined, 5_000, 'the access line');
    t.match(lastLine(lb, 'connect_failed'), { server: 'no-tls', reason: /answered N to SSLRequest/, tried: [{ server: 'no-tls', error: /answered N to SSLRequest/ }] }, 'connect_failed, the server tried, and why');
  });

  t.test('passthrough: S, ClientHello routed by SNI, the server gets SSLRequest then the untouched ClientHello; direct TLS too', async (t) => {
    const a = await standinFor(t, 'a', true);
    const b = await standinFor(t, 'b', true);
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [
        {
          name: 'pg',
          bind: '127.0.0.1:0',
          pool: 'pa',
          protocol: 'postgres',
          tls: { mode: 'passthrough' },
          routes: [{ sni: 'b.test', pool: 'pb' }],
        },
      ],
      pools: [pool('pa', [a]), pool('pb', [b])],
    });
    // The stand-ins' certificate is backend.test: verify it, whatever name routed.
    const s = await sslClient(t, lb.port(), 'b.test').catch((e: Error) => e);
    t.match(s, { message: /backend\.test|altnames/ }, 'the client verifies the server\'s own certificate (names backend.test)');
    await sleep(100);
    t.same(b.openings, ['ssl'], 'routed by SNI to b, which got an SSLRequest first');
    t.same(a.openings, []);
    // With checkServerIdentity relaxed to the real name, the session goes through.
    const c = await client(t, lb.port());
    c.write(SSL_REQUEST);
    await readBytes(c, 1, 5_000);
    const secure = await handshake(t, { socket: c, servername: 'b.test', checkServerIdentity: (_h, cert) => tls.checkServerIdentity('backend.test', cert) });
    t.equal(secure.getPeerCertificate().subject.CN, 'backend.test', 'the server\'s own certificate');
    t.ok((await session(secure)).pid > 0, 'a session end to end');
    const direct = await handshake(t, {
      host: '127.0.0.1',
      port: lb.port(),
      servername: 'a.test',
      ALPNProtocols: ['postgresql'],
      checkServerIdentity: (_h, cert) => tls.checkServerIdentity('backend.test', cert),
    });
    t.ok((await session(direct)).pid > 0, 'a direct TLS client, routed by SNI to a');
    t.same(a.openings, ['ssl', 'startup'], 'a got an SSLRequest before the direct client\'s ClientHello');
    // The key is encrypted end to end: a cancel goes to every up server of the listener's pools.
    await cancel(t, lb.port(), a.issued[0]!);
    await waitFor(() => a.cancels.length === 1 && b.cancels.length === 1, 5_000, 'sent to a and b');
  });

  t.test('a cancel with no server up ends as no_server, at once', async (t) => {
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [{ name: 'pg', bind: '127.0.0.1:0', pool: 'p', protocol: 'postgres' }],
      pools: [{ name: 'p', health: { interval: '100ms', timeout: '100ms', fall: 1 }, servers: [{ address: '127.0.0.1:1' }] }],
    });
    await waitFor(() => lb.lines.some((l) => l.msg === 'server down'), 5_000, 'server down');
    await cancel(t, lb.port(), { pid: 1, secret: Buffer.from([1, 2, 3, 4]) });
    await waitFor(() => lastLine(lb, 'no_server') !== undefined, 5_000, 'the line');
  });
}
