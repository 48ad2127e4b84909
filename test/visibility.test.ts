/**
 * What an operator sees of reloads, routes and stops:
 * - the reload line names, per pool, the servers added, removed (with the
 *   connections they still have) and changed, per listener the settings
 *   that changed, and never a probe payload (in process and on SIGHUP to
 *   the real process);
 * - a server (or a whole pool) a reload removed while a connection was open
 *   stays in /status, on the page and in `l4lb status` as
 *   `removed (draining, N open)` until the connection closes;
 * - routes are listed per listener in /status, on the page and in `l4lb
 *   status`, and a pool reached only by a route names its listener;
 * - `l4lb status --config FILE` finds the admin server from the file, and
 *   the table has one address column;
 * - after SIGTERM the process exits at once when idle (even with an admin
 *   client in the middle of a request) and within the drain timeout and a
 *   small margin with a connection open, with one thread and with two.
 */
import { spawn } from 'node:child_process';
import fs, { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { formatStatus } from '../src/cli/status-table.js';
import { adminUrlFromConfig } from '../src/cli/admin-target.js';
import type { StatusDoc } from '../src/admin/status.js';
import { buildModel } from '../src/config/load.js';
import { createLogger } from '../src/log.js';
import { reloadFromFile } from '../src/runtime/reload.js';
import { BIN, adminPortOf, cliFor, writeConfig, type Child } from './helpers/cli.js';
import { adminPort, backendFor, lbFor, namedBackendsFor } from './helpers/lb.js';
import { collectingLogger } from './helpers/logs.js';
import { TEST_WORKERS, connect, deadPort, echoBackend, readLine, sleep, waitFor, whoAnswers, type Running } from './helpers/net.js';

const TOKEN = 'visibility-test-token-7c21';

/** The CLI in a child process, not blocking this one (the backends live here). */
function cli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env };
    delete env.L4LB_ADMIN_TOKEN;
    const p = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

async function statusOf(lb: Running): Promise<StatusDoc> {
  const res = await fetch(`http://127.0.0.1:${adminPort(lb)}/status`);
  return (await res.json()) as StatusDoc;
}

async function pageOf(lb: Running): Promise<string> {
  return (await fetch(`http://127.0.0.1:${adminPort(lb)}/`)).text();
}

/** A connection through `port` that the backend named `name` answered (round robin: a few tries). */
async function connectionTo(t: Test, port: number, name: string): Promise<net.Socket> {
  for (let i = 0; i < 12; i++) {
    const s = await connect(port);
    s.on('error', () => {});
    t.teardown(() => s.destroy());
    if ((await readLine(s)) === name) return s;
    s.destroy();
  }
  throw new Error(`no connection reached ${name}`);
}

// ---------------------------------------------------------------------------
// Reloads

