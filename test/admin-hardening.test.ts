/**
 * The admin server under an outside review's attacks (issue 11, items 3 and
 * 8), on real loopback sockets:
 *
 * - `GET /config` needs the bearer token; probe payloads come back redacted
 *   (a MAC keyed by the token, never the bytes, their hex or a plain hash)
 *   unless asked for with `?reveal=secrets`, which needs the token too.
 * - The DNS-rebinding guard: a Host that is not an IP literal, `localhost`
 *   or the listen host gets 421 on every endpoint; no Host is served.
 * - Slow clients cannot lock the admin server out: 64 slowloris clients from
 *   one address, or from 64 loopback addresses (reconnecting as soon as they
 *   are dropped), and `GET /healthz` from 127.0.0.1 still answers (real curl
 *   when installed, and Node's client); no socket is leaked, nothing crashes.
 * - The rules behind that: per-client cap, a request in flight is never
 *   evicted, all-busy refuses the newcomer, reserved local slots.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { AdminServer, clientKey, type AdminServerOptions } from '../src/admin/server.js';
import { hostAllowed, hostOf } from '../src/admin/host-guard.js';
import { redactBytes, redactionKey } from '../src/config/model-json.js';
import { closedWithin, connect, namedBackend, readLine, sleep, waitFor, type Running } from './helpers/net.js';
import { adminPortOf, cliFor } from './helpers/cli.js';
import { adminPort, backendFor, lbFor } from './helpers/lb.js';
import { silentLogger } from './helpers/logs.js';

const TOKEN = 'hardening-token-7c41e9a0';
const PAYLOAD = 'AUTH s3cr3t\r\n';

function tokenFile(t: Test, content = `${TOKEN}\n`): string {
  return join(t.testdir({ 'admin.token': content }), 'admin.token');
}

function config(admin: Record<string, unknown>, backend: string, health: Record<string, unknown> = { interval: '1h' }) {
  return {
    admin: { listen: '127.0.0.1:0', ...admin },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'round_robin', servers: [{ name: 'e1', address: backend }], health }],
  };
}

interface Reply {
  readonly status: number;
  readonly body: string;
  readonly headers: http.IncomingHttpHeaders;
}

/**
 * One HTTP/1.1 request with Node's client, Host as given (`null`: no Host
 * header at all), on a fresh connection.
 */
