/**
 * PROXY protocol end to end through a running l4lb, with Node peers on real
 * loopback sockets:
 * (a) pool `proxy_protocol: v1|v2`: the backend parses the header and sees
 *     the real client (127.0.0.77) and the listener's port, then the payload
 *     byte for byte;
 * (b) listener `accept_proxy`: the header's client is the one in the access
 *     log and in the header sent onward; split delivery works;
 * (c) rejections: untrusted senders, garbage, slow or missing headers are
 *     closed and logged `proxy_header_error`, and nothing reaches a backend;
 * (d) source_hash hashes the header's address, not the real peer's;
 * (e) health probes of a PROXY pool carry a header a strict backend accepts.
 *
 * The PROXY headers that clients send here are written out by hand from
 * HAProxy's doc/proxy-protocol.txt, not with l4lb's encoder. Deadlines are
 * generous (a noisy 2-core machine); every wait is bounded.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import t from 'tap';
import { closed, countingEcho, namedBackend, readBytes, readLine, sleep, startBackend, waitFor } from './helpers/net.js';
import { accessLine, accessLines, backendFor, clientFor, lbFor } from './helpers/lb.js';
import { proxyBackend, type ProxiedConnection } from './helpers/proxy-backend.js';

const CLIENT_IP = '127.0.0.77';
const HEADER_IP = '203.0.113.7';
const HEADER_PORT = 4242;

// ---------------------------------------------------------------------------
// Helpers

interface ConfigParts {
  servers: string[];
  listener?: Record<string, unknown>;
  pool?: Record<string, unknown>;
}

function config({ servers, listener = {}, pool = {} }: ConfigParts) {
  return {
    log: { level: 'debug', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', ...listener }],
    pools: [
      {
        name: 'p',
        balance: 'round_robin',
        timeouts: { connect: '5s' },
        servers: servers.map((address) => ({ address })),
        ...pool,
      },
    ],
  };
}



/** `PROXY TCP4 src dst sport dport\r\n`, by hand (spec section 2.1). */
function v1Header(src: string, sport: number, dst: string, dport: number): Buffer {
  return Buffer.from(`PROXY TCP4 ${src} ${dst} ${sport} ${dport}\r\n`, 'latin1');
}

/** A v2 PROXY TCP4 header, by hand (spec section 2.2): signature, 0x21, 0x11, length 12, addresses, ports. */
function v2Header(src: string, sport: number, dst: string, dport: number): Buffer {
  const b = Buffer.alloc(28);
  Buffer.from('0d0a0d0a000d0a515549540a', 'hex').copy(b, 0);
  b[12] = 0x21; // version 2, command PROXY
  b[13] = 0x11; // AF_INET, STREAM
  b.writeUInt16BE(12, 14);
  src.split('.').forEach((x, i) => (b[16 + i] = Number(x)));
  dst.split('.').forEach((x, i) => (b[20 + i] = Number(x)));
  b.writeUInt16BE(sport, 24);
  b.writeUInt16BE(dport, 26);
  return b;
}

const fromClient = (port: () => number | undefined) => (c: ProxiedConnection) =>
  c.header?.source?.address === CLIENT_IP && c.header.source.port === port();

// ---------------------------------------------------------------------------
// (a) pool proxy_protocol v1 / v2

for (const version of ['v1', 'v2'] as const) {
  t.test(`pool proxy_protocol ${version}: the backend's header names 127.0.0.77 and the listener's port, then 256 KiB arrive unchanged`, async (t) => {
    const backend = await backendFor(t, proxyBackend());
    const lb = await lbFor(t, config({ servers: [backend.address], pool: { proxy_protocol: version } }));
    const c = await clientFor(t, lb.port(), CLIENT_IP);
    const payload = randomBytes(256 * 1024);
    c.write(payload);
    const echoed = await readBytes(c, payload.length);
    t.ok(echoed.equals(payload), 'the echo of the payload is byte-identical');

    const conn = await backend.waitForConn(fromClient(() => c.lport), 10_000, 'the client connection');
    const h = conn.header!;
    t.equal(h.version, version === 'v1' ? 1 : 2, `a ${version} header`);
    t.equal(h.command, 'PROXY', 'command PROXY');
    t.same(h.source, { address: CLIENT_IP, port: c.lport }, 'source: the client 127.0.0.77 and its port');
    t.same(h.destination, { address: '127.0.0.1', port: lb.port() }, "destination: the listener's address and port");
    t.ok(conn.data.equals(payload), 'the bytes after the header are exactly the client payload');
    t.equal(conn.error, undefined, 'the strict parser accepted the header');
    const expected = (version === 'v1' ? v1Header : v2Header)(CLIENT_IP, c.lport, '127.0.0.1', lb.port());
    t.equal(conn.raw?.toString('hex'), expected.toString('hex'), 'byte for byte the header the spec prescribes (no TLVs on plain TCP)');

    c.end();
    await closed(c, 10_000);
    const line = await accessLine(lb, `${CLIENT_IP}:${c.lport}`);
    t.equal(line.termination, 'client_close', 'access log: client 127.0.0.77, termination client_close');
  });
}

