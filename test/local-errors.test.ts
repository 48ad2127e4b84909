/**
 * The balancer's own shortages (EMFILE and friends) on real sockets: they
 * never count against a server, in probes or passively; the client gets
 * `termination: local_error`, a metric counts them, and they are logged at
 * a bounded rate. Run under a small `ulimit -n`, as the outside review did.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type net from 'node:net';
import t, { type Test } from 'tap';
import { ROOT, cliFor } from './helpers/cli.js';
import { freePort } from './helpers/peers.js';
import { connect, readLine, sleep, waitFor, type Backend } from './helpers/net.js';
import { backendFor } from './helpers/lb.js';
import { jsonLines, type LogLine } from './helpers/logs.js';

/** A client that got an echo of its line: served. Null when l4lb closed it instead. */
async function served(t: Test, port: number): Promise<net.Socket | null> {
  const c = await connect(port);
  t.teardown(() => c.destroy());
  c.on('error', () => {});
  c.write('ping\n');
  try {
    return (await readLine(c, 5_000)) === 'ping' ? c : null;
  } catch {
    return null;
  }
}

async function echoes(c: net.Socket): Promise<boolean> {
  c.write('again\n');
  return (await readLine(c, 5_000).catch(() => '')) === 'again';
}

async function metric(adminPort: number, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const m = new RegExp(`^${name}\\{${labels}\\} (\\d+)`, 'm').exec(text);
  return m === null ? NaN : Number(m[1]);
}

t.test('under ulimit -n 96, clients beyond the descriptor budget get local_error while both servers stay up and no established session is closed', async (t) => {
  const a = await backendFor(t);
  const b = await backendFor(t);
  const adminPort = await freePort();
  const child = await cliFor(
    t,
    {
      admin: { listen: `127.0.0.1:${adminPort}` },
      log: { level: 'info', access: true },
      listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
      pools: [
        {
          name: 'p',
          // close: the review saw established sessions closed when EMFILE marked their server down.
          on_server_down: 'close',
          health: { interval: '200ms', timeout: '1s', fall: 1, rise: 1 },
          servers: [{ address: a.address }, { address: b.address }],
        },
      ],
    },
    [],
    process.env,
    { fdLimit: 96 },
  );
  const port = child.port('front');

  const established: net.Socket[] = [];
  let refused = 0;
  // Bounded: 96 descriptors cannot hold 60 sessions of two descriptors each.
  for (let i = 0; i < 60 && refused === 0; i++) {
    const c = await served(t, port);
    if (c === null) refused++;
    else established.push(c);
  }
  t.ok(established.length >= 5, `sessions were established before the budget ran out (${established.length})`);
  t.equal(refused, 1, 'then a client was refused, not hung');
  // Fifteen more: each is refused, or served when a probe has just given its
  // descriptor back (the budget's edge moves with the probes); never hung.
  for (let i = 0; i < 15; i++) {
    const c = await served(t, port);
    if (c === null) refused++;
    else established.push(c);
  }
  t.ok(refused >= 10, `most of them were refused (${refused} of 16)`);
  // Probes keep running (their share of the reserve) while clients are refused.
  await sleep(1_000);

  t.notOk(child.lines.some((l) => l.msg === 'server down'), 'no server was marked down');
  let still = 0;
  for (const c of established) if (await echoes(c)) still++;
  t.equal(still, established.length, 'every established session still echoes');

  const localLines = (): Array<Record<string, unknown>> => child.lines.filter((l) => l.msg === 'connection' && l.termination === 'local_error');
  const suppressed = (): number => child.lines.filter((l) => l.msg === 'connection lines suppressed').reduce((n, l) => n + Number(l.suppressed), 0);
  await waitFor(() => localLines().length + suppressed() === refused, 5_000, 'a line or a suppressed count for every refused client');
  t.ok(localLines().length <= 10 + 2, `lines beyond the rate were suppressed (${localLines().length} lines, ${suppressed()} suppressed)`);
  t.match(localLines()[0], { server: null, connect_ms: null, reason: /EMFILE/ }, 'the access line says local_error and why');
  const warn = child.lines.find((l) => l.msg?.toString().startsWith('out of local resources'));
  t.match(warn, { level: 'warn', code: 'EMFILE', fd_limit: 96 }, 'one warning names the limit');
  t.equal(await metric(adminPort, 'l4lb_local_errors_total', 'listener="front",code="EMFILE"'), refused, 'l4lb_local_errors_total counts each');
  t.equal(await metric(adminPort, 'l4lb_rejected_connections_total', 'listener="front",reason="local"'), refused, 'and so does the rejected metric (reason local)');

  // Room again: served as before.
  for (const c of established.splice(0)) c.destroy();
  await waitFor(() => child.lines.filter((l) => l.msg === 'connection' && l.termination === 'client_close').length >= 5, 5_000, 'sessions closed');
  await sleep(300);
  t.not(await served(t, port), null, 'once descriptors are free again, a new client is served');
});