t.test('a reload logs per pool the servers added, removed (with their open connections) and changed, per listener what changed, and no probe payload', async (t) => {
  const [a, b, c, d, e] = await namedBackendsFor(t, ['a', 'b', 'c', 'd', 'e']);
  const health = (send: string) => ({ interval: '1h', send });
  const before = {
    workers: TEST_WORKERS,
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info', access: false },
    listeners: [
      { name: 'front', bind: '127.0.0.1:0', pool: 'p' },
      { name: 'side', bind: '127.0.0.1:0', pool: 'q' },
    ],
    pools: [
      {
        name: 'p',
        health: health('AUTH hunter2\r\n'),
        servers: [
          { name: 'a', address: a.address },
          { name: 'b', address: b.address },
          { name: 'c', address: c.address },
        ],
      },
      { name: 'q', health: { interval: '1h' }, servers: [{ name: 'd', address: d.address }] },
    ],
  };
  const lb = await lbFor(t, before);
  const onB = await connectionTo(t, lb.port('front'), 'b');
  const onSide = await connectionTo(t, lb.port('side'), 'd');

  const after = {
    ...before,
    log: { level: 'debug', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', allow: ['127.0.0.0/8'] }],
    pools: [
      {
        name: 'p',
        health: health('AUTH hunter3\r\n'),
        servers: [
          { name: 'a', address: a.address, weight: 3 },
          { name: 'c', address: d.address },
          { name: 'e', address: e.address },
        ],
      },
    ],
  };
  const { file, cleanup } = writeConfig(after);
  t.teardown(cleanup);
  const { logger, lines } = collectingLogger('info');
  t.ok(await reloadFromFile(lb.app, file, logger), 'the reload succeeds');
  const line = lines.find((l) => l.msg === 'configuration reloaded')!;
  t.ok(line, 'one reload line');
  t.match(line, {
    listeners_removed: ['side'],
    pools_removed: ['q'],
    listeners_changed: [{ listener: 'front', fields: { allow: 'none → [127.0.0.0/8]' } }],
    settings_changed: { 'log.level': 'info → debug' },
  });
  t.same(line.pools_changed, [
    {
      pool: 'p',
      servers_added: [{ server: 'e', address: e.address, weight: 1, backup: false }],
      servers_removed: [{ server: 'b', address: b.address, open: 1 }],
      servers_changed: [
        { server: 'a', fields: { weight: '1 → 3' } },
        { server: 'c', fields: { address: `${c.address} → ${d.address}` }, replaced: true, open: 0 },
      ],
      fields: { 'health.send': (line.pools_changed as Array<{ fields: Record<string, string> }>)[0]!.fields['health.send'] },
    },
  ]);
  const fields = (line.pools_changed as Array<{ fields: Record<string, string> }>)[0]!.fields;
  t.match(fields['health.send'], /^<redacted [0-9a-f]{8}> → <redacted [0-9a-f]{8}>$/, 'a changed probe payload shows as changed, redacted');
  t.notMatch(JSON.stringify(lines), /hunter/, 'no probe payload in any line');
  const text = line.changes as string;
  t.match(text, `server added e (${e.address})`);
  t.match(text, `server removed b (${b.address}) (1 open, draining)`);
  t.match(text, 'a: weight 1 → 3');
  t.match(text, `c: address ${c.address} → ${d.address} (replaced)`);
  t.match(text, 'pool q removed (1 open, draining)');
  t.match(text, 'listener side removed');
  t.match(text, 'listener front: allow none → [127.0.0.0/8]');

  // A reload that changes nothing says so.
  lines.length = 0;
  t.ok(await reloadFromFile(lb.app, file, logger));
  t.match(lines.find((l) => l.msg === 'configuration reloaded'), { changes: 'none', pools_changed: [], listeners_changed: [] });
  onB.destroy();
  onSide.destroy();
});

t.test('SIGHUP that adds a server to the real process logs the server added to its pool', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const config = (servers: Array<{ name: string; address: string }>) => ({
    workers: TEST_WORKERS,
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers }],
  });
  const child = await cliFor(t, config([{ name: 'a', address: a.address }]));
  writeFileSync(child.file, JSON.stringify(config([{ name: 'a', address: a.address }, { name: 'b', address: b.address }])));
  child.proc.kill('SIGHUP');
  const line = await child.waitForLine((l) => l.msg === 'configuration reloaded');
  t.match(line, {
    listeners_added: [],
    pools_added: [],
    pools_changed: [{ pool: 'p', servers_added: [{ server: 'b', address: b.address, weight: 1, backup: false }] }],
    changes: `pool p: server added b (${b.address})`,
  });
  child.proc.kill('SIGTERM');
  t.equal(await child.exited(), 0);
});

// ---------------------------------------------------------------------------
// Removed servers that still have connections

t.test('a server removed by a reload while a connection is open stays in /status, the page and the table as removed (draining, 1 open) until it closes', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const config = (servers: Array<{ name: string; address: string }>) => ({
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers }],
  });
  const lb = await lbFor(t, config([{ name: 'a', address: a.address }, { name: 'b', address: b.address }]));
  const onB = await connectionTo(t, lb.port(), 'b');
  await lb.app.reload(await buildModel({ ...config([{ name: 'a', address: a.address }]), workers: TEST_WORKERS }));

  const doc = await statusOf(lb);
  const pool = doc.pools.find((p) => p.name === 'p')!;
  t.same(
    pool.servers.map((s) => [s.name, s.state, s.active]),
    [
      ['a', 'up', 0],
      ['b', 'removed', 1],
    ],
    'b is listed after the configured servers, removed, with its open connection',
  );
  t.equal(doc.pools.length, 1, 'one pool');
  const table = formatStatus(doc);
  t.match(table, /^ {2}b +127\.0\.0\.1:\d+ +removed \(draining, 1 open\) +ready /m, 'the table says removed (draining, 1 open)');
  t.match(table, /POOL p \(least_conn, from front\): 1\/1 servers taking new connections/, 'a removed server does not count as configured');
  const page = await pageOf(lb);
  t.match(page, /<tr class="row-removed">\n<td><span class="badge removed">removed<\/span> <span class="muted">\(draining, 1 open\)<\/span><\/td>\n<td class="name">b<\/td>/);
  t.match(page, /<span class="badge up">1\/1<\/span> pool p/, 'the pool badge counts configured servers only');
  t.equal(await whoAnswers(lb.port()), 'a', 'new connections go to a');

  onB.destroy();
  await waitFor(() => lb.app.pools.get('p')!.removedServers().length === 0, 5_000, 'b to be forgotten once its connection closed');
  t.same((await statusOf(lb)).pools[0]!.servers.map((s) => s.name), ['a'], 'b disappears once its last connection closed');
  t.notMatch(await pageOf(lb), /class="row-removed"/, 'and from the page');
});

