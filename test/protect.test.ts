import t, { type Test } from 'tap';
import net from 'node:net';
import { closed, connect, namedBackend, readLine, sleep, waitFor, whoAnswers } from './helpers/net.js';
import { backendFor, lbFor } from './helpers/lb.js';
import { encodeV1 } from '../src/proxy-protocol/index.js';
import { PerSourceTable } from '../src/protect/per-source.js';

async function setup(t: Test, listener: Record<string, unknown>) {
  const backend = await backendFor(t, namedBackend('ok'));
  const lb = await lbFor(t, {
    log: { level: 'debug', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', ...listener }],
    pools: [{ name: 'p', servers: [{ address: backend.address }], health: { interval: '1h' } }],
  });
  return { backend, lb };
}

/** Connect and report whether the backend answered ("served") or the connection was closed. */
async function outcome(port: number, localAddress?: string, host = '127.0.0.1'): Promise<'served' | 'closed'> {
  const s = net.connect({ port, host, localAddress });
  s.on('error', () => {});
  try {
    return (await readLine(s, 3_000)) === 'ok' ? 'served' : 'closed';
  } catch {
    return 'closed';
  } finally {
    s.destroy();
  }
}

t.test('deny: 127.0.0.9 is refused while 127.0.0.10 is served', async (t) => {
  const { lb } = await setup(t, { deny: ['127.0.0.9/32'] });
  t.equal(await outcome(lb.port(), '127.0.0.9'), 'closed');
  t.equal(await outcome(lb.port(), '127.0.0.10'), 'served');
  await waitFor(() => lb.lines.some((l) => l.termination === 'rejected_acl'), 2_000, 'rejected_acl log line');
  const line = lb.lines.find((l) => l.termination === 'rejected_acl')!;
  t.match(line, { server: null, connect_ms: null, bytes_in: 0 }, 'the denied client never reached a backend');
  t.match(line.client, /^127\.0\.0\.9:/);
  t.equal(line.level, 'info', 'rejections are logged at the level of access lines');
  t.equal(line.reason, 'deny', 'with the rule that refused it');
  t.equal(lb.app.listeners[0]!.stats.rejected.get('acl'), 1, 'counted');
});

t.test('allow: only listed networks; deny wins over allow', async (t) => {
  const { lb } = await setup(t, { allow: ['127.0.0.0/24'], deny: ['127.0.0.5'] });
  t.equal(await outcome(lb.port(), '127.0.0.20'), 'served');
  t.equal(await outcome(lb.port(), '127.0.0.5'), 'closed', 'denied inside an allowed range');
  t.equal(await outcome(lb.port(), '127.0.1.20'), 'closed', 'outside the allowed range');
});

t.test('deny and allow rules for ::1 apply on an IPv6 listener', async (t) => {
  const backend = await backendFor(t, namedBackend('ok'));
  const make = async (listener: Record<string, unknown>) => {
    const lb = await lbFor(t, {
      listeners: [{ name: 'v6', bind: '[::1]:0', pool: 'p', ...listener }],
      pools: [{ name: 'p', servers: [{ address: backend.address }], health: { interval: '1h' } }],
    });
    return lb;
  };
  const denied = await make({ deny: ['::1/128'] });
  t.equal(await outcome(denied.port(), undefined, '::1'), 'closed');
  const allowed = await make({ allow: ['::1'], deny: ['127.0.0.0/8'] });
  t.equal(await outcome(allowed.port(), undefined, '::1'), 'served');
});

t.test('with accept_proxy the ACL applies to the address in the PROXY header', async (t) => {
  const { lb } = await setup(t, { accept_proxy: true, trusted_proxies: ['127.0.0.0/8'], deny: ['203.0.113.0/24'] });
  const send = async (src: string): Promise<'served' | 'closed'> => {
    const s = await connect(lb.port());
    s.on('error', () => {});
    s.write(encodeV1({ address: src, port: 1234 }, { address: '127.0.0.1', port: 80 }));
    try {
      return (await readLine(s, 3_000)) === 'ok' ? 'served' : 'closed';
    } catch {
      return 'closed';
    } finally {
      s.destroy();
    }
  };
  t.equal(await send('203.0.113.7'), 'closed', 'denied by the header address');
  t.equal(await send('198.51.100.7'), 'served', 'another header address is served');
});

t.test('per_source max_connections 5: the sixth concurrent connection is closed, another address still connects', async (t) => {
  const { lb } = await setup(t, { per_source: { max_connections: 5 } });
  const held: net.Socket[] = [];
  t.teardown(() => held.forEach((s) => s.destroy()));
  for (let i = 0; i < 5; i++) {
    const s = await connect(lb.port(), '127.0.0.30');
    t.equal(await readLine(s), 'ok', `connection ${i + 1} served`);
    held.push(s);
  }
  t.equal(await outcome(lb.port(), '127.0.0.30'), 'closed', 'the sixth from the same address is closed');
  t.equal(await outcome(lb.port(), '127.0.0.31'), 'served', 'another address still connects');
  held.pop()!.destroy();
  await waitFor(() => lb.app.connections <= 4, 2_000, 'one connection to close');
  t.equal(await outcome(lb.port(), '127.0.0.30'), 'served', 'a freed slot can be used again');
});

t.test('per_source connect_rate 10/s is enforced over 2 s', async (t) => {
  const { lb } = await setup(t, { per_source: { connect_rate: 10 } });
  const started = Date.now();
  let served = 0;
  let refused = 0;
  // Try 5 connections every 100 ms for 2 s: 100 attempts, about 10 + 2×10 allowed.
  while (Date.now() - started < 2_000) {
    const results = await Promise.all(Array.from({ length: 5 }, () => outcome(lb.port(), '127.0.0.40')));
    for (const r of results) r === 'served' ? served++ : refused++;
    await sleep(100);
  }
  const elapsed = (Date.now() - started) / 1000;
  const ceiling = 10 + 10 * elapsed + 2;
  t.ok(served >= 15 && served <= ceiling, `served ${served} in ${elapsed.toFixed(1)} s (burst 10 + 10/s, at most ${ceiling.toFixed(0)})`);
  t.ok(refused > 0, `the excess (${refused}) was refused`);
  t.equal(await outcome(lb.port(), '127.0.0.41'), 'served', 'another address is not limited');
});

t.test('listener max_connections is enforced and counted', async (t) => {
  const { lb } = await setup(t, { max_connections: 3 });
  const held: net.Socket[] = [];
  t.teardown(() => held.forEach((s) => s.destroy()));
  for (let i = 0; i < 3; i++) {
    const s = await connect(lb.port());
    t.equal(await readLine(s), 'ok');
    held.push(s);
  }
  const extra = await connect(lb.port());
  extra.on('error', () => {});
  await closed(extra, 2_000);
  t.pass('the fourth connection is closed at once');
  t.equal(lb.app.listeners[0]!.stats.rejected.get('limit'), 1, 'counted as a limit rejection');
  held[0]!.destroy();
  await waitFor(() => lb.app.connections <= 2, 2_000, 'a slot to free up');
  t.equal(await whoAnswers(lb.port()), 'ok', 'served again below the limit');
});

t.test('the per-source table is bounded, refuses new sources when full of open connections, and forgets idle entries', async (t) => {
  let now = 0;
  const table = new PerSourceTable({ maxConnections: 2, connectRate: 5 }, { maxSources: 100, now: () => now });
  let admitted = 0;
  for (let i = 0; i < 1000; i++) if (table.admit(`10.0.${i >> 8}.${i & 255}`)) admitted++;
  t.equal(table.size, 100, 'at most 100 entries after 1000 addresses');
  t.equal(admitted, 100, 'the 900 sources that found the table full of open connections were refused');
  t.notOk(table.admit('192.0.2.1'), 'a new source is refused while every entry holds a connection');
  for (let i = 0; i < 100; i++) table.release(`10.0.${i >> 8}.${i & 255}`);
  t.notOk(table.admit('192.0.2.1'), 'still refused: the released entries\' buckets are refilling');
  now += 1_000;
  t.ok(table.admit('192.0.2.1'), 'admitted once a bucket is full again (that entry is forgotten)');
  t.ok(table.admit('192.0.2.1'));
  t.notOk(table.admit('192.0.2.1'), 'max_connections per source');
  table.release('192.0.2.1');
  table.release('192.0.2.1');
  now += 10_000;
  table.sweep();
  t.equal(table.size, 0, 'idle entries with full buckets are forgotten');
});