function request(
  port: number,
  path: string,
  options: { host?: string | null; method?: string; headers?: Record<string, string>; body?: string; localAddress?: string; timeoutMs?: number } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...options.headers };
    if (typeof options.host === 'string') headers.Host = options.host;
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: options.method ?? 'GET',
        headers,
        setHost: options.host !== null,
        localAddress: options.localAddress,
        agent: false,
        timeout: options.timeoutMs ?? 5_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer to ${path} within ${options.timeoutMs ?? 5_000}ms`)));
    req.on('error', reject);
    req.end(options.body);
  });
}

const auth = (token = TOKEN): Record<string, string> => ({ Authorization: `Bearer ${token}` });

/** Writes the rest of a request on `s`; resolves with the status line of the answer, rejects when `s` closes first. */
async function finishRequest(s: net.Socket, rest: string): Promise<string> {
  const statusLine = readLine(s, 10_000);
  s.write(rest);
  return (await statusLine).replace(/\r$/, '');
}

/** A socket that has sent an incomplete request head; `finish()` completes it and resolves with the status line. */
async function pending(port: number, localAddress?: string): Promise<net.Socket & { finish(): Promise<string> }> {
  const s = await connect(port, localAddress);
  s.on('error', () => {});
  s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  return Object.assign(s, { finish: () => finishRequest(s, '\r\n') });
}

// ---------------------------------------------------------------------------
// Slow clients

interface Horde {
  /** Sockets open on the client side now. */
  open(): number;
  /** Times a slow socket was closed (by the server) so far. */
  closes(): number;
  stop(): void;
}

/**
 * Slowloris clients: each sends a request head one header every 500 ms and
 * never finishes it. With `reconnect`, a closed one comes straight back
 * (bounded by `maxReconnects`), as real slowloris tools do.
 */
function slowloris(t: Test, port: number, from: readonly string[], options: { reconnect?: boolean; maxReconnects?: number } = {}): Horde {
  const sockets = new Set<net.Socket>();
  let stopped = false;
  let closes = 0;
  let reconnects = 0;
  const drip = setInterval(() => {
    for (const s of sockets) if (s.writable && !s.connecting) s.write('X-Slow: 1\r\n');
  }, 500);
  const open = (localAddress: string): void => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    sockets.add(s);
    s.on('error', () => {});
    s.on('connect', () => s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n'));
    s.on('close', () => {
      sockets.delete(s);
      if (stopped) return;
      closes++;
      if (options.reconnect === true && reconnects < (options.maxReconnects ?? 5_000)) {
        reconnects++;
        open(localAddress);
      }
    });
  };
  for (const a of from) open(a);
  const stop = (): void => {
    stopped = true;
    clearInterval(drip);
    for (const s of sockets) s.destroy();
  };
  t.teardown(stop);
  return { open: () => [...sockets].filter((s) => !s.connecting && !s.destroyed).length, closes: () => closes, stop };
}

const CURL = (() => {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    try {
      if (readdirSync(dir).includes('curl')) return join(dir, 'curl');
    } catch {
      // not a directory
    }
  }
  return null;
})();

/** `GET /healthz` from 127.0.0.1 with real curl (when installed), a 5 s deadline. */
function curlHealthz(port: number): Promise<{ ok: boolean; out: string; ms: number }> {
  const started = Date.now();
  if (CURL === null) {
    return request(port, '/healthz').then(
      (r) => ({ ok: r.status === 200 && r.body === 'ok', out: `${r.status} ${r.body} (Node's http client: curl is not installed)`, ms: Date.now() - started }),
      (err: Error) => ({ ok: false, out: err.message, ms: Date.now() - started }),
    );
  }
  return new Promise((resolve) => {
    execFile(CURL, ['-sS', '-m', '5', '--interface', '127.0.0.1', '-w', ' %{http_code}', `http://127.0.0.1:${port}/healthz`], (err, stdout, stderr) => {
      resolve({ ok: err === null && stdout === 'ok 200', out: `${stdout}${stderr}`.trim(), ms: Date.now() - started });
    });
  });
}

/** Both clients: curl (or Node, without curl) and Node's own http client, 5 s deadline each. */
async function healthzAnswers(t: Test, port: number, what: string): Promise<void> {
  const c = await curlHealthz(port);
  t.ok(c.ok, `${what}: ${CURL === null ? 'Node' : 'curl'} GET /healthz answers (${c.out}, ${c.ms}ms)`);
  const started = Date.now();
  const r = await request(port, '/healthz', { localAddress: '127.0.0.1' }).catch((err: Error) => ({ status: 0, body: err.message }));
  t.same([r.status, r.body], [200, 'ok'], `${what}: Node GET /healthz answers (${Date.now() - started}ms)`);
}

