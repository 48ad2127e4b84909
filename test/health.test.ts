/**
 * Health checking on real loopback sockets: active probes (connect, send /
 * expect, timeouts), passive detection, admin states, backups, slow start,
 * `on_server_down`, flip-only logging; plus short unit tests of one probe and
 * of the rise/fall state machine.
 *
 * Deadlines are functional with wide margins (the machine may be a noisy
 * 2-core box); every loop is bounded. Measured timings are printed as
 * comments (`# down detected after ...`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { buildModel } from '../src/config/load.js';
import { probe, type ProbeOptions } from '../src/health/probe.js';
import { HealthState, type LastCheck } from '../src/health/state.js';
import type { Pool, Server } from '../src/pool.js';
import {
  closed,
  connect,
  deadPort,
  readLine,
  sleep,
  startBackend,
  tally,
  whoAnswers,
  type Running,
} from './helpers/net.js';
import { backendFor, lbFor } from './helpers/lb.js';
import { skipUnlessCi } from './helpers/requirements.js';

// ---------------------------------------------------------------------------
// Helpers

/** Fast probes used by most tests: every 200ms, down after 2 failures, up after 2 (default rise). */
const FAST = { interval: '200ms', fall: 2 } as const;

type ServerSpec = { name?: string; address: string; weight?: number; backup?: boolean };

function config(servers: ServerSpec[], pool: Record<string, unknown> = {}) {
  return {
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'round_robin', servers, ...pool }],
  };
}

function poolOf(lb: Running): Pool {
  return lb.app.pools.get('p')!;
}

function serverOf(lb: Running, name: string): Server {
  const s = poolOf(lb).server(name);
  if (s === undefined) throw new Error(`no server ${name}`);
  return s;
}

/** `n` sequential connections through l4lb; the names of the backends that answered. */
async function ask(lb: Running, n: number): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < n; i++) seen.push(await whoAnswers(lb.port()));
  return seen;
}

/** Poll every 10ms until `cond`; returns the elapsed ms, throws after `timeoutMs`. */
async function within(timeoutMs: number, cond: () => boolean, what: string): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (cond()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`not within ${timeoutMs}ms: ${what}`);
    await sleep(10);
  }
}

/**
 * A backend that can stop and start again on the same port, to play a server
 * that dies and comes back. Writes its name on connect, then echoes.
 */
class Restartable {
  readonly name: string;
  port = 0;
  /** Connections accepted over every life of this backend. */
  accepted = 0;
  readonly open = new Set<net.Socket>();
  #server: net.Server | undefined;

  constructor(name: string) {
    this.name = name;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Listen (on the same port as before, after the first start). */
  async start(): Promise<void> {
    const server = net.createServer((s) => {
      this.accepted++;
      this.open.add(s);
      s.on('close', () => this.open.delete(s));
      s.on('error', () => {});
      s.write(`${this.name}\n`);
      s.pipe(s);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.#server = server;
  }

  /** Stop listening (new connects are refused); open connections stay unless `dropOpen`. */
  async stop(dropOpen = true): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (dropOpen) for (const s of this.open) s.destroy();
    if (server === undefined) return;
    // close() stops accepting at once; its callback waits for open connections,
    // so only wait for it when they were dropped.
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      if (!dropOpen) setImmediate(resolve);
    });
  }
}

async function restartables(t: Test, names: string[]): Promise<Restartable[]> {
  const list = names.map((n) => new Restartable(n));
  t.teardown(() => Promise.all(list.map((b) => b.stop())));
  await Promise.all(list.map((b) => b.start()));
  return list;
}

function healthLines(lb: Running, msg: 'server down' | 'server up', server?: string): Array<Record<string, unknown>> {
  return lb.lines.filter((l) => l.msg === msg && (server === undefined || l.server === server));
}

// ---------------------------------------------------------------------------
// Active probes through a running l4lb

