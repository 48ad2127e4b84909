/**
 * What the metrics and the access log tell an operator while traffic flows:
 * bytes of open connections (a long MQTT or database session is not one
 * spike at its end), clients turned away because no server is up, failed TLS
 * handshakes, and which servers a failed connect tried. Each runs in process
 * (with L4LB_TEST_WORKERS threads) and through the CLI with `workers: 2`.
 */
import { spawn } from 'node:child_process';
import type net from 'node:net';
import t, { type Test } from 'tap';
import { opensslMissing, testCerts } from './helpers/certs.js';
import { adminPortOf, cliFor } from './helpers/cli.js';
import { adminPort, backendFor, lbFor } from './helpers/lb.js';
import { closed, connect, deadPort, readBytes, sleep, startBackend, waitFor, type Backend } from './helpers/net.js';
import { need } from './helpers/requirements.js';
import { refusedClient } from './helpers/tls-clients.js';

/** Each streaming client sends this much, then the server sends it ONE_WAY back. */
const IN = 64 * 1024;
const ONE_WAY = 1024 * 1024;
/** What the `flood` server sends: more than the kernel's buffers hold, so l4lb holds some for a client that does not read. */
const FLOOD = 32 * 1024 * 1024;

type Line = Record<string, unknown>;

/** A running l4lb as these tests see it: in this process or a CLI child. */
interface Target {
  port(listener: string): number;
  metrics(): Promise<string>;
  readonly lines: Line[];
}