t.test('a pool removed by a reload while a connection is open is listed as removed until it closes; a server added back is listed once', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const listener = (pool: string) => ({ name: 'front', bind: '127.0.0.1:0', pool });
  const base = { workers: TEST_WORKERS, admin: { listen: '127.0.0.1:0' }, log: { level: 'info', access: false } };
  const lb = await lbFor(t, {
    ...base,
    listeners: [listener('old')],
    pools: [
      { name: 'old', health: { interval: '1h' }, servers: [{ name: 'b', address: b.address }] },
      { name: 'p', health: { interval: '1h' }, servers: [{ name: 'a', address: a.address }] },
    ],
  });
  const onOld = await connectionTo(t, lb.port(), 'b');
  await lb.app.reload(await buildModel({ ...base, listeners: [listener('p')], pools: [{ name: 'p', health: { interval: '1h' }, servers: [{ name: 'a', address: a.address }] }] }));

  let doc = await statusOf(lb);
  t.same(
    doc.pools.map((p) => [p.name, p.removed, p.listeners, p.servers.map((s) => `${s.name} ${s.state} ${s.active}`)]),
    [
      ['p', false, ['front'], ['a up 0']],
      ['old', true, [], ['b removed 1']],
    ],
    'the removed pool is listed, removed, with the server that still has a connection',
  );
  t.match(formatStatus(doc), /^POOL old \(least_conn, removed by a reload\): draining, 1 open connection$/m);
  t.match(await pageOf(lb), /<span class="badge removed">removed<\/span> pool old/);

  // The pool comes back with the same server: its open connection is its own again, listed once.
  await lb.app.reload(
    await buildModel({
      ...base,
      listeners: [listener('p')],
      pools: [
        { name: 'old', health: { interval: '1h' }, servers: [{ name: 'b', address: b.address }] },
        { name: 'p', health: { interval: '1h' }, servers: [{ name: 'a', address: a.address }] },
      ],
    }),
  );
  doc = await statusOf(lb);
  t.same(
    doc.pools.map((p) => [p.name, p.removed, p.servers.map((s) => `${s.name} ${s.state} ${s.active}`)]),
    [
      ['old', false, ['b up 1']],
      ['p', false, ['a up 0']],
    ],
    'no removed copy beside the configured one',
  );
  t.same(doc.pools.find((p) => p.name === 'old')!.listeners, [], 'a pool no listener reaches says so');
  t.match(formatStatus(doc), /^POOL old \(least_conn, from no listener\): 1\/1 servers taking new connections$/m);
  onOld.destroy();
  await waitFor(() => lb.app.pools.get('old')!.servers[0]!.active === 0, 5_000, 'the connection to close');
  t.same(lb.app.removedPools, [], 'no removed pool is kept');
});

// ---------------------------------------------------------------------------
// Routes, the table, --config

