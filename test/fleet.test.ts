/**
 * Several l4lb in a fleet (VRRP with keepalived, BGP ECMP with ExaBGP):
 * GET /ready for route health checks, the grace after a stop signal (ready
 * 503 at once, still accepting, then the drain), the same source_hash picks
 * in every instance whatever the servers' order, and the shipped keepalived
 * and ExaBGP examples checked by the real tools and run against a real l4lb.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { adminPortOf, cliFor, ROOT, writeConfig } from './helpers/cli.js';
import { adminPort, backendFor, lbFor, namedBackendsFor } from './helpers/lb.js';
import { connect, deadPort, readLine, sleep, waitFor, whoAnswers, type Running } from './helpers/net.js';
import { problemsOf } from './helpers/config.js';
import { need } from './helpers/requirements.js';

const KEEPALIVED_CONF = join(ROOT, 'conf', 'examples', 'keepalived.conf');
const EXABGP_CONF = join(ROOT, 'conf', 'examples', 'exabgp.conf');
/** The admin address the examples' checks ask; tests point them at their own l4lb's. */
const EXAMPLE_ADMIN = '127.0.0.1:9900';

async function get(url: string): Promise<{ status: number; text: string }> {
  const res = await fetch(url);
  return { status: res.status, text: await res.text() };
}

const readyOf = (port: number): Promise<{ status: number; text: string }> => get(`http://127.0.0.1:${port}/ready`);

/** The path of `tool` (PATH, then the sbin directories), or null. */
function which(tool: string): string | null {
  const r = spawnSync('sh', ['-c', `PATH="$PATH:/usr/sbin:/sbin" command -v ${tool}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function config(servers: Record<string, string>, extra: Record<string, unknown> = {}) {
  return {
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'round_robin', health: { interval: '1h' }, servers: Object.entries(servers).map(([name, address]) => ({ name, address })) }],
    ...extra,
  };
}

// ---------------------------------------------------------------------------
// GET /ready

t.test('GET /ready answers 200 without a token while every listener accepts and its pool has an up server', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const dir = t.testdir({ 'admin.token': 'fleet-token-0123456789abcdef\n' });
  const lb = await lbFor(t, config({ a: a!.address }, { admin: { listen: '127.0.0.1:0', token_file: join(dir, 'admin.token') } }));
  const ready = await readyOf(adminPort(lb));
  t.equal(ready.status, 200, 'no Authorization header needed');
  t.equal(ready.text, 'ready\n');
  const head = await fetch(`http://127.0.0.1:${adminPort(lb)}/ready`, { method: 'HEAD' });
  t.equal(head.status, 200, 'HEAD works too');
  t.equal((await fetch(`http://127.0.0.1:${adminPort(lb)}/ready`, { method: 'POST' })).status, 405);
});

t.test('GET /ready answers 503 naming the pool when its servers are drained, in maint or down, and 200 once one is ready again', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const dead = await deadPort();
  const lb = await lbFor(t, {
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info', access: false },
    listeners: [
      // A route to a pool with nothing up does not make the instance unready: its default pool still serves.
      { name: 'front', bind: '127.0.0.1:0', pool: 'p', tls: { mode: 'passthrough' }, routes: [{ sni: 'r.example', pool: 'r' }] },
      { name: 'other', bind: '127.0.0.1:0', pool: 'q' },
    ],
    pools: [
      { name: 'p', balance: 'round_robin', health: { interval: '1h' }, servers: [{ name: 'a', address: a!.address }] },
      { name: 'q', balance: 'round_robin', health: { interval: '200ms', timeout: '200ms', fall: 1 }, servers: [{ name: 'b', address: b!.address }] },
      { name: 'r', balance: 'round_robin', health: { interval: '100ms', timeout: '100ms', fall: 1 }, servers: [{ name: 'gone', address: `127.0.0.1:${dead}` }] },
    ],
  });
  const port = adminPort(lb);
  await waitFor(() => !lb.app.pools.get('r')!.server('gone')!.up, 10_000, 'the routed pool\'s server marked down');
  t.equal((await readyOf(port)).status, 200, 'a routed pool with no up server does not count');

  const p = lb.app.pools.get('p')!;
  const q = lb.app.pools.get('q')!;
  p.setAdminState(p.server('a')!, 'drain');
  let r = await readyOf(port);
  t.equal(r.status, 503, 'drained: not ready');
  t.equal(r.text, 'not ready: no up server in pool p\n');

  q.setAdminState(q.server('b')!, 'maint');
  r = await readyOf(port);
  t.equal(r.status, 503);
  t.equal(r.text, 'not ready: no up server in pool p; no up server in pool q\n', 'every reason is named');

  p.setAdminState(p.server('a')!, 'ready');
  q.setAdminState(q.server('b')!, 'ready');
  t.equal((await readyOf(port)).status, 200, 'ready again');

  // Down by health: the server's probes fail.
  await b!.close();
  await waitFor(() => !lb.app.pools.get('q')!.server('b')!.up, 10_000, 'b marked down by its probes');
  r = await readyOf(port);
  t.equal(r.status, 503, 'down: not ready');
  t.equal(r.text, 'not ready: no up server in pool q\n');
});