/** One sample of `name` with exactly these labels; 0 when the series is absent. */
function sample(text: string, name: string, labels: string): number {
  const m = new RegExp(`^${name}\\{${labels.replace(/[{}]/g, '\\$&')}\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

const bytesLabels = (direction: 'in' | 'out'): string => `listener="stream",pool="stream",server="streamer",direction="${direction}"`;

/**
 * A server that reads IN bytes from each client, then writes `oneWay` bytes
 * and keeps the connection open until the client ends it. Health probes
 * send nothing, so they get nothing.
 */
async function streamer(t: Test, oneWay = ONE_WAY): Promise<Backend> {
  return backendFor(
    t,
    startBackend(
      (s) => {
        let got = 0;
        s.on('data', (d: Buffer) => {
          const before = got;
          got += d.length;
          if (before < IN && got >= IN) s.write(Buffer.alloc(oneWay, 0x6f));
        });
        s.on('end', () => s.end());
      },
      { allowHalfOpen: true },
    ),
  );
}

/** Every listener these tests use; `stream`'s server streams, the others fail in their ways. */
async function config(t: Test, workers?: number): Promise<Record<string, unknown>> {
  const stream = await streamer(t);
  const flood = await streamer(t, FLOOD);
  const certs = testCerts();
  const [down, a, b] = [await deadPort(), await deadPort(), await deadPort()];
  return {
    ...(workers !== undefined ? { workers } : {}),
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info', access: true },
    listeners: [
      { name: 'stream', bind: '127.0.0.1:0', pool: 'stream' },
      { name: 'down', bind: '127.0.0.1:0', pool: 'down' },
      {
        name: 'tls',
        bind: '127.0.0.1:0',
        pool: 'stream',
        tls: { mode: 'terminate', certs: [certs.pair('a.test')], min_version: 'TLSv1.3', client_ca: certs.file('client-ca.crt') },
      },
      { name: 'retry', bind: '127.0.0.1:0', pool: 'two-dead' },
      { name: 'flood', bind: '127.0.0.1:0', pool: 'flood' },
    ],
    pools: [
      { name: 'stream', health: { interval: '1h' }, servers: [{ name: 'streamer', address: stream.address }] },
      { name: 'flood', health: { interval: '1h' }, servers: [{ name: 'flooder', address: flood.address }] },
      // Marked down by its first probe: every client is turned away.
      { name: 'down', health: { interval: '100ms', fall: 1 }, servers: [{ name: 'gone', address: `127.0.0.1:${down}` }] },
      // Up as far as health knows (probes, and the sooner ones after a failure, are half an hour apart): each client tries both.
      {
        name: 'two-dead',
        retries: 1,
        health: { interval: '1h', timeout: '1h' },
        servers: [
          { name: 'a', address: `127.0.0.1:${a}` },
          { name: 'b', address: `127.0.0.1:${b}` },
        ],
      },
    ],
  };
}

async function inProcess(t: Test, workers?: number): Promise<Target & { readonly lb: Awaited<ReturnType<typeof lbFor>> }> {
  const lb = await lbFor(t, await config(t, workers));
  const url = `http://127.0.0.1:${adminPort(lb)}/metrics`;
  return { lb, port: (n) => lb.port(n), metrics: async () => (await fetch(url)).text(), lines: lb.lines };
}

async function cliChild(t: Test, workers: number): Promise<Target> {
  const child = await cliFor(t, await config(t, workers));
  const url = `http://127.0.0.1:${await adminPortOf(child)}/metrics`;
  return { port: (n) => child.port(n), metrics: async () => (await fetch(url)).text(), lines: child.lines };
}

/** A client of `stream` that sent IN bytes and has read the ONE_WAY bytes back; still open. */
async function streamingClient(t: Test, port: number): Promise<net.Socket> {
  const c = await connect(port);
  c.on('error', () => {});
  t.teardown(() => c.destroy());
  c.write(Buffer.alloc(IN, 0x69));
  await readBytes(c, ONE_WAY);
  return c;
}

/**
 * `clients` (open, each having moved IN and ONE_WAY bytes) show in
 * l4lb_bytes_total while open; closed, the totals are exactly their bytes,
 * as their access lines say, and stay so (nothing counted twice).
 */
async function bytesWhileOpenThenExact(t: Test, target: Target, clients: net.Socket[]): Promise<void> {
  const n = clients.length;
  const started = Date.now();
  let text = '';
  for (let i = 0; i < 50; i++) {
    text = await target.metrics();
    if (sample(text, 'l4lb_bytes_total', bytesLabels('out')) >= n * ONE_WAY && sample(text, 'l4lb_bytes_total', bytesLabels('in')) >= n * IN) break;
    await sleep(100);
  }
  const waited = Date.now() - started;
  t.ok(clients.every((c) => !c.destroyed), 'the connections are still open');
  t.equal(sample(text, 'l4lb_bytes_total', bytesLabels('out')), n * ONE_WAY, `bytes out of ${n} open connection(s) counted (after ${waited} ms)`);
  t.equal(sample(text, 'l4lb_bytes_total', bytesLabels('in')), n * IN, 'bytes in of the open connection(s) counted');
  t.equal(sample(text, 'l4lb_active_connections', 'listener="stream",pool="stream",server="streamer"'), n, 'open now');

  const ports = new Set(clients.map((c) => `127.0.0.1:${c.localPort}`));
  for (const c of clients) c.end();
  await Promise.all(clients.map((c) => closed(c, 10_000)));
  const mine = (l: Line): boolean => l.msg === 'connection' && l.listener === 'stream' && ports.has(l.client as string);
  await waitFor(() => target.lines.filter(mine).length === n, 10_000, `${n} access line(s)`);
  for (const line of target.lines.filter(mine)) t.match(line, { bytes_in: IN, bytes_out: ONE_WAY, server: 'streamer' }, 'the access line has the same bytes');
  const after = await target.metrics();
  t.equal(sample(after, 'l4lb_active_connections', 'listener="stream",pool="stream",server="streamer"'), 0, 'none open');
  t.equal(sample(after, 'l4lb_bytes_total', bytesLabels('out')), n * ONE_WAY, 'closed: bytes out exactly what was sent, not counted twice');
  t.equal(sample(after, 'l4lb_bytes_total', bytesLabels('in')), n * IN, 'closed: bytes in exactly what was sent');
  // Past another sweep of every thread: still the same.
  await sleep(1_500);
  const later = await target.metrics();
  t.equal(sample(later, 'l4lb_bytes_total', bytesLabels('out')) + sample(later, 'l4lb_bytes_total', bytesLabels('in')), n * (ONE_WAY + IN), 'a second later: unchanged');
}

/**
 * A client of `flood` that stops reading, so l4lb's socket to it holds
 * bytes it could not send yet, then resets (which discards what was held):
 * bytes out were counted while it was open, and the total is still exactly
 * its access line's bytes_out.
 */
async function resetWhileHeld(t: Test, target: Target): Promise<void> {
  const labels = 'listener="flood",pool="flood",server="flooder",direction="out"';
  const c = await connect(target.port('flood'));
  c.on('error', () => {});
  t.teardown(() => c.destroy());
  // Not read: the socket stays paused.
  c.write(Buffer.alloc(IN, 0x69));
  let counted = 0;
  for (let i = 0; i < 50 && counted === 0; i++) {
    await sleep(100);
    counted = sample(await target.metrics(), 'l4lb_bytes_total', labels);
  }
  t.ok(counted > 0, `bytes out counted while the client does not read (${counted})`);
  // Another sweep while l4lb still holds bytes for it.
  await sleep(1_200);
  const from = `127.0.0.1:${c.localPort}`;
  c.resetAndDestroy();
  const mine = (l: Line): boolean => l.msg === 'connection' && l.listener === 'flood' && l.client === from;
  await waitFor(() => target.lines.some(mine), 10_000, 'the access line');
  const line = target.lines.find(mine)!;
  t.ok((line.bytes_out as number) < FLOOD, `not everything was sent (${line.bytes_out as number} of ${FLOOD})`);
  t.equal(sample(await target.metrics(), 'l4lb_bytes_total', labels), line.bytes_out, 'bytes out: exactly what the access line says reached the client');
}

/** Three clients of `down` are closed at once, each counted as no_server. */
async function noServerCounted(t: Test, target: Target): Promise<void> {
  for (let i = 0; i < 50 && sample(await target.metrics(), 'l4lb_server_up', 'pool="down",server="gone"') !== 0; i++) await sleep(100);
  t.equal(sample(await target.metrics(), 'l4lb_server_up', 'pool="down",server="gone"'), 0, 'the only server is down');
  for (let i = 0; i < 3; i++) {
    const c = await connect(target.port('down'));
    c.on('error', () => {});
    await closed(c, 5_000);
  }
  await waitFor(() => target.lines.filter((l) => l.listener === 'down' && l.termination === 'no_server').length === 3, 5_000, 'three no_server lines');
  const text = await target.metrics();
  t.equal(sample(text, 'l4lb_rejected_connections_total', 'listener="down",reason="no_server"'), 3, 'l4lb_rejected_connections_total{reason="no_server"}: 3');
}

/** Wait for `cmd` to exit (never spawnSync: an in-process l4lb must keep serving meanwhile). */
function run(cmd: string, args: string[]): Promise<number | null> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'ignore', 'ignore'] });
    p.stdin.end();
    const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
    p.on('error', () => resolve(null));
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/**
 * Three real failed handshakes on the `tls` listener (TLS 1.3 only, client
 * certificates from the client CA): openssl offering TLS 1.2 only, a client
 * certificate from another CA, and bytes that are not TLS. Each counts as
 * reason tls and as a handshake failure.
 */
