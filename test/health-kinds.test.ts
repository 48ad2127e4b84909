/**
 * Health probe kinds http and postgres, and `health.port`, on real loopback
 * sockets: a Node HTTP server stands in for Patroni's REST API, small Node
 * servers for PostgreSQL's startup replies (an MD5 prompt, "starting up",
 * trust with ReadyForQuery, silence, garbage), and, when it is installed, a
 * real PostgreSQL whose log must stay quiet while it is probed.
 *
 * Deadlines are functional with wide margins; measured timings are printed
 * as comments.
 */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import t, { type Test } from 'tap';
import { parse } from 'yaml';
import type { StatusDoc } from '../src/admin/status.js';
import { POOL_FIELDS, compareFields, type PoolJson } from '../src/config/diff-fields.js';
import { buildModel } from '../src/config/load.js';
import { modelToJson, redactModel } from '../src/config/model-json.js';
import { planProbe, probe, type ProbeOptions } from '../src/health/probe.js';
import { MSG_AUTHENTICATION, MSG_READY_FOR_QUERY, errorResponse } from '../src/protocols/postgres/messages.js';
import type { Server } from '../src/pool.js';
import { accessLine, adminPort, backendFor, clientFor, lbFor } from './helpers/lb.js';
import { closed, readLine, startBackend, tally, waitFor, whoAnswers, type Running } from './helpers/net.js';
import { postgresMissing, psql, startPostgres } from './helpers/postgres.js';
import { need } from './helpers/requirements.js';

// ---------------------------------------------------------------------------
// Helpers

/** Fast probes: every 200ms, a probe may take 500ms, down after 2 failures, up after 2. */
const FAST = { interval: '200ms', timeout: '500ms', fall: 2, rise: 2 } as const;

function serverOf(lb: Running, name: string): Server {
  const s = lb.app.pools.get('p')?.server(name);
  if (s === undefined) throw new Error(`no server ${name}`);
  return s;
}

function downLines(lb: Running, server: string): Array<Record<string, unknown>> {
  return lb.lines.filter((l) => l.msg === 'server down' && l.server === server);
}

/** Polls until `cond`; returns the elapsed ms. */
async function elapsedUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const started = Date.now();
  await waitFor(cond, timeoutMs, what);
  return Date.now() - started;
}

