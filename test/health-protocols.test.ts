/**
 * Probe kinds that speak the server's protocol and end the conversation as
 * it expects (tls, mysql, redis, smtp), and the tls default for pools whose
 * servers speak TLS, on real loopback sockets: Node stand-ins for SMTP, TLS
 * and MySQL's handshake, and, when installed, a real MariaDB and Redis (TLS
 * only, with AUTH) whose own logs must show nothing caused by the probes.
 *
 * Deadlines are functional with wide margins; measured timings are printed
 * as comments.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import type { StatusDoc } from '../src/admin/status.js';
import { buildModel } from '../src/config/load.js';
import { redactModel } from '../src/config/model-json.js';
import type { Model } from '../src/config/model.js';
import { planProbe, probe, type ProbeOptions } from '../src/health/probe.js';
import type { Server } from '../src/pool.js';
import { backendTlsOptions } from '../src/tls/backend.js';
import { testCerts } from './helpers/certs.js';
import { problemsOf } from './helpers/config.js';
import { adminPort, backendFor, lbFor } from './helpers/lb.js';
import { sleep, startBackend, waitFor, type Running } from './helpers/net.js';
import { mariadbMissing, startMariadb, type MariadbServer } from './helpers/mariadb.js';
import { redisMissing, startRedis } from './helpers/redis.js';
import { need } from './helpers/requirements.js';

// ---------------------------------------------------------------------------
// Helpers

/** Fast probes: every 200ms, a probe may take 500ms, down after 2 failures, up after 2. */
const FAST = { interval: '200ms', timeout: '500ms', fall: 2, rise: 2 } as const;

function serverOf(lb: Running, pool: string, name: string): Server {
  const s = lb.app.pools.get(pool)?.server(name);
  if (s === undefined) throw new Error(`no server ${name} in pool ${pool}`);
  return s;
}

function downLines(lb: Running, server: string): Array<Record<string, unknown>> {
  return lb.lines.filter((l) => l.msg === 'server down' && l.server === server);
}

/** Waits until `server` has passed `n` distinct active probes; fails fast on a failed one. */
async function passingProbes(server: Server, n: number, timeoutMs: number): Promise<number> {
  const seen = new Set<number>();
  await waitFor(
    () => {
      const last = server.health.last;
      if (last !== null && last.source === 'active') {
        if (!last.ok) throw new Error(`${server.name}: a probe failed: ${last.reason}`);
        seen.add(last.at);
      }
      return seen.size >= n;
    },
    timeoutMs,
    `${n} passing probes of ${server.name}`,
  );
  return seen.size;
}

/**
 * Puts every server in maint and waits out a probe's timeout, so no probe is
 * in flight when the test stops l4lb: a stop abandons probes mid-conversation,
 * which a server would log (once per stop, not per probe), and the tests that
 * read a server's log must only see what finished probes leave.
 */
async function quiesce(lb: Running, timeoutMs: number): Promise<void> {
  for (const pool of lb.app.pools.values()) for (const s of pool.servers) pool.setAdminState(s, 'maint');
  await sleep(timeoutMs + 300);
}

/** Polls until `cond`; returns the elapsed ms. */
async function elapsedUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const started = Date.now();
  await waitFor(cond, timeoutMs, what);
  return Date.now() - started;
}

function opts(o: Partial<ProbeOptions>): ProbeOptions {
  return { timeoutMs: 1_000, send: null, expect: null, proxyHeader: null, ...o };
}

/** A private directory for files a test writes (password files), removed when `t` ends. */
function scratch(t: Test): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'l4lb-probe-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The lines of `text` that a server wrote at warning level or above, or that name a failed TLS handshake. */
function troubleIn(text: string, pattern: RegExp): string[] {
  return text.split('\n').filter((l) => pattern.test(l));
}

/** How one connection to a stand-in ended. */
interface Session {
  received: Buffer;
  /** The client's FIN arrived. */
  fin: boolean;
  /** The client reset the connection. */
  reset: boolean;
  /** The server had ended its side before the client's FIN came. */
  serverClosedFirst: boolean;
  /** TLS stand-ins: the order of 'end' and 'close', and any error. */
  events: string[];
}