async function tlsFailuresCounted(t: Test, target: Target): Promise<void> {
  const port = target.port('tls');
  const code = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'a.test', '-tls1_2']);
  t.not(code, 0, 'openssl offering only TLS 1.2 fails its handshake');
  const certs = testCerts();
  const wrongCa = await refusedClient(t, port, { servername: 'a.test', ...certs.pem('client-wrongca') });
  t.equal(wrongCa.echoed, '', 'a client certificate from another CA is refused');
  const garbage = await connect(port);
  garbage.on('error', () => {});
  garbage.write('GET / HTTP/1.0\r\n\r\n');
  await closed(garbage, 5_000);
  await waitFor(() => target.lines.filter((l) => l.listener === 'tls' && l.termination === 'tls_error').length === 3, 5_000, 'three tls_error lines');
  const text = await target.metrics();
  t.equal(sample(text, 'l4lb_rejected_connections_total', 'listener="tls",reason="tls"'), 3, 'l4lb_rejected_connections_total{reason="tls"}: 3');
  t.equal(sample(text, 'l4lb_tls_handshake_failures_total', 'listener="tls"'), 3, 'l4lb_tls_handshake_failures_total: 3');
}

/** A client of `retry` (two dead servers, retries 1): its connect_failed line lists both, each with its error. */
async function triedListed(t: Test, target: Target): Promise<void> {
  const c = await connect(target.port('retry'));
  c.on('error', () => {});
  const from = `127.0.0.1:${c.localPort}`;
  await closed(c, 5_000);
  await waitFor(() => target.lines.some((l) => l.listener === 'retry' && l.client === from), 5_000, 'the access line');
  const line = target.lines.find((l) => l.listener === 'retry' && l.client === from)!;
  t.match(line, { termination: 'connect_failed', reason: 'connect ECONNREFUSED', connect_ms: null }, 'connect_failed, with the last reason');
  const tried = line.tried as Array<{ server: string; error: string }>;
  t.same(tried.map((x) => x.server).sort(), ['a', 'b'], 'both servers tried, each once');
  t.same(tried.map((x) => x.error), ['connect ECONNREFUSED', 'connect ECONNREFUSED'], 'each with its error');
  t.equal(line.server, tried[1]!.server, 'server: the last one tried');
}