// ---------------------------------------------------------------------------
// (b) accept_proxy

for (const [name, build] of [
  ['v1', v1Header],
  ['v2', v2Header],
] as const) {
  t.test(`accept_proxy: a ${name} header naming ${HEADER_IP}:${HEADER_PORT}, then data: echoed, and the access log's client is the header's`, async (t) => {
    const backend = await backendFor(t, startBackend((s) => s.pipe(s)));
    const lb = await lbFor(t, config({ servers: [backend.address], listener: { accept_proxy: true, trusted_proxies: ['127.0.0.0/8'] } }));
    const c = await clientFor(t, lb.port());
    c.write(Buffer.concat([build(HEADER_IP, HEADER_PORT, '127.0.0.1', lb.port()), Buffer.from('hello through l4lb\n')]));
    t.equal(await readLine(c, 10_000), 'hello through l4lb', 'the data after the header reached the echo backend and came back');
    c.end();
    await closed(c, 10_000);
    const line = await accessLine(lb, `${HEADER_IP}:${HEADER_PORT}`);
    t.equal(line.termination, 'client_close', `access log: client ${HEADER_IP}:${HEADER_PORT}, termination client_close`);
    t.equal(line.server, backend.address, 'access log: the echo server');
    t.notOk(accessLines(lb).some((l) => l.client === `127.0.0.1:${c.lport}`), 'the real peer address is not logged as the client');
  });
}

t.test('accept_proxy + pool v2: the backend sees the client and destination from the incoming header', async (t) => {
  const backend = await backendFor(t, proxyBackend());
  const lb = await lbFor(t, config({ servers: [backend.address], listener: { accept_proxy: true, trusted_proxies: ['127.0.0.0/8'] }, pool: { proxy_protocol: 'v2' } }));
  const c = await clientFor(t, lb.port(), CLIENT_IP);
  c.write(Buffer.concat([v1Header(HEADER_IP, HEADER_PORT, '198.51.100.10', 443), Buffer.from('payload\n')]));
  t.equal(await readLine(c, 10_000), 'payload');
  const conn = await backend.waitForConn((x) => x.header?.command === 'PROXY' && x.header.source?.address === HEADER_IP, 10_000, 'the relayed header');
  t.equal(conn.header!.version, 2, 'a v2 header to the backend');
  t.same(conn.header!.source, { address: HEADER_IP, port: HEADER_PORT }, `source ${HEADER_IP}:${HEADER_PORT}, not ${CLIENT_IP}`);
  t.same(conn.header!.destination, { address: '198.51.100.10', port: 443 }, "destination from the incoming header (as HAProxy relays it)");
  t.equal(conn.data.toString(), 'payload\n', 'only the client payload follows the header');
  t.notOk(backend.conns.some((x) => x.header?.source?.address === CLIENT_IP), 'no header named the real peer');
});