/** A plaintext stand-in: `greet` runs on connect, `answer` on every chunk; half-open allowed, so the client's FIN is seen as such. */
async function standIn(
  t: Test,
  greet: (socket: net.Socket) => void,
  answer: (socket: net.Socket, session: Session) => void = () => {},
): Promise<{ port: number; address: string; sessions: Session[] }> {
  const sessions: Session[] = [];
  const b = await backendFor(
    t,
    startBackend(
      (s) => {
        const session: Session = { received: Buffer.alloc(0), fin: false, reset: false, serverClosedFirst: false, events: [] };
        sessions.push(session);
        let ended = false;
        const end = s.end.bind(s);
        s.end = ((...args: Parameters<net.Socket['end']>) => {
          ended = true;
          return end(...args);
        }) as net.Socket['end'];
        s.on('error', (err: NodeJS.ErrnoException) => {
          if (err.code === 'ECONNRESET') session.reset = true;
        });
        s.on('end', () => {
          session.fin = true;
          session.serverClosedFirst = ended;
          if (!ended) s.end();
        });
        s.on('data', (d: Buffer) => {
          session.received = Buffer.concat([session.received, d]);
          answer(s, session);
        });
        greet(s);
      },
      { allowHalfOpen: true },
    ),
  );
  return { port: b.port, address: b.address, sessions };
}

// ---------------------------------------------------------------------------
// Configuration

t.test('the default kind is tls where the servers speak TLS (pool tls, or reached by a passthrough listener by default or by route, and by no terminate listener), else tcp, and tcp behind protocol postgres; an explicit kind, or send/expect, wins', async (t) => {
  const certs = testCerts();
  const servers = [{ address: '127.0.0.1:6379' }];
  const poolTls = { ca: certs.file('ca.crt'), servername: 'backend.test' };
  const model = await buildModel({
    listeners: [
      { name: 'pass', bind: '127.0.0.1:0', pool: 'passed', tls: { mode: 'passthrough' }, routes: [{ sni: 'r.test', pool: 'routed' }] },
      { name: 'plain', bind: '127.0.0.1:0', pool: 'plain' },
      { name: 'both-pass', bind: '127.0.0.1:0', pool: 'both', tls: { mode: 'passthrough' } },
      { name: 'both-term', bind: '127.0.0.1:0', pool: 'both', tls: { mode: 'terminate', certs: [certs.pair('a.test')] } },
      { name: 'pg', bind: '127.0.0.1:0', pool: 'pg', protocol: 'postgres', tls: { mode: 'passthrough' } },
      { name: 'pg-plain', bind: '127.0.0.1:0', pool: 'pg-reencrypt', protocol: 'postgres' },
      ...['reencrypt', 'explicit', 'payload', 'redis'].map((pool) => ({ name: pool, bind: '127.0.0.1:0', pool })),
    ],
    pools: [
      { name: 'passed', servers },
      { name: 'routed', servers },
      { name: 'plain', servers },
      { name: 'both', servers },
      { name: 'pg', servers },
      { name: 'pg-reencrypt', tls: poolTls, servers },
      { name: 'reencrypt', tls: poolTls, servers },
      { name: 'explicit', tls: poolTls, health: { kind: 'tcp' }, servers },
      { name: 'payload', tls: poolTls, health: { send: 'PING\r\n', expect: '+PONG' }, servers },
      { name: 'redis', tls: poolTls, health: { kind: 'redis' }, servers },
    ],
  });
  const kinds = Object.fromEntries(model.pools.map((p) => [p.name, `${p.health.kind}${p.health.serversTls ? ' (servers speak TLS)' : ''}`]));
  t.same(kinds, {
    passed: 'tls (servers speak TLS)',
    routed: 'tls (servers speak TLS)',
    plain: 'tcp',
    both: 'tcp',
    pg: 'tcp',
    'pg-reencrypt': 'tcp',
    reencrypt: 'tls (servers speak TLS)',
    explicit: 'tcp (servers speak TLS)',
    payload: 'tcp (servers speak TLS)',
    redis: 'redis (servers speak TLS)',
  });

  const at = { host: '127.0.0.1', port: 6379, text: '127.0.0.1:6379' };
  const health = model.pools.find((p) => p.name === 'redis')!.health;
  t.type(planProbe(health, at).options.tls, 'function', 'kind redis talks TLS to servers that speak it');
  t.equal(planProbe({ ...health, port: 6380 }, at).options.tls, null, 'but not on another port (health.port names another service)');
  t.equal(planProbe(model.pools.find((p) => p.name === 'explicit')!.health, at).options.tls, null, 'kind tcp stays plain: a connect, as before');
});

