/**
 * Per-source limits (src/protect/per-source.ts): the table never forgets a
 * client that holds something (open connections, a bucket still refilling),
 * so churning it cannot raise anyone's limit; IPv6 clients are counted per
 * network (/64 by default), IPv4 clients per address.
 *
 * Unit tests drive the table with a fake clock; the end-to-end tests name
 * many client addresses through PROXY headers sent from 127.0.0.1 to a
 * listener that trusts loopback.
 */
import net from 'node:net';
import t, { type Test } from 'tap';
import { buildModel } from '../src/config/load.js';
import { ipv6NetworkKey } from '../src/net/ip.js';
import { PerSourceTable } from '../src/protect/per-source.js';
import { seededRandom } from './helpers/random.js';
import { connect, namedBackend, readLine, waitFor, type Running } from './helpers/net.js';
import { backendFor, lbFor } from './helpers/lb.js';

// ---------------------------------------------------------------------------
// The table

t.test("the issue's churn: 100 slots, max_connections 2, 100 other sources in between: the source still has at most 2 open", async (t) => {
  const table = new PerSourceTable({ maxConnections: 2, connectRate: 0 }, { maxSources: 100, now: () => 0 });
  const open = new Map<string, number>();
  const admit = (ip: string): boolean => {
    const ok = table.admit(ip);
    if (ok) open.set(ip, (open.get(ip) ?? 0) + 1);
    return ok;
  };
  const release = (ip: string): void => {
    table.release(ip);
    open.set(ip, open.get(ip)! - 1);
  };
  t.ok(admit('10.9.9.9') && admit('10.9.9.9'), 'two admitted');
  for (let i = 0; i < 100; i++) admit(`192.0.2.${i}`);
  t.equal(table.size, 100, 'the table is full');
  t.notOk(admit('192.0.2.100'), 'a 101st source is refused: every entry holds an open connection');
  t.notOk(admit('10.9.9.9'), 'a third from the first source is refused');
  t.notOk(admit('10.9.9.9'), 'and a fourth');
  // The other sources close and come back as new ones, twice over.
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 100; i++) if ((open.get(`192.0.2.${i}`) ?? 0) > 0) release(`192.0.2.${i}`);
    for (let i = 0; i < 100; i++) admit(`198.51.${round}.${i}`);
    t.notOk(admit('10.9.9.9'), `round ${round + 1}: still refused`);
  }
  release('10.9.9.9');
  t.ok(admit('10.9.9.9'), 'a slot freed by its own connection is usable again');
  t.notOk(admit('10.9.9.9'));
  t.equal(open.get('10.9.9.9'), 2, 'never more than 2 open');
});

t.test('an entry whose bucket is still refilling is kept: churn cannot reset a connect rate', async (t) => {
  let now = 0;
  const table = new PerSourceTable({ maxConnections: 0, connectRate: 5 }, { maxSources: 10, now: () => now });
  for (let i = 0; i < 5; i++) {
    t.ok(table.admit('10.9.9.9'), `burst connection ${i + 1}`);
    table.release('10.9.9.9');
  }
  t.notOk(table.admit('10.9.9.9'), 'the sixth within the second is refused');
  let others = 0;
  for (let i = 0; i < 100; i++) {
    if (table.admit(`192.0.2.${i}`)) {
      others++;
      table.release(`192.0.2.${i}`);
    }
  }
  t.equal(others, 9, 'other sources fill the free slots, then are refused (counted as rejected_limit by the session)');
  t.notOk(table.admit('10.9.9.9'), 'the churn did not give the first source a fresh bucket');
  now += 100;
  t.notOk(table.admit('10.9.9.9'), 'half a token after 100 ms at 5/s');
  t.notOk(table.admit('203.0.113.1'), 'no bucket is full yet: a new source is still refused');
  now += 100;
  t.ok(table.admit('10.9.9.9'), 'one token back after 200 ms');
  t.notOk(table.admit('10.9.9.9'));
  t.ok(table.admit('203.0.113.1'), 'the other sources\' buckets are full again: one is forgotten to make room');
});