t.test('GET /ready turns 503 the moment a stop begins; listeners keep accepting for the grace, then the drain closes them', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const lb = await lbFor(t, config({ a: a!.address }, { grace: '60s' }));
  const port = adminPort(lb);
  t.equal((await readyOf(port)).status, 200);

  const stopping = lb.app.close(0);
  const r = await readyOf(port);
  t.equal(r.status, 503, '503 at once');
  t.equal(r.text, 'not ready: shutting down (stopping)\n');
  t.equal(lb.app.phase, 'stopping');
  t.equal((await get(`http://127.0.0.1:${port}/healthz`)).status, 200, '/healthz: still alive during the grace');
  t.match(lb.lines.find((l) => l.msg === 'shutdown: grace 1m, /ready 503'), { grace_ms: 60_000 }, 'the grace is logged');
  const front = lb.port('front');
  t.equal(await whoAnswers(front), 'a', 'a new connection is still served during the grace');

  t.equal(lb.app.skipGrace(), true, 'skipGrace() ends the grace');
  t.equal(lb.app.skipGrace(), false, 'and only once');
  await stopping;
  await t.rejects(connect(front), { code: 'ECONNREFUSED' }, 'refused after the grace');
});

t.test('with grace 0 (the default), GET /ready answers 503 from the start of the drain', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const lb: Running = await lbFor(t, config({ a: a!.address }));
  t.equal(lb.app.model.grace, 0);
  const port = adminPort(lb);
  // An open connection keeps the drain (and the admin server) going while /ready is asked.
  const client = await connect(lb.port());
  t.teardown(() => client.destroy());
  t.equal(await readLine(client), 'a');
  const stopping = lb.app.close(10_000);
  const r = await readyOf(port);
  t.equal(r.status, 503);
  t.equal(r.text, 'not ready: shutting down (draining)\n');
  t.notOk(lb.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('shutdown: grace')), 'no grace logged');
  client.destroy();
  await stopping;
});

t.test('grace is a duration: a bad value is refused with its path', async (t) => {
  const { buildModel } = await import('../src/config/load.js');
  const base = config({ a: '127.0.0.1:1' });
  t.equal((await buildModel({ ...base, grace: '5s' })).grace, 5_000);
  t.equal((await buildModel({ ...base, grace: 1500 })).grace, 1_500);
  for (const bad of ['5 parsecs', -1, true]) {
    const problems = await problemsOf({ ...base, grace: bad });
    t.same(problems.map((p) => p.path), ['grace'], `grace: ${JSON.stringify(bad)} is one problem at its path`);
  }
});

// ---------------------------------------------------------------------------
// Same picks everywhere

t.test('two l4lb whose configs list the servers in a different order send the same 1,000 client addresses to the same servers (source_hash)', async (t) => {
  const names = ['a', 'b', 'c', 'd'] as const;
  const backends = await namedBackendsFor(t, names);
  const servers = names.map((name, i) => ({ name, address: backends[i]!.address, weight: i === 3 ? 2 : 1 }));
  const lbConfig = (order: typeof servers) => ({
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'source_hash', health: { interval: '1h' }, servers: order }],
  });
  const one = await lbFor(t, lbConfig(servers));
  const two = await lbFor(t, lbConfig([servers[2]!, servers[0]!, servers[3]!, servers[1]!]));

  // 1,000 distinct client addresses in 127.0.0.0/8 (all of it is loopback on Linux).
  const clients = Array.from({ length: 1_000 }, (_, i) => `127.10.${Math.floor(i / 250)}.${(i % 250) + 1}`);
  const picks = async (lb: Running): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < clients.length; i += 50) {
      out.push(...(await Promise.all(clients.slice(i, i + 50).map((c) => whoAnswers(lb.port(), c)))));
    }
    return out;
  };
  const first = await picks(one);
  const second = await picks(two);
  const differ = clients.filter((_, i) => first[i] !== second[i]);
  t.equal(differ.length, 0, `every client lands on the same server through both (differ: ${differ.slice(0, 5).join(', ')})`);
  const counts: Record<string, number> = {};
  for (const n of first) counts[n] = (counts[n] ?? 0) + 1;
  t.comment(`picks per server: ${JSON.stringify(counts)}`);
  for (const n of names) t.ok((counts[n] ?? 0) >= 100, `server ${n} takes its share (${counts[n] ?? 0})`);
  t.ok(counts.d! > counts.a!, 'weight 2 takes more than weight 1');
});

