import t from 'tap';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { buildModel } from '../src/config/load.js';
import { reloadFromFile } from '../src/runtime/reload.js';
import { connect, echoes, readLine, sleep, waitFor, whoAnswers } from './helpers/net.js';
import { cliFor, writeConfig } from './helpers/cli.js';
import { lbFor, namedBackendsFor } from './helpers/lb.js';
import { collectingLogger } from './helpers/logs.js';

function config(servers: Array<{ name: string; address: string }>, extraListeners: unknown[] = [], balance = 'round_robin') {
  return {
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }, ...extraListeners],
    pools: [{ name: 'p', balance, servers, health: { interval: '1h' } }],
  };
}

t.test('reload keeps the listener socket, open connections, server state; adds servers and listeners', async (t) => {
  const [a, b, c] = await namedBackendsFor(t, ['a', 'b', 'c']);
  const lb = await lbFor(t, config([{ name: 'a', address: a!.address }, { name: 'b', address: b!.address }]));
  const port = lb.port('front');
  const pool = lb.app.pools.get('p')!;
  const serverB = pool.server('b')!;
  pool.setAdminState(serverB, 'drain');
  const held = await connect(port);
  t.teardown(() => held.destroy());
  const heldOn = await readLine(held);

  const summary = await lb.app.reload(
    await buildModel(
      config(
        [
          { name: 'a', address: a!.address },
          { name: 'b', address: b!.address },
          { name: 'c', address: c!.address },
        ],
        [{ name: 'extra', bind: '127.0.0.1:0', pool: 'p' }],
      ),
    ),
  );
  t.same(summary.listenersKept, ['front']);
  t.same(summary.listenersAdded, ['extra']);
  t.equal(lb.port('front'), port, 'the front listener kept its socket and port');
  t.equal(await echoes(held, 'still here'), 'still here', `the open connection (on ${heldOn}) still works`);
  const newPool = lb.app.pools.get('p')!;
  t.equal(newPool.server('b'), serverB, 'server b is the same object: health, counters and connections carried over');
  t.equal(newPool.server('b')!.admin, 'drain', 'admin state survives the reload');
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) seen.add(await whoAnswers(port));
  t.same([...seen].sort(), ['a', 'c'], 'new server c takes connections, drained b does not');
  // Round robin takes turns from one position shared by every thread, which a reload does not reset.
  t.match(await whoAnswers(lb.port('extra')), /^[ac]$/, 'the added listener accepts');
});

t.test('removed listeners stop accepting while their connections finish; removed servers keep open connections', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const lb = await lbFor(
    t,
    config([{ name: 'a', address: a!.address }, { name: 'b', address: b!.address }], [{ name: 'old', bind: '127.0.0.1:0', pool: 'p' }]),
  );
  const oldPort = lb.port('old');
  const onOld = await connect(oldPort);
  t.teardown(() => onOld.destroy());
  await readLine(onOld);
  // A connection that lands on b, which the reload removes.
  let onB: net.Socket | undefined;
  for (let i = 0; i < 4 && onB === undefined; i++) {
    const s = await connect(lb.port('front'));
    if ((await readLine(s)) === 'b') onB = s;
    else s.destroy();
  }
  t.ok(onB, 'a connection is open on b');
  t.teardown(() => onB?.destroy());

  const summary = await lb.app.reload(await buildModel(config([{ name: 'a', address: a!.address }])));
  t.same(summary.listenersRemoved, ['old']);
  t.equal(await echoes(onOld, 'old listener'), 'old listener', 'a connection on the removed listener keeps working');
  t.equal(await echoes(onB!, 'removed server'), 'removed server', 'a connection to the removed server keeps working');
  await t.rejects(connect(oldPort), { code: 'ECONNREFUSED' }, 'the removed listener no longer accepts');
  for (let i = 0; i < 4; i++) t.equal(await whoAnswers(lb.port('front')), 'a', 'new connections avoid the removed server');
  t.ok(lb.app.connections >= 2, 'the open connections are still counted');
});

t.test('no connection is refused while reloads happen', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const lb = await lbFor(t, config([{ name: 'a', address: a!.address }]));
  const port = lb.port('front');
  const models = [
    await buildModel(config([{ name: 'a', address: a!.address }, { name: 'b', address: b!.address }])),
    await buildModel(config([{ name: 'a', address: a!.address }], [], 'least_conn')),
  ];
  let stop = false;
  let ok = 0;
  let failed = 0;
  const load = (async () => {
    const deadline = Date.now() + 10_000;
    while (!stop && Date.now() < deadline) {
      try {
        const name = await whoAnswers(port);
        if (name === 'a' || name === 'b') ok++;
        else failed++;
      } catch {
        failed++;
      }
    }
  })();
  for (let i = 0; i < 10; i++) {
    await lb.app.reload(models[i % 2]!);
    await sleep(50);
  }
  stop = true;
  await load;
  t.ok(ok > 20, `${ok} connections served during 10 reloads`);
  t.equal(failed, 0, 'none refused or failed');
});