t.test('interval 200ms, fall 2: a stopped backend is down within 1.5 s and skipped; restarted on the same port it is up within 1.5 s and used again', async (t) => {
  const bs = await restartables(t, ['a', 'b', 'c']);
  const lb = await lbFor(t, config(bs.map((b) => ({ name: b.name, address: b.address })), { health: FAST }));
  const c = serverOf(lb, 'c');
  t.same(tally(await ask(lb, 9)), { a: 3, b: 3, c: 3 }, 'all three serve at first');

  const port = bs[2]!.port;
  await bs[2]!.stop();
  const downMs = await within(1_500, () => !c.up, 'c marked down');
  t.comment(`down detected after ${downMs}ms (interval 200ms, timeout 1s, fall 2)`);
  const after = await ask(lb, 20);
  t.equal(after.length, 20, '20 new connections all served');
  t.same(tally(after), { a: 10, b: 10 }, 'none of them went to the stopped server');

  await bs[2]!.start();
  t.equal(bs[2]!.port, port, 'restarted on the same port');
  const upMs = await within(1_500, () => c.up, 'c marked up again');
  t.comment(`up again after ${upMs}ms (rise 2)`);
  const again = tally(await ask(lb, 9));
  t.same(again, { a: 3, b: 3, c: 3 }, `c receives connections again: ${JSON.stringify(again)}`);
});

t.test('defaults (interval 2s, timeout 1s, fall 3): a killed server is detected within one interval plus two fast re-probes (under 6 s)', async (t) => {
  const bs = await restartables(t, ['a', 'b']);
  const lb = await lbFor(t, config(bs.map((b) => ({ name: b.name, address: b.address }))));
  const b = serverOf(lb, 'b');
  await within(1_000, () => b.health.last?.ok === true, 'the first probe runs at once');
  await bs[1]!.stop();
  // One full interval (2s, +10% jitter) to the first failed probe, then two
  // fast re-probes (half the timeout each): about 1.5-3.2 s.
  const downMs = await within(6_000, () => !b.up, 'b marked down');
  t.comment(`down detected after ${downMs}ms with the default health settings`);
  t.ok(downMs < 6_000, `detected after ${downMs}ms`);
  t.same(tally(await ask(lb, 6)), { a: 6 }, 'new connections avoid it');
});

// ---------------------------------------------------------------------------
// send / expect

function findRedisServer(): string | null {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/bin', '/usr/local/bin', '/usr/sbin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    const p = path.join(dir, 'redis-server');
    if (existsSync(p)) return p;
  }
  return null;
}