// ---------------------------------------------------------------------------
// The /ready + grace sequence in a real process

t.test('l4lb run: SIGTERM turns /ready 503 at once, new connections are served during the grace and refused after it, exit 0', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const lb = await cliFor(t, config({ a: a!.address }, { grace: '3s' }), ['--drain-timeout', '5s'], process.env, { untraced: true });
  const admin = await adminPortOf(lb);
  const front = lb.port('front');
  t.equal((await readyOf(admin)).status, 200);
  const open = await connect(front);
  open.on('error', () => {});
  t.teardown(() => open.destroy());
  t.equal(await readLine(open), 'a');

  lb.proc.kill('SIGTERM');
  const sentAt = performance.now();
  // Bounded: the first answers after the signal is handled; 100 tries of 20 ms at most.
  let status = 200;
  for (let i = 0; i < 100 && status === 200; i++) {
    status = (await readyOf(admin)).status;
    if (status === 200) await sleep(20);
  }
  const turnedMs = performance.now() - sentAt;
  t.equal(status, 503, '/ready answers 503');
  t.comment(`/ready turned 503 ${turnedMs.toFixed(0)} ms after the signal`);
  t.ok(turnedMs < 3_000, 'within the grace, before listeners close');
  await lb.waitForLine((l) => l.msg === 'shutdown: grace 3s, /ready 503');
  t.notOk(lb.lines.some((l) => l.msg === 'grace over'), 'still in the grace');
  t.equal(await whoAnswers(front), 'a', 'a new connection during the grace is served');

  await lb.waitForLine((l) => l.msg === 'grace over', 10_000);
  await lb.waitForLine((l) => l.msg === 'draining');
  await t.rejects(connect(front), { code: 'ECONNREFUSED' }, 'refused once the grace is over');
  open.destroy(); // the drain then ends
  t.equal(await lb.exited(15_000), 0, 'exit 0');
  const at = (msg: string): number => lb.lines.findIndex((l) => l.msg === msg);
  t.ok(at('stop signal, draining') < at('shutdown: grace 3s, /ready 503'));
  t.ok(at('grace over') < at('draining'), 'the drain comes after the grace');
});

t.test('l4lb run: a second SIGTERM during the grace skips the rest of it and drains at once', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const lb = await cliFor(t, config({ a: a!.address }, { grace: '5m' }), [], process.env, { untraced: true });
  const admin = await adminPortOf(lb);
  lb.proc.kill('SIGTERM');
  await lb.waitForLine((l) => l.msg === 'shutdown: grace 5m, /ready 503');
  t.equal((await readyOf(admin)).status, 503);
  lb.proc.kill('SIGTERM');
  t.equal(await lb.exited(15_000), 0, 'exits 0, long before 5 minutes');
  t.match(lb.lines.find((l) => l.msg === 'second stop signal during grace, draining now'), { signal: 'SIGTERM' });
  t.ok(lb.lines.some((l) => l.msg === 'stopped'), 'a graceful stop, not a forced one');
  t.notOk(lb.lines.some((l) => l.msg === 'second stop signal, closing everything now'));
});

// ---------------------------------------------------------------------------
// The shipped examples

