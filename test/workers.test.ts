/**
 * Several serving threads (`workers: 2`) behave as one balancer: what must
 * be global is global. Each test fails on per-thread state: least_conn on
 * per-thread counts leaves servers uneven, limits counted per thread admit
 * too many, metrics read from one thread miss the other's connections.
 */
import net from 'node:net';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { buildModel } from '../src/config/load.js';
import { opensslMissing, testCerts } from './helpers/certs.js';
import { adminPort, backendFor, lbFor } from './helpers/lb.js';
import { closed, connect, echoBackend, readLine, sleep, startBackend, waitFor, type Backend, type Running } from './helpers/net.js';
import { startCli, writeConfig } from './helpers/cli.js';

const WORKERS = 2;

/** A backend that holds every connection open and counts those open now. */
async function holdingBackend(t: Test): Promise<Backend> {
  return backendFor(t, startBackend((s) => s.resume()));
}

/** `n` clients connected to `port` and still open, destroyed when `t` ends. */
async function openClients(t: Test, port: number, n: number, from?: (i: number) => string): Promise<net.Socket[]> {
  const out: net.Socket[] = [];
  for (let i = 0; i < n; i += 25) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(25, n - i) }, async (_, j) => {
        const s = await connect(port, from?.(i + j));
        s.on('error', () => {});
        t.teardown(() => s.destroy());
        return s;
      }),
    );
    out.push(...batch);
  }
  return out;
}

function bothThreadsServed(t: Test, lb: Running, what: string): void {
  const perThread = lb.app.listeners[0]!.stats.acceptedByThread();
  t.equal(perThread.length, WORKERS, `${WORKERS} serving threads`);
  t.ok(perThread.every((n) => n > 0), `${what}: every thread accepted some (${perThread.join(' / ')})`);
}

t.test('least_conn over 2 workers: 400 long-lived connections leave 4 servers within one of each other', async (t) => {
  const backends = await Promise.all([0, 1, 2, 3].map(() => holdingBackend(t)));
  const lb = await lbFor(t, {
    workers: WORKERS,
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'least_conn', health: { interval: '1h' }, servers: backends.map((b) => ({ address: b.address })) }],
  });
  await openClients(t, lb.port(), 400);
  await waitFor(() => backends.reduce((n, b) => n + b.open.size, 0) - 4 === 400 || backends.reduce((n, b) => n + b.open.size, 0) === 400, 10_000, '400 connections at the servers');
  const pool = lb.app.pools.get('p')!;
  const active = pool.servers.map((s) => s.active);
  t.equal(active.reduce((a, b) => a + b, 0), 400, 'the shared counts add up to 400');
  t.ok(Math.max(...active) - Math.min(...active) <= 1, `least_conn compared global counts: ${active.join(' / ')}`);
  bothThreadsServed(t, lb, '400 connections');
});

t.test('listener max_connections is exact across workers', async (t) => {
  const backend = await holdingBackend(t);
  const lb = await lbFor(t, {
    workers: WORKERS,
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', max_connections: 30 }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers: [{ address: backend.address }] }],
  });
  const clients = await openClients(t, lb.port(), 60);
  const stats = lb.app.listeners[0]!.stats;
  await waitFor(() => (stats.rejected.get('limit') ?? 0) === 30, 10_000, '30 refusals');
  await sleep(200);
  t.equal(lb.app.connections, 30, 'exactly 30 open, whichever thread accepted them');
  t.equal(stats.rejected.get('limit'), 30, 'exactly 30 refused');
  bothThreadsServed(t, lb, '60 clients');
  // Room again once some close: the count is shared, so the other thread sees it too.
  for (const c of clients.slice(0, 60)) c.destroy();
  await waitFor(() => lb.app.connections === 0, 5_000, 'every connection closed');
  const again = await openClients(t, lb.port(), 10);
  await waitFor(() => lb.app.connections === 10, 5_000, '10 more served');
  t.equal(again.length, 10);
});

t.test('per_source.max_connections 3 admits exactly 3 from one client across workers, and a dead worker gives its share back', async (t) => {
  const backend = await holdingBackend(t);
  const lb = await lbFor(t, {
    workers: WORKERS,
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', per_source: { max_connections: 3 } }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers: [{ address: backend.address }] }],
  });
  const stats = lb.app.listeners[0]!.stats;
  // 30 connections from 127.0.0.7: the kernel spreads them over both threads; 3 may stay.
  await openClients(t, lb.port(), 30, () => '127.0.0.7');
  await waitFor(() => (stats.rejected.get('limit') ?? 0) === 27, 10_000, '27 refusals');
  await sleep(200);
  t.equal(lb.app.connections, 3, 'exactly 3 open from that client');
  t.equal(stats.rejected.get('limit'), 27, 'exactly 27 refused');
  bothThreadsServed(t, lb, '30 connections from one client');
  // Another client is not affected.
  await openClients(t, lb.port(), 3, () => '127.0.0.8');
  await waitFor(() => lb.app.connections === 6, 5_000, 'three more from 127.0.0.8');
  // The worker thread dies: what it held from 127.0.0.7 and .8 is given back, the table is exact again.
  const held = lb.app.listeners[0]!.perSource!;
  await lb.app.workerThread(1)!.terminate();
  await waitFor(() => lb.app.workerThread(1) !== undefined, 10_000, 'a replacement');
  await waitFor(() => lb.app.connections < 6, 5_000, "the dead thread's connections gone");
  const left = lb.app.connections;
  t.same(held.audit(), [], 'the table is consistent');
  // As many as were lost can connect again, and no more.
  await openClients(t, lb.port(), 10, () => '127.0.0.7');
  await sleep(500);
  t.ok(lb.app.connections <= left + 3, `no client above 3 again (${lb.app.connections} open)`);
});