t.test('mysql, redis and expect settings belong to their kinds; a password file that is missing or empty is a problem on its path; the password is kept redacted', async (t) => {
  const dir = scratch(t);
  writeFileSync(path.join(dir, 'empty.pw'), '\n');
  writeFileSync(path.join(dir, 'good.pw'), 'pa ss\r\n', { mode: 0o600 });
  const pool = (health: Record<string, unknown>) => ({
    listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: '127.0.0.1:6379' }], health }],
  });
  t.same(await problemsOf(pool({ kind: 'tcp', mysql: { user: 'probe' } })), [{ path: 'pools[0].health.mysql', message: 'only used with kind: mysql, but kind is tcp' }]);
  t.same(await problemsOf(pool({ kind: 'mysql', redis: {} })), [{ path: 'pools[0].health.redis', message: 'only used with kind: redis, but kind is mysql' }]);
  t.same(await problemsOf(pool({ kind: 'redis', expect: '+PONG' })), [{ path: 'pools[0].health.expect', message: 'only used with kinds tcp and smtp; kind redis judges its own reply' }]);
  t.same(await problemsOf(pool({ kind: 'redis', redis: { password_file: path.join(dir, 'none.pw') } })), [
    { path: 'pools[0].health.redis.password_file', message: `cannot read ${path.join(dir, 'none.pw')}: no such file` },
  ]);
  t.same(await problemsOf(pool({ kind: 'redis', redis: { password_file: path.join(dir, 'empty.pw') } })), [
    { path: 'pools[0].health.redis.password_file', message: `password file ${path.join(dir, 'empty.pw')} is empty` },
  ]);
  t.same(await problemsOf(pool({ kind: 'mysql', mysql: { user: 'a\u0000b' } })), [{ path: 'pools[0].health.mysql.user', message: 'must not contain a NUL character' }]);

  const smtp = await buildModel(pool({ kind: 'smtp', expect: '220 mail' }));
  t.same(smtp.pools[0]!.health.expect, Buffer.from('220 mail'), 'kind smtp takes expect');
  const mysql = await buildModel(pool({ kind: 'mysql' }));
  t.same(mysql.pools[0]!.health.mysql, { user: null }, 'kind mysql without a user: greeting only');
  const model: Model = await buildModel(pool({ kind: 'redis', redis: { password_file: path.join(dir, 'good.pw') } }));
  t.same(model.pools[0]!.health.redis?.password, Buffer.from('pa ss'), 'the first line, without its line break');
  const shown = JSON.stringify(redactModel(model, Buffer.alloc(32, 7)));
  t.notOk(shown.includes('pa ss') || shown.includes(Buffer.from('pa ss').toString('hex')), 'redacted wherever the model is shown');
  t.match(shown, /"password":\{"redacted":"hmac-sha256","mac":"[0-9a-f]{64}"\}/);
});

// ---------------------------------------------------------------------------
// smtp: greeting first

t.test('smtp: a multi-line 220 greeting is up; QUIT goes only after its last line, the server answers 221 and closes first, then the probe', async (t) => {
  const smtp = await standIn(
    t,
    (s) => {
      s.write('220-mail.test ESMTP\r\n');
      setTimeout(() => s.write('220 ready\r\n'), 50);
    },
    (s, session) => {
      if (session.received.toString('latin1').endsWith('QUIT\r\n')) s.end('221 bye\r\n');
    },
  );
  const started = Date.now();
  const r = await probe({ host: '127.0.0.1', port: smtp.port }, opts({ kind: 'smtp' }));
  t.same({ ok: r.ok, reason: r.reason }, { ok: true, reason: '' });
  t.ok(Date.now() - started >= 45, 'the verdict waited for the last greeting line');
  await waitFor(() => smtp.sessions[0]?.fin === true, 2_000, 'the probe closed');
  t.match(smtp.sessions[0], { fin: true, reset: false, serverClosedFirst: true }, 'the server closed after 221, then the probe: no reset');
  t.equal(smtp.sessions[0]!.received.toString('latin1'), 'QUIT\r\n', 'nothing but QUIT was sent');
});

t.test('smtp: a server that accepts and never greets fails within the timeout; a 554 greeting fails naming it and still gets QUIT; expect "+OK" fits a POP3 greeting', async (t) => {
  const silent = await standIn(t, () => {});
  const started = Date.now();
  const r = await probe({ host: '127.0.0.1', port: silent.port }, opts({ kind: 'smtp', timeoutMs: 300 }));
  const took = Date.now() - started;
  t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'timeout after 300ms' });
  t.ok(took < 1_500, `failed after about the timeout (${took}ms)`);
  t.equal(silent.sessions[0]?.received.length, 0, 'the probe said nothing to a server that had not greeted');

  const busy = await standIn(t, (s) => s.write('554 no service here\r\n'), (s, session) => {
    if (session.received.toString('latin1').endsWith('QUIT\r\n')) s.end('221 bye\r\n');
  });
  const b = await probe({ host: '127.0.0.1', port: busy.port }, opts({ kind: 'smtp' }));
  t.same({ ok: b.ok, reason: b.reason }, { ok: false, reason: 'greeting mismatch: got "554 no service here"' });
  t.equal(busy.sessions[0]!.received.toString('latin1'), 'QUIT\r\n');

  const pop = await standIn(t, (s) => s.write('+OK POP3 ready\r\n'), (s) => s.end('+OK bye\r\n'));
  const p = await probe({ host: '127.0.0.1', port: pop.port }, opts({ kind: 'smtp', expect: Buffer.from('+OK') }));
  t.same({ ok: p.ok, reason: p.reason }, { ok: true, reason: '' });

  const closes = await standIn(t, (s) => s.end());
  const c = await probe({ host: '127.0.0.1', port: closes.port }, opts({ kind: 'smtp' }));
  t.same({ ok: c.ok, reason: c.reason }, { ok: false, reason: 'connection closed before the greeting' });
});