function listen(server: net.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** A backend on `host` (127.0.0.X) that writes its name on connect, then echoes. */
async function namedOn(t: Test, host: string, name: string): Promise<{ address: string; open: Set<net.Socket> }> {
  const open = new Set<net.Socket>();
  const server = net.createServer((s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
    s.write(`${name}\n`);
    s.pipe(s);
  });
  await listen(server, host, 0);
  t.teardown(() => {
    for (const s of open) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { address: `${host}:${(server.address() as net.AddressInfo).port}`, open };
}

interface ApiRequest {
  readonly on: string;
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
}

/**
 * Patroni's REST API as far as l4lb sees it: one port, on 127.0.0.1 and
 * 127.0.0.2 (the hosts of two servers), `GET /primary` answered with the
 * status `primary[host]`.
 */
async function restApi(t: Test, primary: Record<string, number>): Promise<{ port: number; requests: ApiRequest[] }> {
  const requests: ApiRequest[] = [];
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const on = req.socket.localAddress ?? '';
    requests.push({ on, method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    res.writeHead(req.url === '/primary' ? (primary[on] ?? 404) : 404, { 'content-type': 'application/json' });
    res.end('{"role": "stand-in"}');
  };
  for (let attempt = 0; ; attempt++) {
    const first = http.createServer(handler);
    const second = http.createServer(handler);
    await listen(first, '127.0.0.1', 0);
    const port = (first.address() as net.AddressInfo).port;
    try {
      await listen(second, '127.0.0.2', port);
    } catch (err) {
      await new Promise<void>((r) => first.close(() => r()));
      if (attempt < 5) continue;
      throw err;
    }
    for (const s of [first, second]) {
      t.teardown(() => {
        s.closeAllConnections();
        return new Promise<void>((r) => s.close(() => r()));
      });
    }
    return { port, requests };
  }
}

/** One connection to a PostgreSQL stand-in: what the probe sent and how it left. */
interface PgSession {
  /** The StartupMessage's protocol code and parameters. */
  code: number;
  params: Record<string, string>;
  /** Bytes after the StartupMessage. */
  after: Buffer;
  /** The probe closed with a FIN. */
  fin: boolean;
  /** The probe reset the connection. */
  reset: boolean;
}

/** A PostgreSQL stand-in: reads the StartupMessage, then `answer` replies (or not). */
async function pgStandIn(t: Test, answer: (socket: net.Socket) => void): Promise<{ port: number; address: string; sessions: PgSession[] }> {
  const sessions: PgSession[] = [];
  const b = await backendFor(
    t,
    startBackend((s) => {
      let buf = Buffer.alloc(0);
      let session: PgSession | undefined;
      s.on('error', (err: NodeJS.ErrnoException) => {
        if (session !== undefined && err.code === 'ECONNRESET') session.reset = true;
      });
      s.on('end', () => {
        if (session !== undefined) session.fin = true;
        s.end();
      });
      s.on('data', (d: Buffer) => {
        if (session !== undefined) {
          session.after = Buffer.concat([session.after, d]);
          return;
        }
        buf = Buffer.concat([buf, d]);
        if (buf.length < 4 || buf.length < buf.readInt32BE(0)) return;
        const parts = buf.toString('utf8', 8, buf.readInt32BE(0) - 1).split('\0');
        const params: Record<string, string> = {};
        for (let i = 0; i + 1 < parts.length; i += 2) params[parts[i]!] = parts[i + 1]!;
        session = { code: buf.readInt32BE(4), params, after: buf.subarray(buf.readInt32BE(0)), fin: false, reset: false };
        sessions.push(session);
        answer(s);
      });
    }, { allowHalfOpen: true }),
  );
  return { port: b.port, address: b.address, sessions };
}

/** A message with a type byte: type, Int32 length, body. */
function message(type: number, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type;
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

const MD5_REQUEST = message(MSG_AUTHENTICATION, Buffer.concat([int32(5), Buffer.from([1, 2, 3, 4])]));
const AUTH_OK = message(MSG_AUTHENTICATION, int32(0));
const READY = message(MSG_READY_FOR_QUERY, Buffer.from('I'));
const PARAMETER_STATUS = message(0x53, Buffer.from('server_version\u000017.2\u0000'));
const BACKEND_KEY = message(0x4b, Buffer.concat([int32(4242), int32(7)]));
const STARTING_UP = errorResponse('FATAL', '57P03', 'the database system is starting up');

function pgOpts(o: Partial<ProbeOptions> = {}): ProbeOptions {
  return { timeoutMs: 1_000, send: null, expect: null, proxyHeader: null, kind: 'postgres', postgres: { user: 'l4lb_probe', database: 'app' }, ...o };
}

function httpOpts(port: number, o: Partial<ProbeOptions> = {}): ProbeOptions {
  return {
    timeoutMs: 1_000,
    send: null,
    expect: null,
    proxyHeader: null,
    kind: 'http',
    http: { method: 'GET', path: '/primary', expectStatus: [200], host: `127.0.0.1:${port}` },
    ...o,
  };
}

// ---------------------------------------------------------------------------
// Configuration seen from outside: the README's example, the reload preview

t.test("the README's Patroni example loads: writer and reader pools probed on 8008", async (t) => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const block = /```yaml\n(pools:\n  - name: pg-writer[\s\S]*?)```/.exec(readme);
  t.ok(block, 'the example is in the README');
  const raw = parse(block![1]!) as { pools: unknown[] };
  const model = await buildModel({ listeners: [{ name: 'pg', bind: '127.0.0.1:0', pool: 'pg-writer' }], pools: raw.pools });
  t.match(model.pools[0]!.health, { kind: 'http', port: 8008, http: { method: 'GET', path: '/primary', expectStatus: [200] } });
  t.match(model.pools[1]!.health, { kind: 'http', port: 8008, http: { path: '/replica' } });
});

t.test('the reload preview names a changed kind, port, request and login', async (t) => {
  const pool = (health: Record<string, unknown>) => ({
    listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: '127.0.0.1:5432' }], health }],
  });
  const before = modelToJson(await buildModel(pool({ kind: 'tcp' }))).pools[0]!;
  const http = modelToJson(await buildModel(pool({ kind: 'http', port: 8008, http: { path: '/primary', host: 'db' } }))).pools[0]!;
  const pg = modelToJson(await buildModel(pool({ kind: 'postgres', postgres: { database: 'postgres' } }))).pools[0]!;
  const fields = (a: typeof before, b: typeof before) => compareFields(a, b, POOL_FIELDS).map((c) => `${c.field}: ${c.from} → ${c.to}`);
  t.same(fields(before, http), ['health.kind: tcp → http', "health.port: the server's → 8008", 'health.http: none → GET /primary [200] Host: db']);
  t.same(fields(http, pg), [
    'health.kind: http → postgres',
    "health.port: 8008 → the server's",
    'health.http: GET /primary [200] Host: db → none',
    'health.postgres: none → user l4lb_probe, database postgres',
  ]);
});

