/**
 * The benchmark's C tools (benchmarks/c/) build with the system compiler and
 * run each scenario for a fraction of a second against the C backend (TLS:
 * against a Node TLS server here). Speed is never asserted: only that every
 * scenario completes work, without errors, and reports what run.js reads.
 */
import { spawn, spawnSync } from 'node:child_process';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { opensslMissing, testCerts } from './helpers/certs.js';
import { need } from './helpers/requirements.js';

const CTOOLS = fileURLToPath(new URL('../benchmarks/lib/ctools.js', import.meta.url));
const cc = process.env.CC || 'cc';
const ccMissing = spawnSync(cc, ['--version'], { timeout: 10_000 }).status === 0 ? null : `no C compiler (\`${cc}\`; apt-get install gcc libc6-dev)`;

interface Tools {
  backend: string;
  loadgen: string;
  tls: boolean;
  tlsMissing: string | null;
}

/** Runs the load generator to its end (asynchronously: the TLS server below lives in this process); resolves with its JSON line. */
function loadgen(tools: Tools, args: string[]): Promise<Record<string, number | string>> {
  return new Promise((resolve, reject) => {
    const child = spawn(tools.loadgen, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.once('close', (code) => {
      if (code !== 0) reject(new Error(`loadgen ${args.join(' ')} exited ${code}: ${err}`));
      else resolve(JSON.parse(out.trim()) as Record<string, number | string>);
    });
  });
}

t.test('the C tools build and every scenario runs against the C backend', async (t) => {
  if (!need(t, ccMissing)) return;
  const built = spawnSync(process.execPath, [CTOOLS], { encoding: 'utf8', timeout: 120_000 });
  if (built.status !== 0) {
    t.fail(`benchmarks/lib/ctools.js failed (${built.status}): ${built.stderr}`);
    return;
  }
  t.pass('benchmarks/lib/ctools.js builds the tools');
  const tools = JSON.parse(built.stdout) as Tools;

  const backend = spawn(tools.backend, ['--lifetime', '60'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    backend.kill('SIGKILL');
  });
  const ports = await new Promise<Record<string, number>>((resolve, reject) => {
    let text = '';
    backend.stdout.setEncoding('utf8');
    backend.stdout.on('data', (d: string) => {
      text += d;
      if (text.includes('\n')) resolve(JSON.parse(text.split('\n')[0]!) as Record<string, number>);
    });
    backend.once('exit', (code) => reject(new Error(`backend exited (${code}) before printing its ports`)));
  });
  t.ok(ports.echo! > 0 && ports.duplex! > 0 && ports.rr! > 0, 'the backend prints its three ports');

  const bulk = await loadgen(tools, ['bulk', '--port', String(ports.duplex), '--duration', '300', '--ramp', '50', '--concurrency', '2']);
  t.ok((bulk.up_mbps as number) > 0 && (bulk.down_mbps as number) > 0, 'bulk moves bytes both ways at once');
  t.equal(bulk.errors, 0, 'bulk has no errors');

  const conn = await loadgen(tools, ['connect', '--port', String(ports.rr), '--duration', '300']);
  t.ok((conn.connections as number) > 0, 'connect completes connections (32 B each way, the server closes first)');
  t.equal(conn.errors, 0, 'connect has no errors');

  const fixed = await loadgen(tools, ['pingpong', '--port', String(ports.echo), '--duration', '500', '--rate', '2000', '--concurrency', '4']);
  t.ok((fixed.requests as number) > 500, `ping-pong at 2,000/s for 0.5 s answers most requests (${fixed.requests})`);
  t.ok((fixed.p50_us as number) > 0 && (fixed.p99_us as number) >= (fixed.p50_us as number), 'latency percentiles are in order');
  t.ok(typeof fixed.cpu_pct === 'number', 'the load generator reports its own CPU');

  const bad = spawnSync(tools.loadgen, ['pingpong', '--port', '0'], { encoding: 'utf8', timeout: 10_000 });
  t.equal(bad.status, 1, 'a bad option is refused with exit status 1');
  t.match(bad.stderr, /--port must be an integer in 1\.\.65535/, 'and the message says which and why');

  t.test('the TLS scenario completes full TLS 1.3 handshakes', async (t) => {
    if (!need(t, tools.tls ? null : `the load generator has no TLS: ${tools.tlsMissing}`)) return;
    if (!need(t, opensslMissing)) return;
    // What the rr backend does, behind TLS: a 32-byte request, a 32-byte reply, the server closes.
    const server = tls.createServer(testCerts().pem('a.test'), (s) => {
      let got = 0;
      s.on('error', () => s.destroy());
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= 32) s.end(Buffer.alloc(32, 'r'));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as { port: number }).port;
    const r = await loadgen(tools, ['tls', '--port', String(port), '--duration', '300', '--concurrency', '4']);
    t.ok((r.connections as number) > 0, `handshakes completed (${r.connections})`);
    t.equal(r.errors, 0, `no errors${r.first_error ? `: ${r.first_error}` : ''}`);
  });
});