t.test('routes show per listener in /status, on the page and in l4lb status --config, and a pool reached only by a route names its listener', async (t) => {
  const echo = await backendFor(t, echoBackend());
  const adminAt = await deadPort();
  const tokenFile = join(t.testdir({ 'admin.token': `${TOKEN}\n` }), 'admin.token');
  const config = {
    workers: TEST_WORKERS,
    admin: { listen: `127.0.0.1:${adminAt}`, token_file: tokenFile },
    log: { level: 'info', access: false },
    listeners: [
      { name: 'plain', bind: '127.0.0.1:0', pool: 'p' },
      {
        name: 'tls',
        bind: '127.0.0.1:0',
        pool: 'p',
        tls: { mode: 'passthrough' },
        routes: [
          { sni: 'a.example.com', pool: 'ra' },
          { sni: '*.b.example.com', pool: 'p' },
        ],
      },
    ],
    pools: [
      { name: 'p', health: { interval: '1h' }, servers: [{ name: 'e', address: echo.address }] },
      { name: 'ra', health: { interval: '1h' }, servers: [{ name: 'r', address: echo.address }] },
    ],
  };
  const child: Child & { file: string } = await cliFor(t, config);
  t.equal(await adminPortOf(child), adminAt);
  const tlsPort = child.port('tls');

  const json = await cli(['status', '--json', '--config', child.file]);
  t.equal(json.status, 0, json.stderr);
  const doc = JSON.parse(json.stdout) as StatusDoc;
  t.same(doc.listeners.find((l) => l.name === 'tls')!.routes, [
    { sni: 'a.example.com', pool: 'ra' },
    { sni: '*.b.example.com', pool: 'p' },
  ]);
  t.same(doc.listeners.find((l) => l.name === 'plain')!.routes, []);
  t.same(doc.pools.find((p) => p.name === 'ra')!.listeners, ['tls'], 'the pool reached only by a route names its listener');
  t.same(doc.pools.find((p) => p.name === 'p')!.listeners, ['plain', 'tls']);

  const table = await cli(['status', '--config', child.file]);
  t.equal(table.status, 0, table.stderr);
  const lines = table.stdout.split('\n');
  t.match(lines[0], /^LISTENER +ADDRESS +POOL +OPEN +ACCEPTED$/, 'one address column, no duplicate port');
  t.match(table.stdout, new RegExp(`^tls +127\\.0\\.0\\.1:${tlsPort} +p +0 +0$`, 'm'), 'the address has the bound port');
  t.match(table.stdout, /^ROUTES /m);
  t.match(table.stdout, /^ {2}LISTENER +MATCH +POOL$/m);
  t.match(table.stdout, /^ {2}tls +sni a\.example\.com +ra$/m);
  t.match(table.stdout, /^ {2}tls +sni \*\.b\.example\.com +p$/m);
  t.match(table.stdout, /^POOL ra \(least_conn, from tls \(route\)\): [01]\/1 servers taking new connections$/m);
  t.match(table.stdout, /^POOL p \(least_conn, from plain, tls\): [01]\/1 servers taking new connections$/m);

  const page = await (await fetch(`http://127.0.0.1:${adminAt}/`)).text();
  t.match(page, /<td class="routes">sni a\.example\.com → ra<br>sni \*\.b\.example\.com → p<\/td>/, 'the page lists the routes');
  t.match(page, /pool ra <span class="muted">least_conn · 0 active · from tls \(route\)<\/span>/, 'and where the routed pool is reached from');
  t.match(page, new RegExp(`<td class="mono">127\\.0\\.0\\.1:${tlsPort}</td>`), 'one address column on the page too');

  // `server` finds the admin server the same way.
  const drain = await cli(['server', 'drain', 'ra', 'r', '--config', child.file, '--token-file', tokenFile]);
  t.equal(drain.status, 0, drain.stderr);
  t.equal(drain.stdout, 'pool ra, server r: ready -> drain\n');

  // --admin and --config name the same thing: one or the other. A file without admin: says so.
  const both = await cli(['status', '--config', child.file, '--admin', `http://127.0.0.1:${adminAt}`]);
  t.equal(both.status, 1);
  t.match(both.stderr, /cannot be used with/);
  const { file: noAdmin, cleanup } = writeConfig({ listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }], pools: [{ name: 'p', servers: [{ address: echo.address }] }] });
  t.teardown(cleanup);
  const missing = await cli(['status', '--config', noAdmin]);
  t.equal(missing.status, 1);
  t.match(missing.stderr, /has no admin: section.*pass --admin URL/);
  const unreadable = await cli(['status', '--config', join(child.file, '..', 'nope.yaml')]);
  t.equal(unreadable.status, 1);
  t.match(unreadable.stderr, /nope\.yaml/);
});

t.test('the admin URL from a configuration file: wildcards are reached on loopback, IPv6 in brackets, the default port without listen', async (t) => {
  const url = async (admin: unknown): Promise<string> => {
    const { file, cleanup } = writeConfig({ admin, listeners: [], pools: [] });
    t.teardown(cleanup);
    return adminUrlFromConfig(file);
  };
  t.equal(await url({ listen: '0.0.0.0:9911' }), 'http://127.0.0.1:9911');
  t.equal(await url({ listen: '[::]:9911' }), 'http://[::1]:9911');
  t.equal(await url({ listen: '[::1]:9912' }), 'http://[::1]:9912');
  t.equal(await url({ listen: 'localhost:9913' }), 'http://localhost:9913', 'a host name is kept as written');
  t.equal(await url({}), 'http://127.0.0.1:9900', 'admin: without listen is the default address');
  await t.rejects(url({ listen: 'nowhere' }), { code: 'L4LB_ADMIN_URL_INVALID', message: /admin\.listen: expected host:port/ });
  await t.rejects(url('yes'), { code: 'L4LB_ADMIN_URL_INVALID' });
  const { file, cleanup } = writeConfig('admin:\n  listen: 127.0.0.1:9914\nlisteners: []\n');
  t.teardown(cleanup);
  t.equal(await adminUrlFromConfig(file), 'http://127.0.0.1:9914', 'YAML too');
});