t.test('random churn over 300 sources and 100 slots never exceeds max_connections or the token bucket for any source', async (t) => {
  const MAX = 3;
  const RATE = 4;
  for (const seed of [1, 2, 3, 42]) {
    const rnd = seededRandom(seed);
    let now = 0;
    const table = new PerSourceTable({ maxConnections: MAX, connectRate: RATE }, { maxSources: 100, now: () => now });
    const open = new Map<string, number>();
    const admittedAt = new Map<string, number[]>();
    let worstOpen = 0;
    let worstWindow = 0;
    let refused = 0;
    let biggest = 0;
    for (let step = 0; step < 20_000; step++) {
      now += Math.floor(rnd() * 20);
      const ip = `10.0.${Math.floor(rnd() * 2)}.${Math.floor(rnd() * 150)}`;
      const held = open.get(ip) ?? 0;
      if (held > 0 && rnd() < 0.45) {
        table.release(ip);
        open.set(ip, held - 1);
      } else if (table.admit(ip)) {
        open.set(ip, held + 1);
        worstOpen = Math.max(worstOpen, held + 1);
        const times = (admittedAt.get(ip) ?? []).filter((at) => at > now - 1_000);
        times.push(now);
        admittedAt.set(ip, times);
        worstWindow = Math.max(worstWindow, times.length);
      } else {
        refused++;
      }
      if (step % 997 === 0) table.sweep();
      biggest = Math.max(biggest, table.size);
    }
    t.ok(worstOpen <= MAX, `seed ${seed}: at most ${MAX} open per source (saw ${worstOpen})`);
    // A bucket of RATE tokens refilled at RATE/s admits at most RATE + RATE in any one second.
    t.ok(worstWindow <= 2 * RATE, `seed ${seed}: at most ${2 * RATE} admitted in any second per source (saw ${worstWindow})`);
    t.ok(biggest <= 100, `seed ${seed}: at most 100 entries (saw ${biggest})`);
    t.ok(refused > 0, `seed ${seed}: the limits did refuse (${refused})`);
  }
});

t.test('with only max_connections, a source with no open connection is forgotten at once', async (t) => {
  const table = new PerSourceTable({ maxConnections: 1, connectRate: 0 }, { maxSources: 2, now: () => 0 });
  t.ok(table.admit('10.0.0.1'));
  t.ok(table.admit('10.0.0.2'));
  t.notOk(table.admit('10.0.0.3'), 'full of open connections');
  table.release('10.0.0.1');
  t.equal(table.size, 1, 'nothing left to remember about 10.0.0.1');
  t.ok(table.admit('10.0.0.3'));
  table.release('10.0.0.9');
  table.release('10.0.0.1');
  t.equal(table.size, 2, 'a release for an unknown or closed source changes nothing');
});

t.test('sweep forgets what holds nothing and keeps open connections and refilling buckets', async (t) => {
  let now = 0;
  const table = new PerSourceTable({ maxConnections: 5, connectRate: 10 }, { now: () => now });
  table.admit('10.0.0.1'); // stays open
  table.admit('10.0.0.2');
  table.release('10.0.0.2'); // refilling
  now += 50;
  table.sweep();
  t.equal(table.size, 2, 'both still hold something');
  now += 100;
  table.sweep();
  t.equal(table.size, 1, 'the refilled one is forgotten, the open one kept');
  table.release('10.0.0.1');
  now += 100;
  table.sweep();
  t.equal(table.size, 0);
});

t.test('IPv6 clients share a limit per /64 by default; other /64s and IPv4 addresses have their own', async (t) => {
  const table = new PerSourceTable({ maxConnections: 2, connectRate: 0 });
  t.ok(table.admit('2001:db8:1:2::1'));
  t.ok(table.admit('2001:db8:1:2:ffff:ffff:ffff:ffff'));
  t.notOk(table.admit('2001:db8:1:2::3'), 'a third address in the same /64 is over the limit');
  t.notOk(table.admit('2001:DB8:0001:0002:0:0:0:9'), 'whatever the spelling');
  t.ok(table.admit('2001:db8:1:3::1'), 'the next /64 has its own limit');
  table.release('2001:db8:1:2::1');
  t.ok(table.admit('2001:db8:1:2::77'), 'a release by any address of the /64 frees a slot of the /64');
  t.ok(table.admit('192.0.2.1') && table.admit('192.0.2.1'));
  t.notOk(table.admit('192.0.2.1'), 'IPv4: per address');
  t.ok(table.admit('192.0.2.2'), 'the neighbouring IPv4 address is another client');
  t.ok(table.admit('::ffff:192.0.2.3') && table.admit('192.0.2.3'));
  t.notOk(table.admit('192.0.2.3'), 'an IPv4-mapped address counts as its IPv4 address');
});

