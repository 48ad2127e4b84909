/**
 * Runtime changes through the admin API, on real loopback sockets: servers
 * added and removed (drained) and client networks denied (with a TTL)
 * without a reload, in every serving thread; bad bodies, unknown names and
 * missing tokens refused with nothing changed; a reload from the file
 * undoing them; DNS rebuilds keeping them; and the CLI wrappers and `l4lb
 * check --diff` against a real `l4lb run` (needs dist/).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { StatusDoc } from '../src/admin/status.js';
import { buildModel } from '../src/config/load.js';
import { withAddresses } from '../src/dns/servers.js';
import { parseDenyBody, parseServerBody } from '../src/runtime/runtime-changes.js';
import { BIN, adminPortOf, cliFor } from './helpers/cli.js';
import { accessLine, adminPort, clientFor, lbFor, namedBackendsFor } from './helpers/lb.js';
import { echoes, readLine, sleep, waitFor, whoAnswers, type Running } from './helpers/net.js';

const TOKEN = 'runtime-test-token-7c41aa';

function tokenFile(t: Test): string {
  return join(t.testdir({ 'admin.token': `${TOKEN}\n` }), 'admin.token');
}

type ServerSpec = { name?: string; address: string; weight?: number; backup?: boolean };

function config(servers: ServerSpec[], admin: Record<string, unknown>, extra: { listener?: Record<string, unknown>; pool?: Record<string, unknown> } = {}) {
  return {
    admin,
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', ...extra.listener }],
    // Probes rarely: the tests decide health, and a probe's connection would show in the backends.
    pools: [{ name: 'p', balance: 'round_robin', servers, health: { interval: '1h' }, ...extra.pool }],
  };
}

function adminUrl(lb: Running): string {
  return `http://127.0.0.1:${adminPort(lb)}`;
}

interface Answer {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/** A JSON call to the admin server; `token` null sends none. */
async function api(lb: Running, method: string, path: string, body?: unknown, token: string | null = TOKEN): Promise<Answer> {
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`${adminUrl(lb)}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { text };
  }
  return { status: res.status, body: parsed };
}

async function status(lb: Running): Promise<StatusDoc> {
  return (await fetch(`${adminUrl(lb)}/status`)).json() as Promise<StatusDoc>;
}

async function serverNames(lb: Running): Promise<string[]> {
  return (await status(lb)).pools.find((p) => p.name === 'p')!.servers.map((s) => s.name);
}

async function runtimeList(lb: Running): Promise<unknown[]> {
  const doc = (await (await fetch(`${adminUrl(lb)}/config`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json()) as { runtime: unknown[] };
  return doc.runtime;
}

/** Whether a connection from `from` is closed by l4lb before any backend speaks (refused). */
async function refused(port: number, from: string): Promise<boolean> {
  try {
    await whoAnswers(port, from);
    return false;
  } catch {
    return true;
  }
}

// ---------------------------------------------------------------------------

t.test('a server added at runtime takes its turn in round_robin at once, in every thread, and is probed', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const lb = await lbFor(t, config([{ name: 'a', address: a.address }], { listen: '127.0.0.1:0', token_file: tokenFile(t) }));

  const r = await api(lb, 'POST', '/pools/p/servers', { name: 'b', address: b.address, weight: 1 });
  t.equal(r.status, 201, JSON.stringify(r.body));
  t.match(r.body, { pool: 'p', server: 'b', address: b.address, weight: 1, backup: false });
  t.same(await serverNames(lb), ['a', 'b']);

  const seen = new Set<string>();
  for (let i = 0; i < 12 && seen.size < 2; i++) seen.add(await whoAnswers(lb.port()));
  t.same([...seen].sort(), ['a', 'b'], 'new connections reach the added server');

  // Probed like any server a reload adds: at once, then every interval.
  let probed: unknown = null;
  for (let i = 0; i < 100 && probed === null; i++) {
    probed = (await status(lb)).pools[0]!.servers.find((s) => s.name === 'b')?.last_check ?? null;
    if (probed === null) await sleep(50);
  }
  t.match(probed, { ok: true, source: 'active' }, 'the added server was probed');
  const added = lb.lines.find((l) => l.msg === 'runtime change: server added');
  t.match(added, { pool: 'p', server: 'b', address: b.address });
  t.match(await runtimeList(lb), [{ kind: 'server_added', pool: 'p', server: 'b', address: b.address, weight: 1, backup: false }]);
});

t.test('a server added at runtime to a pool with slow_start ramps up from a low weight', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const lb = await lbFor(t, config([{ name: 'a', address: a.address }], { listen: '127.0.0.1:0', token_file: tokenFile(t) }, { pool: { slow_start: '1h' } }));
  const r = await api(lb, 'POST', '/pools/p/servers', { address: b.address });
  t.equal(r.status, 201, JSON.stringify(r.body));
  t.equal(r.body.server, b.address, 'the name defaults to the address as written');
  t.equal(r.body.slow_start_ms, 3_600_000);
  const s = lb.app.pools.get('p')!.server(b.address)!;
  t.ok(s.slowStartSince > 0, 'slow start began');
  t.ok(s.weight < 0.5, `weight ${s.weight} starts low`);
});

t.test('a server removed at runtime drains: its open connection stays, new ones go elsewhere, and it leaves /status with its last one', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const lb = await lbFor(t, config([{ name: 'a', address: a.address }, { name: 'b', address: b.address }], { listen: '127.0.0.1:0', token_file: tokenFile(t) }));

  // Hold a connection to b (round_robin: one of the first two is b's).
  let held: Awaited<ReturnType<typeof clientFor>> | undefined;
  for (let i = 0; i < 6 && held === undefined; i++) {
    const c = await clientFor(t, lb.port());
    if ((await readLine(c)) === 'b') held = c;
    else c.destroy();
  }
  if (held === undefined) throw new Error('no connection reached b');

  const r = await api(lb, 'DELETE', '/pools/p/servers/b');
  t.equal(r.status, 200, JSON.stringify(r.body));
  t.same(r.body, { pool: 'p', server: 'b', address: b.address, open: 1 });

  for (let i = 0; i < 6; i++) t.equal(await whoAnswers(lb.port()), 'a', 'new connections skip the removed server');
  t.equal(await echoes(held, 'still here'), 'still here', 'the open connection to b keeps working');
  const during = (await status(lb)).pools[0]!.servers.find((s) => s.name === 'b');
  t.match(during, { state: 'removed', active: 1 }, 'listed as removed while its connection is open');

  held.destroy();
  const deadline = Date.now() + 10_000;
  while ((await serverNames(lb)).includes('b') && Date.now() < deadline) await sleep(50);
  t.same(await serverNames(lb), ['a'], 'gone from /status once its connection closed');
  t.match(await runtimeList(lb), [{ kind: 'server_removed', pool: 'p', server: 'b' }]);

  // Taking back a runtime addition leaves nothing to undo.
  t.equal((await api(lb, 'POST', '/pools/p/servers', { name: 'c', address: b.address })).status, 201);
  t.equal((await api(lb, 'DELETE', '/pools/p/servers/c')).status, 200);
  t.match(await runtimeList(lb), [{ kind: 'server_removed', server: 'b' }]);
  t.equal((await runtimeList(lb)).length, 1);
});

t.test('a runtime deny refuses the network at once in every thread as rejected_acl, lifts itself after its ttl, and DELETE lifts it', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const lb = await lbFor(t, config([{ name: 'a', address: a.address }], { listen: '127.0.0.1:0', token_file: tokenFile(t) }));
  const port = lb.port();
  t.equal(await whoAnswers(port, '127.0.0.2'), 'a', 'allowed before');

  const r = await api(lb, 'POST', '/listeners/front/deny', { cidr: '127.0.0.2/32' });
  t.equal(r.status, 201, JSON.stringify(r.body));
  t.same(r.body, { listener: 'front', cidr: '127.0.0.2/32', expires: null, refreshed: false });
  // The first refusal is logged (later ones may fall under the rate limit of rejection lines).
  const c = await clientFor(t, port, '127.0.0.2');
  t.match(await accessLine(lb, `127.0.0.2:${c.lport}`), { termination: 'rejected_acl', listener: 'front' }, 'logged as rejected_acl');
  // Several connections: with worker threads the kernel spreads them over every thread.
  let refusedCount = 0;
  const attempts = 6;
  for (let i = 0; i < attempts; i++) if (await refused(port, '127.0.0.2')) refusedCount++;
  // The change is committed in every thread before the answer: no connection after it gets through.
  t.equal(refusedCount, attempts, `refused ${refusedCount} of ${attempts}`);
  t.equal(await whoAnswers(port, '127.0.0.1'), 'a', 'other clients still served');

  // Denied again with a ttl (another spelling of the same network): only the ttl changes, and then it lifts itself.
  const ttl = await api(lb, 'POST', '/listeners/front/deny', { cidr: '127.0.0.2', ttl: '1s' });
  t.equal(ttl.status, 200, JSON.stringify(ttl.body));
  t.match(ttl.body, { refreshed: true, expires: /^\d{4}-/ });
  t.match(await runtimeList(lb), [{ kind: 'deny_added', listener: 'front', cidr: '127.0.0.2/32', expires: /^\d{4}-/ }]);
  await waitFor(() => lb.lines.some((l) => l.msg === 'runtime change: deny expired'), 15_000, 'the deny to expire');
  t.equal(await whoAnswers(port, '127.0.0.2'), 'a', 'allowed again after the ttl');
  t.same(await runtimeList(lb), [], 'nothing left to undo');

  // A long ttl lasts until DELETE.
  t.equal((await api(lb, 'POST', '/listeners/front/deny', { cidr: '127.0.0.2', ttl: '1h' })).status, 201);
  t.ok(await refused(port, '127.0.0.2'), 'refused again');
  const lifted = await api(lb, 'DELETE', '/listeners/front/deny', { cidr: '127.0.0.2/32' });
  t.equal(lifted.status, 200, JSON.stringify(lifted.body));
  t.same(lifted.body, { listener: 'front', cidr: '127.0.0.2' });
  t.equal(await whoAnswers(port, '127.0.0.2'), 'a', 'allowed after DELETE');
  t.equal(lb.app.model.listeners[0]!.deny.length, 0);
});

t.test('runtime changes with a bad body, an unknown name, a clash or no token answer 4xx and change nothing', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const lb = await lbFor(t, config([{ name: 'a', address: a.address }], { listen: '127.0.0.1:0', token_file: tokenFile(t) }, { listener: { deny: ['192.0.2.0/24'] } }));
  const before = lb.app.model;

  const bad: Array<[unknown, RegExp]> = [
    [{ address: 'nope' }, /^address: expected host:port/],
    [{ address: 'db.internal:5432' }, /^address: expected an IP address and port/],
    [{ name: 'x' }, /^address: required/],
    [{ address: b.address, weight: 0 }, /^weight: expected an integer from 1 to 256/],
    [{ address: b.address, weight: 1.5 }, /^weight: /],
    [{ address: b.address, backup: 'yes' }, /^backup: expected true or false/],
    [{ address: b.address, name: '' }, /^name: expected a non-empty string/],
    [{ address: b.address, wieght: 2 }, /^wieght: unknown key; did you mean "weight"\?/],
    [[b.address], /^\(body\): expected a JSON object/],
    ['{"address": ', /expected a JSON body/],
  ];
  for (const [body, error] of bad) {
    const r = await api(lb, 'POST', '/pools/p/servers', body);
    t.equal(r.status, 400, `${JSON.stringify(body)}: 400`);
    t.match(r.body.error, error);
  }
  // Every problem at once, each with its path; the good fields apply nothing on their own.
  const many = await api(lb, 'POST', '/pools/p/servers', { address: b.address, weight: 999, backup: 1 });
  t.same((many.body.problems as Array<{ path: string }>).map((p) => p.path), ['weight', 'backup']);

  t.equal((await api(lb, 'POST', '/pools/nope/servers', { address: b.address })).status, 404, 'unknown pool: 404');
  t.match((await api(lb, 'POST', '/pools/q/servers', { address: b.address })).body.error, /no pool named "q"; did you mean "p"\?/);
  t.equal((await api(lb, 'POST', '/pools/p/servers', { name: 'a', address: b.address })).status, 409, 'a name taken: 409');
  t.equal((await api(lb, 'DELETE', '/pools/p/servers/zz')).status, 404, 'unknown server: 404');
  t.equal((await api(lb, 'DELETE', '/pools/nope/servers/a')).status, 404);

  for (const [body, error] of [
    [{ cidr: '10.0.0.0/33' }, /^cidr: expected a prefix length/],
    [{ cidr: 'x' }, /^cidr: expected an address or CIDR/],
    [{ cidr: '10.0.0.0/8', ttl: 'soon' }, /^ttl: /],
    [{ cidr: '10.0.0.0/8', ttl: 0 }, /^ttl: expected a duration above 0/],
    [{}, /^cidr: required/],
  ] as Array<[unknown, RegExp]>) {
    const r = await api(lb, 'POST', '/listeners/front/deny', body);
    t.equal(r.status, 400, `${JSON.stringify(body)}: 400`);
    t.match(r.body.error, error);
  }
  t.match((await api(lb, 'DELETE', '/listeners/front/deny', { cidr: '10.0.0.0/8', ttl: '1s' })).body.error, /^ttl: unknown key/, 'DELETE takes no ttl');
  t.equal((await api(lb, 'POST', '/listeners/back/deny', { cidr: '10.0.0.0/8' })).status, 404, 'unknown listener: 404');
  t.equal((await api(lb, 'DELETE', '/listeners/front/deny', { cidr: '10.0.0.0/8' })).status, 404, 'no such runtime deny: 404');
  t.equal((await api(lb, 'POST', '/listeners/front/deny', { cidr: '192.0.2.0/24' })).status, 409, 'denied by the configuration already: 409');
  t.equal((await api(lb, 'DELETE', '/listeners/front/deny', { cidr: '192.0.2.0/24' })).status, 409, 'a configured deny cannot be lifted at runtime: 409');

  const noToken = await api(lb, 'POST', '/pools/p/servers', { address: b.address }, null);
  t.equal(noToken.status, 401, 'no token: 401');
  t.equal((await api(lb, 'DELETE', '/pools/p/servers/a', undefined, 'wrong')).status, 401, 'wrong token: 401');
  t.equal((await api(lb, 'POST', '/listeners/front/deny', { cidr: '10.0.0.0/8' }, null)).status, 401);
  t.equal((await api(lb, 'GET', '/pools/p/servers')).status, 405);
  t.equal((await api(lb, 'GET', '/listeners/front/deny')).status, 405);

  t.equal(lb.app.model, before, 'the running model is the one it started with');
  t.same(await runtimeList(lb), []);
  t.same(await serverNames(lb), ['a']);
  t.notMatch(JSON.stringify(lb.lines), TOKEN, 'the token never appears in the log');
});

t.test('runtime changes without token_file are refused with 403', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const lb = await lbFor(t, config([{ name: 'a', address: a.address }], { listen: '127.0.0.1:0' }));
  for (const token of [null, TOKEN]) {
    t.equal((await api(lb, 'POST', '/pools/p/servers', { address: b.address }, token)).status, 403);
    t.equal((await api(lb, 'DELETE', '/pools/p/servers/a', undefined, token)).status, 403);
    t.equal((await api(lb, 'POST', '/listeners/front/deny', { cidr: '10.0.0.0/8' }, token)).status, 403);
  }
  t.same(await serverNames(lb), ['a']);
});

t.test('a reload from the file undoes every runtime change; a failed one keeps them', async (t) => {
  const [a, b, c] = await namedBackendsFor(t, ['a', 'b', 'c']);
  const raw = config([{ name: 'a', address: a.address }, { name: 'b', address: b.address }], { listen: '127.0.0.1:0', token_file: tokenFile(t) });
  const lb = await lbFor(t, raw);
  t.equal((await api(lb, 'POST', '/pools/p/servers', { name: 'c', address: c.address })).status, 201);
  t.equal((await api(lb, 'DELETE', '/pools/p/servers/b')).status, 200);
  t.equal((await api(lb, 'POST', '/listeners/front/deny', { cidr: '127.0.0.3', ttl: '1h' })).status, 201);
  t.same(await serverNames(lb), ['a', 'c']);
  t.equal((await runtimeList(lb)).length, 3);
  t.ok(await refused(lb.port(), '127.0.0.3'));

  // A reload that fails (a new listener on the admin server's port) changes nothing, runtime changes included.
  const clash = { ...raw, workers: lb.app.threads, listeners: [...raw.listeners, { name: 'clash', bind: `127.0.0.1:${adminPort(lb)}`, pool: 'p' }] };
  await t.rejects(lb.app.reload(await buildModel(clash)), { code: 'L4LB_LISTEN_FAILED' });
  t.equal((await runtimeList(lb)).length, 3, 'a failed reload keeps them');
  t.same(await serverNames(lb), ['a', 'c']);

  await lb.app.reload(await buildModel({ ...raw, workers: lb.app.threads }));
  t.same(await serverNames(lb), ['a', 'b'], 'the file\'s servers are back, the runtime one is gone');
  t.same(await runtimeList(lb), [], 'nothing left to undo');
  t.match(await whoAnswers(lb.port(), '127.0.0.3'), /^[ab]$/, 'the denied network is served again');
  t.match(lb.lines.find((l) => l.msg === 'reload undid the runtime changes'), { runtime_changes: 3 });
});

t.test('a DNS rebuild of a pool keeps the servers added and removed at runtime', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const port = Number(a.address.split(':')[1]);
  // `localhost` resolves from /etc/hosts; however many addresses it has, the rebuild below replaces them.
  const lb = await lbFor(t, config([{ name: 'x', address: b.address }, { name: 'local', address: `localhost:${port}` }], { listen: '127.0.0.1:0', token_file: tokenFile(t) }));
  t.equal((await api(lb, 'POST', '/pools/p/servers', { name: 'added', address: b.address })).status, 201);
  t.equal((await api(lb, 'DELETE', '/pools/p/servers/x')).status, 200);
  const local = lb.app.model.pools[0]!.hostnames![0]!;
  t.equal(local.at, 0, 'the host name\'s servers moved up one place');
  if (local.addresses.length > 0) {
    const first = local.addresses.length === 1 ? 'local' : `local/${local.addresses[0]!.includes(':') ? `[${local.addresses[0]}]` : local.addresses[0]}:${port}`;
    t.equal((await api(lb, 'DELETE', `/pools/p/servers/${encodeURIComponent(first)}`)).status, 409, 'a host name\'s server is refused');
  }
  // What App does on a DNS change, from the running model.
  const next = withAddresses(lb.app.model, 'p', 'local', ['127.0.0.1', '127.0.0.9'])!;
  t.same(
    next.pools[0]!.servers.map((s) => s.name),
    [`local/127.0.0.1:${port}`, `local/127.0.0.9:${port}`, 'added'],
    'the added server stays, the removed one stays out',
  );
});

t.test('the request bodies are checked whole before anything applies', async (t) => {
  t.same(parseServerBody({ address: '[::1]:5432' }), { name: '[::1]:5432', address: { host: '::1', port: 5432, text: '[::1]:5432' }, weight: 1, backup: false });
  t.same(parseDenyBody({ cidr: '2001:db8::/32', ttl: 1500 }, true), { cidr: '2001:db8::/32', ttlMs: 1500 });
  t.same(parseDenyBody({ cidr: '10.0.0.0/8', ttl: null }, true), { cidr: '10.0.0.0/8', ttlMs: null });
  t.match(parseDenyBody({ cidr: '10.0.0.0/8', ttl: '600h' }, true), [{ path: 'ttl', message: /at most/ }]);
});

// ---------------------------------------------------------------------------
// The CLI

/** Run the CLI without blocking this process, with the token in the environment. */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const base = { ...process.env };
    delete base.L4LB_ADMIN_TOKEN;
    const p = spawn(process.execPath, [BIN, ...args], { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ status: code, stdout, stderr });
    });
  });
}

t.test('l4lb server add|remove and deny add|remove change a running l4lb, and check --diff lists them as what a reload undoes', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const token = tokenFile(t);
  const child = await cliFor(t, config([{ name: 'a', address: a.address }], { listen: '127.0.0.1:0', token_file: token }));
  const admin = `http://127.0.0.1:${await adminPortOf(child)}`;
  const front = child.port('front');
  const env = { L4LB_ADMIN_TOKEN: TOKEN };

  const add = await cli(['server', 'add', 'p', b.address, '--name', 'b', '--weight', '2', '--admin', admin], env);
  t.equal(add.status, 0, add.stderr);
  t.match(add.stdout, new RegExp(`pool p: server b \\(${b.address}\\) added, weight 2; until the next reload`));
  const seen = new Set<string>();
  for (let i = 0; i < 12 && seen.size < 2; i++) seen.add(await whoAnswers(front));
  t.same([...seen].sort(), ['a', 'b']);

  const deny = await cli(['deny', 'add', 'front', '127.0.0.4', '--ttl', '1h', '--admin', admin, '--token-file', token]);
  t.equal(deny.status, 0, deny.stderr);
  t.match(deny.stdout, /listener front: 127\.0\.0\.4 denied until \d{4}-/);
  t.ok(await refused(front, '127.0.0.4'), 'the CLI deny refuses');

  const diff = await cli(['check', '--config', child.file, '--diff', admin]);
  t.equal(diff.status, 0, diff.stderr);
  t.match(diff.stdout, /Runtime changes a reload would undo \(2;/);
  t.match(diff.stdout, new RegExp(`pool p: server b \\(${b.address}\\) added at .*; a reload removes it`));
  t.match(diff.stdout, /listener front: 127\.0\.0\.4 denied at .*, until \d{4}-.*; a reload lifts it/);
  t.match(diff.stdout, /- b\s/, 'the pool diff shows the runtime server going away');

  const lift = await cli(['deny', 'remove', 'front', '127.0.0.4', '--admin', admin], env);
  t.equal(lift.status, 0, lift.stderr);
  t.equal(await whoAnswers(front, '127.0.0.4').then(() => 'served'), 'served');
  const remove = await cli(['server', 'remove', 'p', 'b', '--admin', admin], env);
  t.equal(remove.status, 0, remove.stderr);
  t.match(remove.stdout, /pool p: server b \(.*\) removed; until the next reload/);

  const clean = await cli(['check', '--config', child.file, '--diff', admin]);
  t.match(clean.stdout, /\nno changes\n$/, 'nothing left to undo');

  const unknown = await cli(['server', 'remove', 'p', 'nope', '--admin', admin], env);
  t.equal(unknown.status, 1);
  t.match(unknown.stderr, /admin server answered 404: no server named "nope"/);
  const badAddress = await cli(['server', 'add', 'p', 'nope', '--admin', admin], env);
  t.equal(badAddress.status, 1);
  t.match(badAddress.stderr, /answered 400: address: expected host:port/);
  const noToken = await cli(['deny', 'add', 'front', '10.0.0.0/8', '--admin', admin]);
  t.equal(noToken.status, 1);
  t.match(noToken.stderr, /no admin token/);
  const stray = await cli(['server', 'drain', 'p', 'a', '--weight', '2', '--admin', admin], env);
  t.equal(stray.status, 1);
  t.match(stray.stderr, /--weight and --backup go with "server add" only/);
});