// ---------------------------------------------------------------------------
// Exit timing

/** Milliseconds from SIGTERM to the process's exit, and its exit code. */
async function exitAfterTerm(child: Child): Promise<{ ms: number; code: number | null }> {
  const started = performance.now();
  const exited = child.exited(15_000);
  child.proc.kill('SIGTERM');
  const code = await exited;
  return { ms: performance.now() - started, code };
}

for (const workers of [1, 2]) {
  t.test(`with workers: ${workers}, an idle instance exits at once after SIGTERM, even with an admin client in the middle of a request`, async (t) => {
    const echo = await backendFor(t, echoBackend());
    const dir = t.testdir({ 'admin.token': `${TOKEN}\n` });
    const child = await cliFor(
      t,
      {
        workers,
        admin: { listen: '127.0.0.1:0', token_file: join(dir, 'admin.token') },
        log: { level: 'info', access: false },
        listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
        pools: [{ name: 'p', health: { interval: '200ms' }, servers: [{ name: 'e', address: echo.address }] }],
      },
      ['--drain-timeout', '5s'],
    );
    const admin = await adminPortOf(child);
    // A keep-alive client between requests, and one whose request body is still arriving (it would be given 5 s).
    const idle = await connect(admin);
    idle.on('error', () => {});
    t.teardown(() => idle.destroy());
    idle.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await readLine(idle);
    const slow = await connect(admin);
    slow.on('error', () => {});
    t.teardown(() => slow.destroy());
    slow.write(`POST /pools/p/servers/e/state HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"state":`);
    await sleep(300); // the request head is in, probes are running
    const { ms, code } = await exitAfterTerm(child);
    t.equal(code, 0);
    t.ok(ms < 1_000, `exited ${Math.round(ms)} ms after SIGTERM (bound 1000 ms)`);
    t.ok(child.lines.some((l) => l.msg === 'stopped'), 'logged stopped before exiting');
  });

  t.test(`with workers: ${workers} and --drain-timeout 2s, an open connection makes the exit wait the drain timeout and not much more`, async (t) => {
    const echo = await backendFor(t, echoBackend());
    const child = await cliFor(
      t,
      {
        workers,
        admin: { listen: '127.0.0.1:0' },
        log: { level: 'info', access: false },
        listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
        pools: [{ name: 'p', health: { interval: '200ms' }, servers: [{ name: 'e', address: echo.address }] }],
      },
      ['--drain-timeout', '2s'],
    );
    // Several, so that with two threads each is likely to hold one.
    const held: net.Socket[] = [];
    for (let i = 0; i < 4; i++) {
      const s = await connect(child.port('front'));
      s.on('error', () => {});
      t.teardown(() => s.destroy());
      held.push(s);
    }
    await sleep(200);
    const { ms, code } = await exitAfterTerm(child);
    t.equal(code, 0);
    t.ok(ms >= 2_000, `waited the drain timeout: ${Math.round(ms)} ms`);
    t.ok(ms < 2_700, `exited ${Math.round(ms)} ms after SIGTERM (bound 2700 ms)`);
    t.ok(child.lines.some((l) => l.msg === 'drain timeout reached, closing open connections'));
  });
}

t.test('closing the log writes what is buffered without waiting for an fsync (a slow disk held the exit)', async (t) => {
  const dir = t.testdir({});
  const file = join(dir, 'l4lb.log');
  const root = createLogger('info', file);
  await sleep(100); // the file is open
  for (let i = 0; i < 50; i++) root.logger.info({ i }, 'line');
  const fsync = fs.fsync;
  let fsyncs = 0;
  // A disk that takes 3 s to sync: the close must not wait for it.
  fs.fsync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    fsyncs++;
    setTimeout(() => cb(null), 3_000).unref();
  }) as typeof fs.fsync;
  t.teardown(() => {
    fs.fsync = fsync;
  });
  const started = performance.now();
  await root.close();
  const ms = performance.now() - started;
  fs.fsync = fsync;
  t.ok(ms < 500, `closed in ${Math.round(ms)} ms (bound 500 ms)`);
  t.equal(fsyncs, 0, 'no fsync');
  const written = readFileSync(file, 'utf8').trim().split('\n');
  t.equal(written.length, 50, 'every line was written');
  t.match(JSON.parse(written.at(-1)!), { i: 49, msg: 'line' });
});