t.test('smtp through l4lb: the server that never greets is marked down within fall x (interval + timeout); the greeting one stays up and gets one QUIT per probe', async (t) => {
  const greets = await standIn(t, (s) => s.write('220 ready\r\n'), (s, session) => {
    if (session.received.toString('latin1').endsWith('QUIT\r\n')) s.end('221 bye\r\n');
  });
  const frozen = await standIn(t, () => {});
  const lb = await lbFor(t, {
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'mail' }],
    pools: [
      {
        name: 'mail',
        health: { ...FAST, kind: 'smtp' },
        servers: [
          { name: 'greets', address: greets.address },
          { name: 'frozen', address: frozen.address },
        ],
      },
    ],
  });
  // fall 2 x (200ms + 500ms), plus a wide margin for a noisy machine.
  const downMs = await elapsedUntil(() => !serverOf(lb, 'mail', 'frozen').up, 2 * 700 + 3_000, 'the silent server marked down');
  t.comment(`silent server down after ${downMs}ms (bound without margin: 1400ms)`);
  t.equal(downLines(lb, 'frozen')[0]?.reason, 'timeout after 500ms');
  const probes = await passingProbes(serverOf(lb, 'mail', 'greets'), 3, 5_000);
  t.ok(serverOf(lb, 'mail', 'greets').up);
  await quiesce(lb, 500);
  const done = greets.sessions.filter((s) => s.fin);
  t.ok(done.length >= probes, `${done.length} finished probe sessions`);
  t.ok(
    done.every((s) => s.received.toString('latin1') === 'QUIT\r\n' && s.serverClosedFirst && !s.reset),
    'each: QUIT, 221 and the server closing first; no reset',
  );
});

// ---------------------------------------------------------------------------
// tls