t.test('in process', async (t) => {
  if (!need(t, opensslMissing)) return;
  const target = await inProcess(t);

  await t.test('an open connection streaming 1 MB shows its bytes in l4lb_bytes_total before it closes, and exactly its bytes after', async (t) => {
    await bytesWhileOpenThenExact(t, target, [await streamingClient(t, target.port('stream'))]);
  });

  await t.test('a client that stops reading, then resets: bytes out count only what reached it', async (t) => {
    await resetWhileHeld(t, target);
  });

  await t.test('clients turned away because no server is up count as no_server', async (t) => {
    await noServerCounted(t, target);
  });

  await t.test('failed TLS handshakes count as reason tls and in l4lb_tls_handshake_failures_total', async (t) => {
    await tlsFailuresCounted(t, target);
  });

  await t.test('a connect_failed line names the servers tried, each with its error', async (t) => {
    await triedListed(t, target);
  });
});

t.test('a connection served by a worker thread shows its bytes while open (workers: 2, in process)', async (t) => {
  if (!need(t, opensslMissing)) return;
  const target = await inProcess(t, 2);
  const stats = target.lb.app.listeners.find((l) => l.model.name === 'stream')!.stats;
  // The kernel spreads connections over the threads: keep the first the worker thread took.
  let mine: net.Socket | undefined;
  for (let i = 0; i < 40 && mine === undefined; i++) {
    const before = stats.acceptedByThread();
    const c = await connect(target.port('stream'));
    c.on('error', () => {});
    t.teardown(() => c.destroy());
    await waitFor(() => stats.accepted > before.reduce((a, b) => a + b, 0), 5_000, 'the accept');
    if (stats.acceptedByThread()[1]! > before[1]!) mine = c;
    else {
      // It moved no byte: it adds nothing to the totals below.
      c.destroy();
      await waitFor(() => target.lb.app.connections === 0, 5_000, 'closed');
    }
  }
  if (mine === undefined) return t.fail('no connection reached the worker thread in 40 tries');
  mine.write(Buffer.alloc(IN, 0x69));
  await readBytes(mine, ONE_WAY);
  await bytesWhileOpenThenExact(t, target, [mine]);
});

t.test('through the CLI with workers: 2', async (t) => {
  if (!need(t, opensslMissing)) return;
  const target = await cliChild(t, 2);

  await t.test('six open connections (the kernel spreads them over both threads) show their bytes before they close, and exactly their bytes after', async (t) => {
    const clients = await Promise.all([0, 1, 2, 3, 4, 5].map(() => streamingClient(t, target.port('stream'))));
    await bytesWhileOpenThenExact(t, target, clients);
  });

  await t.test('a client that stops reading, then resets: bytes out count only what reached it', async (t) => {
    await resetWhileHeld(t, target);
  });

  await t.test('clients turned away because no server is up count as no_server', async (t) => {
    await noServerCounted(t, target);
  });

  await t.test('failed TLS handshakes count as reason tls and in l4lb_tls_handshake_failures_total', async (t) => {
    await tlsFailuresCounted(t, target);
  });

  await t.test('a connect_failed line names the servers tried, each with its error', async (t) => {
    await triedListed(t, target);
  });
});