t.test('the reload preview names a changed mysql user and redis password file, a changed password by its MAC only', async (t) => {
  const dir = t.testdir({ 'a.pw': 'first secret\n', 'b.pw': 'second secret\n' });
  const pool = (health: Record<string, unknown>) => ({
    listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: '127.0.0.1:6379' }], health }],
  });
  const key = Buffer.alloc(32, 1);
  const json = async (health: Record<string, unknown>) => redactModel(await buildModel(pool(health)), key).pools[0]!;
  const fields = (a: PoolJson, b: PoolJson) => compareFields(a, b, POOL_FIELDS).map((c) => `${c.field}: ${c.from} → ${c.to}`);
  const anon = await json({ kind: 'mysql' });
  const user = await json({ kind: 'mysql', mysql: { user: 'l4lb_probe' } });
  t.same(fields(anon, user), ['health.mysql: greeting only → user l4lb_probe']);
  const a = await json({ kind: 'redis', redis: { password_file: `${dir}/a.pw` } });
  const b = await json({ kind: 'redis', redis: { password_file: `${dir}/b.pw` } });
  const changes = fields(a, b);
  t.equal(changes.length, 1);
  t.match(changes[0], /^health\.redis: AUTH from \S+a\.pw <redacted [0-9a-f]{8}> → AUTH from \S+b\.pw <redacted [0-9a-f]{8}>$/);
  t.notOk(changes[0]!.includes('secret'), 'no password in the preview');
  t.same(fields(user, a), ['health.kind: mysql → redis', 'health.mysql: user l4lb_probe → none', `health.redis: none → AUTH from ${dir}/a.pw ${/<redacted [0-9a-f]{8}>/.exec(changes[0]!)![0]}`]);
});

// ---------------------------------------------------------------------------
// http through l4lb