/** A TLS server with backend.test's certificate; each session records how it ended. */
async function tlsStandIn(t: Test): Promise<{ port: number; sessions: Array<Session & { servername: string | false | null }> }> {
  const certs = testCerts();
  const sessions: Array<Session & { servername: string | false | null }> = [];
  const open = new Set<tls.TLSSocket>();
  const server = tls.createServer({ ...certs.pem('backend.test') }, (s) => {
    const session = { received: Buffer.alloc(0), fin: false, reset: false, serverClosedFirst: false, events: [] as string[], servername: s.servername };
    sessions.push(session);
    open.add(s);
    s.on('data', (d: Buffer) => (session.received = Buffer.concat([session.received, d])));
    s.on('end', () => {
      session.fin = true;
      session.events.push('end');
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      session.events.push(`error ${err.code ?? err.message}`);
      if (err.code === 'ECONNRESET') session.reset = true;
    });
    s.on('close', () => {
      open.delete(s);
      session.events.push('close');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of open) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as net.AddressInfo).port, sessions };
}

t.test('tls: a passthrough pool is probed with a full handshake by default and leaves with close_notify: the server sees "end" before "close", no reset', async (t) => {
  const server = await tlsStandIn(t);
  const lb = await lbFor(t, {
    listeners: [{ name: 'pass', bind: '127.0.0.1:0', pool: 'p', tls: { mode: 'passthrough' } }],
    pools: [{ name: 'p', health: FAST, servers: [{ name: 's', address: `127.0.0.1:${server.port}` }] }],
  });
  t.equal(lb.app.pools.get('p')!.model.health.kind, 'tls', 'the default kind of a passthrough pool');
  await passingProbes(serverOf(lb, 'p', 's'), 3, 5_000);
  await waitFor(() => server.sessions.filter((s) => s.events.includes('close')).length >= 3, 3_000, 'three finished probe sessions');
  for (const s of server.sessions.filter((x) => x.events.includes('close'))) {
    t.same(s.events, ['end', 'close'], 'close_notify and FIN, then the close: no ECONNRESET, no error');
  }
  t.equal(downLines(lb, 's').length, 0);

  // The server's host as written is the SNI (none for an IP, as above).
  const model = await buildModel({
    listeners: [{ name: 'pass', bind: '127.0.0.1:0', pool: 'p', tls: { mode: 'passthrough' } }],
    pools: [{ name: 'p', servers: [{ address: `127.0.0.1:${server.port}` }] }],
  });
  const plan = planProbe(model.pools[0]!.health, { host: '127.0.0.1', port: server.port, text: `backend.test:${server.port}` });
  const r = await probe(plan.target, { ...plan.options, timeoutMs: 2_000, proxyHeader: null });
  t.same({ ok: r.ok, reason: r.reason }, { ok: true, reason: '' });
  t.equal(server.sessions.at(-1)?.servername, 'backend.test', 'SNI: the host name as written');
  t.notOk(server.sessions[0]?.servername, 'no SNI for an IP address');
});

t.test("tls: with the pool's tls the probe verifies as client connections do: right CA and name up, a wrong name down naming why; a plaintext or silent server fails", async (t) => {
  const certs = testCerts();
  const server = await tlsStandIn(t);
  const at = { host: '127.0.0.1', port: server.port, text: `127.0.0.1:${server.port}` };
  const withTls = async (servername: string) => {
    const model = await buildModel({
      listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
      pools: [{ name: 'p', tls: { ca: certs.file('ca.crt'), servername }, servers: [{ address: at.text }] }],
    });
    const pool = model.pools[0]!;
    t.equal(pool.health.kind, 'tls', 'the default kind of a pool with tls');
    const plan = planProbe(pool.health, at, backendTlsOptions(pool.tls!, 'pool p: tls'));
    return probe(plan.target, { ...plan.options, timeoutMs: 2_000, proxyHeader: null });
  };
  const good = await withTls('backend.test');
  t.same({ ok: good.ok, reason: good.reason }, { ok: true, reason: '' });
  const wrong = await withTls('other.test');
  t.equal(wrong.ok, false);
  t.equal(wrong.reason, 'tls handshake ERR_TLS_CERT_ALTNAME_INVALID');

  const echo = await backendFor(t);
  const plain = await probe({ host: '127.0.0.1', port: echo.port }, opts({ kind: 'tls' }));
  t.equal(plain.ok, false);
  t.match(plain.reason, /^tls handshake |^connection closed during the TLS handshake$/, `a plaintext server: ${plain.reason}`);

  const silent = await backendFor(t, startBackend((s) => s.resume()));
  const started = Date.now();
  const quiet = await probe({ host: '127.0.0.1', port: silent.port }, opts({ kind: 'tls', timeoutMs: 300 }));
  t.same({ ok: quiet.ok, reason: quiet.reason }, { ok: false, reason: 'timeout after 300ms' });
  t.ok(Date.now() - started < 1_500, 'within about the timeout');
});

// ---------------------------------------------------------------------------
// mysql: stand-ins

/** A MySQL packet: 3-byte length, sequence id, body. */
function packet(seq: number, body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUIntLE(body.length, 0, 3);
  head[3] = seq;
  return Buffer.concat([head, body]);
}

function errPacket(seq: number, code: number, message: string, sqlState?: string): Buffer {
  const head = Buffer.alloc(3);
  head[0] = 0xff;
  head.writeUInt16LE(code, 1);
  return packet(seq, Buffer.concat([head, Buffer.from(sqlState === undefined ? '' : `#${sqlState}`), Buffer.from(message)]));
}

/** A protocol 10 greeting as MariaDB 10.11 sends it (capabilities incl. protocol 4.1, secure connection, plugin auth). */
const GREETING = packet(
  0,
  Buffer.concat([
    Buffer.from([0x0a]),
    Buffer.from('5.5.5-10.11.0-MariaDB\0'),
    Buffer.from([5, 0, 0, 0]),
    Buffer.from('abcdefgh'),
    Buffer.from([0]),
    Buffer.from([0xfe, 0xf7]),
    Buffer.from([0x21, 0x02, 0x00]),
    Buffer.from([0xff, 0x81]),
    Buffer.from([21]),
    Buffer.alloc(10),
    Buffer.from('ijklmnopqrst\0'),
    Buffer.from('mysql_native_password\0'),
  ]),
);
const OK = packet(2, Buffer.from([0, 0, 0, 2, 0, 0, 0]));

/** What a HandshakeResponse41 says. */
function parseLogin(body: Buffer): { caps: number; user: string; auth: number; plugin: string } {
  const caps = body.readUInt32LE(0);
  const userEnd = body.indexOf(0, 32);
  const user = body.toString('utf8', 32, userEnd);
  const authLength = body[userEnd + 1]!;
  const pluginStart = userEnd + 2 + authLength;
  return { caps, user, auth: authLength, plugin: body.toString('latin1', pluginStart, body.indexOf(0, pluginStart)) };
}

t.test('mysql probe against stand-ins', async (t) => {
  t.test('an error packet instead of the greeting is down with its message (with or without a SQLSTATE)', async (t) => {
    const full = await standIn(t, (s) => s.end(errPacket(0, 1040, 'Too many connections', '08004')));
    const r = await probe({ host: '127.0.0.1', port: full.port }, opts({ kind: 'mysql', mysql: { user: 'l4lb_probe' } }));
    t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'mysql error 1040: Too many connections' });
    const blocked = await standIn(t, (s) => s.end(errPacket(0, 1129, "Host '127.0.0.1' is blocked because of many connection errors")));
    const b = await probe({ host: '127.0.0.1', port: blocked.port }, opts({ kind: 'mysql' }));
    t.same({ ok: b.ok, reason: b.reason }, { ok: false, reason: "mysql error 1129: Host '127.0.0.1' is blocked because of many connection errors" });
  });

  t.test('silence fails within the timeout (a frozen server); garbage is not a greeting', async (t) => {
    const silent = await standIn(t, () => {});
    const r = await probe({ host: '127.0.0.1', port: silent.port }, opts({ kind: 'mysql', timeoutMs: 300 }));
    t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'timeout after 300ms' });
    const http = await standIn(t, (s) => s.write('HTTP/1.1 400 Bad Request\r\n\r\n'));
    const h = await probe({ host: '127.0.0.1', port: http.port }, opts({ kind: 'mysql' }));
    t.equal(h.ok, false);
    t.match(h.reason, /^not a mysql packet \(length \d+\): got "HTTP\/1.1 400 Bad Request"$/);
  });

  t.test('with a user: a HandshakeResponse41 (mysql_native_password, empty password), then COM_QUIT after the OK; the server closes first', async (t) => {
    const logins: Array<ReturnType<typeof parseLogin>> = [];
    const db = await standIn(
      t,
      (s) => s.write(GREETING),
      (s, session) => {
        const got = session.received;
        if (logins.length === 0 && got.length >= 4 && got.length >= 4 + got.readUIntLE(0, 3)) {
          t.equal(got[3], 1, 'the response has sequence id 1');
          logins.push(parseLogin(got.subarray(4, 4 + got.readUIntLE(0, 3))));
          s.write(OK);
        } else if (got.subarray(-5).equals(Buffer.from([1, 0, 0, 0, 1]))) {
          s.end();
        }
      },
    );
    const r = await probe({ host: '127.0.0.1', port: db.port }, opts({ kind: 'mysql', mysql: { user: 'l4lb_probe' } }));
    t.same({ ok: r.ok, reason: r.reason, note: r.note }, { ok: true, reason: '', note: undefined });
    t.match(logins[0], { user: 'l4lb_probe', auth: 0, plugin: 'mysql_native_password' });
    const caps = logins[0]!.caps;
    t.ok((caps & 0x200) !== 0 && (caps & 0x8000) !== 0 && (caps & 0x80000) !== 0, 'protocol 4.1, secure connection, plugin auth');
    t.equal(caps & 0x8, 0, 'no database named');
    await waitFor(() => db.sessions[0]?.fin === true, 2_000, 'the probe closed');
    t.match(db.sessions[0], { reset: false, serverClosedFirst: true }, 'COM_QUIT, the server closed, then the probe');
  });

  t.test('a refused login is still a server that answers: up, with a note naming the fix; without a user, up with a note too', async (t) => {
    const db = await standIn(t, (s) => s.write(GREETING), (s) => s.end(errPacket(2, 1045, "Access denied for user 'nobody'@'127.0.0.1' (using password: NO)", '28000')));
    const r = await probe({ host: '127.0.0.1', port: db.port }, opts({ kind: 'mysql', mysql: { user: 'nobody' } }));
    t.same({ ok: r.ok, reason: r.reason }, { ok: true, reason: '' });
    t.match(r.note, /^mysql probe login as nobody refused \(1045: Access denied for user 'nobody'@'127\.0\.0\.1' \(using password: NO\)\); the server logs every refused login/);
    const anon = await standIn(t, (s) => s.write(GREETING));
    const a = await probe({ host: '127.0.0.1', port: anon.port }, opts({ kind: 'mysql' }));
    t.same({ ok: a.ok, reason: a.reason }, { ok: true, reason: '' });
    t.match(a.note, /without health\.mysql\.user: the server logs an aborted connection for every probe/);
    t.equal(anon.sessions[0]!.received.length, 0, 'nothing sent: the greeting is read, then a FIN');
  });
});

