import t from 'tap';
import { closed, connect, deadPort, readLine, tally, waitFor, whoAnswers } from './helpers/net.js';
import { lbFor, namedBackendsFor } from './helpers/lb.js';

function config(balance: string, servers: Array<{ address: string; weight?: number; name?: string; backup?: boolean }>, pool: Record<string, unknown> = {}) {
  return {
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance, servers, ...pool }],
  };
}

t.test('round_robin spreads 30 connections 10/10/10', async (t) => {
  const bs = await namedBackendsFor(t, ['a', 'b', 'c']);
  const lb = await lbFor(t, config('round_robin', bs.map((b) => ({ address: b.address }))));
  const seen: string[] = [];
  for (let i = 0; i < 30; i++) seen.push(await whoAnswers(lb.port()));
  t.same(tally(seen), { a: 10, b: 10, c: 10 });
});

t.test('round_robin with weights 1:3 splits about 1:3', async (t) => {
  const bs = await namedBackendsFor(t, ['light', 'heavy']);
  const lb = await lbFor(t, config('round_robin', [{ address: bs[0]!.address, weight: 1 }, { address: bs[1]!.address, weight: 3 }]));
  const seen: string[] = [];
  for (let i = 0; i < 40; i++) seen.push(await whoAnswers(lb.port()));
  t.same(tally(seen), { light: 10, heavy: 30 });
});

t.test('least_conn sends new connections away from a server holding long ones', async (t) => {
  const bs = await namedBackendsFor(t, ['busy', 'idle']);
  const lb = await lbFor(t, config('least_conn', bs.map((b) => ({ address: b.address }))));
  // Hold 4 long connections; least_conn spreads them 2/2.
  const held = [];
  for (let i = 0; i < 4; i++) {
    const s = await connect(lb.port());
    held.push({ s, name: await readLine(s) });
  }
  t.same(tally(held.map((h) => h.name)), { busy: 2, idle: 2 }, 'long connections spread evenly');
  // Close the ones on "idle": now "busy" holds 2, "idle" none.
  for (const h of held) if (h.name === 'idle') h.s.destroy();
  await waitFor(() => lb.app.pools.get('p')!.servers[1]!.active === 0, 2_000, 'idle to drop its connections');
  const fresh = [];
  for (let i = 0; i < 2; i++) {
    const s = await connect(lb.port());
    fresh.push({ s, name: await readLine(s) });
  }
  t.same(fresh.map((f) => f.name), ['idle', 'idle'], 'new connections go to the server with fewer');
  for (const h of [...held, ...fresh]) h.s.destroy();
});

t.test('source_hash: each of 50 client IPs lands on the same server every time', async (t) => {
  const bs = await namedBackendsFor(t, ['a', 'b', 'c']);
  const lb = await lbFor(t, config('source_hash', bs.map((b) => ({ address: b.address }))));
  const first = new Map<string, string>();
  for (let round = 0; round < 3; round++) {
    for (let i = 1; i <= 50; i++) {
      const ip = `127.0.0.${i + 10}`;
      const name = await whoAnswers(lb.port(), ip);
      if (round === 0) first.set(ip, name);
      else if (first.get(ip) !== name) t.fail(`${ip} moved from ${first.get(ip)} to ${name}`);
    }
  }
  const spread = tally([...first.values()]);
  t.equal(Object.keys(spread).length, 3, `clients spread over every server: ${JSON.stringify(spread)}`);
});

t.test('retry: with a dead server and a live one, retries 1, 50 of 50 connections succeed', async (t) => {
  const bs = await namedBackendsFor(t, ['live']);
  const dead = await deadPort();
  const lb = await lbFor(
    t,
    config('round_robin', [{ address: `127.0.0.1:${dead}` }, { address: bs[0]!.address }], {
      retries: 1,
      // Keep the dead server "up" so every connection exercises the retry path.
      health: { interval: '1h', fall: 100 },
    }),
  );
  let ok = 0;
  for (let i = 0; i < 50; i++) if ((await whoAnswers(lb.port())) === 'live') ok++;
  t.equal(ok, 50, '50 of 50 answered by the live server');
  const deadServer = lb.app.pools.get('p')!.servers[0]!;
  t.ok(deadServer.connectFailures >= 20, `failed connects are counted against the dead server (${deadServer.connectFailures})`);
  t.equal(deadServer.active, 0, 'no connection left counted on the dead server');
});

t.test('no server available: the client sees the close within 1 s and the log says no_server', async (t) => {
  const bs = await namedBackendsFor(t, ['a']);
  const lb = await lbFor(t, config('least_conn', [{ address: bs[0]!.address }]));
  const server = lb.app.pools.get('p')!.servers[0]!;
  lb.app.pools.get('p')!.setAdminState(server, 'maint');
  const s = await connect(lb.port());
  const took = await closed(s, 1_000);
  t.ok(took < 1_000, `closed after ${took}ms`);
  await waitFor(() => lb.lines.some((l) => l.msg === 'connection'), 1_000, 'access log line');
  t.equal(lb.lines.find((l) => l.msg === 'connection')?.termination, 'no_server');
});

t.test('every server dead: connect_failed, closed within 1 s, each server tried once', async (t) => {
  const ports = [await deadPort(), await deadPort()];
  const lb = await lbFor(
    t,
    config('round_robin', ports.map((p) => ({ address: `127.0.0.1:${p}` })), { retries: 5, health: { interval: '1h', fall: 100 } }),
  );
  const s = await connect(lb.port());
  const took = await closed(s, 1_000);
  t.ok(took < 1_000, `closed after ${took}ms`);
  await waitFor(() => lb.lines.some((l) => l.msg === 'connection'), 1_000, 'access log line');
  t.equal(lb.lines.find((l) => l.msg === 'connection')?.termination, 'connect_failed');
  const failures = lb.app.pools.get('p')!.servers.map((x) => x.connectFailures);
  t.same(failures, [1, 1], 'never the same dead server twice within one connection');
});

t.test('backup servers take traffic only when no primary is available', async (t) => {
  const bs = await namedBackendsFor(t, ['primary', 'backup']);
  const lb = await lbFor(t, config('round_robin', [{ address: bs[0]!.address }, { address: bs[1]!.address, backup: true }]));
  for (let i = 0; i < 5; i++) t.equal(await whoAnswers(lb.port()), 'primary');
  const pool = lb.app.pools.get('p')!;
  pool.setAdminState(pool.servers[0]!, 'maint');
  t.equal(await whoAnswers(lb.port()), 'backup', 'backup steps in');
  pool.setAdminState(pool.servers[0]!, 'ready');
  t.equal(await whoAnswers(lb.port()), 'primary', 'and gives the traffic back');
});
