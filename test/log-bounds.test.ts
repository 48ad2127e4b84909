/**
 * One rule for every connection that never reached a server: an access line
 * with its termination and reason, at the level of access lines, at most
 * about ten a second per listener, then one "suppressed" line a second. And
 * a log that stdout does not take is bounded: lines are dropped and counted.
 */
import { spawn } from 'node:child_process';
import t from 'tap';
import { ROOT } from './helpers/cli.js';
import { closed, connect, readLine, waitFor, type Backend, type Running } from './helpers/net.js';
import { backendFor, lbFor } from './helpers/lb.js';

function config(backend: Backend, listener: Record<string, unknown>): Record<string, unknown> {
  return {
    log: { level: 'info', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', ...listener }],
    pools: [{ name: 'p', servers: [{ address: backend.address }] }],
  };
}

const connectionLines = (lb: Running): Array<Record<string, unknown>> => lb.lines.filter((l) => l.msg === 'connection');
const suppressedTotal = (lb: Running): number =>
  lb.lines.filter((l) => l.msg === 'connection lines suppressed').reduce((n, l) => n + Number(l.suppressed), 0);

/** Open a connection, send `bytes`, wait until l4lb closes it. */
async function garbage(port: number, bytes: string): Promise<void> {
  const c = await connect(port);
  c.on('error', () => {});
  c.end(bytes);
  await closed(c, 10_000);
}

t.test('300 garbage clients on a TLS listener: about ten lines a second, one "suppressed" line a second for the rest, and every one accounted for', async (t) => {
  const backend = await backendFor(t);
  const lb = await lbFor(t, config(backend, { tls: { mode: 'passthrough' } }));
  const started = Date.now();
  for (let i = 0; i < 300; i += 30) {
    await Promise.all(Array.from({ length: 30 }, () => garbage(lb.port(), 'GET / HTTP/1.0\r\n\r\n')));
  }
  const stats = lb.app.listeners[0]!.stats;
  await waitFor(() => stats.terminations.get('tls_error') === 300, 10_000, 'every garbage client to end as tls_error');
  const seconds = (Date.now() - started) / 1_000;
  await waitFor(() => connectionLines(lb).length + suppressedTotal(lb) === 300, 5_000, 'the suppressed count to be reported');
  const lines = connectionLines(lb);
  t.ok(lines.length <= 10 + Math.ceil(seconds) * 10, `${lines.length} lines in ${seconds.toFixed(1)} s for 300 failures`);
  t.ok(lines.length >= 10, 'the first ten got their line');
  t.ok(lines.every((l) => l.termination === 'tls_error' && l.level === 'info' && typeof l.reason === 'string'), 'each line: tls_error, at info, with a reason');
  const reports = lb.lines.filter((l) => l.msg === 'connection lines suppressed');
  t.ok(reports.length >= 1 && reports.length <= Math.ceil(seconds) + 2, `one suppressed line a second at most (${reports.length})`);
  t.match(reports[0], { level: 'info', listener: 'front' });
  t.notOk(lb.lines.some((l) => l.msg === 'TLS handshake failed'), 'no second line per failure');
  t.equal(stats.rejected.get('tls'), 300, 'the metric counts all of them (reason tls)');
});

t.test('connections that reached a server always get their line, however many', async (t) => {
  const backend = await backendFor(t);
  const lb = await lbFor(t, config(backend, {}));
  await Promise.all(
    Array.from({ length: 60 }, async () => {
      const c = await connect(lb.port());
      c.write('x\n');
      await readLine(c);
      c.end();
      await closed(c);
    }),
  );
  await waitFor(() => connectionLines(lb).length === 60, 5_000, '60 access lines');
  t.ok(connectionLines(lb).every((l) => l.termination === 'client_close'), 'all 60 logged');
  t.equal(suppressedTotal(lb), 0, 'none suppressed');
});

t.test('max_connections: the refused client gets an access line (rejected_limit, reason max_connections)', async (t) => {
  const backend = await backendFor(t);
  const lb = await lbFor(t, config(backend, { max_connections: 1 }));
  const first = await connect(lb.port());
  t.teardown(() => first.destroy());
  first.write('a\n');
  t.equal(await readLine(first), 'a');
  const second = await connect(lb.port());
  second.on('error', () => {});
  await closed(second);
  await waitFor(() => connectionLines(lb).some((l) => l.termination === 'rejected_limit'), 2_000, 'the rejected_limit line');
  t.match(connectionLines(lb).find((l) => l.termination === 'rejected_limit'), {
    level: 'info',
    listener: 'front',
    client: /^127\.0\.0\.1:\d+$/,
    server: null,
    connect_ms: null,
    reason: 'max_connections',
  });
  t.equal(lb.app.listeners[0]!.stats.rejected.get('limit'), 1, 'counted once');
});

t.test('accept_proxy from an untrusted peer: an access line (proxy_header_error, reason untrusted proxy)', async (t) => {
  const backend = await backendFor(t);
  const lb = await lbFor(t, config(backend, { accept_proxy: true, trusted_proxies: ['10.0.0.0/8'] }));
  await garbage(lb.port(), 'PROXY TCP4 10.9.9.9 10.0.0.1 1234 80\r\n');
  await waitFor(() => connectionLines(lb).length === 1, 2_000, 'the access line');
  t.match(connectionLines(lb)[0], { termination: 'proxy_header_error', reason: 'untrusted proxy', client: /^127\.0\.0\.1:/ });
  // (backend.accepted would count the health probe, which may land first.)
  t.equal(connectionLines(lb)[0]!.server, null, 'nothing was sent to a server');
});

/**
 * A child logs 40 MB through the root logger while nobody reads its stdout:
 * memory stays bounded and the dropped lines are counted.
 */
const FLOOD = `
const { createLogger, droppedLogLines, MAX_BUFFERED_LOG_BYTES } = await import(process.argv[1] + '/dist/log.js');
const root = createLogger('info');
globalThis.gc();
const before = process.memoryUsage().heapUsed;
const pad = 'x'.repeat(150);
for (let i = 0; i < 200_000; i++) root.logger.info({ i, pad }, 'flood');
await new Promise((r) => setTimeout(r, 200));
globalThis.gc();
process.stderr.write(JSON.stringify({ dropped: droppedLogLines(), grew: process.memoryUsage().heapUsed - before, cap: MAX_BUFFERED_LOG_BYTES }) + '\\n');
process.exit(0);
`;

t.test('stdout that does not read: the log buffer stays bounded and dropped lines are counted', async (t) => {
  const child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', FLOOD, ROOT], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  // Never read stdout: the pipe fills at 64 KiB and stays full.
  child.stdout!.pause();
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  await waitFor(() => stderr.includes('\n'), 60_000, `the child's report (stderr so far: ${stderr})`);
  const report = JSON.parse(stderr.trim().split('\n').at(-1)!) as { dropped: number; grew: number; cap: number };
  t.ok(report.dropped > 100_000, `most of 200,000 lines were dropped (${report.dropped})`);
  // Unbounded, the 200,000 lines (some 45 MB) would all be held: the heap grows by about the cap instead.
  t.ok(report.grew < report.cap * 2, `the heap grew by ${(report.grew / 1048576).toFixed(1)} MiB (cap ${report.cap / 1048576} MiB)`);
});
