/**
 * The admin server on real loopback sockets: configuration, /healthz,
 * /metrics, /status, the HTML page, the state-changing API with its auth and
 * error cases, and garbage (junk bytes, huge headers, slowloris, stalled
 * bodies) that must be answered or closed, never crash it.
 */
import net from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { AdminServer } from '../src/admin/server.js';
import { isLoopback } from '../src/net/ip.js';
import { escapeHtml, formatBytes, renderStatusPage } from '../src/admin/page.js';
import { formatTable } from '../src/admin/client.js';
import { formatStatus } from '../src/cli/status-table.js';
import { AdminClientError, baseUrl, fetchStatus, resolveToken, setServerState } from '../src/admin/client.js';
import type { StatusDoc } from '../src/admin/status.js';
import { buildModel } from '../src/config/load.js';
import { readTokenFile } from '../src/config/token-file.js';
import { L4lbError } from '../src/errors.js';
import { closed, connect, deadPort, namedBackend, readLine, sleep, startBackend, startL4lb, waitFor, whoAnswers, type Running } from './helpers/net.js';
import { problemsOf } from './helpers/config.js';
import { adminPort, backendFor, lbFor } from './helpers/lb.js';
import { silentLogger } from './helpers/logs.js';
import { seededRandom } from './helpers/random.js';

const TOKEN = 'test-token-0123456789abcdef';

/** A temp dir with a token file (trailing newline, as editors write it). */
function tokenFile(t: Test, content = `${TOKEN}\n`): string {
  return join(t.testdir({ 'admin.token': content }), 'admin.token');
}

type ServerSpec = { name?: string; address: string };

function config(servers: ServerSpec[], admin: Record<string, unknown> | undefined, pool: Record<string, unknown> = {}) {
  return {
    ...(admin === undefined ? {} : { admin }),
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'round_robin', servers, ...pool }],
  };
}

function adminUrl(lb: Running): string {
  return `http://127.0.0.1:${adminPort(lb)}`;
}

async function get(url: string, init: RequestInit = {}): Promise<{ status: number; text: string; headers: Headers }> {
  const res = await fetch(url, init);
  return { status: res.status, text: await res.text(), headers: res.headers };
}

function post(lb: Running, pool: string, server: string, body: unknown, token: string | null = TOKEN, raw = false) {
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  return get(`${adminUrl(lb)}/pools/${encodeURIComponent(pool)}/servers/${encodeURIComponent(server)}/state`, {
    method: 'POST',
    headers,
    body: raw ? (body as string) : JSON.stringify(body),
  });
}

/** Echo one line through the proxy and close, so the connection's bytes are counted. */
async function echoOnce(port: number, text: string): Promise<void> {
  const s = await connect(port);
  s.write(`${text}\n`);
  await readLine(s);
  s.end();
  await closed(s);
}

/** Write raw bytes to the admin port; resolve with whatever comes back once the server closes. */
function raw(port: number, chunks: Array<string | Buffer>, timeoutMs = 5_000): Promise<{ reply: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const s = net.connect({ port, host: '127.0.0.1' });
    let reply = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`still open after ${timeoutMs}ms; got ${JSON.stringify(reply.slice(0, 200))}`));
    }, timeoutMs);
    s.on('data', (d: Buffer) => (reply += d.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ reply, ms: Date.now() - started });
    });
    s.on('connect', () => {
      for (const c of chunks) s.write(c);
    });
  });
}

// ---------------------------------------------------------------------------
// Configuration