t.test('http on health.port, Patroni style: only the leader is up; when the roles flip the old leader goes down (its client closed) and the new one up', async (t) => {
  const primary: Record<string, number> = { '127.0.0.1': 200, '127.0.0.2': 503 };
  const api = await restApi(t, primary);
  const a = await namedOn(t, '127.0.0.1', 'a');
  const b = await namedOn(t, '127.0.0.2', 'b');
  const lb = await lbFor(t, {
    log: { level: 'info', access: true },
    admin: { listen: '127.0.0.1:0' },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [
      {
        name: 'p',
        balance: 'round_robin',
        on_server_down: 'close',
        health: { ...FAST, kind: 'http', port: api.port, http: { path: '/primary' } },
        servers: [
          { name: 'a', address: a.address },
          { name: 'b', address: b.address },
        ],
      },
    ],
  });
  const sa = serverOf(lb, 'a');
  const sb = serverOf(lb, 'b');
  await waitFor(() => !sb.up, 3_000, 'b (a replica: 503) marked down');
  t.ok(sa.up, 'a (the leader: 200) is up');
  t.equal(downLines(lb, 'b')[0]?.reason, 'http status 503 from GET /primary', 'reason names the status and the path');
  t.same(tally(await Promise.all([1, 2, 3, 4].map(() => whoAnswers(lb.port())))), { a: 4 }, 'clients go to the leader only');

  const probeRequest = api.requests.find((r) => r.on === '127.0.0.1')!;
  t.match(probeRequest, { method: 'GET', url: '/primary' }, 'the probe asked for /primary');
  t.equal(probeRequest.headers.host, `127.0.0.1:${api.port}`, "Host: the server's host, and the probed port");
  t.equal(probeRequest.headers['user-agent'], 'l4lb-health');
  t.equal(probeRequest.headers.connection, 'close');
  t.notOk(api.requests.some((r) => r.on !== '127.0.0.1' && r.on !== '127.0.0.2'), 'each server probed on its own host');

  const held = await clientFor(t, lb.port());
  t.equal(await readLine(held), 'a', 'a client session on the leader');

  // Failover: b is promoted, a demoted.
  const flippedAt = Date.now();
  primary['127.0.0.1'] = 503;
  primary['127.0.0.2'] = 200;
  const closedAfter = await closed(held, 3_000);
  await waitFor(() => !sa.up && sb.up, 3_000, 'a down and b up');
  t.comment(`held client closed ${closedAfter}ms after the flip; a down, b up after ${Date.now() - flippedAt}ms (interval 200ms, fall 2, rise 2)`);
  t.equal(downLines(lb, 'a')[0]?.reason, 'http status 503 from GET /primary');
  t.match(await accessLine(lb, held.lport, 2_000), { server: 'a', termination: 'server_close' }, 'closed by on_server_down: close');
  t.same(tally(await Promise.all([1, 2, 3, 4].map(() => whoAnswers(lb.port())))), { b: 4 }, 'new clients go to the new leader');

  const status = (await (await fetch(`http://127.0.0.1:${adminPort(lb)}/status`)).json()) as StatusDoc;
  const states = Object.fromEntries(status.pools[0]!.servers.map((s) => [s.name, s.state]));
  t.same(states, { a: 'down', b: 'up' }, '/status agrees');
  t.equal(status.pools[0]!.servers[0]!.last_check?.reason, 'http status 503 from GET /primary', "/status shows a's last check");
});

// ---------------------------------------------------------------------------
// http: one probe

t.test('http probe: request line and headers from the model; a status in expect_status is up, another fails naming it', async (t) => {
  const seen: string[] = [];
  const api = await backendFor(
    t,
    startBackend((s) =>
      s.once('data', (d: Buffer) => {
        seen.push(d.toString('latin1'));
        s.end('HTTP/1.1 204 No Content\r\n\r\n');
      }),
    ),
  );
  const model = await buildModel({
    listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: 'localhost:5432' }], health: { kind: 'http', port: api.port, http: { method: 'HEAD', path: '/replica?lag=16MB', expect_status: [200, 204] } } }],
  });
  const plan = planProbe(model.pools[0]!.health, { host: '127.0.0.1', port: 5432, text: 'localhost:5432' });
  t.same(plan.target, { host: '127.0.0.1', port: api.port }, 'health.port replaces the server port');
  const r = await probe(plan.target, { ...plan.options, timeoutMs: 1_000, proxyHeader: null });
  t.same({ ok: r.ok, reason: r.reason }, { ok: true, reason: '' }, '204 is in expect_status');
  t.equal(
    seen[0],
    `HEAD /replica?lag=16MB HTTP/1.1\r\nHost: localhost:${api.port}\r\nUser-Agent: l4lb-health\r\nAccept: */*\r\nConnection: close\r\n\r\n`,
    'the request as sent; Host is the name as written, not the address it resolved to',
  );
  const wrong = await probe(plan.target, { ...plan.options, http: { ...plan.options.http!, expectStatus: [200] }, timeoutMs: 1_000, proxyHeader: null });
  t.same({ ok: wrong.ok, reason: wrong.reason }, { ok: false, reason: 'http status 204 from HEAD /replica?lag=16MB' });
});