// ---------------------------------------------------------------------------
// A real MariaDB

/** `SHOW GLOBAL STATUS` values by name. */
async function status(db: MariadbServer, ...names: string[]): Promise<Record<string, number>> {
  const out = await db.sql(`SHOW GLOBAL STATUS WHERE Variable_name IN (${names.map((n) => `'${n}'`).join(', ')})`);
  const values: Record<string, number> = {};
  for (const line of out.trim().split('\n')) {
    const [name, value] = line.split('\t');
    if (name !== undefined) values[name] = Number(value);
  }
  return values;
}

t.test('a real MariaDB probed with kind mysql', async (t) => {
  if (!need(t, mariadbMissing())) return;
  const db = await startMariadb(t);
  t.comment(db.version);
  await db.sql("CREATE USER 'l4lb_probe'@'127.0.0.1'");
  const address = `127.0.0.1:${db.port}`;

  t.test('with mysql.user (a user without password or grants): probes every 200ms for 3 s leave no line in its log, and Aborted_connects stays', async (t) => {
    const before = await status(db, 'Aborted_connects', 'Connections');
    const logBefore = db.log().length;
    const lb = await lbFor(t, {
      listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'db' }],
      pools: [{ name: 'db', health: { interval: '200ms', timeout: '1s', kind: 'mysql', mysql: { user: 'l4lb_probe' } }, servers: [{ name: 'm', address }] }],
    });
    const probes = await passingProbes(serverOf(lb, 'db', 'm'), 10, 10_000);
    await quiesce(lb, 1_000);
    await lb.stop();
    const after = await status(db, 'Aborted_connects', 'Connections');
    t.ok(after.Connections! - before.Connections! >= probes, `the probes logged in (${after.Connections! - before.Connections!} connections, ${probes}+ probes)`);
    t.equal(after.Aborted_connects, before.Aborted_connects, 'Aborted_connects unchanged');
    t.same(troubleIn(db.log().slice(logBefore), /\S/), [], 'nothing in the error log');
    t.equal(lb.lines.filter((l) => l.msg === 'health probe passes, but the server logs it').length, 0, 'no warning from l4lb');
  });

  t.test('without a user (documented): up, but every probe is logged as an aborted connection; l4lb warns once', async (t) => {
    const before = await status(db, 'Aborted_connects');
    const logBefore = db.log().length;
    const lb = await lbFor(t, {
      listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'db' }],
      pools: [{ name: 'db', health: { interval: '200ms', timeout: '1s', kind: 'mysql' }, servers: [{ name: 'm', address }] }],
    });
    const probes = await passingProbes(serverOf(lb, 'db', 'm'), 3, 10_000);
    await lb.stop();
    await sleep(300);
    const after = await status(db, 'Aborted_connects');
    const aborted = troubleIn(db.log().slice(logBefore), /Aborted connection .* closed normally without authentication/);
    t.ok(aborted.length >= probes, `${aborted.length} "Aborted connection" lines for ${probes}+ probes`);
    t.ok(after.Aborted_connects! - before.Aborted_connects! >= probes, 'Aborted_connects rises');
    const warnings = lb.lines.filter((l) => l.msg === 'health probe passes, but the server logs it');
    t.equal(warnings.length, 1, 'one warning, not one per probe');
    t.match(warnings[0]?.note, /set mysql\.user/);
  });

  t.test('frozen with SIGSTOP: down within fall x (interval + timeout) while a tcp probe still passes; after SIGCONT, up again', async (t) => {
    const lb = await lbFor(t, {
      listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'db' }],
      pools: [
        { name: 'db', health: { ...FAST, kind: 'mysql', mysql: { user: 'l4lb_probe' } }, servers: [{ name: 'm', address }] },
        { name: 'tcp', health: { ...FAST, kind: 'tcp' }, servers: [{ name: 'm-tcp', address }] },
      ],
    });
    const m = serverOf(lb, 'db', 'm');
    const mTcp = serverOf(lb, 'tcp', 'm-tcp');
    await passingProbes(m, 2, 10_000);
    db.kill('SIGSTOP');
    t.teardown(() => db.kill('SIGCONT'));
    const downMs = await elapsedUntil(() => !m.up, 2 * (200 + 500) + 3_000, 'the frozen server marked down');
    t.comment(`frozen MariaDB down after ${downMs}ms (fall 2 x (interval 200ms + timeout 500ms) = 1400ms)`);
    t.equal(downLines(lb, 'm')[0]?.reason, 'timeout after 500ms');
    t.ok(mTcp.up, 'a bare TCP connect still passes: the kernel completes the handshake for a stopped process');
    db.kill('SIGCONT');
    const upMs = await elapsedUntil(() => m.up, 10_000, 'up again after SIGCONT');
    t.comment(`up again ${upMs}ms after SIGCONT (rise 2)`);
  });
});