t.test('accept_proxy + pool v1: PROXY UNKNOWN and v2 LOCAL mean "use the real connection addresses"', async (t) => {
  const backend = await backendFor(t, proxyBackend());
  const lb = await lbFor(t, config({ servers: [backend.address], listener: { accept_proxy: true, trusted_proxies: ['127.0.0.0/8'] }, pool: { proxy_protocol: 'v1' } }));
  const local = Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540a', 'hex'), Buffer.from([0x20, 0x00, 0, 0])]);
  for (const [what, header] of [
    ['PROXY UNKNOWN', Buffer.from('PROXY UNKNOWN\r\n')],
    ['v2 LOCAL', local],
  ] as const) {
    const c = await clientFor(t, lb.port(), CLIENT_IP);
    c.write(Buffer.concat([header, Buffer.from(`${what}\n`)]));
    t.equal(await readLine(c, 10_000), what, `${what}: served`);
    const conn = await backend.waitForConn(fromClient(() => c.lport), 10_000, `${what}: the relayed header`);
    t.same(conn.header!.destination, { address: '127.0.0.1', port: lb.port() }, `${what}: the backend sees the real peer 127.0.0.77 and the listener`);
    c.end();
    await closed(c, 10_000);
    t.equal((await accessLine(lb, `${CLIENT_IP}:${c.lport}`)).termination, 'client_close', `${what}: the access log names the real peer`);
  }
});

t.test('accept_proxy + pool v1: an IPv6 header source goes onward as TCP6; an IPv4-mapped one as TCP4', async (t) => {
  const backend = await backendFor(t, proxyBackend());
  const lb = await lbFor(t, config({ servers: [backend.address], listener: { accept_proxy: true, trusted_proxies: ['127.0.0.0/8'] }, pool: { proxy_protocol: 'v1' } }));
  const cases = [
    {
      line: 'PROXY TCP6 2001:db8::7 2001:db8::1 4242 443\r\n',
      out: 'PROXY TCP6 2001:db8::7 2001:db8::1 4242 443\r\n',
      source: '2001:db8::7',
      dest: '2001:db8::1',
      log: '[2001:db8::7]:4242',
    },
    {
      line: 'PROXY TCP6 ::ffff:203.0.113.7 ::ffff:198.51.100.1 4243 443\r\n',
      out: 'PROXY TCP4 203.0.113.7 198.51.100.1 4243 443\r\n',
      source: '203.0.113.7',
      dest: '198.51.100.1',
      log: '203.0.113.7:4243',
    },
  ];
  for (const k of cases) {
    const c = await clientFor(t, lb.port());
    c.write(`${k.line}ipv6\n`);
    t.equal(await readLine(c, 10_000), 'ipv6', `${k.source}: served`);
    const port = Number(k.log.split(':').pop());
    const conn = await backend.waitForConn((x) => x.header?.source?.port === port, 10_000, `the header for ${k.source}`);
    t.same(conn.header!.source, { address: k.source, port }, `${k.source}: relayed source`);
    t.same(conn.header!.destination, { address: k.dest, port: 443 }, `${k.source}: relayed destination`);
    t.equal(conn.raw?.toString('latin1'), k.out, `${k.source}: the line on the wire`);
    c.end();
    await closed(c, 10_000);
    await accessLine(lb, k.log);
    t.pass(`${k.source}: access log client ${k.log}`);
  }
});

for (const [name, build] of [
  ['v1', v1Header],
  ['v2', v2Header],
] as const) {
  t.test(`accept_proxy: a ${name} header sent one byte per write, its last byte in the same write as the first data`, async (t) => {
    const backend = await backendFor(t, startBackend((s) => s.pipe(s)));
    const lb = await lbFor(t, config({ servers: [backend.address], listener: { accept_proxy: true, trusted_proxies: ['127.0.0.0/8'] } }));
    const c = await clientFor(t, lb.port());
    c.setNoDelay(true);
    const header = build(HEADER_IP, HEADER_PORT, '127.0.0.1', lb.port());
    for (let i = 0; i < header.length - 1; i++) {
      c.write(header.subarray(i, i + 1));
      await sleep(3);
    }
    c.write(Buffer.concat([header.subarray(header.length - 1), Buffer.from('split ')]));
    await sleep(20);
    c.write('delivery\n');
    t.equal(await readLine(c, 10_000), 'split delivery', 'the bytes after the header arrive unchanged');
    c.end();
    await closed(c, 10_000);
    const line = await accessLine(lb, `${HEADER_IP}:${HEADER_PORT}`);
    t.equal(line.termination, 'client_close', `access log: client ${HEADER_IP}:${HEADER_PORT}, termination client_close`);
  });
}

// ---------------------------------------------------------------------------
// (c) rejections