function fdCount(pid: number | 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

// ---------------------------------------------------------------------------
// GET /config

t.test('GET /config needs the bearer token: 401 without it or with a wrong one, 403 when no token_file is configured', async (t) => {
  const backend = (await backendFor(t)).address;
  const lb = await lbFor(t, config({ token_file: tokenFile(t) }, backend));
  const port = adminPort(lb);
  const none = await request(port, '/config');
  t.equal(none.status, 401, 'no token: 401');
  t.equal(none.headers['www-authenticate'], 'Bearer realm="l4lb"');
  t.match(JSON.parse(none.body), { error: /missing bearer token/ });
  t.notMatch(none.body, /pools|listeners/, 'nothing of the configuration');
  t.equal((await request(port, '/config', { headers: auth('wrong') })).status, 401, 'wrong token: 401');
  t.equal((await request(port, '/config?reveal=secrets', { headers: auth('wrong') })).status, 401, 'reveal with a wrong token: 401');
  t.equal((await request(port, '/config', { method: 'HEAD' })).status, 401, 'HEAD too');
  t.equal((await request(port, '/config', { headers: auth() })).status, 200, 'the token: 200');

  const open = await lbFor(t, config({}, backend));
  for (const headers of [{}, auth()]) {
    const r = await request(adminPort(open), '/config', { headers });
    t.equal(r.status, 403, 'no token_file: 403 whatever is sent');
    t.match(JSON.parse(r.body), { error: /no admin\.token_file is configured/ });
  }
  t.equal((await request(adminPort(open), '/status')).status, 200, '/status stays open');
  t.equal((await request(adminPort(open), '/metrics')).status, 200, '/metrics stays open');
  t.equal((await request(adminPort(open), '/')).status, 200, 'the page stays open');
});

t.test('GET /config redacts probe payloads: neither the bytes, their hex, nor a plain hash of them is served', async (t) => {
  const backend = (await backendFor(t)).address;
  const lb = await lbFor(t, config({ token_file: tokenFile(t) }, backend, { interval: '1h', send: PAYLOAD, expect: '+OK' }));
  const r = await request(adminPort(lb), '/config', { headers: auth() });
  t.equal(r.status, 200);
  const leaks: Array<[string, string]> = [];
  for (const secret of [PAYLOAD, 's3cr3t', 'AUTH s3cr3t', '+OK']) {
    const b = Buffer.from(secret);
    leaks.push([`"${secret.trim()}"`, secret.trim()], [`hex of "${secret.trim()}"`, b.toString('hex')], [`base64 of "${secret.trim()}"`, b.toString('base64')]);
    for (const alg of ['md5', 'sha1', 'sha256', 'sha512']) {
      leaks.push([`${alg} of "${secret.trim()}"`, createHash(alg).update(b).digest('hex')]);
      leaks.push([`${alg} (base64) of "${secret.trim()}"`, createHash(alg).update(b).digest('base64')]);
    }
  }
  for (const [what, form] of leaks) t.notOk(r.body.toLowerCase().includes(form.toLowerCase()), `no ${what}`, { diagnostic: false });
  const health = (JSON.parse(r.body) as { model: { pools: Array<{ health: { send: unknown; expect: unknown } }> } }).model.pools[0]!.health;
  const key = redactionKey(TOKEN);
  t.same(health.send, redactBytes(Buffer.from(PAYLOAD), key), 'send: an HMAC keyed by the token');
  t.same(health.expect, redactBytes(Buffer.from('+OK'), key));
  t.not((health.send as { mac: string }).mac, redactBytes(Buffer.from(PAYLOAD), redactionKey('another-token')).mac, 'another token gives another MAC');
  t.notMatch(JSON.stringify(lb.lines), /s3cr3t/, 'the payload is never logged');
});

t.test('GET /config?reveal=secrets with the token gives the payloads in hex and is logged; another reveal value is refused', async (t) => {
  const backend = (await backendFor(t)).address;
  const lb = await lbFor(t, config({ token_file: tokenFile(t) }, backend, { interval: '1h', send: PAYLOAD }));
  const port = adminPort(lb);
  const r = await request(port, '/config?reveal=secrets', { headers: auth() });
  t.equal(r.status, 200);
  const doc = JSON.parse(r.body) as { model: { pools: Array<{ health: { send: unknown } }> } };
  t.same(doc.model.pools[0]!.health.send, { hex: Buffer.from(PAYLOAD).toString('hex') }, 'the exact bytes');
  await waitFor(() => lb.lines.some((l) => l.msg === 'admin configuration read with secrets revealed'), 5_000, 'the audit line');
  t.match(lb.lines.find((l) => l.msg === 'admin configuration read with secrets revealed'), { level: 'info', client: '127.0.0.1' });
  for (const q of ['reveal=1', 'reveal=', 'reveal=secrets&reveal=secrets', 'reveal=SECRETS']) {
    const bad = await request(port, `/config?${q}`, { headers: auth() });
    t.equal(bad.status, 400, `?${q}: 400`);
    t.match(JSON.parse(bad.body), { error: 'expected reveal=secrets (or no reveal for redacted payloads)' });
  }
  const other = await request(port, '/config?pretty=1', { headers: auth() });
  t.equal(other.status, 200, 'other parameters are ignored');
  t.notMatch(other.body, Buffer.from(PAYLOAD).toString('hex'), 'and leave the payload redacted');
});

// ---------------------------------------------------------------------------
// The Host guard

t.test('the Host guard serves IP literals, localhost and the listen host; another name gets 421 everywhere and changes nothing; no Host is served', async (t) => {
  const backend = (await backendFor(t)).address;
  const lb = await lbFor(t, config({ token_file: tokenFile(t) }, backend));
  const port = adminPort(lb);
  for (const host of [`127.0.0.1:${port}`, '127.0.0.1', `localhost:${port}`, 'LOCALHOST', 'localhost.', `[::1]:${port}`, '10.1.2.3:80', '[::ffff:127.0.0.1]']) {
    const r = await request(port, '/healthz', { host });
    t.equal(r.status, 200, `Host: ${host} is served`);
  }
  t.equal((await request(port, '/config', { host: null, headers: auth() })).status, 200, 'no Host header at all: served');

  const rebinding = `rebind.attacker.example:${port}`;
  const requests: Array<[string, string, Record<string, string>, string?]> = [
    ['GET', '/healthz', {}],
    ['GET', '/ready', {}],
    ['GET', '/status', {}],
    ['GET', '/metrics', {}],
    ['GET', '/', {}],
    ['GET', '/config', auth()],
    ['GET', '/config?reveal=secrets', auth()],
    ['POST', '/pools/p/servers/e1/state', { ...auth(), 'Content-Type': 'application/json' }, '{"state":"maint"}'],
    ['GET', '/nothing', {}],
  ];
  for (const [method, path, headers, body] of requests) {
    const r = await request(port, path, { host: rebinding, method, headers, body });
    t.equal(r.status, 421, `${method} ${path} with Host ${rebinding}: 421`);
    t.equal(r.headers.connection, 'close');
    t.notMatch(r.body, /"pools"|"listeners"|l4lb_|<html|ok$/, 'nothing served');
  }
  t.match(JSON.parse((await request(port, '/status', { host: rebinding })).body), {
    error: `Host "${rebinding}" is not this admin server; use its IP address, localhost or the listen address`,
  });
  t.equal(lb.app.pools.get('p')!.server('e1')!.admin, 'ready', 'the state call did not run');
  for (const host of ['localhost.attacker.example', '127.0.0.1.nip.io', 'evil', 'localhost:80:80', '127.0.0.1:http', '[::1', ':9900', '127.1']) {
    t.equal((await request(port, '/healthz', { host })).status, 421, `Host: ${host}: 421`);
  }
});

t.test('the Host guard serves the listen host as written too', async (t) => {
  const backend = (await backendFor(t)).address;
  const lb = await lbFor(t, config({}, backend));
  const admin = new AdminServer(lb.app, { listen: { host: '127.0.0.1', port: 0, text: 'Admin.L4lb.test:0' }, tokenFile: null }, silentLogger());
  await admin.start();
  t.teardown(() => admin.close());
  const port = admin.address()!.port;
  for (const host of [`admin.l4lb.test:${port}`, 'ADMIN.l4lb.test', 'admin.l4lb.test.']) t.equal((await request(port, '/healthz', { host })).status, 200, `Host: ${host}`);
  t.equal((await request(port, '/healthz', { host: 'other.l4lb.test' })).status, 421, 'another name: 421');
});

t.test('hostOf and hostAllowed parse Host values strictly', async (t) => {
  t.equal(hostOf('LocalHost:9900'), 'localhost');
  t.equal(hostOf('[::1]:9900'), '::1');
  t.equal(hostOf('::1'), '::1', 'a bare IPv6 literal');
  t.equal(hostOf('example.com.'), 'example.com');
  t.equal(hostOf('a:b'), null, 'a port that is not a number');
  t.equal(hostOf('a:123456'), null);
  t.equal(hostOf('[::1]x'), null);
  const listen = new Set(['lb.internal']);
  t.ok(hostAllowed(undefined, listen), 'no Host');
  t.ok(hostAllowed('', listen), 'an empty Host (allowed by HTTP/1.1 for a target without authority)');
  t.ok(hostAllowed('lb.internal:9900', listen));
  t.notOk(hostAllowed('sub.lb.internal', listen));
  t.notOk(hostAllowed('[]', listen));
});

t.test('clientKey counts IPv4 clients per address and IPv6 clients per /64', async (t) => {
  t.equal(clientKey('127.0.0.5'), '127.0.0.5');
  t.equal(clientKey('::ffff:10.0.0.1'), '10.0.0.1', 'IPv4-mapped');
  // IPv6 keys are compact map keys (src/net/ip.ts prefixKey): compared, not spelt out.
  t.equal(clientKey('2001:DB8:1:2::ffff'), clientKey('2001:db8:1:2:3:4:5:6'), 'same /64, other spelling');
  t.not(clientKey('2001:db8:1:3::1'), clientKey('2001:db8:1:2::1'), 'the next /64');
  t.equal(clientKey('::1'), clientKey('0:0:0:0:ffff::1'));
  t.equal(clientKey('fe80::1%eth0'), clientKey('fe80::2'), 'zone dropped');
  t.equal(clientKey('64:ff9b::10.0.0.1'), clientKey('64:ff9b::1'), 'embedded IPv4');
  t.not(clientKey('::a00:1'), '10.0.0.1', 'an IPv6 key never equals an IPv4 one');
});

// ---------------------------------------------------------------------------
// Slow clients

t.test('64 slowloris clients from 127.0.0.1 (the health checker\'s own address) against a real l4lb: /healthz still answers, no socket leaks', async (t) => {
  const backend = await backendFor(t, namedBackend('a'));
  const child = await cliFor(t, config({}, backend.address));
  const port = await adminPortOf(child);
  await healthzAnswers(t, port, 'before');
  const pid = child.proc.pid!;
  await sleep(200);
  const baseline = fdCount(pid);

  const horde = slowloris(t, port, Array.from({ length: 64 }, () => '127.0.0.1'));
  // The default per-client cap (16) holds: the newest evict that client's own oldest.
  await waitFor(() => horde.closes() >= 48, 10_000, '48 of the 64 evicted');
  await sleep(300);
  t.equal(horde.open(), 16, `16 slow connections stay open (closed so far: ${horde.closes()})`);
  for (let i = 0; i < 3; i++) await healthzAnswers(t, port, `with the slowloris connected (${i + 1})`);
  const warn = await child.waitForLine((l) => l.msg === 'admin connection cap reached: evicted connections without a request in flight, refused new ones when none was left');
  t.match(warn, { level: 'warn', evicted: Number, max_connections: 64, max_per_client: 16 }, 'the shedding is logged');

  horde.stop();
  await waitFor(() => fdCount(pid) <= baseline, 10_000, `the child's descriptors back to ${baseline}`);
  t.pass(`no descriptor leaked (child has ${fdCount(pid)}, had ${baseline})`);
  t.equal(child.proc.exitCode, null, 'l4lb is still running');
  await healthzAnswers(t, port, 'after');
});

t.test('64 slowloris clients from 127.0.0.2-65 that reconnect as soon as they are dropped: /healthz from 127.0.0.1 still answers, no socket leaks', async (t) => {
  const backend = (await backendFor(t)).address;
  const lb = await lbFor(t, config({}, backend));
  const admin = lb.app.admin!;
  const port = adminPort(lb);
  await healthzAnswers(t, port, 'before');
  await sleep(200);
  const baseline = fdCount('self');

  const from = Array.from({ length: 64 }, (_, i) => `127.0.0.${i + 2}`);
  const horde = slowloris(t, port, from, { reconnect: true });
  await waitFor(() => admin.connectionStats().open === 64, 10_000, 'the 64 slow connections to fill the admin server');
  t.equal(admin.connectionStats().busy, 0, 'none of them has a request in flight');
  for (let i = 0; i < 3; i++) await healthzAnswers(t, port, `with the admin server full of reconnecting slowloris (${i + 1})`);
  t.ok(admin.connectionStats().evicted >= 6, `each health check evicted a slow connection (evicted: ${admin.connectionStats().evicted}, slow reconnects: ${horde.closes()})`);
  t.ok(admin.connectionStats().open <= 64, 'never above the cap');

  horde.stop();
  await waitFor(() => admin.connectionStats().open === 0, 10_000, 'every admin connection gone');
  await waitFor(() => fdCount('self') <= baseline, 10_000, `descriptors back to ${baseline}`);
  t.pass(`no descriptor leaked (${fdCount('self')}, had ${baseline})`);
  await healthzAnswers(t, port, 'after');
});

/** An AdminServer on the running App with test-sized caps and a token. */
async function smallAdmin(t: Test, options: AdminServerOptions): Promise<{ admin: AdminServer; port: number; lb: Running }> {
  const backend = (await backendFor(t)).address;
  const lb = await lbFor(t, config({}, backend));
  const admin = new AdminServer(lb.app, { listen: { host: '127.0.0.1', port: 0, text: '127.0.0.1:0' }, tokenFile: tokenFile(t) }, silentLogger(), options);
  await admin.start();
  t.teardown(() => admin.close());
  return { admin, port: admin.address()!.port, lb };
}

/** A state change whose body is held back until `finish()`: a request in flight. */
async function inFlight(port: number, state: string): Promise<{ socket: net.Socket; finish(): Promise<string> }> {
  const s = await connect(port);
  s.on('error', () => {});
  const body = JSON.stringify({ state });
  s.write(`POST /pools/p/servers/e1/state HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 3)}`);
  return { socket: s, finish: () => finishRequest(s, body.slice(3)) };
}

t.test('a connection with a request in flight is never evicted; when every slot has one, a newcomer is closed and the server recovers', async (t) => {
  const { admin, port, lb } = await smallAdmin(t, { maxConnections: 4, bodyTimeoutMs: 20_000 });
  const held = await inFlight(port, 'drain');
  t.teardown(() => held.socket.destroy());
  await waitFor(() => admin.connectionStats().busy === 1, 5_000, 'the state call in flight');

  const slow = slowloris(t, port, Array.from({ length: 20 }, () => '127.0.0.2'));
  await waitFor(() => slow.closes() >= 17, 5_000, 'the slow ones to evict each other');
  t.equal(admin.connectionStats().open, 4, 'at the cap');
  t.equal(await held.finish(), 'HTTP/1.1 200 OK', 'the request in flight survived 20 newcomers and completes');
  t.equal(lb.app.pools.get('p')!.server('e1')!.admin, 'drain');
  slow.stop();
  await waitFor(() => admin.connectionStats().open === 1, 5_000, 'only the finished keep-alive connection left');
  held.socket.destroy();
  await waitFor(() => admin.connectionStats().open === 0, 5_000, 'nothing left');

  const all = await Promise.all([0, 1, 2, 3].map(() => inFlight(port, 'ready')));
  t.teardown(() => all.forEach((x) => x.socket.destroy()));
  await waitFor(() => admin.connectionStats().busy === 4, 5_000, 'four requests in flight');
  const refusedBefore = admin.connectionStats().refused;
  const late = await connect(port);
  late.on('error', () => {});
  t.ok(await closedWithin(late, 5_000), 'a fifth connection is closed: nothing to evict');
  t.equal(admin.connectionStats().refused, refusedBefore + 1, 'counted as refused');
  t.same(await Promise.all(all.map((x) => x.finish())), Array(4).fill('HTTP/1.1 200 OK'), 'the four in flight all complete');
  t.equal((await request(port, '/healthz')).status, 200, 'and a new connection is served (it evicts an idle keep-alive one)');
});

t.test('per-client cap: a client\'s newest connection evicts that client\'s oldest idle one, never another client\'s', async (t) => {
  const { admin, port } = await smallAdmin(t, { maxConnectionsPerClient: 2 });
  const a1 = await pending(port, '127.0.0.2');
  const a2 = await pending(port, '127.0.0.2');
  const b1 = await pending(port, '127.0.0.3');
  t.teardown(() => [a1, a2, b1].forEach((s) => s.destroy()));
  await waitFor(() => admin.connectionStats().open === 3, 5_000, 'three open');
  const a3 = await pending(port, '127.0.0.2');
  t.teardown(() => a3.destroy());
  t.ok(await closedWithin(a1, 5_000), 'the third from 127.0.0.2 evicts its oldest');
  t.equal(await b1.finish(), 'HTTP/1.1 200 OK', 'the other client\'s idle connection was left alone');
  t.equal(await a2.finish(), 'HTTP/1.1 200 OK');
  t.equal(await a3.finish(), 'HTTP/1.1 200 OK');
  t.equal(admin.connectionStats().evicted, 1);
});

t.test('reserved local slots: remote clients share all but the last slots and never evict a local client, even an older idle one', async (t) => {
  // 127.0.0.1 plays the local client, 127.0.0.2+ remote ones.
  const { admin, port } = await smallAdmin(t, { maxConnections: 6, reservedLocal: 2, isLocal: (remote) => remote === '127.0.0.1' });
  const l1 = await pending(port, '127.0.0.1');
  const l2 = await pending(port, '127.0.0.1');
  t.teardown(() => [l1, l2].forEach((s) => s.destroy()));
  await waitFor(() => admin.connectionStats().open === 2, 5_000, 'the locals in');
  const remote: net.Socket[] = [];
  t.teardown(() => remote.forEach((s) => s.destroy()));
  for (const i of [2, 3, 4, 5, 6, 7, 8]) remote.push(await pending(port, `127.0.0.${i}`));
  await waitFor(() => admin.connectionStats().evicted === 3, 5_000, 'three remote evictions');
  await sleep(100);
  t.equal(admin.connectionStats().open, 6, 'full: 2 local + 4 remote (6 - 2 reserved)');
  t.ok(await closedWithin(remote[0]!, 5_000), 'the oldest remote ones were evicted');
  t.ok(await closedWithin(remote[2]!, 5_000));
  t.equal(await l1.finish(), 'HTTP/1.1 200 OK', 'the older local 1 was not evicted');
  t.equal(await l2.finish(), 'HTTP/1.1 200 OK', 'nor local 2');
  t.equal(await (remote[6] as Awaited<ReturnType<typeof pending>>).finish(), 'HTTP/1.1 200 OK', 'the newest remote is served');
});

// ---------------------------------------------------------------------------
// Lifecycle

t.test('close() closes idle connections at once, lets a request in flight finish with its answer, then resolves; later calls share its promise', async (t) => {
  const { admin, port, lb } = await smallAdmin(t, { bodyTimeoutMs: 20_000 });
  const idle = await pending(port);
  t.teardown(() => idle.destroy());
  const held = await inFlight(port, 'drain');
  t.teardown(() => held.socket.destroy());
  await waitFor(() => admin.connectionStats().busy === 1 && admin.connectionStats().open === 2, 5_000, 'one idle connection and one request in flight');

  let resolved = false;
  const closing = admin.close();
  void closing.then(() => (resolved = true));
  t.ok(await closedWithin(idle, 5_000), 'the connection without a request in flight is closed at once');
  await t.rejects(connect(port), { code: 'ECONNREFUSED' }, 'no new connection is accepted');
  await sleep(200);
  t.notOk(resolved, 'close() waits for the request in flight');
  t.equal(await held.finish(), 'HTTP/1.1 200 OK', 'the request in flight is answered');
  t.equal(lb.app.pools.get('p')!.server('e1')!.admin, 'drain', 'and took effect');
  t.ok(await closedWithin(held.socket, 5_000), 'its connection is closed after the answer');
  await closing;
  t.equal(admin.address(), null, 'unbound');
  t.equal(admin.close(), closing, 'a second close() returns the same promise');
  t.equal(admin.destroy(), closing, 'so does destroy() after close()');
});

t.test('destroy() ends a request in flight at once, without answering it', async (t) => {
  const { admin, port, lb } = await smallAdmin(t, { bodyTimeoutMs: 20_000 });
  const held = await inFlight(port, 'maint');
  t.teardown(() => held.socket.destroy());
  await waitFor(() => admin.connectionStats().busy === 1, 5_000, 'the state call in flight');
  const destroyed = admin.destroy();
  t.ok(await closedWithin(held.socket, 5_000), 'the connection with a request in flight is closed');
  await destroyed;
  t.equal(admin.address(), null, 'unbound');
  t.equal(lb.app.pools.get('p')!.server('e1')!.admin, 'ready', 'the unfinished state change did not happen');
  t.equal(admin.destroy(), destroyed, 'a second destroy() returns the same promise');
});

t.test('an admin server closed before start() binds nothing when started', async (t) => {
  const backend = (await backendFor(t)).address;
  const lb = await lbFor(t, config({}, backend));
  const admin = new AdminServer(lb.app, { listen: { host: '127.0.0.1', port: 0, text: '127.0.0.1:0' }, tokenFile: null }, silentLogger());
  t.teardown(() => admin.destroy());
  t.equal(admin.address(), null, 'the constructor binds nothing');
  await admin.close();
  await admin.start();
  t.equal(admin.address(), null, 'start() after close() binds nothing');
});