// ---------------------------------------------------------------------------
// A real Redis, TLS only

/** Redis log lines at warning level ("#"), and failed TLS accepts at any level. */
const REDIS_TROUBLE = /^\d+:[MC] .* # |Error accepting|unexpected eof/i;

t.test('a real Redis serving TLS only, behind a passthrough listener: default (tls) probes leave no failed-handshake line in its log; bare TCP probes (the old default) leave one per probe', async (t) => {
  if (!need(t, redisMissing())) return;
  const certs = testCerts();
  const redis = await startRedis(t, { tls: { ...certs.pair('backend.test'), ca: certs.file('ca.crt') } });
  const address = `127.0.0.1:${redis.port}`;
  const logBefore = redis.log().length;
  const lb = await lbFor(t, {
    listeners: [{ name: 'pass', bind: '127.0.0.1:0', pool: 'r', tls: { mode: 'passthrough' } }],
    pools: [{ name: 'r', health: { interval: '200ms', timeout: '1s' }, servers: [{ name: 'redis', address }] }],
  });
  t.equal(lb.app.pools.get('r')!.model.health.kind, 'tls');
  const probes = await passingProbes(serverOf(lb, 'r', 'redis'), 8, 10_000);
  await quiesce(lb, 1_000);
  await lb.stop();
  const logged = redis.log().slice(logBefore);
  t.ok(troubleIn(logged, /Accepted 127\.0\.0\.1/).length >= probes, `the probes reached Redis (${probes})`);
  t.same(troubleIn(logged, REDIS_TROUBLE), [], 'no warning, no failed handshake');

  const oldBefore = redis.log().length;
  const old = await lbFor(t, {
    listeners: [{ name: 'pass', bind: '127.0.0.1:0', pool: 'r', tls: { mode: 'passthrough' } }],
    pools: [{ name: 'r', health: { interval: '200ms', timeout: '1s', kind: 'tcp' }, servers: [{ name: 'redis', address }] }],
  });
  await passingProbes(serverOf(old, 'r', 'redis'), 3, 10_000);
  await old.stop();
  await sleep(300);
  const errors = troubleIn(redis.log().slice(oldBefore), /Error accepting a client connection/);
  t.ok(errors.length >= 3, `kind tcp: ${errors.length} "Error accepting a client connection" lines, e.g. ${errors[0]}`);
});