t.test('trusted_proxies [127.0.0.2/32]: a valid header from 127.0.0.1 is closed unread, logged proxy_header_error; 127.0.0.2 is served', async (t) => {
  const backend = await backendFor(t, countingEcho());
  const lb = await lbFor(t, config({ servers: [backend.address], listener: { accept_proxy: true, trusted_proxies: ['127.0.0.2/32'] } }));

  const bad = await clientFor(t, lb.port(), '127.0.0.1');
  bad.write(Buffer.concat([v1Header(HEADER_IP, HEADER_PORT, '127.0.0.1', lb.port()), Buffer.from('must not pass\n')]));
  const ms = await closed(bad, 5_000);
  t.comment(`untrusted peer closed after ${ms}ms`);
  const line = await accessLine(lb, `127.0.0.1:${bad.lport}`);
  t.equal(line.termination, 'proxy_header_error', 'access log: the real peer 127.0.0.1, termination proxy_header_error');
  t.equal(line.server, null, 'no server was picked');
  t.equal(line.connect_ms, null, 'no backend connection was made');

  const good = await clientFor(t, lb.port(), '127.0.0.2');
  good.write(Buffer.concat([v1Header(HEADER_IP, HEADER_PORT, '127.0.0.1', lb.port()), Buffer.from('trusted\n')]));
  t.equal(await readLine(good, 10_000), 'trusted', 'the trusted proxy is served');
  good.end();
  await closed(good, 10_000);
  t.equal((await accessLine(lb, `${HEADER_IP}:${HEADER_PORT}`)).termination, 'client_close', 'access log: the trusted connection as the header client');
  t.equal(backend.received, 'trusted\n'.length, 'the backend received the trusted payload and not one byte of the untrusted one');
});

t.test('garbage instead of a header: closed, logged proxy_header_error, nothing reaches the backend; the next valid connection works', async (t) => {
  const backend = await backendFor(t, countingEcho());
  const lb = await lbFor(t, config({ servers: [backend.address], listener: { accept_proxy: true, trusted_proxies: ['127.0.0.0/8'] } }));
  const garbage: Array<[string, Buffer]> = [
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: example\r\n\r\n')],
    ['random bytes', Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), randomBytes(200)])],
    ['a v1 line with address 999.1.1.1', Buffer.from('PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\nx')],
    ['PROXY UNKNOWN and no CRLF within 124 bytes', Buffer.from(`PROXY UNKNOWN ${'x'.repeat(110)}`)],
    ['the v2 signature with version 3', Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540a', 'hex'), Buffer.from([0x31, 0x11, 0, 12]), Buffer.alloc(12)])],
  ];
  for (const [what, bytes] of garbage) {
    const c = await clientFor(t, lb.port());
    c.write(bytes);
    const ms = await closed(c, 5_000);
    const line = await accessLine(lb, `127.0.0.1:${c.lport}`);
    t.equal(line.termination, 'proxy_header_error', `${what}: closed after ${ms}ms, logged proxy_header_error`);
    t.equal(line.server, null, `${what}: no server picked`);
  }
  const ok = await clientFor(t, lb.port());
  ok.write(Buffer.concat([v2Header(HEADER_IP, HEADER_PORT, '127.0.0.1', lb.port()), Buffer.from('after garbage\n')]));
  t.equal(await readLine(ok, 10_000), 'after garbage', 'the next valid connection is served');
  ok.end();
  await closed(ok, 10_000);
  await sleep(100);
  t.equal(backend.received, 'after garbage\n'.length, 'only the valid connection\'s payload reached the backend');
});