t.test('the admin section defaults to 127.0.0.1:9900 without a token; token file problems and bind clashes are reported by path', async (t) => {
  const servers = [{ address: '10.0.0.1:80' }];
  const none = await buildModel(config(servers, undefined));
  t.equal(none.admin, null, 'no admin section, no admin server');

  const dflt = await buildModel(config(servers, {}));
  t.same(dflt.admin, { listen: { host: '127.0.0.1', port: 9900, text: '127.0.0.1:9900' }, tokenFile: null }, 'loopback default');

  const file = tokenFile(t, `  \n${TOKEN}\n\n`);
  const withToken = await buildModel(config(servers, { listen: '[::1]:0', token_file: file }));
  t.same(withToken.admin, { listen: { host: '::1', port: 0, text: '[::1]:0' }, tokenFile: file });
  t.notMatch(JSON.stringify(withToken), TOKEN, 'the token is not in the model');
  t.match(await readTokenFile(file), { token: TOKEN }, 'whitespace around the token is trimmed');

  const dir = t.testdir({ empty: ' \n\t\n', spaced: 'two words\n', big: 'x'.repeat(5000), sub: {} });
  const cases: Array<[string, unknown, string, RegExp]> = [
    ['missing token file', { token_file: join(dir, 'nope') }, 'admin.token_file', /cannot read token file: ENOENT.*nope/],
    ['empty token file', { token_file: join(dir, 'empty') }, 'admin.token_file', /is empty/],
    ['token with a space', { token_file: join(dir, 'spaced') }, 'admin.token_file', /one token of visible ASCII/],
    ['token file too large', { token_file: join(dir, 'big') }, 'admin.token_file', /larger than 4096 bytes/],
    ['token file a directory', { token_file: join(dir, 'sub') }, 'admin.token_file', /not a regular file/],
    ['listen without port', { listen: '127.0.0.1' }, 'admin.listen', /expected host:port/],
    ['misspelled key', { tokenfile: 'x' }, 'admin.tokenfile', /unknown key; did you mean "token_file"\?/],
    ['empty token_file path', { token_file: '' }, 'admin.token_file', /non-empty string/],
  ];
  for (const [what, admin, path, message] of cases) {
    const problems = await problemsOf(config(servers, admin));
    t.equal(problems.length, 1, `${what}: one problem`);
    t.equal(problems[0]?.path, path, `${what}: path`);
    t.match(problems[0]?.message, message, `${what}: message`);
  }

  const clash = config(servers, { listen: '127.0.0.1:6380' });
  clash.listeners[0]!.bind = '0.0.0.0:6380';
  t.same(await problemsOf(clash), [{ path: 'admin.listen', message: '"127.0.0.1:6380" overlaps "0.0.0.0:6380" of listeners[0]' }]);
  const same = config(servers, { listen: '127.0.0.1:6380' });
  same.listeners[0]!.bind = '127.0.0.1:6380';
  t.same(await problemsOf(same), [{ path: 'admin.listen', message: 'duplicate bind address "127.0.0.1:6380" (also listeners[0])' }]);
  const admin = await problemsOf({ ...config(servers, undefined), admin: null });
  t.match(admin, [{ path: 'admin', message: /expected an object/ }], 'admin: null is a problem, not a silent default');
});

t.test('isLoopback accepts 127.0.0.0/8, ::1 and IPv4-mapped loopback, nothing else', async (t) => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) t.ok(isLoopback(h), h);
  for (const h of ['0.0.0.0', '10.0.0.1', '::', 'fd00::1', '::ffff:10.0.0.1']) t.notOk(isLoopback(h), h);
});

// ---------------------------------------------------------------------------
// Read-only endpoints

t.test('GET /healthz answers ok while serving, 503 draining while stopping, and nothing once stopped', async (t) => {
  const echo = await backendFor(t);
  const lb = await lbFor(t, config([{ name: 'e', address: echo.address }], { listen: '127.0.0.1:0' }));
  const url = adminUrl(lb);
  const ok = await get(`${url}/healthz`);
  t.equal(ok.status, 200);
  t.equal(ok.text, 'ok');
  t.match(ok.headers.get('cache-control'), 'no-store');
  const head = await fetch(`${url}/healthz`, { method: 'HEAD' });
  t.equal(head.status, 200, 'HEAD works too');

  // An open connection keeps the drain going while /healthz is asked.
  const client = await connect(lb.port());
  client.write('x\n');
  await readLine(client);
  const stopping = lb.stop(10_000);
  const draining = await get(`${url}/healthz`);
  t.equal(draining.status, 503, '503 while draining');
  t.equal(draining.text, 'draining');
  t.equal((await get(`${url}/status`)).status, 200, '/status still answers while draining');
  client.end();
  await stopping;
  await t.rejects(fetch(`${url}/healthz`), 'admin server closed at the end of stop()');
  t.equal(lb.app.admin?.address(), null);
});