t.test('http probe: silence fails within the timeout; garbage, an endless line or an early close fail with a clear reason', async (t) => {
  const silent = await backendFor(t, startBackend((s) => s.resume()));
  const started = Date.now();
  const r = await probe({ host: '127.0.0.1', port: silent.port }, httpOpts(silent.port, { timeoutMs: 300 }));
  const took = Date.now() - started;
  t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'timeout after 300ms' });
  t.ok(took >= 280 && took < 1_000, `failed after about the timeout (${took}ms)`);
  await waitFor(() => silent.open.size === 0, 1_000, 'the probe socket closed at the server');

  const garbage = await backendFor(t, startBackend((s) => s.once('data', () => s.write('garbage\r\nmore'))));
  const g = await probe({ host: '127.0.0.1', port: garbage.port }, httpOpts(garbage.port));
  t.same({ ok: g.ok, reason: g.reason }, { ok: false, reason: 'malformed http status line from GET /primary: got "garbage"' });

  const noCode = await backendFor(t, startBackend((s) => s.once('data', () => s.write('HTTP/1.1 OK\r\n'))));
  const n = await probe({ host: '127.0.0.1', port: noCode.port }, httpOpts(noCode.port));
  t.same({ ok: n.ok, reason: n.reason }, { ok: false, reason: 'malformed http status line from GET /primary: got "HTTP/1.1 OK"' });

  let sent = 0;
  const endless = await backendFor(
    t,
    startBackend((s) =>
      s.once('data', () => {
        const chunk = Buffer.alloc(1024, 'x');
        const pump = (): void => {
          while (!s.destroyed && sent < 1_000_000 && s.write(chunk)) sent += chunk.length;
        };
        s.on('drain', pump);
        pump();
      }),
    ),
  );
  const e = await probe({ host: '127.0.0.1', port: endless.port }, httpOpts(endless.port));
  t.equal(e.ok, false);
  t.match(e.reason, /^no http status line in the first 4096 bytes: got "x{32}"$/, 'bounded read');

  const closes = await backendFor(t, startBackend((s) => s.once('data', () => s.end('HTTP/1.1 2'))));
  const c = await probe({ host: '127.0.0.1', port: closes.port }, httpOpts(closes.port));
  t.same({ ok: c.ok, reason: c.reason }, { ok: false, reason: 'connection closed before the http status line from GET /primary: got "HTTP/1.1 2"' });
});

t.test('http probe: the PROXY header goes first, then the request', async (t) => {
  const got: Buffer[] = [];
  const api = await backendFor(
    t,
    startBackend((s) =>
      s.on('data', (d: Buffer) => {
        got.push(d);
        if (Buffer.concat(got).includes('\r\n\r\n')) s.end('HTTP/1.0 200 OK\r\n\r\n');
      }),
    ),
  );
  const r = await probe(
    { host: '127.0.0.1', port: api.port },
    httpOpts(api.port, { proxyHeader: (sock) => Buffer.from(`PROXY TCP4 127.0.0.1 127.0.0.1 ${sock.localPort} ${api.port}\r\n`) }),
  );
  t.equal(r.ok, true, r.reason);
  t.match(Buffer.concat(got).toString(), /^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ \d+\r\nGET \/primary HTTP\/1\.1\r\n/);
});

// ---------------------------------------------------------------------------
// postgres: one probe