t.test('ipv6Prefix sets the grouping: /48, /128, and a prefix inside a group', async (t) => {
  const by48 = new PerSourceTable({ maxConnections: 1, connectRate: 0, ipv6Prefix: 48 });
  t.ok(by48.admit('2001:db8:1:2::1'));
  t.notOk(by48.admit('2001:db8:1:ffff::1'), '/48: the same site');
  t.ok(by48.admit('2001:db8:2::1'));
  const by128 = new PerSourceTable({ maxConnections: 1, connectRate: 0, ipv6Prefix: 128 });
  t.ok(by128.admit('2001:db8::1'));
  t.ok(by128.admit('2001:db8::2'), '/128: per address');
  t.notOk(by128.admit('2001:db8:0:0:0:0:0:1'));
  const by56 = new PerSourceTable({ maxConnections: 1, connectRate: 0, ipv6Prefix: 56 });
  t.ok(by56.admit('2001:db8:1:200::1'));
  t.notOk(by56.admit('2001:db8:1:2ff::1'), '/56: the low byte of the fourth group is host part');
  t.ok(by56.admit('2001:db8:1:300::1'));
  t.throws(() => new PerSourceTable({ maxConnections: 1, connectRate: 0, ipv6Prefix: 129 }), RangeError);
});

t.test('ipv6NetworkKey: one key per network whatever the spelling, never an IPv4 text', async (t) => {
  const k = (ip: string, p = 64) => ipv6NetworkKey(ip, p);
  const same = (a: string, b: string, p: number) => t.equal(k(a, p), k(b, p), `${a} and ${b} share a /${p}`);
  const differ = (a: string, b: string, p: number) => t.not(k(a, p), k(b, p), `${a} and ${b} are different /${p}s`);
  same('2001:db8:1:2::7', '2001:0DB8:0001:0002:0000:0000:0000:0007', 64);
  same('2001:db8:1:2::7', '2001:db8:1:2:ffff:ffff:ffff:ffff', 64);
  differ('2001:db8:1:2::7', '2001:db8:1:3::7', 64);
  differ('2001:db8:1:2::7', '2001:db8:1:2::8', 128);
  same('1:2::7:8', '1:2:0:0:0:0:7:8', 128);
  same('::1', '0:0:0:0:0:0:0:1', 128);
  differ('::', '::1', 128);
  same('::', '::1', 64);
  same('fe80::1%eth0', 'febf::2', 10);
  differ('fe80::1', 'fec0::1', 10);
  same('1::', '1:ffff::', 16);
  same('64:ff9b::192.0.2.33', '64:ff9b::c000:221', 128);
  differ('64:ff9b::192.0.2.33', '64:ff9b::c000:222', 128);
  t.equal(k('2001:db8:1:2::7', 128)!.length, 9, 'at most 9 characters');
  t.equal(k('2001:db8:1:2::7', 0), ':', '/0: one network');
  t.equal(k('31:2e:32:2e:33:2e:34::', 112), ':1.2.3.4', 'a key starts with ":", so it never equals an IPv4 text');
  t.equal(k('::ffff:192.0.2.33'), '192.0.2.33', 'IPv4-mapped: the IPv4 address');
  t.equal(k('::FFFF:c000:221'), '192.0.2.33', 'IPv4-mapped in hex too');
  for (const bad of ['', '1.2.3.4', ':', ':::', '1::2::3', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '12345::', 'g::1', '1:', '::1.2.3', '::1.2.3.256', '1:2:3:4:5:6:7:1.2.3.4']) {
    t.equal(k(bad), undefined, `not IPv6: ${JSON.stringify(bad)}`);
  }
});

// ---------------------------------------------------------------------------
// End to end: client addresses named by PROXY headers from a trusted 127.0.0.1

async function lbWith(t: Test, listeners: Record<string, unknown>[]): Promise<Running> {
  const backend = await backendFor(t, namedBackend('ok'));
  const lb = await lbFor(t, {
    log: { level: 'debug', access: true },
    listeners: listeners.map((l) => ({ bind: '127.0.0.1:0', pool: 'p', accept_proxy: true, trusted_proxies: ['127.0.0.0/8'], ...l })),
    pools: [{ name: 'p', servers: [{ address: backend.address }], health: { interval: '1h' } }],
  });
  return lb;
}