t.test('timeouts.handshake 300ms: no header, a partial header, or a trickle are all closed after about 300ms', async (t) => {
  const backend = await backendFor(t, countingEcho());
  const lb = await lbFor(t, config({ servers: [backend.address], listener: { accept_proxy: true, trusted_proxies: ['127.0.0.0/8'], timeouts: { handshake: '300ms' } } }));
  const cases: Array<[string, (c: net.Socket) => void]> = [
    ['nothing sent', () => {}],
    ['a partial v1 header', (c) => c.write('PROXY TCP4 203.0.113.7 ')],
    ['a partial v2 header', (c) => c.write(v2Header(HEADER_IP, HEADER_PORT, '127.0.0.1', 1).subarray(0, 20))],
    [
      'a valid v1 header trickled at one byte per 40ms (would need 1.8s)',
      (c) => {
        const h = v1Header(HEADER_IP, HEADER_PORT, '127.0.0.1', lb.port());
        let i = 0;
        const timer = setInterval(() => {
          if (c.destroyed || i >= h.length) return clearInterval(timer);
          c.write(h.subarray(i, ++i));
        }, 40);
        c.once('close', () => clearInterval(timer));
      },
    ],
  ];
  for (const [what, act] of cases) {
    const c = await clientFor(t, lb.port());
    c.setNoDelay(true);
    act(c);
    const ms = await closed(c, 5_000);
    t.ok(ms >= 250 && ms <= 2_500, `${what}: closed after ${ms}ms (handshake 300ms)`);
    const line = await accessLine(lb, `127.0.0.1:${c.lport}`);
    t.equal(line.termination, 'proxy_header_error', `${what}: logged proxy_header_error`);
  }
  await sleep(100);
  t.equal(backend.received, 0, 'no byte reached the backend');
});

t.test('a FIN before the header is complete: closed at once (not held to the deadline); partial header = proxy_header_error, nothing sent = client_close', async (t) => {
  const backend = await backendFor(t, countingEcho());
  const lb = await lbFor(t, config({ servers: [backend.address], listener: { accept_proxy: true, trusted_proxies: ['127.0.0.0/8'], timeouts: { handshake: '10s' } } }));
  const cases: Array<[string, Buffer, string]> = [
    ['half a v1 header, then FIN', Buffer.from('PROXY TCP4 203.0.113.7 '), 'proxy_header_error'],
    ['half a v2 header, then FIN', v2Header(HEADER_IP, HEADER_PORT, '127.0.0.1', 1).subarray(0, 20), 'proxy_header_error'],
    ['nothing, then FIN (a TCP health check)', Buffer.alloc(0), 'client_close'],
  ];
  for (const [what, bytes, termination] of cases) {
    const c = await clientFor(t, lb.port());
    c.end(bytes);
    const ms = await closed(c, 5_000);
    t.ok(ms < 3_000, `${what}: closed after ${ms}ms (handshake deadline 10s)`);
    const line = await accessLine(lb, `127.0.0.1:${c.lport}`);
    t.equal(line.termination, termination, `${what}: logged ${termination}`);
  }
  t.equal(backend.received, 0, 'no byte reached the backend');
});

// ---------------------------------------------------------------------------
// (d) source_hash

t.test("source_hash hashes the header's client: the same header source from 127.0.0.2 and 127.0.0.3 lands on the same server", async (t) => {
  const names = ['a', 'b', 'c'];
  const backends = await Promise.all(names.map((n) => backendFor(t, namedBackend(n))));
  const lb = await lbFor(
    t,
    config({
      servers: backends.map((b) => b.address),
      listener: { accept_proxy: true, trusted_proxies: ['127.0.0.0/8'] },
      pool: { balance: 'source_hash', servers: backends.map((b, i) => ({ name: names[i], address: b.address })) },
    }),
  );
  const ask = async (real: string, src: string): Promise<string> => {
    const c = await clientFor(t, lb.port(), real);
    c.write(v1Header(src, 40000, '127.0.0.1', lb.port()));
    const name = await readLine(c, 10_000);
    c.destroy();
    return name;
  };
  const picked = new Map<string, string>();
  let same = 0;
  for (let i = 1; i <= 12; i++) {
    const src = `203.0.113.${i * 10}`;
    const first = await ask('127.0.0.2', src);
    const second = await ask('127.0.0.3', src);
    if (first === second) same++;
    else t.fail(`${src}: ${first} from 127.0.0.2 but ${second} from 127.0.0.3`);
    picked.set(src, first);
  }
  t.equal(same, 12, 'each of 12 header sources landed on one server whatever the real peer');
  const used = new Set(picked.values());
  t.ok(used.size >= 2, `the header source drives the choice: ${JSON.stringify(Object.fromEntries(picked))}`);
  await waitFor(() => accessLines(lb).length >= 24, 10_000, '24 access-log lines');
  t.ok(
    accessLines(lb).every((l) => typeof l.client === 'string' && l.client.startsWith('203.0.113.')),
    'every access-log client is the header source',
  );
});

// ---------------------------------------------------------------------------
// (e) health probes of PROXY pools

