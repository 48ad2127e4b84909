import t from 'tap';
import net from 'node:net';
import { closed, connect, deadPort, readLine, sleep, startBackend, waitFor } from './helpers/net.js';
import { cliFor, rssOf, runCli, startCli, writeConfig } from './helpers/cli.js';
import { backendFor } from './helpers/lb.js';

function config(servers: string[], listenerExtra: Record<string, unknown> = {}) {
  return {
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', ...listenerExtra }],
    pools: [{ name: 'p', balance: 'least_conn', servers: servers.map((address) => ({ address })) }],
  };
}

t.test('l4lb check exits 0 on a good configuration', async (t) => {
  const { file, cleanup } = writeConfig(config(['127.0.0.1:5432']));
  t.teardown(cleanup);
  const r = runCli(['check', '--config', file]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /ok/);
});

t.test('l4lb check exits 1 on bad configurations and names the path', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['unknown key', { ...config(['127.0.0.1:1']), pools: [{ name: 'p', balanse: 'x', servers: [{ address: '127.0.0.1:1' }] }] }, /pools\[0\]\.balanse.*balance/],
    ['bad address', config(['10.0.0.1']), /pools\[0\]\.servers\[0\]\.address: expected host:port, got "10\.0\.0\.1"/],
    ['bad duration', config(['127.0.0.1:1'], { timeouts: { idle: '3x' } }), /listeners\[0\]\.timeouts\.idle/],
    ['dangling pool', { ...config(['127.0.0.1:1']), listeners: [{ name: 'f', bind: '127.0.0.1:0', pool: 'nope' }] }, /listeners\[0\]\.pool/],
  ];
  for (const [what, cfg, expected] of cases) {
    const { file, cleanup } = writeConfig(cfg);
    const r = runCli(['check', '--config', file]);
    cleanup();
    t.equal(r.status, 1, `${what}: exit 1`);
    t.match(r.stderr, expected, `${what}: names the path`);
  }
  const yaml = writeConfig('listeners: [\n  - name: x\n', 'broken.yaml');
  t.teardown(yaml.cleanup);
  const r = runCli(['check', '--config', yaml.file]);
  t.equal(r.status, 1, 'unparsable YAML exits 1');
  t.match(r.stderr, /broken\.yaml/);
  const missing = runCli(['check', '--config', '/nonexistent/l4lb.yaml']);
  t.equal(missing.status, 1, 'a missing file exits 1');
});

t.test('l4lb --version prints the version, and run --help the options with an example', async (t) => {
  const v = runCli(['--version']);
  t.equal(v.status, 0);
  t.match(v.stdout, /^\d+\.\d+\.\d+/);
  const h = runCli(['run', '--help']);
  t.match(h.stdout, /--drain-timeout/);
  t.match(h.stdout, /Example/);
});

t.test('backpressure: a client that reads nothing does not make l4lb buffer a 200 MB reply', async (t) => {
  const chunk = Buffer.alloc(64 * 1024, 7);
  const limit = 200 * 1024 * 1024;
  let written = 0;
  let paused = false;
  const backend = await backendFor(
    t,
    startBackend((s) => {
      const pump = (): void => {
        while (written < limit) {
          written += chunk.length;
          if (!s.write(chunk)) {
            paused = true;
            s.once('drain', () => {
              paused = false;
              pump();
            });
            return;
          }
        }
        s.end();
      };
      pump();
    }),
  );
  const lb = await cliFor(t, config([backend.address]));
  const before = rssOf(lb.proc.pid!);

  const client = await connect(lb.port('front'));
  client.pause(); // reads nothing
  client.on('error', () => {});
  // Let the backend write as long as it can; it should stall well short of 200 MB.
  let last = -1;
  for (let i = 0; i < 40 && written !== last; i++) {
    last = written;
    await sleep(250);
  }
  const after = rssOf(lb.proc.pid!);
  t.ok(paused, 'the backend is paused (its write() returned false and drain has not come)');
  t.ok(written < limit, `the backend could write only ${(written / 1048576).toFixed(1)} MB of 200 MB`);
  const growth = (after - before) / 1048576;
  t.ok(growth < 64, `l4lb RSS grew by ${growth.toFixed(1)} MB (< 64 MB)`);
  client.destroy();
  lb.proc.kill('SIGTERM');
  t.equal(await lb.exited(), 0);
});

t.test('SIGTERM drains: open connections keep working, new ones are refused, exit 0', async (t) => {
  const backend = await backendFor(t);
  const lb = await cliFor(t, config([backend.address]), ['--drain-timeout', '1500ms']);
  const port = lb.port('front');

  const open = await connect(port);
  open.on('error', () => {});
  open.write('before\n');
  t.equal(await readLine(open), 'before');

  const started = Date.now();
  lb.proc.kill('SIGTERM');
  await lb.waitForLine((l) => l.msg === 'draining');
  open.write('during\n');
  t.equal(await readLine(open), 'during', 'the open connection still works while draining');
  await t.rejects(connect(port), { code: 'ECONNREFUSED' }, 'new connections are refused');

  await closed(open, 5_000);
  const took = Date.now() - started;
  t.ok(took >= 1_200, `the open connection was closed at the drain timeout (${took}ms)`);
  t.equal(await lb.exited(), 0, 'exit code 0');
  const line = lb.lines.find((l) => l.msg === 'connection');
  t.equal(line?.termination, 'shutdown');
});

t.test('SIGTERM with no open connection exits at once', async (t) => {
  const port = await deadPort();
  const lb = await cliFor(t, config([`127.0.0.1:${port}`]));
  const started = Date.now();
  lb.proc.kill('SIGINT');
  t.equal(await lb.exited(), 0);
  t.ok(Date.now() - started < 3_000, 'no waiting without connections');
});

t.test('a listener that cannot bind stops start-up with a clear error', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.teardown(() => blocker.close());
  const port = (blocker.address() as net.AddressInfo).port;
  const { file, cleanup } = writeConfig(config(['127.0.0.1:1'], { bind: `127.0.0.1:${port}` }));
  t.teardown(cleanup);
  await t.rejects(startCli(file), /exited \(1\)/);
  await waitFor(() => true);
});