/** Send `PING` until `+PONG` comes back, or give up after `timeoutMs`. */
async function waitForRedis(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`redis-server exited (${child.exitCode ?? child.signalCode})`);
    const ok = await probe({ host: '127.0.0.1', port }, { timeoutMs: 500, send: Buffer.from('PING\r\n'), expect: Buffer.from('+PONG'), proxyHeader: null });
    if (ok.ok) return;
    await sleep(50);
  }
  throw new Error(`redis-server did not answer PING within ${timeoutMs}ms`);
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const kill = setTimeout(() => child.kill('SIGKILL'), 3_000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

const redisServer = findRedisServer();
const redisMissing = redisServer === null ? 'redis-server is not installed (Debian package redis-server)' : null;

t.test(
  'a real redis-server probed with send "PING\\r\\n" / expect "+PONG" stays up',
  { skip: skipUnlessCi(redisMissing, 'the redis-server test') },
  async (t) => {
    if (redisServer === null) {
      t.fail('redis-server not found and CI is set: install the redis-server package instead of skipping');
      return;
    }
    const port = await deadPort();
    const child = spawn(redisServer, ['--port', String(port), '--save', '', '--appendonly', 'no', '--bind', '127.0.0.1'], {
      cwd: os.tmpdir(),
      stdio: 'ignore',
    });
    t.teardown(() => stopChild(child));
    await waitForRedis(port, child, 10_000);

    const lb = await lbFor(
      t,
      config([{ name: 'redis', address: `127.0.0.1:${port}` }], {
        health: { ...FAST, timeout: '500ms', send: 'PING\r\n', expect: '+PONG' },
      }),
    );
    const redis = serverOf(lb, 'redis');
    const seen = new Set<number>();
    // Watch it for about 1.5 s (7 intervals): never down, every probe passes.
    const until = Date.now() + 1_500;
    for (let i = 0; i < 500 && Date.now() < until; i++) {
      if (!redis.up) break;
      const last = redis.health.last;
      if (last !== null) {
        if (!last.ok) t.fail(`a probe failed: ${last.reason}`);
        seen.add(last.at);
      }
      await sleep(20);
    }
    t.ok(redis.up, 'redis stays up');
    t.ok(seen.size >= 4, `probes kept running and passing (${seen.size} seen)`);
    t.equal(healthLines(lb, 'server down').length, 0, 'no server down line');

    // And it is usable through l4lb.
    const s = await connect(lb.port());
    t.teardown(() => s.destroy());
    s.write('PING\r\n');
    t.equal(await readLine(s), '+PONG\r', 'PING through l4lb answers +PONG');
  },
);

t.test('expect "+PONG": a server answering garbage goes down (expect mismatch); one that never answers goes down by timeout', async (t) => {
  const garbage = await backendFor(t, startBackend((s) => s.once('data', () => s.write('garbage\r\n'))));
  const silent = await backendFor(t, startBackend(() => {}));
  const lb = await lbFor(
    t,
    config(
      [
        { name: 'garbage', address: garbage.address },
        { name: 'silent', address: silent.address },
      ],
      { health: { ...FAST, timeout: '500ms', send: 'PING\r\n', expect: '+PONG' } },
    ),
  );
  const g = serverOf(lb, 'garbage');
  const q = serverOf(lb, 'silent');
  const [gMs, qMs] = await Promise.all([
    within(2_000, () => !g.up, 'garbage marked down'),
    // fall × timeout plus a fast re-probe: about 1.1 s.
    within(3_000, () => !q.up, 'silent marked down'),
  ]);
  t.comment(`garbage down after ${gMs}ms, silent (timeout 500ms) down after ${qMs}ms`);
  t.equal(healthLines(lb, 'server down', 'garbage')[0]?.reason, 'expect mismatch: got "garbage"', 'garbage: reason logged');
  t.equal(healthLines(lb, 'server down', 'silent')[0]?.reason, 'timeout after 500ms', 'silent: reason logged');
  t.ok(garbage.accepted >= 2 && silent.accepted >= 2, 'both were really probed');
});

t.test('probe scheduling does not drift or pile up when probes time out (one probe at a time per server)', async (t) => {
  let concurrent = 0;
  let maxConcurrent = 0;
  const starts: number[] = [];
  const silent = await startBackend((s) => {
    starts.push(Date.now());
    concurrent++;
    maxConcurrent = Math.max(maxConcurrent, concurrent);
    s.on('close', () => concurrent--);
    // Read (and drop) the PING, so the probe's close is seen at once.
    s.resume();
  });
  t.teardown(() => silent.close());
  // Timeout (300ms) longer than the interval (200ms): a naive setInterval would overlap probes.
  const lb = await lbFor(
    t,
    config([{ name: 'silent', address: silent.address }], {
      health: { interval: '200ms', timeout: '300ms', fall: 2, send: 'PING\r\n', expect: '+PONG' },
    }),
  );
  await sleep(3_000);
  await lb.stop();
  const probes = starts.length;
  const gaps = starts.slice(1).map((s, i) => s - starts[i]!);
  t.comment(`${probes} probes in 3 s, gaps ${gaps.join(',')}ms`);
  t.equal(maxConcurrent, 1, 'never two probes to the server at once');
  // Each probe lasts 300ms and the next one starts 90-220ms after it ends: 6-7 in 3 s.
  t.ok(probes >= 4 && probes <= 9, `probe count stays on schedule (${probes})`);
  // A probe every 200ms regardless of the last one would give gaps of ~200ms.
  const minGap = Math.min(...gaps);
  t.ok(minGap >= 280, `the next probe starts only after the previous one timed out (min gap ${minGap}ms)`);
  t.ok(Math.max(...gaps) < 1_500, `no stall (max gap ${Math.max(...gaps)}ms)`);
});

// ---------------------------------------------------------------------------
// Admin states

t.test('drain: an open connection keeps working while new connections avoid the server', async (t) => {
  const bs = await restartables(t, ['a', 'b']);
  const lb = await lbFor(t, config(bs.map((b) => ({ name: b.name, address: b.address })), { health: FAST }));
  const pool = poolOf(lb);
  const a = serverOf(lb, 'a');
  // Round robin starts with a.
  const held = await connect(lb.port());
  t.teardown(() => held.destroy());
  t.equal(await readLine(held), 'a', 'held connection is on a');

  pool.setAdminState(a, 'drain');
  t.same(tally(await ask(lb, 10)), { b: 10 }, 'new connections avoid the draining server');
  held.write('still here\n');
  t.equal(await readLine(held), 'still here', 'the open connection still works');
  const probed = a.health.last?.at ?? 0;
  await within(1_000, () => (a.health.last?.at ?? 0) > probed, 'a draining server is still probed');
  t.ok(a.up, 'and stays up');

  pool.setAdminState(a, 'ready');
  t.ok(tally(await ask(lb, 4)).a! >= 1, 'ready again: a takes new connections');
  held.write('after\n');
  t.equal(await readLine(held), 'after');
});

t.test('maint: no new connections and no probes (counted at the backend); ready resumes probing', async (t) => {
  const bs = await restartables(t, ['a', 'b']);
  const lb = await lbFor(t, config(bs.map((b) => ({ name: b.name, address: b.address })), { health: FAST }));
  const pool = poolOf(lb);
  const a = serverOf(lb, 'a');
  const backendA = bs[0]!;
  // Control: probes arrive at a every ~200ms.
  const before = backendA.accepted;
  await sleep(700);
  t.ok(backendA.accepted - before >= 2, `probes reach the backend normally (${backendA.accepted - before} in 700ms)`);

  pool.setAdminState(a, 'maint');
  await sleep(100); // a probe already in flight may still land
  const base = backendA.accepted;
  await sleep(1_200); // six intervals
  t.equal(backendA.accepted, base, 'no probe connection during maint');
  t.same(tally(await ask(lb, 6)), { b: 6 }, 'no new connections either');
  t.equal(backendA.accepted, base, 'still nothing reached a');

  pool.setAdminState(a, 'ready');
  await within(1_500, () => backendA.accepted > base, 'probes resume after maint');
  t.ok(tally(await ask(lb, 4)).a! >= 1, 'a takes new connections again');
});

// ---------------------------------------------------------------------------
// Passive detection

t.test('passive: with interval 1 min, a dead server is down after `fall` failed client connects; clients are retried without errors', async (t) => {
  const bs = await restartables(t, ['x', 'y']);
  const lb = await lbFor(
    t,
    config(bs.map((b) => ({ name: b.name, address: b.address })), {
      retries: 1,
      // A long timeout keeps the quick re-probe after a passive failure
      // (half the timeout) out of the way: the client connects decide.
      health: { interval: '1m', timeout: '5s', fall: 3 },
    }),
  );
  const x = serverOf(lb, 'x');
  await within(1_000, () => x.health.last?.ok === true, 'the first probe of x runs at once and passes');
  await bs[0]!.stop();
  const started = Date.now();
  const seen: string[] = [];
  const errors: string[] = [];
  for (let i = 0; i < 20; i++) {
    try {
      seen.push(await whoAnswers(lb.port()));
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
  t.same(errors, [], 'no client saw an error');
  t.same(tally(seen), { y: 20 }, 'all 20 served by the live server');
  t.notOk(x.up, `x marked down (${Date.now() - started}ms after it died)`);
  t.equal(x.connectFailures, 3, 'after exactly `fall` (3) failed client connects, then no more tries');
  const down = healthLines(lb, 'server down', 'x');
  t.equal(down.length, 1, 'one server down line');
  t.equal(down[0]?.check, 'passive', 'marked down by client connects');
  t.equal(down[0]?.reason, 'connect ECONNREFUSED', 'with the reason');
});

t.test('passive: one failed client connect brings the next probe forward (interval 1 min, re-probe within a second)', async (t) => {
  const bs = await restartables(t, ['x', 'y']);
  const lb = await lbFor(
    t,
    config(bs.map((b) => ({ name: b.name, address: b.address })), { retries: 1, health: { interval: '1m', timeout: '400ms', fall: 3 } }),
  );
  const x = serverOf(lb, 'x');
  await within(1_000, () => x.health.last?.ok === true, 'the first probe of x passes');
  await bs[0]!.stop();
  // Round robin starts with x: this connect fails there and is retried on y.
  t.equal(await whoAnswers(lb.port()), 'y', 'the client is served by y');
  t.equal(x.connectFailures, 1);
  t.equal(x.health.last?.source, 'passive', 'the failed connect counts as a check');
  const started = Date.now();
  // Without the passive report the next probe would come a minute later.
  const reprobeMs = await within(1_000, () => x.health.last?.source === 'active', 'a quick active re-probe');
  const downMs = await within(1_500, () => !x.up, 'x down after two more (fast) probes');
  t.comment(`re-probed ${reprobeMs}ms after the failed client connect; down after ${Date.now() - started}ms`);
  t.ok(downMs >= 0);
  t.equal(x.connectFailures, 1, 'no further client was sent there');
  t.equal(healthLines(lb, 'server down', 'x')[0]?.check, 'active');
});

t.test('passive: a stream of failed client connects never postpones the active probes', async (t) => {
  const bs = await restartables(t, ['x', 'y']);
  const lb = await lbFor(
    t,
    config(bs.map((b) => ({ name: b.name, address: b.address })), {
      retries: 1,
      // fall 100: the ~15 failed client connects below do not mark x down,
      // so the test sees whether probes still run while clients keep failing.
      // A fast re-probe is due ~150ms after a failure; clients fail on x
      // every ~80ms, more often than that.
      health: { interval: '300ms', timeout: '1s', fall: 100 },
    }),
  );
  const x = serverOf(lb, 'x');
  await within(1_000, () => x.health.last?.ok === true, 'the first probe of x passes');
  await bs[0]!.stop();
  // Count the active checks recorded for x (the last check alone would be overwritten by the next client).
  let active = 0;
  const record = x.health.record.bind(x.health);
  x.health.record = (check: LastCheck) => {
    if (check.source === 'active') active++;
    return record(check);
  };
  const until = Date.now() + 1_500;
  let served = 0;
  let clients = 0;
  for (let i = 0; i < 200 && Date.now() < until; i++) {
    clients++;
    if ((await whoAnswers(lb.port())) === 'y') served++;
    await sleep(40);
  }
  t.comment(`${served} clients served, ${x.connectFailures} failed connects on x, ${active} active probes of x`);
  t.ok(x.connectFailures >= 10, 'clients kept failing on x (and were retried)');
  // One interval (300ms) at most to the next probe, then fast re-probes (~150ms): several in 1.5 s.
  t.ok(active >= 3, `active probes kept running (${active})`);
  t.equal(served, clients, 'every client was served by y');
});

// ---------------------------------------------------------------------------
// Backups

t.test('backup takes traffic only when every primary is down (by health), and gives it back', async (t) => {
  const bs = await restartables(t, ['p1', 'p2', 'bk']);
  const lb = await lbFor(
    t,
    config(
      bs.map((b) => ({ name: b.name, address: b.address, backup: b.name === 'bk' })),
      { health: FAST },
    ),
  );
  const p1 = serverOf(lb, 'p1');
  const p2 = serverOf(lb, 'p2');
  t.same(tally(await ask(lb, 6)), { p1: 3, p2: 3 }, 'primaries only');

  await bs[0]!.stop();
  await within(1_500, () => !p1.up, 'p1 down');
  t.same(tally(await ask(lb, 6)), { p2: 6 }, 'one primary left: still no backup');

  await bs[1]!.stop();
  await within(1_500, () => !p2.up, 'p2 down');
  t.same(tally(await ask(lb, 6)), { bk: 6 }, 'no primary: the backup takes everything');

  await bs[0]!.start();
  await within(1_500, () => p1.up, 'p1 up again');
  t.same(tally(await ask(lb, 6)), { p1: 6 }, 'a primary is back: the backup gives the traffic back');
});

// ---------------------------------------------------------------------------
// on_server_down

t.test('on_server_down close: the open connection is closed promptly when its server goes down', async (t) => {
  const bs = await restartables(t, ['a', 'b']);
  const lb = await lbFor(t, config(bs.map((b) => ({ name: b.name, address: b.address })), { health: FAST, on_server_down: 'close' }));
  const a = serverOf(lb, 'a');
  const held = await connect(lb.port());
  t.teardown(() => held.destroy());
  held.on('error', () => {});
  t.equal(await readLine(held), 'a');

  let downAt = 0;
  const stoppedAt = Date.now();
  // Stop listening but keep the open connection: only the health check can end it.
  await bs[0]!.stop(false);
  const watch = within(3_000, () => !a.up, 'a down').then(() => (downAt = Date.now()));
  await closed(held, 3_000);
  const closedAt = Date.now();
  await watch;
  t.comment(`down noticed after ${downAt - stoppedAt}ms, client closed after ${closedAt - stoppedAt}ms`);
  t.ok(closedAt - stoppedAt < 1_500, `client closed within 1.5 s of the server dying (${closedAt - stoppedAt}ms)`);
  // The test polls every 10ms, so "down noticed" may trail the real flip a little.
  t.ok(Math.abs(closedAt - downAt) < 300, `closed as the server was marked down (${closedAt - downAt}ms apart)`);
  await within(1_000, () => bs[0]!.open.size === 0, 'the backend side is closed too');
  await within(1_000, () => lb.lines.some((l) => l.msg === 'connection' && l.server === 'a'), 'access log line');
  t.equal(lb.lines.find((l) => l.msg === 'connection' && l.server === 'a')?.termination, 'server_close');
});

t.test('on_server_down keep (default): the open connection survives its server going down', async (t) => {
  const bs = await restartables(t, ['a', 'b']);
  const lb = await lbFor(t, config(bs.map((b) => ({ name: b.name, address: b.address })), { health: FAST }));
  const a = serverOf(lb, 'a');
  const held = await connect(lb.port());
  t.teardown(() => held.destroy());
  t.equal(await readLine(held), 'a');
  await bs[0]!.stop(false);
  await within(1_500, () => !a.up, 'a down');
  await sleep(500);
  t.notOk(held.destroyed, 'still open');
  held.write('hello\n');
  t.equal(await readLine(held), 'hello', 'and still spliced to its server');
  t.same(tally(await ask(lb, 4)), { b: 4 }, 'new connections go elsewhere');
});

// ---------------------------------------------------------------------------
// Slow start

t.test('slow_start 2s: right after recovery the server gets a small share, growing over the window', async (t) => {
  const bs = await restartables(t, ['a', 'b']);
  const lb = await lbFor(t, config(bs.map((b) => ({ name: b.name, address: b.address })), { health: FAST, slow_start: '2s' }));
  const b = serverOf(lb, 'b');
  await bs[1]!.stop();
  await within(1_500, () => !b.up, 'b down');
  await bs[1]!.start();
  await within(1_500, () => b.up, 'b up again');
  const since = b.slowStartSince;
  t.ok(since > 0, 'slow start began');
  t.ok(b.weight < 0.2, `starting weight is about 10% (${b.weight})`);

  const samples: Array<{ at: number; name: string }> = [];
  for (let i = 0; i < 5_000 && Date.now() - since < 2_000; i++) {
    const name = await whoAnswers(lb.port());
    samples.push({ at: Date.now() - since, name });
  }
  const share = (from: number, to: number) => {
    const part = samples.filter((s) => s.at >= from && s.at < to);
    return { n: part.length, b: part.filter((s) => s.name === 'b').length / Math.max(1, part.length) };
  };
  const early = share(0, 300);
  const late = share(1_400, 2_000);
  t.comment(`b's share: ${(early.b * 100).toFixed(0)}% of ${early.n} in the first 300ms, ${(late.b * 100).toFixed(0)}% of ${late.n} in 1.4-2 s`);
  t.ok(early.n >= 5 && late.n >= 5, 'enough samples in both windows');
  t.ok(early.b < 0.25, `small share right after recovery (${early.b.toFixed(2)})`);
  t.ok(late.b > 0.35, `near its full share by the end (${late.b.toFixed(2)})`);
  t.ok(late.b > early.b, 'the share grows');
  await within(1_000, () => b.weight === b.baseWeight && b.slowStartSince === 0, 'full weight after the window');
});

// ---------------------------------------------------------------------------
// Last check kept, flips only logged

t.test('the last check (result, latency, time) is kept per server; only flips are logged', async (t) => {
  const bs = await restartables(t, ['a', 'b']);
  const lb = await lbFor(t, config(bs.map((b) => ({ name: b.name, address: b.address })), { health: FAST }));
  const b = serverOf(lb, 'b');
  await within(1_000, () => b.health.last !== null, 'first probe');
  const ok = b.health.last!;
  t.equal(ok.ok, true);
  t.equal(ok.reason, '');
  t.equal(ok.source, 'active');
  t.ok(ok.latencyMs >= 0 && ok.latencyMs < 1_000, `latency kept (${ok.latencyMs}ms)`);
  t.ok(Math.abs(Date.now() - ok.at) < 1_000, 'time kept (ms since epoch)');

  await bs[1]!.stop();
  await within(1_500, () => !b.up, 'b down');
  await sleep(1_000); // five more failing probes
  const last = b.health.last!;
  t.equal(last.ok, false);
  t.equal(last.reason, 'connect ECONNREFUSED');
  t.ok(Date.now() - last.at < 600, 'the last check is recent: probes continue while down');
  t.equal(healthLines(lb, 'server down', 'b').length, 1, 'one outage, one server down line');
  t.match(healthLines(lb, 'server down', 'b')[0], { pool: 'p', server: 'b', address: bs[1]!.address, reason: 'connect ECONNREFUSED', check: 'active' });

  await bs[1]!.start();
  await within(1_500, () => b.up, 'b up');
  await sleep(600);
  t.equal(healthLines(lb, 'server up', 'b').length, 1, 'one server up line');
  t.equal(b.health.last?.ok, true);
  const others = lb.lines.filter((l) => l.msg !== 'connection' && l.msg !== 'listening' && l.msg !== 'server down' && l.msg !== 'server up');
  t.same(others, [], 'nothing logged per probe');
  t.equal(healthLines(lb, 'server down', 'a').length + healthLines(lb, 'server up', 'a').length, 0, 'nothing logged for the healthy server');
});

// ---------------------------------------------------------------------------
// Unit: one probe

function opts(o: Partial<ProbeOptions> = {}): ProbeOptions {
  return { timeoutMs: 1_000, send: null, expect: null, proxyHeader: null, ...o };
}

t.test('probe() says why a probe failed, and sends and matches payloads', async (t) => {
  t.test('a refused connect is reported as connect ECONNREFUSED', async (t) => {
    const r = await probe({ host: '127.0.0.1', port: await deadPort() }, opts());
    t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'connect ECONNREFUSED' });
  });

  t.test('a plain connect succeeds, its latency measured', async (t) => {
    const b = await backendFor(t, startBackend(() => {}));
    const r = await probe({ host: '127.0.0.1', port: b.port }, opts());
    t.equal(r.ok, true);
    t.equal(r.reason, '');
    t.ok(r.latencyMs >= 0 && r.latencyMs < 1_000, `latency ${r.latencyMs}ms`);
  });

  t.test('timeout names the configured timeout', async (t) => {
    const b = await backendFor(t, startBackend(() => {}));
    const started = Date.now();
    const r = await probe({ host: '127.0.0.1', port: b.port }, opts({ timeoutMs: 200, send: Buffer.from('PING\r\n'), expect: Buffer.from('+PONG') }));
    t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'timeout after 200ms' });
    t.ok(Date.now() - started >= 190 && Date.now() - started < 1_000, 'after about the timeout');
    const r1 = await probe({ host: '127.0.0.1', port: b.port }, opts({ timeoutMs: 1_000, expect: Buffer.from('x') }));
    t.equal(r1.reason, 'timeout after 1s', 'whole seconds written as seconds');
  });

  t.test('mismatch shows what came back; a reply split over reads still matches', async (t) => {
    const b = await backendFor(t, startBackend((s) => s.once('data', () => s.write('-ERR unknown\r\nmore'))));
    const r = await probe({ host: '127.0.0.1', port: b.port }, opts({ send: Buffer.from('PING\r\n'), expect: Buffer.from('+PONG') }));
    t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'expect mismatch: got "-ERR unknown"' });

    const split = await backendFor(
      t,
      startBackend((s) => {
        s.write('22');
        setTimeout(() => s.write('0 smtp.example ESMTP\r\n'), 30);
      }),
    );
    const r2 = await probe({ host: '127.0.0.1', port: split.port }, opts({ expect: Buffer.from('220') }));
    t.equal(r2.ok, true, 'SMTP banner in two reads');

    const closes = await backendFor(t, startBackend((s) => s.end()));
    const r3 = await probe({ host: '127.0.0.1', port: closes.port }, opts({ expect: Buffer.from('220') }));
    t.same({ ok: r3.ok, reason: r3.reason }, { ok: false, reason: 'connection closed: got nothing' });
  });

  t.test('hex payloads from the config are sent and matched as bytes', async (t) => {
    const got: Buffer[] = [];
    const b = await backendFor(
      t,
      startBackend((s) =>
        s.once('data', (d: Buffer) => {
          got.push(d);
          s.write(Buffer.from([0x00, 0xff, 0x10, 0x41]));
        }),
      ),
    );
    const model = await buildModel(config([{ address: b.address }], { health: { send: 'hex:de ad be ef 00', expect: 'hex:00ff10' } }));
    const health = model.pools[0]!.health;
    t.same([...health.send!], [0xde, 0xad, 0xbe, 0xef, 0x00], 'send parsed from hex');
    const r = await probe({ host: '127.0.0.1', port: b.port }, opts({ send: health.send, expect: health.expect }));
    t.equal(r.ok, true, r.reason);
    t.same([...Buffer.concat(got)], [0xde, 0xad, 0xbe, 0xef, 0x00], 'the backend received the bytes');
    const wrong = await probe({ host: '127.0.0.1', port: b.port }, opts({ send: health.send, expect: Buffer.from([0x00, 0xfe]) }));
    t.equal(wrong.ok, false, 'a different byte fails');
    t.match(wrong.reason, /^expect mismatch: got /);
  });

  t.test('the PROXY header hook is written first, then the payload', async (t) => {
    const got: Buffer[] = [];
    const b = await backendFor(
      t,
      startBackend((s) => {
        s.on('data', (d: Buffer) => {
          got.push(d);
          if (Buffer.concat(got).includes('PING\r\n')) s.write('+PONG\r\n');
        });
      }),
    );
    const r = await probe(
      { host: '127.0.0.1', port: b.port },
      opts({
        send: Buffer.from('PING\r\n'),
        expect: Buffer.from('+PONG'),
        proxyHeader: (sock) => Buffer.from(`PROXY TCP4 ${sock.localAddress} 127.0.0.1 ${sock.localPort} ${b.port}\r\n`),
      }),
    );
    t.equal(r.ok, true, r.reason);
    t.match(Buffer.concat(got).toString(), /^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ \d+\r\nPING\r\n$/);
  });

  t.test('abort ends a probe at once', async (t) => {
    const b = await backendFor(t, startBackend(() => {}));
    const ac = new AbortController();
    const p = probe({ host: '127.0.0.1', port: b.port }, opts({ timeoutMs: 5_000, expect: Buffer.from('x'), signal: ac.signal }));
    setTimeout(() => ac.abort(), 50);
    const r = await p;
    t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'aborted' });
    t.ok(r.latencyMs < 2_000);
  });
});