t.test('postgres probe against stand-ins', async (t) => {
  t.test('a password request (MD5) is up; the StartupMessage names the role, database and application; the probe leaves with a FIN', async (t) => {
    const pg = await pgStandIn(t, (s) => s.write(MD5_REQUEST));
    const r = await probe({ host: '127.0.0.1', port: pg.port }, pgOpts());
    t.same({ ok: r.ok, reason: r.reason }, { ok: true, reason: '' });
    await waitFor(() => pg.sessions[0]?.fin === true || pg.sessions[0]?.reset === true, 1_000, 'the probe left');
    t.match(pg.sessions[0], { code: 3 << 16, params: { user: 'l4lb_probe', database: 'app', application_name: 'l4lb-health' }, fin: true, reset: false });
    t.equal(pg.sessions[0]!.after.length, 0, 'no password sent, nothing else either');
  });

  t.test('57P03 "the database system is starting up" is down with the message', async (t) => {
    const pg = await pgStandIn(t, (s) => s.end(STARTING_UP));
    const r = await probe({ host: '127.0.0.1', port: pg.port }, pgOpts());
    t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'postgres 57P03: the database system is starting up' });
  });

  t.test('any other error (no such role, 28000) shows a live server: up', async (t) => {
    const pg = await pgStandIn(t, (s) => s.end(errorResponse('FATAL', '28000', 'role "l4lb_probe" does not exist')));
    const r = await probe({ host: '127.0.0.1', port: pg.port }, pgOpts());
    t.same({ ok: r.ok, reason: r.reason }, { ok: true, reason: '' });
  });

  t.test('trust: AuthenticationOk, then the probe reads to ReadyForQuery and sends Terminate before its FIN', async (t) => {
    // Split across writes, as a server may send them.
    const pg = await pgStandIn(t, (s) => {
      s.write(Buffer.concat([AUTH_OK, PARAMETER_STATUS.subarray(0, 7)]));
      setTimeout(() => s.write(Buffer.concat([PARAMETER_STATUS.subarray(7), BACKEND_KEY, READY])), 20);
    });
    const r = await probe({ host: '127.0.0.1', port: pg.port }, pgOpts());
    t.same({ ok: r.ok, reason: r.reason }, { ok: true, reason: '' });
    // The probe's socket is released only once the server side closed: the stand-in has seen everything by now.
    const s = pg.sessions[0]!;
    t.same([...s.after], [0x58, 0, 0, 0, 4], 'Terminate received');
    t.ok(s.fin && !s.reset, 'then a FIN, no reset');
  });

  t.test('silence fails within the timeout', async (t) => {
    const pg = await pgStandIn(t, () => {});
    const started = Date.now();
    const r = await probe({ host: '127.0.0.1', port: pg.port }, pgOpts({ timeoutMs: 300 }));
    t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'timeout after 300ms' });
    t.ok(Date.now() - started < 1_000, `within the timeout (${Date.now() - started}ms)`);
  });

  t.test('not PostgreSQL: garbage, an absurd length, a close mid-message, an unexpected message', async (t) => {
    const cases: Array<[string, Buffer, RegExp]> = [
      ['an HTTP answer', Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'), /^not a postgres message \(type 'H', length 1414811695\): got "HTTP\/1.1 400 Bad Request"$/],
      ['a length over 64 KiB', message(MSG_AUTHENTICATION, Buffer.alloc(0)).fill(0x7f, 1, 2), /^not a postgres message \(type 'R', length \d+\)/],
      ['half a message, then a close', MD5_REQUEST.subarray(0, 7), /^connection closed before a complete postgres message: got "R/],
      ['a ReadyForQuery first', READY, /^unexpected postgres message 'Z' before authentication$/],
    ];
    for (const [what, reply, reason] of cases) {
      const pg = await pgStandIn(t, (s) => s.end(reply));
      const r = await probe({ host: '127.0.0.1', port: pg.port }, pgOpts());
      t.equal(r.ok, false, what);
      t.match(r.reason, reason, `${what}: ${r.reason}`);
    }
  });
});

// ---------------------------------------------------------------------------
// postgres through l4lb