t.test('metrics over 2 workers equal the sum of what the clients saw', async (t) => {
  const backend = await backendFor(t, echoBackend());
  const lb = await lbFor(t, {
    workers: WORKERS,
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers: [{ name: 'echo', address: backend.address }] }],
  });
  let sent = 0;
  for (let i = 0; i < 60; i++) {
    const c = await connect(lb.port());
    const line = `${'x'.repeat(i)}\n`;
    c.write(line);
    await readLine(c);
    sent += line.length;
    c.end();
    await closed(c);
  }
  await waitFor(() => lb.app.connections === 0, 5_000, 'all closed');
  const text = await (await fetch(`http://127.0.0.1:${adminPort(lb)}/metrics`)).text();
  const value = (re: RegExp): number => Number(re.exec(text)?.[1]);
  t.equal(value(/^l4lb_connections_total\{listener="front",pool="p",server="echo"\} (\d+)/m), 60, 'l4lb_connections_total: every connection, of both threads');
  t.equal(value(/^l4lb_bytes_total\{listener="front",pool="p",server="echo",direction="in"\} (\d+)/m), sent, 'bytes in: what the clients sent');
  t.equal(value(/^l4lb_bytes_total\{listener="front",pool="p",server="echo",direction="out"\} (\d+)/m), sent, 'bytes out: the echo');
  t.equal(value(/^l4lb_active_connections\{listener="front",pool="p",server="echo"\} (\d+)/m), 0, 'none open');
  t.equal(value(/^l4lb_workers (\d+)/m), WORKERS, 'l4lb_workers');
  bothThreadsServed(t, lb, '60 connections');
});

t.test('round_robin over 2 workers takes turns from one position: 30 connections give 10/10/10', async (t) => {
  const names = ['a', 'b', 'c'];
  const backends = await Promise.all(names.map((n) => backendFor(t, startBackend((s) => s.end(`${n}\n`)))));
  const lb = await lbFor(t, {
    workers: WORKERS,
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'round_robin', health: { interval: '1h' }, servers: backends.map((b) => ({ address: b.address })) }],
  });
  const counts: Record<string, number> = { a: 0, b: 0, c: 0 };
  await Promise.all(
    Array.from({ length: 30 }, async () => {
      const s = await connect(lb.port());
      counts[await readLine(s)]! += 1;
      s.destroy();
    }),
  );
  t.same(counts, { a: 10, b: 10, c: 10 });
  bothThreadsServed(t, lb, '30 connections');
});

t.test('a reload under load with 2 workers loses no connection', async (t) => {
  const backend = await backendFor(t, echoBackend());
  const config = (weight: number): Record<string, unknown> => ({
    workers: WORKERS,
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers: [{ name: 'e', address: backend.address, weight }] }],
  });
  const lb = await lbFor(t, config(1));
  const port = lb.port();
  let ok = 0;
  let failed = 0;
  let stop = false;
  const clients = Array.from({ length: 4 }, async () => {
    while (!stop) {
      try {
        const c = await connect(port);
        c.on('error', () => {});
        c.write('ping\n');
        if ((await readLine(c, 5_000)) === 'ping') ok++;
        else failed++;
        c.destroy();
      } catch {
        failed++;
      }
    }
  });
  for (let i = 0; i < 5; i++) {
    await sleep(100);
    await lb.app.reload(await buildModel(config(i + 2)));
  }
  stop = true;
  await Promise.all(clients);
  t.ok(ok > 50, `${ok} connections served during 5 reloads`);
  t.equal(failed, 0, 'none failed');
  t.equal(lb.app.pools.get('p')!.servers[0]!.weight, 6, 'the last reload is in force');
  bothThreadsServed(t, lb, 'the connections during reloads');
});