/** Connects from 127.0.0.1 as `source` (a PROXY v1 line written out by hand); served connections stay open until teardown. */
async function as(t: Test, port: number, source: string): Promise<'served' | 'closed'> {
  const s: net.Socket = await connect(port);
  t.teardown(() => s.destroy());
  s.on('error', () => {});
  const family = source.includes(':') ? 'TCP6' : 'TCP4';
  const dest = family === 'TCP6' ? '::1' : '127.0.0.1';
  s.write(`PROXY ${family} ${source} ${dest} 40000 ${port}\r\n`);
  try {
    return (await readLine(s, 10_000)) === 'ok' ? 'served' : 'closed';
  } catch {
    return 'closed';
  }
}

t.test('through PROXY headers: IPv6 sources in one /64 share max_connections, another /64 does not, IPv4 counts per address', async (t) => {
  const lb = await lbWith(t, [{ name: 'front', per_source: { max_connections: 2 } }]);
  const port = lb.port();
  t.equal(await as(t, port, '2001:db8:1:2::1'), 'served');
  t.equal(await as(t, port, '2001:db8:1:2::2'), 'served');
  t.equal(await as(t, port, '2001:db8:1:2::3'), 'closed', 'a third address in the same /64 is refused');
  t.equal(await as(t, port, '2001:db8:1:3::1'), 'served', 'another /64 is served');
  t.equal(await as(t, port, '192.0.2.1'), 'served');
  t.equal(await as(t, port, '192.0.2.1'), 'served');
  t.equal(await as(t, port, '192.0.2.1'), 'closed', 'a third from one IPv4 address is refused');
  t.equal(await as(t, port, '192.0.2.2'), 'served', 'the next IPv4 address is another client');
  await waitFor(() => lb.lines.filter((l) => l.termination === 'rejected_limit').length === 2, 5_000, 'two rejected_limit lines');
  const refused = lb.lines.filter((l) => l.termination === 'rejected_limit').map((l) => l.client);
  t.match(refused, [/^\[2001:db8:1:2::3\]:40000$/, /^192\.0\.2\.1:40000$/], 'logged with the header address');
  t.equal(lb.app.listeners[0]!.stats.rejected.get('limit'), 2, 'counted as limit rejections');
});

t.test('through PROXY headers: ipv6_prefix 128 counts each IPv6 address, 48 a whole site', async (t) => {
  const lb = await lbWith(t, [
    { name: 'per-address', per_source: { max_connections: 1, ipv6_prefix: 128 } },
    { name: 'per-site', per_source: { max_connections: 1, ipv6_prefix: 48 } },
  ]);
  const a = lb.port('per-address');
  t.equal(await as(t, a, '2001:db8:1:2::1'), 'served');
  t.equal(await as(t, a, '2001:db8:1:2::2'), 'served', '/128: a neighbour in the /64 has its own limit');
  t.equal(await as(t, a, '2001:db8:1:2::1'), 'closed');
  const s = lb.port('per-site');
  t.equal(await as(t, s, '2001:db8:1:2::1'), 'served');
  t.equal(await as(t, s, '2001:db8:1:ffff::1'), 'closed', '/48: another /64 of the same site shares the limit');
  t.equal(await as(t, s, '2001:db8:2::1'), 'served', 'another /48 is served');
});

t.test('a reload keeps the per-source counts when nothing changed, and regroups when ipv6_prefix changes', async (t) => {
  const backend = await backendFor(t, namedBackend('ok'));
  const raw = (prefix: number) => ({
    log: { level: 'debug', access: true },
    listeners: [
      { name: 'front', bind: '127.0.0.1:0', pool: 'p', accept_proxy: true, trusted_proxies: ['127.0.0.0/8'], per_source: { max_connections: 1, ipv6_prefix: prefix } },
    ],
    pools: [{ name: 'p', servers: [{ address: backend.address }], health: { interval: '1h' } }],
  });
  const lb = await lbFor(t, raw(64));
  const port = lb.port();
  t.equal(await as(t, port, '2001:db8:1:2::1'), 'served');
  await lb.app.reload(await buildModel(raw(64)));
  t.equal(await as(t, port, '2001:db8:1:2::2'), 'closed', 'same limits and prefix: the table and its count are kept');
  await lb.app.reload(await buildModel(raw(128)));
  t.equal(lb.port(), port, 'the same listener socket');
  t.equal(await as(t, port, '2001:db8:1:2::2'), 'served', '/128 now: a new table that counts per address');
  t.equal(await as(t, port, '2001:db8:1:2::2'), 'closed');
});