t.test('GET /metrics exports every contract metric with its labels, and the values move with traffic', async (t) => {
  const echo = await backendFor(t);
  const lb = await lbFor(t, config([{ name: 'e1', address: echo.address }, { name: 'dead', address: '127.0.0.1:1' }], { listen: '127.0.0.1:0' }));
  const url = adminUrl(lb);
  lb.app.pools.get('p')!.setAdminState(lb.app.pools.get('p')!.server('dead')!, 'maint');
  const before = await get(`${url}/metrics`);
  t.equal(before.status, 200);
  t.match(before.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  t.match(before.text, /^l4lb_connections_total\{listener="front",pool="p",server="e1"\} 0$/m, 'series exist before any traffic');

  for (let i = 0; i < 3; i++) await echoOnce(lb.port(), 'hello'); // 6 bytes each way per connection
  const open = await connect(lb.port());
  open.write('still here\n');
  await readLine(open);
  t.teardown(() => open.destroy());

  const text = (await get(`${url}/metrics`)).text;
  const types: Record<string, string> = {
    l4lb_connections_total: 'counter',
    l4lb_active_connections: 'gauge',
    l4lb_bytes_total: 'counter',
    l4lb_server_up: 'gauge',
    l4lb_connect_failures_total: 'counter',
    l4lb_rejected_connections_total: 'counter',
    l4lb_tls_handshake_failures_total: 'counter',
    l4lb_health_check_duration_seconds: 'gauge',
  };
  for (const [name, type] of Object.entries(types)) {
    t.match(text, new RegExp(`^# HELP ${name} \\S`, 'm'), `${name} has HELP`);
    t.match(text, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), `${name} is a ${type}`);
  }
  const sample = (name: string, labels: string): number => {
    const m = new RegExp(`^${name}\\{${labels.replace(/[{}]/g, '\\$&')}\\} (\\S+)$`, 'm').exec(text);
    if (!m) throw new Error(`no sample ${name}{${labels}} in\n${text}`);
    return Number(m[1]);
  };
  t.equal(sample('l4lb_connections_total', 'listener="front",pool="p",server="e1"'), 4);
  t.equal(sample('l4lb_active_connections', 'listener="front",pool="p",server="e1"'), 1);
  // The open connection's 11 bytes each way count too once the listener's sweep (each second) has seen them.
  t.ok([18, 29].includes(sample('l4lb_bytes_total', 'listener="front",pool="p",server="e1",direction="in"')), 'closed connections\' bytes in, and the open one\'s once swept');
  t.ok([18, 29].includes(sample('l4lb_bytes_total', 'listener="front",pool="p",server="e1",direction="out"')), 'bytes out likewise');
  t.equal(sample('l4lb_server_up', 'pool="p",server="e1"'), 1);
  t.equal(sample('l4lb_connect_failures_total', 'pool="p",server="e1"'), 0);
  t.equal(sample('l4lb_connect_failures_total', 'pool="p",server="dead"'), 0);
  t.equal(sample('l4lb_rejected_connections_total', 'listener="front",reason="acl"'), 0);
  t.equal(sample('l4lb_tls_handshake_failures_total', 'listener="front"'), 0);
  t.ok(sample('l4lb_health_check_duration_seconds', 'pool="p",server="e1"') >= 0);
  t.equal(sample('l4lb_server_admin_state', 'pool="p",server="dead",state="maint"'), 1);
  t.match(text, /^process_cpu_user_seconds_total \S+$/m, 'process metrics included');
  t.match(text, /^nodejs_heap_size_used_bytes \S+$/m);

  // Every sample line is well formed Prometheus text.
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    t.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? [-+0-9.eEInfNa]+$/, `parses: ${line}`, { diagnostic: false });
  }

  // A connect failure moves its counter: the only other server is in maint, so force the dead one.
  const pool = lb.app.pools.get('p')!;
  pool.setAdminState(pool.server('e1')!, 'maint');
  pool.setAdminState(pool.server('dead')!, 'ready');
  const c = await connect(lb.port());
  await closed(c);
  const after = (await get(`${url}/metrics`)).text;
  t.match(after, /^l4lb_connect_failures_total\{pool="p",server="dead"\} [1-9]/m, 'a failed connect is counted');
});