/**
 * A child that runs l4lb in-process from dist/ and, on command, fills its
 * own descriptor table (so the next connect or probe fails with EMFILE
 * although the budget, measured earlier, did not see it coming).
 */
const FILLER = `
import { openSync, closeSync } from 'node:fs';
const [, root, rawJson] = process.argv;
const { buildModel } = await import(root + '/dist/config/load.js');
const { App } = await import(root + '/dist/runtime/app.js');
const { pino } = await import(root + '/node_modules/pino/pino.js');
const app = new App(await buildModel(JSON.parse(rawJson)), pino({ level: 'info' }));
await app.start();
const held = [];
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
say({ msg: 'port', port: app.listeners[0].address().port });
process.stdin.on('data', (d) => {
  for (const cmd of d.toString().trim().split('\\n')) {
    if (cmd.startsWith('fill')) {
      const leave = Number(cmd.split(' ')[1]);
      try { for (;;) held.push(openSync('/dev/null', 'r')); } catch {}
      for (let i = 0; i < leave; i++) closeSync(held.pop());
      say({ msg: 'filled', held: held.length });
    } else if (cmd === 'release') {
      while (held.length) closeSync(held.pop());
      say({ msg: 'released' });
    }
  }
});
`;

interface Filler {
  readonly proc: ChildProcess;
  readonly lines: Array<Record<string, unknown>>;
  command(cmd: string, reply: string): Promise<void>;
}