/** Runs `cmd` through sh in its own process group (killed when `t` ends); resolves with its exit. */
function runShell(t: Test, cmd: string, timeoutMs = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  const proc = spawn('sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  proc.stdout.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const kill = (): void => {
    try {
      process.kill(-proc.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  t.teardown(kill);
  return new Promise((resolve) => {
    const timer = setTimeout(kill, timeoutMs);
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

/**
 * keepalived -t: exit 0 and no complaint. keepalived 2.2.7 (Debian 12) kills
 * itself with SIGTERM at the end of a config test whenever scripts run as a
 * script_user (fixed upstream in 2.2.8): there, no output is what says the
 * file is good, and the broken copy below proves a problem would be printed.
 */
async function keepalivedTest(t: Test, file: string): Promise<{ ok: boolean; output: string }> {
  const r = await runShell(t, `keepalived -t -f '${file}'`);
  const output = r.output.replace(/^Terminated\s*$/m, '').trim();
  return { ok: (r.code === 0 || r.signal === 'SIGTERM' || r.code === 143) && output === '', output };
}

t.test('conf/examples/keepalived.conf passes keepalived\'s config test, and a broken copy does not', async (t) => {
  if (!need(t, which('keepalived') === null ? 'keepalived is not installed (apt-get install keepalived)' : null)) return;
  const good = await keepalivedTest(t, KEEPALIVED_CONF);
  t.ok(good.ok, `keepalived -t accepts it${good.output === '' ? '' : `: ${good.output}`}`);
  const { file, cleanup } = writeConfig('', 'keepalived.conf');
  t.teardown(cleanup);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(file, readFileSync(KEEPALIVED_CONF, 'utf8').replace('advert_int 1', 'advert_intervl 1'));
  const bad = await keepalivedTest(t, file);
  t.notOk(bad.ok, 'a misspelled keyword is caught');
  t.match(bad.output, /Unknown keyword 'advert_intervl'/);
});

t.test('the keepalived track_script succeeds against a ready l4lb and fails from its SIGTERM on, during the grace', async (t) => {
  if (!need(t, which('curl') === null ? 'curl is not installed (apt-get install curl)' : null)) return;
  const script = /^\s*script\s+"([^"]+)"/m.exec(readFileSync(KEEPALIVED_CONF, 'utf8'))?.[1];
  t.ok(script?.includes(`${EXAMPLE_ADMIN}/ready`), 'the track script asks /ready');
  const [a] = await namedBackendsFor(t, ['a']);
  const lb = await cliFor(t, config({ a: a!.address }, { grace: '30s' }), [], process.env, { untraced: true });
  const check = script!.replace(EXAMPLE_ADMIN, `127.0.0.1:${await adminPortOf(lb)}`);
  t.equal((await runShell(t, check)).code, 0, 'exit 0 while ready');
  lb.proc.kill('SIGTERM');
  await lb.waitForLine((l) => l.msg === 'shutdown: grace 30s, /ready 503');
  t.not((await runShell(t, check)).code, 0, 'non-zero once stopping');
  t.equal(await whoAnswers(lb.port('front')), 'a', 'while l4lb still accepts');
});

t.test('conf/examples/exabgp.conf passes exabgp --validate, and a broken copy does not', async (t) => {
  if (!need(t, which('exabgp') === null ? 'exabgp is not installed (apt-get install exabgp)' : null)) return;
  const good = await runShell(t, `exabgp --validate '${EXABGP_CONF}'`);
  t.equal(good.code, 0, `exabgp --validate accepts it${good.code === 0 ? '' : `: ${good.output.slice(-2000)}`}`);
  const { file, cleanup } = writeConfig('', 'exabgp.conf');
  t.teardown(cleanup);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(file, readFileSync(EXABGP_CONF, 'utf8').replace('peer-as 64512;', 'peer-asn 64512;'));
  const bad = await runShell(t, `exabgp --validate '${file}'`);
  t.not(bad.code, 0, 'a misspelled keyword is caught');
  t.match(bad.output, /invalid keyword "peer-asn"/);
});

t.test('the ExaBGP health check process announces the route while l4lb is ready and withdraws it during the grace', async (t) => {
  const runLine = /^\s*run\s+(.+);\s*$/m.exec(readFileSync(EXABGP_CONF, 'utf8'))?.[1];
  t.ok(runLine?.includes(`${EXAMPLE_ADMIN}/ready`), 'the process asks /ready');
  const python = runLine?.split(/\s+/)[0] ?? '';
  const helper = spawnSync(python, ['-m', 'exabgp', 'healthcheck', '--help'], { encoding: 'utf8' });
  if (!need(t, helper.status === 0 && which('curl') !== null ? null : `${python} -m exabgp healthcheck or curl is missing (apt-get install exabgp curl)`)) return;
  const [a] = await namedBackendsFor(t, ['a']);
  const lb = await cliFor(t, config({ a: a!.address }, { grace: '30s' }), [], process.env, { untraced: true });
  const cmd = runLine!.replace(EXAMPLE_ADMIN, `127.0.0.1:${await adminPortOf(lb)}`);
  // ExaBGP would read these lines from the process's stdout.
  const proc = spawn('sh', ['-c', `exec ${cmd}`], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  t.teardown(() => {
    try {
      process.kill(-proc.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  const lines: string[] = [];
  let err = '';
  proc.stdout.on('data', (d: Buffer) => {
    lines.push(...d.toString().split('\n').filter((l) => l !== ''));
    proc.stdin.write('done\n'.repeat(d.toString().split('\n').length)); // ExaBGP 4 acknowledges each command
  });
  proc.stdin.on('error', () => {});
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  await waitFor(() => lines.some((l) => l.startsWith('announce route 192.0.2.10/32')), 20_000, `an announce (stderr: ${err.slice(-500)})`);
  t.pass('announced while ready');
  lb.proc.kill('SIGTERM');
  await lb.waitForLine((l) => l.msg === 'shutdown: grace 30s, /ready 503');
  const announced = lines.length;
  await waitFor(() => lines.slice(announced).some((l) => l.startsWith('withdraw route 192.0.2.10/32')), 15_000, 'a withdraw');
  t.pass('withdrawn after the stop signal');
  t.equal(await whoAnswers(lb.port('front')), 'a', 'while l4lb still accepts: no flow is refused before the route is gone');
});