/** Fast probes that only succeed if the strict backend accepted the header (it echoes PING after it). */
const STRICT_HEALTH = { interval: '200ms', timeout: '3s', rise: 1, fall: 1, send: 'PING\r\n', expect: 'PING' };

for (const version of ['v1', 'v2'] as const) {
  t.test(`health probes of a ${version} pool carry a valid ${version === 'v2' ? 'v2 LOCAL header' : 'v1 line with the probe\'s own addresses'}; a strict backend stays up`, async (t) => {
    const backend = await backendFor(t, proxyBackend({ headerTimeoutMs: 3_000 }));
    const lb = await lbFor(t, config({ servers: [backend.address], pool: { proxy_protocol: version, health: STRICT_HEALTH } }));
    const server = lb.app.pools.get('p')!.servers[0]!;
    await waitFor(() => backend.conns.filter((c) => c.header !== undefined && c.data.length > 0).length >= 5, 15_000, '5 probes');
    const probes = backend.conns.filter((c) => c.header !== undefined);
    t.comment(`${probes.length} probes with a header, ${backend.conns.length} connections`);
    t.same(
      backend.conns.filter((c) => c.error !== undefined).map((c) => c.error),
      [],
      'no probe was refused by the strict backend',
    );
    for (const c of probes) {
      const h = c.header!;
      if (version === 'v2') {
        if (h.version !== 2 || h.command !== 'LOCAL' || h.source !== undefined) t.fail(`not a v2 LOCAL header: ${JSON.stringify(h)}`);
      } else {
        const expected = { source: { address: '127.0.0.1', port: c.remotePort }, destination: { address: '127.0.0.1', port: backend.port } };
        if (h.version !== 1 || h.command !== 'PROXY' || JSON.stringify({ source: h.source, destination: h.destination }) !== JSON.stringify(expected)) {
          t.fail(`not a v1 line with the probe's addresses: ${JSON.stringify(h)}, expected ${JSON.stringify(expected)}`);
        }
      }
      if (c.data.length > 0 && c.data.toString() !== 'PING\r\n') t.fail(`probe payload after the header: ${JSON.stringify(c.data.toString())}`);
    }
    t.pass(`every probe header was a ${version === 'v2' ? 'v2 LOCAL header without addresses' : "v1 TCP4 line: probe's address and port -> the server's"}`);
    t.ok(server.up, 'the server is up');
    t.equal(server.health.last?.ok, true, `the last probe succeeded (${JSON.stringify(server.health.last)})`);
    t.same(lb.lines.filter((l) => l.msg === 'server down'), [], 'never marked down');
  });
}

t.test('control: the same strict backend behind a pool without proxy_protocol is marked down (its probes have no header)', async (t) => {
  const backend = await backendFor(t, proxyBackend({ headerTimeoutMs: 3_000 }));
  const lb = await lbFor(t, config({ servers: [backend.address], pool: { health: STRICT_HEALTH } }));
  const server = lb.app.pools.get('p')!.servers[0]!;
  await waitFor(() => !server.up, 10_000, 'the server marked down');
  t.ok(backend.conns.some((c) => c.error === 'bad_signature'), 'the backend refused a probe without a header');
  t.match(server.health.last?.reason ?? '', /expect mismatch|closed/, `probe failure: ${server.health.last?.reason}`);
});

for (const version of ['v1', 'v2'] as const) {
  t.test(`connect-only probes of a ${version} pool (no send/expect) still deliver a whole header before they close`, async (t) => {
    const backend = await backendFor(t, proxyBackend({ headerTimeoutMs: 3_000 }));
    const lb = await lbFor(t, config({ servers: [backend.address], pool: { proxy_protocol: version, health: { interval: '200ms', fall: 1 } } }));
    await waitFor(() => backend.conns.filter((c) => c.closed).length >= 5, 15_000, '5 finished probes');
    const done = backend.conns.filter((c) => c.closed);
    t.same(
      done.filter((c) => c.header === undefined).map((c) => c.error ?? 'closed without a header'),
      [],
      `each of ${done.length} finished probes sent a complete ${version} header`,
    );
    t.ok(done.every((c) => c.header?.version === (version === 'v1' ? 1 : 2)), `all ${version}`);
    t.ok(lb.app.pools.get('p')!.servers[0]!.up, 'the server is up');
  });
}