t.test('GET /status answers JSON with every listener, pool and server and their counts', async (t) => {
  const echo = await backendFor(t);
  const lb = await lbFor(t, config([{ name: 'e1', address: echo.address }, { address: echo.address.replace('127.0.0.1', '127.0.0.2') }], { listen: '127.0.0.1:0' }));
  const pool = lb.app.pools.get('p')!;
  pool.setAdminState(pool.servers[1]!, 'drain');
  for (let i = 0; i < 2; i++) await echoOnce(lb.port(), 'abc');
  await waitFor(() => pool.server('e1')!.health.last !== null, 5_000, 'a first probe');
  const res = await get(`${adminUrl(lb)}/status`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^application\/json/);
  const doc = JSON.parse(res.text) as StatusDoc;
  t.equal(doc.phase, 'running');
  t.match(doc.time, /^\d{4}-\d\d-\d\dT/);
  t.same(doc.listeners, [{ name: 'front', bind: '127.0.0.1:0', port: lb.port(), pool: 'p', routes: [], connections: 0, accepted: 2 }]);
  t.equal(doc.pools.length, 1);
  const p = doc.pools[0]!;
  t.equal(p.name, 'p');
  t.equal(p.balance, 'round_robin');
  t.same(p.listeners, ['front'], 'the listeners that reach the pool');
  t.equal(p.removed, false);
  t.match(p.servers[0], {
    name: 'e1',
    address: echo.address,
    backup: false,
    state: 'up',
    admin: 'ready',
    weight: 1,
    effective_weight: 1,
    active: 0,
    total: 2,
    connect_failures: 0,
    bytes_in: 8,
    bytes_out: 8,
    last_check: { ok: true, reason: '', latency_ms: Number, at: /^\d{4}-\d\d-\d\dT.*Z$/, source: 'active' },
  });
  t.match(p.servers[1], { name: echo.address.replace('127.0.0.1', '127.0.0.2'), admin: 'drain', total: 0 }, 'default name is the address');
});