async function startFiller(t: Test, raw: unknown): Promise<Filler & { port: number }> {
  const proc = spawn('bash', ['-c', 'ulimit -n 128 && exec "$0" "$@"', process.execPath, '--input-type=module', '-e', FILLER, ROOT, JSON.stringify(raw)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  t.teardown(() => proc.kill('SIGKILL'));
  const lines: LogLine[] = [];
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdout!.on('data', jsonLines(lines));
  const waitLine = async (msg: string): Promise<Record<string, unknown>> => {
    await waitFor(() => lines.some((l) => l.msg === msg), 10_000, `"${msg}" from the child (stderr: ${stderr})`);
    return lines.find((l) => l.msg === msg)!;
  };
  const port = Number((await waitLine('port')).port);
  return {
    proc,
    lines,
    port,
    async command(cmd, reply) {
      const before = lines.filter((l) => l.msg === reply).length;
      proc.stdin!.write(`${cmd}\n`);
      await waitFor(() => lines.filter((l) => l.msg === reply).length > before, 10_000, `"${reply}" after ${cmd}`);
    },
  };
}

function pool(backend: Backend, interval: string): Record<string, unknown> {
  return {
    name: 'p',
    on_server_down: 'close',
    retries: 2,
    // fall 1: a single failure counted against the server would mark it down at once.
    health: { interval, timeout: '1s', fall: 1, rise: 1 },
    servers: [{ address: backend.address }],
  };
}

t.test('a backend connect that fails with EMFILE is local_error: the server is not blamed, its open sessions stay, nothing is retried', async (t) => {
  const backend = await backendFor(t);
  const child = await startFiller(t, {
    // One thread: the descriptor budget's measurement is per thread, and this test times it.
    workers: 1,
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    // A long interval: no probe competes for the one free descriptor.
    pools: [pool(backend, '60s')],
  });
  const first = await served(t, child.port);
  t.not(first, null, 'a first client is served (the budget measures the table now)');
  await sleep(300); // the first probe (within 50 ms of start) has come and gone
  const accepted = backend.accepted;
  // One descriptor left: the accept takes it, the backend connect gets EMFILE.
  await child.command('fill 1', 'filled');
  t.equal(await served(t, child.port), null, 'the next client is closed');
  await waitFor(() => child.lines.some((l) => l.termination === 'local_error'), 5_000, 'the local_error access line');
  t.match(
    child.lines.find((l) => l.termination === 'local_error'),
    { msg: 'connection', listener: 'front', server: null, reason: 'connect: EMFILE' },
    'logged as local_error with the errno',
  );
  t.equal(backend.accepted, accepted, 'no other connect was tried (retries would fail alike)');
  await child.command('release', 'released');
  t.notOk(child.lines.some((l) => l.msg === 'server down'), 'the server was not marked down (fall 1)');
  t.ok(first !== null && (await echoes(first)), 'the established session was not closed (on_server_down: close)');
  t.not(await served(t, child.port), null, 'with descriptors free again, clients are served');
});

t.test('health probes that fail with EMFILE are skipped, not counted: no server goes down while the table is full', async (t) => {
  const backend = await backendFor(t);
  const child = await startFiller(t, {
    // One thread: the descriptor budget's measurement is per thread, and this test times it.
    workers: 1,
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [pool(backend, '100ms')],
  });
  const first = await served(t, child.port);
  t.not(first, null, 'a client is served');
  await child.command('fill 0', 'filled');
  // At least ten probe intervals with not one descriptor to spare (longer on a busy machine: until a probe met the wall).
  const skipped = (): boolean => child.lines.some((l) => l.msg === 'health probes skipped: out of local resources (the servers are not blamed)');
  await sleep(1_000);
  await waitFor(skipped, 10_000, 'a probe to be skipped');
  await child.command('release', 'released');
  t.notOk(child.lines.some((l) => l.msg === 'server down'), 'no server down (fall 1)');
  t.match(
    child.lines.find((l) => l.msg === 'health probes skipped: out of local resources (the servers are not blamed)'),
    { level: 40, pool: 'p', code: 'EMFILE' },
    'one warning says probes were skipped and why',
  );
  t.ok(first !== null && (await echoes(first)), 'the established session is still open');
  const probesBefore = backend.accepted;
  await waitFor(() => backend.accepted > probesBefore + 2, 5_000, 'probes reaching the server again');
  t.pass('probes run again once descriptors are free');
});

t.test('the descriptor budget: accepts keep a reserve for connects and probes', async (t) => {
  const { FdBudget } = await import('../src/net/fd-budget.js');
  const open = 20;
  const budget = new FdBudget({ limit: 100, count: () => open, now: () => 0 });
  t.equal(budget.reserve, 8, 'the reserve is 1/32 of the limit, at least 8');
  let accepted = 0;
  while (budget.take('accept')) accepted++;
  t.equal(accepted, 100 - 20 - 8 - 1, 'accepts stop with room for one more backend above the reserve');
  t.ok(budget.take('connect'), 'connects may still dip into the reserve');
  let connects = 1;
  while (budget.take('connect')) connects++;
  t.equal(connects, 1 + 8 - 4, 'connects stop at half the reserve');
  budget.give(10);
  t.ok(budget.take('accept'), 'descriptors given back can be taken again');
  const unlimited = new FdBudget({ limit: Infinity, count: () => open });
  t.equal(unlimited.reserve, 0);
  let taken = 0;
  for (let i = 0; i < 1_000; i++) if (unlimited.take('accept')) taken++;
  t.equal(taken, 1_000, 'an unknown limit never refuses');
});
