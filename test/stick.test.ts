/**
 * Stick tables (`pools[].stick`): a client address keeps its server while it
 * has open connections and for `expire` after, through reloads that add or
 * re-weight servers; a server going down moves its clients, who then stick
 * to their new one. Clients are distinct loopback addresses (127.0.0.X).
 * Run with L4LB_TEST_WORKERS=2 too: the table is shared by every thread.
 */
import t from 'tap';
import { StickTable, newStickBuffer } from '../src/balance/stick-table.js';
import { diffModels } from '../src/config/diff.js';
import { buildModel } from '../src/config/load.js';
import { adminPort, backendFor, lbFor, namedBackendsFor } from './helpers/lb.js';
import { connect, namedBackend, readLine, sleep, waitFor, whoAnswers, type Backend, type Running } from './helpers/net.js';
import { problemsOf } from './helpers/config.js';

const CLIENTS = 50;
const clientAddress = (i: number): string => `127.0.0.${i + 2}`;

function config(servers: ReadonlyArray<{ name: string; address: string; weight?: number }>, pool: Record<string, unknown>): Record<string, unknown> {
  return {
    admin: { listen: '127.0.0.1:0' },
    listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', ...pool, servers }],
  };
}

/** Which server each client reaches now (one connection each, one after another). */
async function serversOf(lb: Running, clients = CLIENTS): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < clients; i++) out.push(await whoAnswers(lb.port(), clientAddress(i)));
  return out;
}

function moves(before: readonly string[], after: readonly string[]): number {
  return before.filter((s, i) => after[i] !== s).length;
}