t.test('GET / answers an HTML page with every pool and server, names escaped', async (t) => {
  const echo = await backendFor(t);
  const lb = await lbFor(t, {
    ...config([{ name: '<b>bold</b>', address: echo.address }, { name: 'plain"&\'', address: '127.0.0.1:1' }], { listen: '127.0.0.1:0' }),
    pools: [
      { name: 'p', servers: [{ name: '<b>bold</b>', address: echo.address }, { name: 'plain"&\'', address: '127.0.0.1:1' }] },
      { name: 'other<script>', servers: [{ name: 'o1', address: echo.address }] },
    ],
  });
  const pool = lb.app.pools.get('p')!;
  pool.setAdminState(pool.server('plain"&\'')!, 'maint');
  const res = await get(`${adminUrl(lb)}/`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/html; charset=utf-8/);
  t.match(res.headers.get('content-security-policy'), /default-src 'none'/);
  const html = res.text;
  t.match(html, /^<!doctype html>/);
  t.match(html, /&lt;b&gt;bold&lt;\/b&gt;/, 'a server name with markup is escaped');
  t.notMatch(html, /<b>bold/, 'no raw markup from names');
  t.match(html, /plain&quot;&amp;&#39;/);
  t.match(html, /pool other&lt;script&gt;/);
  t.notMatch(html, /<script/i, 'no script at all');
  t.match(html, />p</, 'the pool name p appears');
  t.match(html, /o1/);
  t.match(html, /class="badge maint"/, 'maint is shown');
  t.match(html, /class="badge up"/);
  t.match(html, /http-equiv="refresh"/, 'refreshes itself');
  t.notMatch(html, /(src|href)=["']?(https?:)?\/\//, 'no external assets');
  t.equal((await get(`${adminUrl(lb)}/index.html`)).status, 200);
});

t.test('the page and table helpers escape HTML, format bytes and ages, and align the status table', async (t) => {
  t.equal(escapeHtml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  t.equal(formatBytes(999), '999 B');
  t.equal(formatBytes(1500), '1.5 kB');
  t.equal(formatBytes(12_345_678), '12 MB');
  t.equal(formatTable(['A', 'NUM'], [['xyz', '5'], ['q', '123']], new Set([1])), 'A    NUM\nxyz    5\nq    123');
  const now = Date.parse('2026-01-01T00:01:00Z');
  const doc: StatusDoc = {
    phase: 'draining',
    time: '2026-01-01T00:01:00.000Z',
    listeners: [{ name: 'front', bind: '0.0.0.0:5432', port: 5432, pool: 'pg', connections: 3, accepted: 10 }],
    pools: [
      {
        name: 'pg',
        balance: 'least_conn',
        servers: [
          { name: 'pg1', address: '10.0.0.1:5432', backup: false, state: 'up', admin: 'ready', weight: 2, effective_weight: 0.5, active: 3, total: 9, connect_failures: 1, bytes_in: 0, bytes_out: 0, last_check: { ok: true, reason: '', latency_ms: 0.4, at: '2026-01-01T00:00:58.000Z', source: 'active' } },
          { name: 'pg2', address: '10.0.0.2:5432', backup: true, state: 'down', admin: 'drain', weight: 1, effective_weight: 1, active: 0, total: 0, connect_failures: 4, bytes_in: 0, bytes_out: 0, last_check: { ok: false, reason: 'connect ECONNREFUSED', latency_ms: 0, at: '2026-01-01T00:00:00.000Z', source: 'passive' } },
          { name: 'pg3', address: '10.0.0.3:5432', backup: false, state: 'up', admin: 'maint', weight: 1, effective_weight: 1, active: 0, total: 0, connect_failures: 0, bytes_in: 0, bytes_out: 0, last_check: null },
        ],
      },
    ],
  };
  const table = formatStatus(doc, now);
  t.match(table, /^l4lb is draining\n/);
  t.match(table, /POOL pg \(least_conn\): 1\/3 servers taking new connections/);
  t.match(table, /^ {2}NAME +ADDRESS +STATE +ADMIN +WEIGHT +ACTIVE +TOTAL +FAILS +LAST CHECK$/m);
  t.match(table, /^ {2}pg1 +10\.0\.0\.1:5432 +up +ready +0\.5\/2 +3 +9 +1 +ok 0\.4ms, 2s ago$/m);
  t.match(table, /^ {2}pg2 \(backup\) +10\.0\.0\.2:5432 +down +drain .* fail \(client connect\): connect ECONNREFUSED, 1m ago$/m);
  t.match(table, /^ {2}pg3 .* maint .* -$/m);
  const html = renderStatusPage(doc);
  t.match(html, /class="badge down">down<\/span> <span class="muted">\(drain\)/, 'a down server that is also drained says so');
  t.match(html, /class="badge maint">maint<\/span><\/td>/, 'maint while up: no note');
});

// ---------------------------------------------------------------------------
// The state-changing API

t.test('POST state refuses a missing or wrong token, unknown names, bad bodies and other methods; names are URL-decoded', async (t) => {
  const echo = await backendFor(t);
  const lb = await lbFor(t, config([{ name: 'e1', address: echo.address }, { name: 'a/b c', address: echo.address }], {
    listen: '127.0.0.1:0',
    token_file: tokenFile(t),
  }));
  const url = adminUrl(lb);

  const noToken = await post(lb, 'p', 'e1', { state: 'drain' }, null);
  t.equal(noToken.status, 401, 'no token: 401');
  t.equal(noToken.headers.get('www-authenticate'), 'Bearer realm="l4lb"');
  t.match(JSON.parse(noToken.text), { error: /missing bearer token/ });
  t.equal((await post(lb, 'p', 'e1', { state: 'drain' }, 'wrong')).status, 401, 'wrong token: 401');
  t.equal((await post(lb, 'p', 'e1', { state: 'drain' }, `${TOKEN}x`)).status, 401, 'token with a suffix: 401');
  t.equal((await post(lb, 'p', 'e1', { state: 'drain' }, TOKEN.slice(0, -1))).status, 401, 'a prefix of the token: 401');
  const basic = await get(`${url}/pools/p/servers/e1/state`, { method: 'POST', headers: { Authorization: `Basic ${TOKEN}` }, body: '{"state":"drain"}' });
  t.equal(basic.status, 401, 'another scheme: 401');
  t.equal(lb.app.pools.get('p')!.server('e1')!.admin, 'ready', 'nothing changed so far');

  const unknownPool = await post(lb, 'pp', 'e1', { state: 'drain' });
  t.equal(unknownPool.status, 404);
  t.match(JSON.parse(unknownPool.text), { error: 'no pool named "pp"; did you mean "p"?' });
  const unknownServer = await post(lb, 'p', 'e2', { state: 'drain' });
  t.equal(unknownServer.status, 404);
  t.match(JSON.parse(unknownServer.text), { error: /no server named "e2" in pool "p"/ });

  for (const [what, body] of [
    ['not JSON', '{state: drain'],
    ['empty', ''],
    ['a list', '["drain"]'],
    ['unknown state', '{"state":"down"}'],
    ['state not a string', '{"state":1}'],
    ['no state', '{"stat":"drain"}'],
  ] as const) {
    const r = await post(lb, 'p', 'e1', body, TOKEN, true);
    t.equal(r.status, 400, `${what}: 400`);
    t.match(JSON.parse(r.text), { error: /expected/ }, `${what}: says what is expected`);
  }
  const big = await post(lb, 'p', 'e1', `{"state":"drain","pad":"${'x'.repeat(5000)}"}`, TOKEN, true);
  t.equal(big.status, 400, 'body over 4 KiB: 400');
  t.match(JSON.parse(big.text), { error: /larger than 4096 bytes/ });

  t.equal((await get(`${url}/pools/p/servers/e1/state`)).status, 405, 'GET on the state route: 405');
  t.equal((await get(`${url}/pools/p/servers/e1/state`)).headers.get('allow'), 'POST');
  t.equal((await get(`${url}/status`, { method: 'POST', body: '{}' })).status, 405, 'POST /status: 405');
  t.equal((await get(`${url}/metrics`, { method: 'DELETE' })).status, 405);
  t.equal((await get(`${url}/nothing-here`)).status, 404);
  t.equal((await get(`${url}/pools/p/servers/e1/state/extra`, { method: 'POST' })).status, 404);
  t.equal((await get(`${url}/status?pretty=1`)).status, 200, 'a query string is ignored');

  // Names are URL-decoded: "a/b c" travels as a%2Fb%20c.
  const slashed = await post(lb, 'p', 'a/b c', { state: 'maint' });
  t.equal(slashed.status, 200);
  t.same(JSON.parse(slashed.text), { pool: 'p', server: 'a/b c', from: 'ready', to: 'maint' });
  const again = await post(lb, 'p', 'a/b c', { state: 'maint', note: 'extra keys are ignored' });
  t.same(JSON.parse(again.text), { pool: 'p', server: 'a/b c', from: 'maint', to: 'maint' }, 'idempotent');
  const changes = lb.lines.filter((l) => l.msg === 'server admin state');
  t.equal(changes.length, 1, 'only an actual change is logged');
  t.match(changes[0], { level: 'info', pool: 'p', server: 'a/b c', from: 'ready', to: 'maint' });
  t.notMatch(JSON.stringify(lb.lines), TOKEN, 'the token never appears in the log');
});

t.test('POST state without token_file answers 403 with a clear message', async (t) => {
  const echo = await backendFor(t);
  const lb = await lbFor(t, config([{ name: 'e1', address: echo.address }], { listen: '127.0.0.1:0' }));
  for (const token of [null, TOKEN]) {
    const r = await post(lb, 'p', 'e1', { state: 'drain' }, token);
    t.equal(r.status, 403);
    t.match(JSON.parse(r.text), { error: /no admin\.token_file is configured/ });
  }
  t.equal(lb.app.pools.get('p')!.server('e1')!.admin, 'ready');
});

t.test('a drain through the API sends new connections elsewhere and shows in /status; ready brings the server back', async (t) => {
  const a = await backendFor(t, namedBackend('a'));
  const b = await backendFor(t, namedBackend('b'));
  // The default name is the address, so this also covers "10.0.0.12%3A5432"-style names.
  const lb = await lbFor(t, config([{ address: a.address }, { name: 'b', address: b.address }], { listen: '127.0.0.1:0', token_file: tokenFile(t) }));
  const held = await connect(lb.port());
  t.teardown(() => held.destroy());
  const first = await readLine(held);

  const url = `${adminUrl(lb)}/pools/p/servers/${a.address.replace(':', '%3A')}/state`;
  t.match(url, /127\.0\.0\.1%3A\d+\/state$/);
  const r = await get(url, { method: 'POST', headers: { Authorization: `Bearer ${TOKEN}` }, body: '{"state":"drain"}' });
  t.equal(r.status, 200, r.text);
  t.same(JSON.parse(r.text), { pool: 'p', server: a.address, from: 'ready', to: 'drain' });

  const answers = new Set<string>();
  for (let i = 0; i < 8; i++) answers.add(await whoAnswers(lb.port()));
  t.same([...answers], ['b'], 'only b takes new connections');
  const doc = JSON.parse((await get(`${adminUrl(lb)}/status`)).text) as StatusDoc;
  t.match(doc.pools[0]!.servers[0], { name: a.address, admin: 'drain', state: 'up' });
  if (first === 'a') t.equal(doc.pools[0]!.servers[0]!.active, 1, 'the open connection to a stays open');
  held.write('still\n');
  t.equal(await readLine(held), 'still', 'an open connection keeps working while its server drains');

  t.equal((await post(lb, 'p', a.address, { state: 'ready' })).status, 200);
  for (let i = 0; i < 8; i++) answers.add(await whoAnswers(lb.port()));
  t.same([...answers].sort(), ['a', 'b'], 'ready: a takes connections again');
});

t.test('maint through the API stops probes', async (t) => {
  const echo = await backendFor(t);
  const lb = await lbFor(t, config([{ name: 'e1', address: echo.address }], { listen: '127.0.0.1:0', token_file: tokenFile(t) }, { health: { interval: '100ms' } }));
  await waitFor(() => echo.accepted >= 2, 5_000, 'probes');
  t.equal((await post(lb, 'p', 'e1', { state: 'maint' })).status, 200);
  await sleep(200); // a probe in flight may still land
  const before = echo.accepted;
  await sleep(600);
  t.equal(echo.accepted, before, 'no probe while in maint');
  t.equal((await post(lb, 'p', 'e1', { state: 'ready' })).status, 200);
  await waitFor(() => echo.accepted > before, 5_000, 'probes again after ready');
});

// ---------------------------------------------------------------------------
// Garbage

t.test('garbage requests are answered or closed, never crash the server', async (t) => {
  const echo = await backendFor(t);
  const lb = await lbFor(t, config([{ name: 'e1', address: echo.address }], { listen: '127.0.0.1:0', token_file: tokenFile(t) }));
  // A second admin server on the same App with short timeouts, so slow clients are cut quickly.
  const admin = new AdminServer(lb.app, { listen: { host: '127.0.0.1', port: 0, text: '127.0.0.1:0' }, tokenFile: tokenFile(t) }, silentLogger(), {
    headersTimeoutMs: 400,
    requestTimeoutMs: 800,
    bodyTimeoutMs: 300,
    idleTimeoutMs: 2_000,
  });
  await admin.start();
  t.teardown(() => admin.close());
  const port = admin.address()!.port;
  const mainPort = lb.app.admin!.address()!.port;

  const junk = await raw(mainPort, [Buffer.from([0, 1, 2, 0xff, 0xfe]), 'garbage\r\n\r\n']);
  t.match(junk.reply, /^HTTP\/1\.1 400 /, 'junk bytes: 400 and closed');

  const badVersion = await raw(mainPort, ['GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n']);
  t.match(badVersion.reply, /^HTTP\/1\.1 (400|505) /, 'unsupported HTTP version refused');

  const huge = await raw(mainPort, [`GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`]);
  t.match(huge.reply, /^HTTP\/1\.1 431 /, 'huge headers: 431 and closed');

  const manyHeaders = await raw(mainPort, [`GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n${'X-A: b\r\n'.repeat(3000)}\r\n`]);
  t.match(manyHeaders.reply, /^HTTP\/1\.1 431 /, 'thousands of headers: 431');

  const badPercent = await raw(mainPort, [`POST /pools/%E0%A4%A/servers/x/state HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`]);
  t.match(badPercent.reply, /^HTTP\/1\.1 400 /, 'malformed percent-encoding: 400');

  const relative = await raw(mainPort, ['GET status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n']);
  t.match(relative.reply, /^HTTP\/1\.1 400 /, 'a target without a leading slash: 400');

  const lyingLength = await raw(mainPort, [`POST /pools/p/servers/e1/state HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 999999\r\n\r\n{}`]);
  t.match(lyingLength.reply, /^HTTP\/1\.1 400 /, 'a declared body over the cap: 400 at once');

  // Slowloris: headers one line at a time, never finished.
  const slow = net.connect({ port, host: '127.0.0.1' });
  slow.on('error', () => {});
  slow.write('GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  const drip = setInterval(() => slow.writable && slow.write('X-Slow: 1\r\n'), 100);
  const slowMs = await closed(slow, 5_000);
  clearInterval(drip);
  t.ok(slowMs < 3_000, `slowloris closed after ${slowMs}ms`);

  // A silent connection is closed too.
  const silent = await connect(port);
  t.ok((await closed(silent, 5_000)) < 3_000, 'a connection that sends nothing is closed');

  // A body that never finishes.
  const stalled = await raw(port, [`POST /pools/p/servers/e1/state HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 100\r\n\r\n{"state":`]);
  t.match(stalled.reply, /^HTTP\/1\.1 (408|400) /, 'a stalled body: 408');
  t.ok(stalled.ms < 3_000);

  // Random bytes, many times.
  const rand = seededRandom(42);
  for (let i = 0; i < 30; i++) {
    const bytes = Buffer.alloc(1 + Math.floor(rand() * 300), 0).map(() => Math.floor(rand() * 256));
    const prefix = i % 2 === 0 ? 'GET /' : 'POST /pools/';
    await raw(port, [prefix, bytes, '\r\n\r\n'], 5_000);
  }

  // Still serving, state untouched.
  t.equal((await get(`http://127.0.0.1:${mainPort}/healthz`)).text, 'ok');
  t.equal((await get(`http://127.0.0.1:${port}/healthz`)).text, 'ok');
  t.equal(lb.app.pools.get('p')!.server('e1')!.admin, 'ready');
  await admin.close();
  await admin.close();
  t.pass('close() twice is fine');
});

t.test('a taken admin port fails start, and the listeners are unbound again', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => blocker.close(() => r())));
  const port = (blocker.address() as net.AddressInfo).port;
  const err = await startL4lb(config([{ address: '127.0.0.1:1' }], { listen: `127.0.0.1:${port}` })).catch((e: unknown) => e);
  t.match(err, { code: 'L4LB_LISTEN_FAILED', message: /admin cannot bind 127\.0\.0\.1:\d+/ });
});

t.test('a non-loopback admin address without token_file logs a warning', async (t) => {
  const echo = await backendFor(t);
  const lb = await lbFor(t, config([{ address: echo.address }], { listen: '0.0.0.0:0' }));
  t.match(
    lb.lines.find((l) => l.level === 'warn' && /beyond loopback without token_file/.test(String(l.msg))),
    { address: '0.0.0.0:0' },
  );
  t.match(lb.lines.find((l) => l.msg === 'admin listening'), { port: Number, token: false });
});

t.test('admin client failures carry a code: a bad URL, no server listening, an error answer, an answer that is not l4lb\'s, no token', async (t) => {
  const coded = (code: string) => ({ constructor: AdminClientError, code });
  t.throws(() => baseUrl('not a url'), coded('L4LB_ADMIN_URL_INVALID'));
  t.throws(() => baseUrl('ftp://127.0.0.1/'), coded('L4LB_ADMIN_URL_INVALID'));
  await t.rejects(fetchStatus(`http://127.0.0.1:${await deadPort()}`), coded('L4LB_ADMIN_UNREACHABLE'));

  const echo = await backendFor(t);
  const lb = await lbFor(t, config([{ name: 'e1', address: echo.address }], { listen: '127.0.0.1:0', token_file: tokenFile(t) }));
  await t.rejects(setServerState(adminUrl(lb), 'wrong-token', 'p', 'e1', 'drain'), { ...coded('L4LB_ADMIN_REFUSED'), message: /answered 401/ });
  await t.rejects(setServerState(adminUrl(lb), TOKEN, 'p', 'nope', 'drain'), { ...coded('L4LB_ADMIN_REFUSED'), message: /answered 404/ });

  // An HTTP server that is not l4lb: 200, but not a status document.
  const other = await backendFor(t, startBackend((s) => s.once('data', () => s.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}'))));
  await t.rejects(fetchStatus(`http://${other.address}`), coded('L4LB_ADMIN_BAD_ANSWER'));

  await t.rejects(resolveToken(undefined, {}), coded('L4LB_ADMIN_NO_TOKEN'));
  await t.rejects(resolveToken(join(t.testdir({}), 'missing.token'), {}), coded('L4LB_ADMIN_NO_TOKEN'));
  const err = await resolveToken(undefined, {}).catch((e: unknown) => e);
  t.ok(err instanceof L4lbError, 'an L4lbError, like every coded error');
});