t.test('a bad file is rejected: every problem logged, the running configuration stays', async (t) => {
  const [a] = await namedBackendsFor(t, ['a']);
  const lb = await lbFor(t, config([{ name: 'a', address: a!.address }]));
  const { logger, lines } = collectingLogger('info');
  const { file, cleanup } = writeConfig({ listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'nope' }], pools: [{ name: 'p', servers: [{ address: 'x' }] }] });
  t.teardown(cleanup);
  const before = lb.app.model;
  t.equal(await reloadFromFile(lb.app, file, logger), false);
  t.equal(lb.app.model, before, 'the model is unchanged');
  const problems = lines.filter((l) => l.msg === 'configuration problem').map((l) => l.path);
  t.same(problems.sort(), ['listeners[0].pool', 'pools[0].servers[0].address'], 'each problem is logged with its path');
  t.ok(lines.some((l) => l.msg === 'reload failed; the running configuration is unchanged'));
  t.same(lb.app.reloads, { ...lb.app.reloads, failed: 1, lastSucceeded: false });
  t.equal(await whoAnswers(lb.port('front')), 'a', 'still serving');
});

t.test('SIGHUP on the real process: a good file reloads, a bad one is refused and serving continues', async (t) => {
  const [a, b] = await namedBackendsFor(t, ['a', 'b']);
  const lb = await cliFor(t, config([{ name: 'a', address: a!.address }]));
  const port = lb.port('front');
  t.equal(await whoAnswers(port), 'a');

  writeFileSync(lb.file, JSON.stringify(config([{ name: 'b', address: b!.address }])));
  lb.proc.kill('SIGHUP');
  await lb.waitForLine((l) => l.msg === 'configuration reloaded');
  await waitFor(() => true);
  t.equal(await whoAnswers(port), 'b', 'the new pool serves, on the same port');

  writeFileSync(lb.file, '{ "listeners": [ broken');
  lb.proc.kill('SIGHUP');
  await lb.waitForLine((l) => l.msg === 'reload failed; the running configuration is unchanged');
  t.equal(await whoAnswers(port), 'b', 'still serving the last good configuration');
  lb.proc.kill('SIGTERM');
  t.equal(await lb.exited(), 0);
});

t.test('listener counters forget servers a reload removed once their connections close (they no longer grow with every reload)', async (t) => {
  const [a, b, c] = await namedBackendsFor(t, ['a', 'b', 'c']);
  const lb = await lbFor(t, config([{ name: 'a', address: a!.address }, { name: 'b', address: b!.address }]));
  const stats = lb.app.listeners[0]!.stats;
  const open = new Map<string, net.Socket>();
  for (let i = 0; i < 2; i++) {
    const s = await connect(lb.port());
    t.teardown(() => s.destroy());
    open.set(await readLine(s), s);
  }
  t.same([...open.keys()].sort(), ['a', 'b'], 'both servers hold a connection (round robin)');
  t.equal([...stats.servers()].length, 2);
  // 20 reloads, each replacing every server but a: names b0, b1, ... with c's address.
  for (let i = 0; i < 20; i++) {
    await lb.app.reload(await buildModel(config([{ name: 'a', address: a!.address }, { name: `c${i}`, address: c!.address }])));
    const s = await connect(lb.port());
    s.on('error', () => {});
    await readLine(s);
    s.destroy();
  }
  await waitFor(() => lb.app.connections === 2, 5_000, 'the short connections to close');
  await sleep(1_200); // one idle sweep at least
  const names = (): string[] => [...stats.servers()].map(([s]) => s.name).sort();
  // The servers of the running configuration (a, c19) are listed whether or not a connection reached them.
  t.same(names(), ['a', 'b', 'c19'], 'only the servers of the running configuration and the removed one that still has a connection are kept');
  open.get('b')!.destroy();
  await waitFor(() => !names().includes('b'), 3_000, 'b to be forgotten once its connection closed');
  t.same(names(), ['a', 'c19'], 'the removed server is forgotten');
  t.equal(await echoes(open.get('a')!, 'still'), 'still', 'the other connection is untouched');
});