// ---------------------------------------------------------------------------
// Unit: rise / fall

t.test('HealthState: starts up, `fall` failures in a row mark down, `rise` successes mark up; only flips reported', async (t) => {
  let at = 0;
  const check = (ok: boolean): LastCheck => ({ ok, reason: ok ? '' : 'connect ECONNREFUSED', latencyMs: 1, at: ++at, source: 'active' });
  const h = new HealthState(2, 3);
  t.equal(h.up, true, 'starts up');
  t.equal(h.last, null);
  t.equal(h.record(check(false)), undefined);
  t.equal(h.failing, true, 'failing, not yet down');
  t.equal(h.record(check(false)), undefined);
  t.equal(h.record(check(true)), undefined, 'a success resets the count');
  t.equal(h.failing, false);
  t.equal(h.record(check(false)), undefined);
  t.equal(h.record(check(false)), undefined);
  t.equal(h.record(check(false)), 'down', 'third failure in a row: down');
  t.equal(h.up, false);
  t.equal(h.failing, false, 'not "failing" once down');
  t.equal(h.record(check(false)), undefined, 'further failures: no flip');
  t.equal(h.record(check(true)), undefined);
  t.equal(h.record(check(false)), undefined, 'a failure resets the successes');
  t.equal(h.record(check(true)), undefined);
  t.equal(h.record(check(true)), 'up', 'second success in a row: up');
  t.equal(h.up, true);
  t.equal(h.record(check(true)), undefined, 'further successes: no flip');
  t.equal(h.last?.at, at, 'the last check is kept');

  const quick = new HealthState(1, 1);
  t.equal(quick.record(check(false)), 'down', 'fall 1');
  t.equal(quick.record(check(true)), 'up', 'rise 1');
});