t.test('a worker thread that dies is replaced; only its connections are lost and its counts are taken back', async (t) => {
  const backend = await holdingBackend(t);
  const lb = await lbFor(t, {
    workers: WORKERS,
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers: [{ address: backend.address }] }],
  });
  const clients = await openClients(t, lb.port(), 40);
  await waitFor(() => lb.app.connections === 40, 5_000, '40 open');
  const perThread = lb.app.listeners[0]!.stats.acceptedByThread();
  t.ok(perThread[1]! > 0, `the worker thread holds some (${perThread.join(' / ')})`);
  let lostCount = 0;
  for (const c of clients) c.once('close', () => lostCount++);
  await lb.app.workerThread(1)!.terminate();
  await waitFor(() => lb.app.workerRestarts === 1, 5_000, 'the restart to be counted');
  await waitFor(() => lb.app.connections === perThread[0], 5_000, "the dead thread's connections no longer counted");
  t.equal(lb.app.pools.get('p')!.servers[0]!.active, perThread[0], 'the server count too');
  await waitFor(() => lostCount === perThread[1], 5_000, "the dead thread's clients to see their connections end");
  await sleep(300);
  t.equal(lostCount, perThread[1], "exactly the dead thread's connections were lost");
  t.match(lb.lines.find((l) => l.msg === 'worker thread died; its connections are lost, starting another'), { level: 'error', worker: 1 });
  await waitFor(() => lb.app.workerThread(1) !== undefined, 5_000, 'a replacement');
  // The replacement serves: new connections reach both threads again (once it has started and bound,
  // which takes seconds on a loaded machine: bounded by time, not by a count of tries).
  const before = lb.app.listeners[0]!.stats.acceptedByThread()[1]!;
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline && lb.app.listeners[0]!.stats.acceptedByThread()[1]! === before) {
    const c = await connect(lb.port()).catch(() => null);
    c?.on('error', () => {});
    if (c) t.teardown(() => c.destroy());
    await sleep(10);
  }
  t.ok(lb.app.listeners[0]!.stats.acceptedByThread()[1]! > before, 'the replacement accepts');
});

t.test('TLS sessions resume on either worker: the ticket keys are shared', async (t) => {
  if (opensslMissing !== null) {
    if (process.env.CI) t.fail(opensslMissing);
    else t.plan(0, opensslMissing);
    return;
  }
  const certs = testCerts();
  const backend = await backendFor(t, echoBackend());
  const lb = await lbFor(t, {
    workers: WORKERS,
    log: { level: 'info', access: false },
    listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'p', tls: { mode: 'terminate', certs: [certs.pair('default.test')] } }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers: [{ address: backend.address }] }],
  });
  const handshake = (session?: Buffer): Promise<{ reused: boolean; session: Buffer | undefined }> =>
    new Promise((resolve, reject) => {
      let ticket: Buffer | undefined;
      const s = tls.connect({ port: lb.port(), host: '127.0.0.1', ca: certs.ca, servername: 'default.test', maxVersion: 'TLSv1.2', ...(session ? { session } : {}) });
      s.on('session', (b: Buffer) => (ticket = b));
      s.on('error', reject);
      s.once('secureConnect', () => {
        s.write('x\n');
        s.once('data', () => {
          const reused = s.isSessionReused();
          s.end();
          s.once('close', () => resolve({ reused, session: ticket }));
        });
      });
    });
  const first = await handshake();
  t.ok(first.session, 'a ticket was issued');
  let resumed = 0;
  for (let i = 0; i < 20; i++) if ((await handshake(first.session)).reused) resumed++;
  t.equal(resumed, 20, 'every one of 20 resumptions succeeded, whichever thread took it');
  bothThreadsServed(t, lb, '21 handshakes');
});

t.test('l4lb run with 2 workers: every stdout line is one whole JSON line', async (t) => {
  const backend = await backendFor(t, echoBackend());
  const { file, cleanup } = writeConfig({
    workers: WORKERS,
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers: [{ address: backend.address }] }],
  });
  t.teardown(cleanup);
  const child = await startCli(file);
  t.teardown(() => child.kill());
  await Promise.all(
    Array.from({ length: 300 }, async () => {
      const c = await connect(child.port('front'));
      c.on('error', () => {});
      c.write('y\n');
      await readLine(c);
      c.end();
      await closed(c);
    }),
  );
  await waitFor(() => child.lines.filter((l) => l.msg === 'connection').length === 300, 10_000, '300 access lines');
  t.notOk(child.lines.some((l) => 'raw' in l), 'no line that is not JSON');
  t.equal(new Set(child.lines.filter((l) => l.msg === 'connection').map((l) => l.client)).size, 300, '300 distinct connections logged once each');
});

t.test('bin/l4lb (the Node it brings, its V8 flags) starts 2 workers that both serve', async (t) => {
  const backend = await backendFor(t, echoBackend());
  const { file, cleanup } = writeConfig({
    workers: WORKERS,
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', health: { interval: '1h' }, servers: [{ address: backend.address }] }],
  });
  t.teardown(cleanup);
  const child = await startCli(file, [], process.env, { launcher: true });
  t.teardown(() => child.kill());
  t.match(child.lines.find((l) => l.msg === 'listening'), { listener: 'front', threads: WORKERS });
  for (let i = 0; i < 40; i++) {
    const c = await connect(child.port('front'));
    c.write('z\n');
    t.equal(await readLine(c), 'z');
    c.destroy();
  }
  const admin = Number(child.lines.find((l) => l.msg === 'admin listening')?.port);
  const status = (await (await fetch(`http://127.0.0.1:${admin}/status`)).json()) as { workers: number; listeners: Array<{ accepted: number }> };
  t.equal(status.workers, WORKERS, '/status says 2 workers');
  t.equal(status.listeners[0]!.accepted, 40, 'all 40 counted, whichever thread took them');
});