async function adminGet(lb: Running, path: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${adminPort(lb)}${path}`);
  return res.text();
}

t.test('stick settings are read with their defaults, and bad ones are refused', async (t) => {
  const servers = [{ address: '127.0.0.1:1' }];
  const on = await buildModel({ listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }], pools: [{ name: 'p', stick: {}, servers }] });
  t.same(on.pools[0]!.stick, { expireMs: 1_800_000, size: 100_000 });
  const off = await buildModel({ listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }], pools: [{ name: 'p', servers }] });
  t.equal(off.pools[0]!.stick, null);
  const set = await buildModel({ listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }], pools: [{ name: 'p', stick: { expire: '1s', size: 7 }, servers }] });
  t.same(set.pools[0]!.stick, { expireMs: 1000, size: 7 });
  const bad = await problemsOf({ listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }], pools: [{ name: 'p', stick: { expire: 0, size: 0, ttl: 1 }, servers }] });
  const paths = bad.map((p) => p.path);
  t.ok(paths.includes('pools[0].stick.expire'), 'expire 0 refused');
  t.ok(paths.includes('pools[0].stick.size'), 'size 0 refused');
  t.ok(paths.some((p) => p.startsWith('pools[0].stick')), 'unknown key refused');
});

t.test('a full table forgets the oldest idle client first, never one with open connections, and balances the rest without sticking', async (t) => {
  let now = 1_000;
  const table = new StickTable(newStickBuffer({ expireMs: 500, size: 3 }, 2), 0, () => now);
  const other = new StickTable(table.buffer, 1, () => now);
  t.ok(table.hold('10.0.0.1', 11));
  t.ok(other.hold('10.0.0.2', 12), 'another thread holds in the same table');
  t.ok(table.hold('10.0.0.3', 13));
  t.equal(other.lookup('10.0.0.1'), 11, 'every thread sees every entry');
  t.notOk(table.hold('10.0.0.4', 14), 'full of clients with open connections: not remembered');
  t.equal(table.lookup('10.0.0.4'), -1);
  now += 10;
  table.release('10.0.0.3');
  now += 10;
  table.release('10.0.0.1');
  t.ok(table.hold('10.0.0.4', 14), 'an idle one makes room');
  t.equal(table.lookup('10.0.0.3'), -1, 'the oldest idle client was forgotten');
  t.equal(table.lookup('10.0.0.1'), 11, 'the newer idle one stays');
  t.equal(table.lookup('10.0.0.2'), 12, 'the busy one stays');
  t.equal(table.entries, 3);
  now += 499;
  table.sweep();
  t.equal(table.lookup('10.0.0.1'), 11, 'idle for less than expire: kept');
  now += 1;
  table.sweep();
  t.equal(table.lookup('10.0.0.1'), -1, 'idle for expire: forgotten');
  t.equal(table.entries, 2);
  t.ok(table.hold('::ffff:10.0.0.2', 15), 'an IPv4-mapped address is its IPv4 client');
  t.equal(other.lookup('10.0.0.2'), 15, 'a new server replaces the old one');
  t.ok(table.hold('2001:db8::1', 16));
  t.equal(table.lookup('2001:db8::2'), -1, 'IPv6 clients are whole addresses, not networks');
  t.same(table.audit(), []);
  // Thread 1 dies holding a connection of 10.0.0.2: its hold no longer counts, the entry goes idle.
  table.release('::ffff:10.0.0.2');
  t.equal(table.lookup('10.0.0.2'), 15);
  table.releaseWorker(1);
  now += 500;
  table.sweep();
  t.equal(table.lookup('10.0.0.2'), -1, "a dead thread's connections do not keep an entry");
  t.same(table.audit(), []);
});

t.test('50 clients keep their servers across a reload that adds and re-weights servers (source_hash alone moves some)', async (t) => {
  const [a, b, c, d] = await namedBackendsFor(t, ['a', 'b', 'c', 'd'] as const);
  const three = [
    { name: 'a', address: a.address },
    { name: 'b', address: b.address },
    { name: 'c', address: c.address },
  ];
  const four = [{ name: 'a', address: a.address, weight: 3 }, three[1]!, three[2]!, { name: 'd', address: d.address }];
  const sticky = await lbFor(t, config(three, { balance: 'source_hash', stick: { expire: '10m' } }));
  const plain = await lbFor(t, config(three, { balance: 'source_hash' }));
  const before = await serversOf(sticky);
  const plainBefore = await serversOf(plain);
  t.same(before, plainBefore, 'first contact uses the pool balance (source_hash)');
  t.equal(sticky.app.pools.get('p')!.stick!.entries, CLIENTS);

  await sticky.app.reload(await buildModel({ ...config(four, { balance: 'source_hash', stick: { expire: '10m' } }), workers: sticky.app.threads }));
  await plain.app.reload(await buildModel({ ...config(four, { balance: 'source_hash' }), workers: plain.app.threads }));
  const after = await serversOf(sticky);
  const plainAfter = await serversOf(plain);
  const plainMoves = moves(plainBefore, plainAfter);
  t.comment(`source_hash alone: ${plainMoves} of ${CLIENTS} clients moved; with stick: ${moves(before, after)}`);
  t.ok(plainMoves > 0, 'without stick, adding a server moves some clients');
  t.equal(moves(before, after), 0, 'with stick, none moves');
  t.equal(sticky.app.pools.get('p')!.stick!.entries, CLIENTS, 'the table survived the reload');

  const status = JSON.parse(await adminGet(sticky, '/status')) as { pools: Array<{ name: string; stick_entries: number | null }> };
  t.equal(status.pools.find((p) => p.name === 'p')!.stick_entries, CLIENTS, '/status shows the count');
  const plainStatus = JSON.parse(await adminGet(plain, '/status')) as { pools: Array<{ name: string; stick_entries: number | null }> };
  t.equal(plainStatus.pools.find((p) => p.name === 'p')!.stick_entries, null, 'null for a pool without stick');
  t.match(await adminGet(sticky, '/metrics'), new RegExp(`^l4lb_stick_entries\\{pool="p"\\} ${CLIENTS}$`, 'm'));

  // New stick settings make a new table: every client is balanced afresh.
  await sticky.app.reload(await buildModel({ ...config(four, { balance: 'source_hash', stick: { expire: '10m', size: 1000 } }), workers: sticky.app.threads }));
  t.equal(sticky.app.pools.get('p')!.stick!.entries, 0, 'changed settings: a new table');
});

t.test('with round_robin a client keeps its server for every connection, open or not', async (t) => {
  const backends = await namedBackendsFor(t, ['a', 'b', 'c'] as const);
  const servers = backends.map((b, i) => ({ name: 'abc'[i]!, address: b.address }));
  const lb = await lbFor(t, config(servers, { balance: 'round_robin', stick: {} }));
  const first = await serversOf(lb, 12);
  t.same(new Set(first).size, 3, 'first contacts are spread by round_robin');
  for (let round = 0; round < 2; round++) t.same(await serversOf(lb, 12), first, `round ${round + 2}: same servers`);
  // Two connections open at once from one client: both on its server.
  const s1 = await connect(lb.port(), clientAddress(0));
  t.teardown(() => s1.destroy());
  const s2 = await connect(lb.port(), clientAddress(0));
  t.teardown(() => s2.destroy());
  t.equal(await readLine(s1), first[0]);
  t.equal(await readLine(s2), first[0]);
});

t.test('a server marked down moves its clients, who then stick to their new server', async (t) => {
  const [a, c] = await namedBackendsFor(t, ['a', 'c'] as const);
  const b: Backend = await backendFor(t, namedBackend('b'));
  const servers = [
    { name: 'a', address: a.address },
    { name: 'b', address: b.address },
    { name: 'c', address: c.address },
  ];
  const lb = await lbFor(t, config(servers, { balance: 'round_robin', stick: {}, health: { interval: '100ms', timeout: '1s', rise: 1, fall: 1 } }));
  const clients = 30;
  const before = await serversOf(lb, clients);
  const onB = before.flatMap((s, i) => (s === 'b' ? [i] : []));
  t.ok(onB.length > 0, 'some clients are on b');
  await b.close();
  const pool = lb.app.pools.get('p')!;
  await waitFor(() => pool.server('b')?.up === false, 20_000, 'b marked down');
  const after = await serversOf(lb, clients);
  for (let i = 0; i < clients; i++) {
    if (before[i] === 'b') t.not(after[i], 'b', `client ${i} left b`);
    else t.equal(after[i], before[i], `client ${i} kept ${before[i]}`);
  }
  t.same(await serversOf(lb, clients), after, 'the moved clients stick to their new servers');
});

t.test('a client keeps its server while a connection is open and for expire after its last one closes, then is forgotten', async (t) => {
  const backends = await namedBackendsFor(t, ['a', 'b', 'c'] as const);
  const servers = backends.map((b, i) => ({ name: 'abc'[i]!, address: b.address }));
  const lb = await lbFor(t, config(servers, { balance: 'round_robin', stick: { expire: '1s' } }));
  const table = lb.app.pools.get('p')!.stick!;
  const held = await connect(lb.port(), clientAddress(0));
  t.teardown(() => held.destroy());
  const server = await readLine(held);
  // Longer than expire with a connection open: still stuck (round_robin alone would rotate).
  for (let i = 0; i < 4; i++) {
    await sleep(400);
    t.equal(await whoAnswers(lb.port(), clientAddress(0)), server, `open connection: connection ${i + 1} on ${server}`);
  }
  held.destroy();
  await waitFor(() => table.entries === 1 && table.lookup(clientAddress(0)) >= 0, 5_000, 'entry held');
  await sleep(300);
  t.equal(await whoAnswers(lb.port(), clientAddress(0)), server, 'idle for less than expire: still stuck');
  await waitFor(() => table.entries === 0, 15_000, 'entry expired');
  t.match(await adminGet(lb, '/metrics'), /^l4lb_stick_entries\{pool="p"\} 0$/m, 'the metric drops to 0');
  // Forgotten: the next connection is balanced afresh, and sticks again.
  const again = await whoAnswers(lb.port(), clientAddress(0));
  t.equal(table.entries, 1);
  t.equal(await whoAnswers(lb.port(), clientAddress(0)), again);
});

t.test('l4lb check --diff names a stick change', async (t) => {
  const servers = [{ address: '127.0.0.1:1' }];
  const base = { listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }] };
  const off = await buildModel({ ...base, pools: [{ name: 'p', servers }] });
  const on = await buildModel({ ...base, pools: [{ name: 'p', stick: { expire: '5m' }, servers }] });
  const diff = JSON.stringify(diffModels(off, on));
  t.match(diff, /"field":"stick","from":"off","to":"expire 5m, size 100000"/);
});