t.test('postgres through l4lb: a server starting up is down with the reason logged, one asking for a password is up', async (t) => {
  const ready = await pgStandIn(t, (s) => s.write(MD5_REQUEST));
  const starting = await pgStandIn(t, (s) => s.end(STARTING_UP));
  const lb = await lbFor(t, {
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [
      {
        name: 'p',
        health: { ...FAST, kind: 'postgres', postgres: { database: 'postgres' } },
        servers: [
          { name: 'ready', address: ready.address },
          { name: 'starting', address: starting.address },
        ],
      },
    ],
  });
  const downMs = await elapsedUntil(() => !serverOf(lb, 'starting').up, 3_000, 'starting marked down');
  t.comment(`down after ${downMs}ms`);
  t.equal(downLines(lb, 'starting')[0]?.reason, 'postgres 57P03: the database system is starting up');
  await waitFor(() => ready.sessions.length >= 3, 3_000, 'several probes of the ready server');
  t.ok(serverOf(lb, 'ready').up, 'the server asking for a password stays up');
  t.match(ready.sessions[0]?.params, { user: 'l4lb_probe', database: 'postgres' }, 'default user, configured database');
  t.equal(downLines(lb, 'ready').length, 0);
});

// ---------------------------------------------------------------------------
// A real PostgreSQL

t.test('a real PostgreSQL probed with kind postgres is up and logs nothing about the probes (trust, and a SCRAM prompt)', async (t) => {
  if (!need(t, postgresMissing())) return;
  const cluster = await startPostgres(t, {
    hba: ['local all all trust', 'host all l4lb_probe 127.0.0.1/32 trust', 'host all all 127.0.0.1/32 scram-sha-256'],
  });
  // Over the Unix socket: TCP asks for a password from everyone but the probe role.
  const created = await psql({ host: cluster.dataDir, port: cluster.port }, ['-c', 'CREATE ROLE l4lb_probe LOGIN']);
  t.equal(created.status, 0, `role created ${created.stderr}`);
  const logBefore = cluster.log().length;

  const lb = await lbFor(t, {
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [
      // The same server twice: once as the probe role (trust: AuthenticationOk, ReadyForQuery, Terminate),
      // once as postgres (a SCRAM prompt the probe leaves).
      { name: 'p', health: { ...FAST, interval: '100ms', kind: 'postgres', postgres: { database: 'postgres' } }, servers: [{ name: 'trust', address: `127.0.0.1:${cluster.port}` }] },
      { name: 'q', health: { ...FAST, interval: '100ms', kind: 'postgres', postgres: { user: 'postgres' } }, servers: [{ name: 'scram', address: `127.0.0.1:${cluster.port}` }] },
    ],
  });
  const trust = serverOf(lb, 'trust');
  const scram = lb.app.pools.get('q')!.server('scram')!;
  const seen = { trust: new Set<number>(), scram: new Set<number>() };
  await waitFor(
    () => {
      for (const [name, s] of [['trust', trust], ['scram', scram]] as const) {
        const last = s.health.last;
        if (last !== null && last.ok) seen[name].add(last.at);
        if (last !== null && !last.ok) throw new Error(`${name}: a probe failed: ${last.reason}`);
      }
      return seen.trust.size >= 5 && seen.scram.size >= 5;
    },
    5_000,
    'five passing probes of each',
  );
  t.ok(trust.up && scram.up, 'both up');
  t.equal(lb.lines.filter((l) => l.msg === 'server down').length, 0, 'never down');
  await lb.stop();
  // Give the last backends time to exit and write anything they would write.
  await new Promise((r) => setTimeout(r, 300));
  const logged = cluster.log().slice(logBefore);
  const noisy = logged.split('\n').filter((l) => /\b(FATAL|ERROR|WARNING|PANIC)\b|could not receive|unexpected EOF|connection|l4lb/i.test(l));
  t.same(noisy, [], `the server logged nothing about the probes (${logged.split('\n').filter(Boolean).length} new log lines)`);
});