t.test('kind redis over TLS with AUTH from a password file: up and silent in the log; a wrong password or none is down with Redis\'s reason; the password shows nowhere', async (t) => {
  if (!need(t, redisMissing())) return;
  const certs = testCerts();
  const password = 'correct horse 7f3a';
  const redis = await startRedis(t, { tls: { ...certs.pair('backend.test'), ca: certs.file('ca.crt') }, password });
  const dir = scratch(t);
  writeFileSync(path.join(dir, 'good.pw'), `${password}\n`, { mode: 0o600 });
  writeFileSync(path.join(dir, 'wrong.pw'), 'wrong horse 0000\n', { mode: 0o600 });
  const address = `127.0.0.1:${redis.port}`;
  const logBefore = redis.log().length;
  const health = { ...FAST, timeout: '1s', kind: 'redis' };
  const lb = await lbFor(t, {
    admin: { listen: '127.0.0.1:0' },
    listeners: [
      {
        name: 'pass',
        bind: '127.0.0.1:0',
        pool: 'good',
        tls: { mode: 'passthrough' },
        routes: [
          { sni: 'wrong.test', pool: 'wrong' },
          { sni: 'none.test', pool: 'none' },
        ],
      },
    ],
    pools: [
      { name: 'good', health: { ...health, redis: { password_file: path.join(dir, 'good.pw') } }, servers: [{ name: 'good', address }] },
      { name: 'wrong', health: { ...health, redis: { password_file: path.join(dir, 'wrong.pw') } }, servers: [{ name: 'wrong', address }] },
      { name: 'none', health, servers: [{ name: 'none', address }] },
    ],
  });
  await passingProbes(serverOf(lb, 'good', 'good'), 5, 10_000);
  await waitFor(() => !serverOf(lb, 'wrong', 'wrong').up && !serverOf(lb, 'none', 'none').up, 5_000, 'wrong and none marked down');
  t.equal(downLines(lb, 'wrong')[0]?.reason, 'redis AUTH: WRONGPASS invalid username-password pair or user is disabled.');
  t.equal(downLines(lb, 'none')[0]?.reason, 'redis PING: NOAUTH Authentication required.');
  const statusText = await (await fetch(`http://127.0.0.1:${adminPort(lb)}/status`)).text();
  const doc = JSON.parse(statusText) as StatusDoc;
  t.equal(doc.pools.find((p) => p.name === 'wrong')?.servers[0]?.state, 'down', '/status agrees');
  await quiesce(lb, 1_000);
  await lb.stop();
  for (const secret of [password, 'wrong horse 0000']) {
    t.notOk(JSON.stringify(lb.lines).includes(secret), 'no password in l4lb\'s log');
    t.notOk(statusText.includes(secret), 'none in /status');
  }
  const logged = redis.log().slice(logBefore);
  t.same(troubleIn(logged, REDIS_TROUBLE), [], 'no warning, no failed handshake in Redis\'s log');
  t.same(troubleIn(logged, /Reading from client|Client closed connection/), [], 'QUIT: Redis closed each connection itself, nothing to say about it');
});
