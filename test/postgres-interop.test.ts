/**
 * `protocol: postgres` listeners against real PostgreSQL servers and
 * clients (psql, pgbench, libpq) nobody here wrote:
 * (1) terminate: sslmode require / verify-full (SNI a.test) / prefer work,
 *     sslmode=disable is refused with "SSL required by the balancer" and
 *     `tls_required`; GSSENCRequest is answered N, then SSLRequest S;
 * (2) terminate + pool `tls`: l4lb sends the server an SSLRequest and speaks
 *     TLS to it (pg_stat_ssl says so); a server with ssl off answers N and
 *     the connect fails (`connect_failed`, reason naming SSLRequest);
 * (3) passthrough: routes by SNI to two clusters, each with its own
 *     certificate, verified end to end by psql (verify-full);
 * (4) CancelRequest (psql SIGINT) in plain, terminate and passthrough mode,
 *     over a pool of two servers: the cancel reaches the session's server;
 * (5) direct TLS (ALPN postgresql) to a terminating listener, a real
 *     protocol 3.0 conversation, and to a passthrough listener in front of
 *     PostgreSQL 15 (which only knows SSLRequest); a cancel of such a session;
 * (6) pgbench through terminate mode, least_conn over two clusters;
 * (7) pool proxy_protocol v2 to HAProxy `accept-proxy` in front of a cluster;
 * (8) workers: 2 (CLI child, and in process): cancels work whichever thread
 *     takes them.
 * Each subtest checks that the servers logged no ERROR/FATAL/PANIC but the
 * expected "canceling statement due to user request".
 *
 * PostgreSQL (and openssl, HAProxy for 7) missing: the file fails when CI is
 * set and is otherwise skipped with the reason printed.
 */
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { opensslMissing, testCerts } from './helpers/certs.js';
import { cliFor } from './helpers/cli.js';
import { lbFor } from './helpers/lb.js';
import { sleep, waitFor, type Running } from './helpers/net.js';
import { HAPROXY_PREAMBLE, requirePeer, startHaproxy, waitForText } from './helpers/peers.js';
import { pgbench, pgbenchInit, postgresMissing, psql, spawnPsql, startPostgres, type PgCluster, type PgTarget } from './helpers/postgres.js';
import { need } from './helpers/requirements.js';

type Line = Record<string, unknown>;
/** Anything that collects l4lb's log lines: an in-process l4lb or a CLI child. */
type Logs = { readonly lines: Line[] };

const CANCELED = /canceling statement due to user request/;
const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** ERROR, FATAL and PANIC lines of a server's log, but those `expected` allows. */
function problems(cluster: PgCluster, expected: RegExp[] = [CANCELED]): string[] {
  return cluster
    .log()
    .split('\n')
    .filter((l) => /\b(ERROR|FATAL|PANIC):/.test(l) && !expected.some((re) => re.test(l)));
}

function noProblems(t: Test, clusters: PgCluster[], expected?: RegExp[]): void {
  for (const c of clusters) t.same(problems(c, expected), [], `server on port ${c.port}: no unexpected ERROR/FATAL/PANIC in its log`);
}

function cancels(cluster: PgCluster): number {
  return cluster.log().split('\n').filter((l) => CANCELED.test(l)).length;
}

function accessOf(logs: Logs, from = 0, listener?: string): Line[] {
  return logs.lines.slice(from).filter((l) => l.msg === 'connection' && (listener === undefined || l.listener === listener));
}

async function waitAccess(logs: Logs, from: number, listener: string, pred: (l: Line) => boolean, what: string, timeoutMs = 10_000): Promise<Line> {
  await waitFor(() => accessOf(logs, from, listener).some(pred), timeoutMs, what);
  return accessOf(logs, from, listener).filter(pred).at(-1)!;
}

const target = (port: number): PgTarget => ({ host: '127.0.0.1', port });

/**
 * Waits until no session of an in-process l4lb holds a server: each finished
 * session has then written its access line (psql exits before l4lb sees its close).
 */
async function idle(lb: Running): Promise<void> {
  await waitFor(() => [...lb.app.pools.values()].every((p) => p.servers.every((s) => s.active === 0)), 10_000, 'every session closed');
}

/** psql -At -c QUERY; the test fails unless it exits 0. */
async function sql(t: Test, to: PgTarget, query: string, connString?: string): Promise<string> {
  const r = await psql(to, ['-At', '-c', query], { connString, timeoutMs: 20_000 });
  t.equal(r.status, 0, `psql ${connString ?? ''} -c "${query}" exits 0${r.status === 0 ? '' : `: ${r.stderr.trim()}`}`);
  return r.stdout.trim();
}

// ---------------------------------------------------------------------------
// Cancel by SIGINT

interface CancelRun {
  status: number | null;
  stderr: string;
  /** SIGINT to psql's exit. */
  latencyMs: number;
}

/** `select pg_sleep(60)` through `to`, psql SIGINTed after `afterMs`; resolves when psql exits (SIGKILLed after 15 s). */
async function sigintCancel(to: PgTarget, connString: string | undefined, afterMs = 1_000): Promise<CancelRun> {
  const child: ChildProcess = spawnPsql(to, ['-At', '-c', 'select pg_sleep(60)'], { connString, timeoutMs: afterMs + 15_000 });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdout!.resume();
  let exitedAt = 0;
  const exit = new Promise<number | null>((resolve) =>
    child.once('close', (code) => {
      exitedAt = performance.now();
      resolve(code);
    }),
  );
  await Promise.race([exit, sleep(afterMs)]);
  const sentAt = performance.now();
  if (exitedAt === 0) child.kill('SIGINT');
  const status = await exit;
  return { status, stderr, latencyMs: Math.round(exitedAt - sentAt) };
}

interface CancelCheck {
  /** The session's server, from its access line. */
  server: string;
  cancelLine: Line;
  latencyMs: number;
}

/**
 * One cancel scenario through `listener`: psql is cancelled, l4lb logged a
 * cancel_forwarded line, the cluster of the session's server logged the
 * cancel; when `known`, the cancel line names the session's server and no
 * other cluster logged a cancel.
 */
async function cancelScenario(
  t: Test,
  logs: Logs,
  port: number,
  listener: string,
  clusters: Record<string, PgCluster>,
  connString: string | undefined,
  known: boolean,
  what: string,
): Promise<CancelCheck> {
  const before = Object.fromEntries(Object.entries(clusters).map(([n, c]) => [n, cancels(c)]));
  const from = logs.lines.length;
  const r = await sigintCancel(target(port), connString);
  t.match(r.stderr, CANCELED, `${what}: psql says the statement was cancelled (exit ${r.status}, ${r.latencyMs} ms after SIGINT)${CANCELED.test(r.stderr) ? '' : `: ${r.stderr.trim()}`}`);
  t.ok(r.latencyMs < 5_000, `${what}: psql exited within 5 s of SIGINT (${r.latencyMs} ms)`);
  const cancelLine = await waitAccess(logs, from, listener, (l) => l.termination === 'cancel_forwarded', `${what}: cancel_forwarded line`).catch((e: Error) => {
    t.fail(`${what}: ${e.message}; lines: ${JSON.stringify(accessOf(logs, from))}`);
    return {} as Line;
  });
  const session = await waitAccess(logs, from, listener, (l) => l.termination !== 'cancel_forwarded' && typeof l.server === 'string', `${what}: session line`).catch(
    (e: Error) => {
      t.fail(`${what}: ${e.message}; lines: ${JSON.stringify(accessOf(logs, from))}`);
      return {} as Line;
    },
  );
  const server = String(session.server);
  const cluster = clusters[server];
  t.ok(cluster !== undefined, `${what}: the session went to ${server}`);
  if (cluster !== undefined) {
    await waitFor(() => cancels(cluster) > before[server]!, 5_000, 'the cancel in the server log').catch(() => {});
    t.equal(cancels(cluster), before[server]! + 1, `${what}: ${server} (the session's server) logged the cancel`);
  }
  if (known) {
    t.equal(cancelLine.server, server, `${what}: the cancel_forwarded line names the session's server ${server} (${JSON.stringify(cancelLine)})`);
    t.match(String(cancelLine.reason), /session's server/, `${what}: reason "${String(cancelLine.reason)}"`);
    for (const [name, c] of Object.entries(clusters)) if (name !== server) t.equal(cancels(c), before[name], `${what}: ${name} logged no cancel`);
  } else {
    t.equal(cancelLine.server, null, `${what}: the key was not seen (TLS end to end): no single server named`);
    t.match(String(cancelLine.reason), new RegExp(`cancel sent to ${Object.keys(clusters).length} of ${Object.keys(clusters).length} up servers`), `${what}: reason "${String(cancelLine.reason)}"`);
  }
  return { server, cancelLine, latencyMs: r.latencyMs };
}

// ---------------------------------------------------------------------------
// A minimal PostgreSQL protocol 3.0 client, for direct TLS

interface PgMessage {
  type: string;
  body: Buffer;
}

/** Reads a server's messages off `socket`; until(type) resolves with every message up to and including the first of that type. */
function pgReader(socket: net.Socket): { until(type: string, timeoutMs?: number): Promise<PgMessage[]> } {
  let buf = Buffer.alloc(0);
  const messages: PgMessage[] = [];
  let closed = false;
  let wake: (() => void) | undefined;
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 5) {
      const len = buf.readInt32BE(1);
      if (buf.length < 1 + len) break;
      messages.push({ type: String.fromCharCode(buf[0]!), body: Buffer.from(buf.subarray(5, 1 + len)) });
      buf = buf.subarray(1 + len);
    }
    wake?.();
  });
  socket.on('close', () => {
    closed = true;
    wake?.();
  });
  return {
    async until(type, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const i = messages.findIndex((m) => m.type === type);
        if (i >= 0) return messages.splice(0, i + 1);
        const seen = messages.map((m) => m.type).join('');
        if (closed) throw new Error(`closed before '${type}' (messages: ${seen}${errorText(messages)})`);
        if (Date.now() > deadline) throw new Error(`no '${type}' within ${timeoutMs} ms (messages: ${seen})`);
        await new Promise<void>((r) => {
          const timer = setTimeout(r, 100);
          wake = () => {
            clearTimeout(timer);
            r();
          };
        });
        wake = undefined;
      }
    },
  };
}

function errorText(messages: PgMessage[]): string {
  const e = messages.find((m) => m.type === 'E');
  return e === undefined ? '' : `; error: ${e.body.toString('utf8').replace(/\0/g, ' ')}`;
}

function startup(params: Record<string, string>): Buffer {
  const body = Buffer.concat([...Object.entries(params).map(([k, v]) => Buffer.from(`${k}\0${v}\0`)), Buffer.from([0])]);
  const b = Buffer.alloc(8 + body.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(3 << 16, 4);
  body.copy(b, 8);
  return b;
}

function query(text: string): Buffer {
  const body = Buffer.from(`${text}\0`);
  const b = Buffer.alloc(5 + body.length);
  b[0] = 0x51; // 'Q'
  b.writeInt32BE(4 + body.length, 1);
  body.copy(b, 5);
  return b;
}

const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4]);

/** An 8-byte opening packet (SSLRequest 80877103, GSSENCRequest 80877104). */
function opening(code: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(code, 4);
  return b;
}

function cancelPacket(pid: number, secret: Buffer): Buffer {
  const b = Buffer.alloc(12 + secret.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(80877102, 4);
  b.writeInt32BE(pid, 8);
  secret.copy(b, 12);
  return b;
}

/** The first column of each DataRow, as text. */
function firstColumns(messages: PgMessage[]): string[] {
  return messages
    .filter((m) => m.type === 'D')
    .map((m) => {
      const len = m.body.readInt32BE(2);
      return len < 0 ? 'NULL' : m.body.toString('utf8', 6, 6 + len);
    });
}

/** SQLSTATE of the first ErrorResponse. */
function sqlstate(messages: PgMessage[]): string | undefined {
  const e = messages.find((m) => m.type === 'E');
  if (e === undefined) return undefined;
  const fields = e.body.toString('utf8').split('\0');
  return fields.find((f) => f.startsWith('C'))?.slice(1);
}

function tlsConnect(t: Test, options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect(options);
    t.teardown(() => s.destroy());
    const timer = setTimeout(() => reject(new Error('no TLS handshake within 10 s')), 10_000);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      s.off('error', reject);
      s.on('error', () => {});
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

function rawConnect(t: Test, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.off('error', reject);
      s.on('error', () => {});
      resolve(s);
    });
    t.teardown(() => s.destroy());
    s.once('error', reject);
  });
}

/** The next `n` bytes from a socket (raw reads, before TLS). */
function readN(s: net.Socket, n: number, timeoutMs = 5_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => done(new Error(`${n} bytes did not arrive (got ${got.toString('hex')})`)), timeoutMs);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      if (got.length >= n) {
        if (got.length > n) s.unshift(got.subarray(n));
        done(undefined, got.subarray(0, n));
      }
    };
    const onClose = (): void => done(new Error(`closed before ${n} bytes (got ${got.toString('hex')})`));
    function done(err?: Error, b?: Buffer): void {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('close', onClose);
      s.pause();
      if (err) reject(err);
      else resolve(b!);
    }
    s.on('data', onData);
    s.on('close', onClose);
    // Paused after an earlier read: a 'data' listener alone does not resume an explicitly paused socket.
    s.resume();
  });
}

// ---------------------------------------------------------------------------

function pgListener(name: string, pool: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, bind: '127.0.0.1:0', pool, protocol: 'postgres', ...extra };
}

function pgPool(name: string, servers: Record<string, PgCluster | string>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    balance: 'round_robin',
    timeouts: { connect: '5s' },
    servers: Object.entries(servers).map(([n, c]) => ({ name: n, address: typeof c === 'string' ? c : `127.0.0.1:${c.port}` })),
    ...extra,
  };
}

function main(): void {
  const certs = testCerts();
  const CA = certs.file('ca.crt');
  const terminate = (name = 'a.test'): Record<string, unknown> => ({ tls: { mode: 'terminate', certs: [certs.pair(name)] } });
  const summary: string[] = [];

  t.test('terminate: sslmode require, verify-full (SNI), prefer work; disable is refused (tls_required); GSSENC gets N', { timeout: 60_000 }, async (t) => {
    const pg = await startPostgres(t);
    const lb = await lbFor(t, { log: { level: 'info', access: true }, listeners: [pgListener('pg', 'p', terminate())], pools: [pgPool('p', { pg1: pg })] });
    const port = lb.port('pg');
    const to = target(port);

    t.equal(await sql(t, to, 'select 1', 'sslmode=require'), '1', 'sslmode=require: select 1');

    await idle(lb);
    let from = lb.lines.length;
    t.equal(await sql(t, to, 'select 1', `host=a.test hostaddr=127.0.0.1 port=${port} sslmode=verify-full sslrootcert=${CA}`), '1', 'sslmode=verify-full host=a.test: select 1');
    const vf = await waitAccess(lb, from, 'pg', (l) => l.server === 'pg1', 'verify-full access line');
    t.equal(vf.sni, 'a.test', 'its access line has sni a.test');
    t.equal(vf.termination, 'client_close', 'and ends client_close');
    t.ok('alpn' in vf, `and says TLS was terminated (alpn: ${JSON.stringify(vf.alpn)})`);

    from = lb.lines.length;
    const refused = await psql(to, ['-At', '-c', 'select 1'], { connString: 'sslmode=disable', timeoutMs: 20_000 });
    t.not(refused.status, 0, 'sslmode=disable: psql fails');
    t.match(refused.stderr, /SSL required by the balancer/, `and says why: ${refused.stderr.trim()}`);
    const req = await waitAccess(lb, from, 'pg', () => true, 'tls_required line');
    t.equal(req.termination, 'tls_required', `access line: termination tls_required (${JSON.stringify(req)})`);
    t.equal(req.server, null, 'no server was reached');

    const prefer = await psql(to, ['-c', '\\conninfo'], { connString: 'sslmode=prefer', timeoutMs: 20_000 });
    t.equal(prefer.status, 0, `sslmode=prefer works${prefer.status === 0 ? '' : `: ${prefer.stderr}`}`);
    t.match(prefer.stdout, /SSL connection \(protocol: TLSv1\.[23]/, `over TLS: ${prefer.stdout.trim().split('\n').at(-1)}`);

    // libpq's path when it has GSS credentials: GSSENCRequest, N, then SSLRequest on the same connection.
    const raw = await rawConnect(t, port);
    raw.write(opening(80877104));
    t.equal((await readN(raw, 1)).toString(), 'N', 'GSSENCRequest is answered N');
    raw.write(opening(80877103));
    t.equal((await readN(raw, 1)).toString(), 'S', 'then SSLRequest on the same connection is answered S');
    const s = await tlsConnect(t, { socket: raw, servername: 'a.test', ca: certs.ca });
    const reader = pgReader(s);
    s.write(startup({ user: 'postgres', database: 'postgres' }));
    await reader.until('Z');
    s.write(query('select 7'));
    t.same(firstColumns(await reader.until('Z')), ['7'], 'and the session over that TLS answers select 7');
    s.end(TERMINATE);

    noProblems(t, [pg]);
  });

  t.test('terminate + pool tls: l4lb speaks TLS to PostgreSQL (SSLRequest first); a server with ssl off answers N: connect_failed', { timeout: 60_000 }, async (t) => {
    const [secure, plain] = await Promise.all([startPostgres(t, { ssl: certs.pair('backend.test') }), startPostgres(t)]);
    const poolTls = { tls: { servername: 'backend.test', ca: CA } };
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [pgListener('sec', 'sec', terminate()), pgListener('nossl', 'nossl', terminate())],
      pools: [pgPool('sec', { secure }, poolTls), pgPool('nossl', { plain }, poolTls)],
    });
    const ssl = await sql(t, target(lb.port('sec')), 'select ssl, version from pg_stat_ssl where pid = pg_backend_pid()', 'sslmode=require');
    t.match(ssl, /^t\|TLSv1\.[23]$/, `pg_stat_ssl: the session from l4lb to PostgreSQL is TLS (${ssl})`);

    const from = lb.lines.length;
    const failed = await psql(target(lb.port('nossl')), ['-At', '-c', 'select 1'], { connString: 'sslmode=require', timeoutMs: 20_000 });
    t.not(failed.status, 0, `psql fails when the server refuses TLS: ${failed.stderr.trim()}`);
    const line = await waitAccess(lb, from, 'nossl', () => true, 'connect_failed line');
    t.equal(line.termination, 'connect_failed', `termination connect_failed (${JSON.stringify(line)})`);
    t.match(String(line.reason), /SSLRequest/, `reason names the SSLRequest: "${String(line.reason)}"`);
    t.match(String(line.reason), /\bN\b/, 'and the N answer');

    // A plain listener in front of a pool with tls: the client talks plaintext to l4lb (its SSLRequest is
    // answered N by l4lb), l4lb talks TLS to the server, after an SSLRequest of its own (PostgreSQL 15 knows no direct TLS).
    const lb2 = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [pgListener('plain', 'sec')],
      pools: [pgPool('sec', { secure }, poolTls)],
    });
    const from2 = lb2.lines.length;
    const viaPlain = await psql(target(lb2.port('plain')), ['-At', '-c', 'select ssl from pg_stat_ssl where pid = pg_backend_pid()'], { connString: 'sslmode=prefer', timeoutMs: 20_000 });
    t.equal(viaPlain.status, 0, `plain listener, pool tls: psql sslmode=prefer works${viaPlain.status === 0 ? '' : `: ${viaPlain.stderr.trim()}`}`);
    t.equal(viaPlain.stdout.trim(), 't', 'and the server sees TLS (from l4lb)');
    const line2 = await waitAccess(lb2, from2, 'plain', () => true, 'plain listener line').catch(() => ({}) as Line);
    t.comment(`plain listener + pool tls access line: ${JSON.stringify(line2)}`);
    const said = secure.log().split('\n').filter((l) => /startup packet|unsupported frontend protocol|SSL/.test(l));
    if (said.length > 0) t.comment(`the server logged: ${said.join(' | ')}`);
    noProblems(t, [secure, plain]);
  });

  t.test('passthrough: SNI routes to two clusters; psql verify-full checks each server\'s own certificate', { timeout: 60_000 }, async (t) => {
    const [a, b] = await Promise.all([startPostgres(t, { ssl: certs.pair('a.test') }), startPostgres(t, { ssl: certs.pair('b.test') })]);
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [
        pgListener('pass', 'A', {
          tls: { mode: 'passthrough' },
          routes: [
            { sni: 'a.test', pool: 'A' },
            { sni: 'b.test', pool: 'B' },
          ],
        }),
      ],
      pools: [pgPool('A', { a }), pgPool('B', { b })],
    });
    const port = lb.port('pass');
    const q = "select current_setting('port'), ssl from pg_stat_ssl where pid = pg_backend_pid()";
    for (const [name, cluster, pool] of [
      ['a.test', a, 'A'],
      ['b.test', b, 'B'],
    ] as const) {
      await idle(lb);
      const from = lb.lines.length;
      const out = await sql(t, target(port), q, `host=${name} hostaddr=127.0.0.1 port=${port} sslmode=verify-full sslrootcert=${CA}`);
      t.equal(out, `${cluster.port}|t`, `verify-full host=${name}: reached the cluster on port ${cluster.port}, over TLS ending at PostgreSQL`);
      const line = await waitAccess(lb, from, 'pass', (l) => l.server !== null, `${name} access line`);
      t.match(line, { sni: name, pool, termination: 'client_close' }, `access line: sni ${name}, pool ${pool}`);
      t.notOk('alpn' in line, 'TLS was not terminated by l4lb');
    }
    // No SNI (host is an IP): the default pool, cluster A.
    t.equal(await sql(t, target(port), q, `sslmode=verify-ca sslrootcert=${CA}`), `${a.port}|t`, 'no SNI: the default pool (A), chain verified');
    // A name no route knows goes to the default pool, whose server shows its own certificate (a.test): verify-full fails.
    const wrong = await psql(target(port), ['-At', '-c', 'select 1'], {
      connString: `host=c.test hostaddr=127.0.0.1 port=${port} sslmode=verify-full sslrootcert=${CA}`,
      timeoutMs: 20_000,
    });
    t.not(wrong.status, 0, 'verify-full host=c.test fails');
    t.match(wrong.stderr, /"a\.test" does not match host name "c\.test"/, `against the server's own certificate: ${wrong.stderr.trim()}`);
    const refused = await psql(target(port), ['-At', '-c', 'select 1'], { connString: 'sslmode=disable', timeoutMs: 20_000 });
    t.match(refused.stderr, /SSL required by the balancer/, 'sslmode=disable is refused in passthrough mode too');
    noProblems(t, [a, b]);
  });

  t.test('CancelRequest (psql SIGINT) in plain, terminate and passthrough mode reaches the session\'s server', { timeout: 90_000 }, async (t) => {
    const [c1, c2] = await Promise.all([startPostgres(t, { ssl: certs.pair('backend.test') }), startPostgres(t, { ssl: certs.pair('backend.test') })]);
    const clusters = { pg1: c1, pg2: c2 };
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [pgListener('plain', 'two'), pgListener('term', 'two', terminate()), pgListener('pass', 'two', { tls: { mode: 'passthrough' } })],
      pools: [pgPool('two', clusters)],
    });
    const latencies: number[] = [];
    for (const [listener, connString, runs, known] of [
      ['plain', 'sslmode=disable', 4, true],
      ['term', 'sslmode=require', 4, true],
      ['pass', 'sslmode=require', 2, false],
      ['plain', 'sslmode=require', 1, false],
    ] as const) {
      const servers = new Set<string>();
      for (let i = 1; i <= runs; i++) {
        const r = await cancelScenario(t, lb, lb.port(listener), listener, clusters, connString, known, `${listener} ${connString} #${i}`);
        servers.add(r.server);
        latencies.push(r.latencyMs);
      }
      if (runs >= 2) t.same([...servers].sort(), ['pg1', 'pg2'], `${listener}: both servers had sessions cancelled`);
    }
    summary.push(`cancel latency (SIGINT to psql exit), ms: ${latencies.join(', ')}`);
    t.comment(summary.at(-1)!);
    noProblems(t, [c1, c2]);
  });

  t.test('direct TLS (ALPN postgresql): terminate, and passthrough to PostgreSQL 15 (SSLRequest sent first); cancels of such sessions', { timeout: 60_000 }, async (t) => {
    const [p1, p2, withSsl] = await Promise.all([startPostgres(t), startPostgres(t), startPostgres(t, { ssl: certs.pair('a.test') })]);
    const clusters = { pg1: p1, pg2: p2 };
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [pgListener('term', 'two', terminate()), pgListener('pass', 'ssl', { tls: { mode: 'passthrough' } })],
      pools: [pgPool('two', clusters), pgPool('ssl', { withSsl })],
    });

    // Terminate: ALPN postgresql is offered by itself.
    let from = lb.lines.length;
    const s = await tlsConnect(t, { host: '127.0.0.1', port: lb.port('term'), servername: 'a.test', ALPNProtocols: ['postgresql'], ca: certs.ca });
    t.equal(s.alpnProtocol, 'postgresql', 'ALPN postgresql negotiated with l4lb');
    t.equal((s.getPeerCertificate().subject as { CN?: string }).CN, 'a.test', "l4lb's certificate a.test, verified against the CA");
    const reader = pgReader(s);
    s.write(startup({ user: 'postgres', database: 'postgres' }));
    const opened = await reader.until('Z');
    t.ok(opened.some((m) => m.type === 'R' && m.body.readInt32BE(0) === 0), 'AuthenticationOk');
    const key = opened.find((m) => m.type === 'K');
    t.ok(key !== undefined, 'BackendKeyData');
    s.write(query('select 42'));
    const answer = await reader.until('Z');
    t.same(firstColumns(answer), ['42'], 'select 42 answers 42 (DataRow)');

    // A cancel of this session, plaintext on its own connection: l4lb terminated this TLS, so it saw the key.
    s.write(query('select pg_sleep(30)'));
    await sleep(300);
    const before = { pg1: cancels(p1), pg2: cancels(p2) };
    const c = await rawConnect(t, lb.port('term'));
    c.end(cancelPacket(key!.body.readInt32BE(0), key!.body.subarray(4)));
    const t0 = performance.now();
    const cancelled = await reader.until('Z', 10_000).catch((e: Error) => [{ type: '!', body: Buffer.from(e.message) }]);
    t.equal(sqlstate(cancelled), '57014', `the query is cancelled (57014) ${Math.round(performance.now() - t0)} ms after the CancelRequest`);
    const cancelLine = await waitAccess(lb, from, 'term', (l) => l.termination === 'cancel_forwarded', 'cancel line');
    s.end(TERMINATE);
    const session = await waitAccess(lb, from, 'term', (l) => l.termination !== 'cancel_forwarded' && typeof l.server === 'string', 'direct TLS session line');
    t.equal(session.alpn, 'postgresql', 'the session line says alpn postgresql');
    const server = String(session.server);
    const other = server === 'pg1' ? 'pg2' : 'pg1';
    t.equal(cancels(clusters[server as 'pg1']), before[server as 'pg1'] + 1, `${server} (the session's server) logged the cancel`);
    t.equal(
      cancelLine.server,
      server,
      `direct TLS terminated here: the cancel goes to the session's server ${server}, not to every server (${JSON.stringify(cancelLine)})`,
    );
    t.equal(cancels(clusters[other as 'pg1']), before[other as 'pg1'], `${other} logged no cancel`);

    // PostgreSQL 17's libpq sends the cancel of a TLS session over TLS: inside a terminated session.
    // The session opens as libpq 15 does (SSLRequest, S, TLS), so l4lb records its key.
    from = lb.lines.length;
    const raw2 = await rawConnect(t, lb.port('term'));
    raw2.write(opening(80877103));
    t.equal((await readN(raw2, 1)).toString(), 'S', 'SSLRequest answered S');
    const s2 = await tlsConnect(t, { socket: raw2, servername: 'a.test', ca: certs.ca });
    const r2 = pgReader(s2);
    s2.write(startup({ user: 'postgres', database: 'postgres' }));
    const key2 = (await r2.until('Z')).find((m) => m.type === 'K')!;
    s2.write(query('select pg_sleep(30)'));
    await sleep(300);
    const s3 = await tlsConnect(t, { host: '127.0.0.1', port: lb.port('term'), servername: 'a.test', ALPNProtocols: ['postgresql'], ca: certs.ca });
    s3.end(cancelPacket(key2.body.readInt32BE(0), key2.body.subarray(4)));
    const cancelled2 = await r2.until('Z', 10_000).catch((e: Error) => [{ type: '!', body: Buffer.from(e.message) }]);
    t.equal(sqlstate(cancelled2), '57014', 'a CancelRequest inside TLS cancels the query too');
    const line2 = await waitAccess(lb, from, 'term', (l) => l.termination === 'cancel_forwarded', 'cancel-over-TLS line');
    t.equal(line2.sni, 'a.test', 'its line has the SNI of its TLS');
    s2.end(TERMINATE);
    const session2 = await waitAccess(lb, from, 'term', (l) => l.termination !== 'cancel_forwarded' && typeof l.server === 'string', 'SSLRequest session line');
    t.equal(line2.server, session2.server, `the cancel inside TLS went to the session's server ${String(session2.server)} (${String(line2.reason)})`);

    // Passthrough to PostgreSQL 15, which knows no direct TLS: l4lb sends its SSLRequest first.
    from = lb.lines.length;
    const p = await tlsConnect(t, { host: '127.0.0.1', port: lb.port('pass'), servername: 'a.test', ALPNProtocols: ['postgresql'], ca: certs.ca });
    t.equal((p.getPeerCertificate().subject as { CN?: string }).CN, 'a.test', "the server's own certificate, verified (servername a.test)");
    const pr = pgReader(p);
    p.write(startup({ user: 'postgres', database: 'postgres' }));
    const popened = await pr.until('Z');
    t.ok(popened.some((m) => m.type === 'R' && m.body.readInt32BE(0) === 0), 'direct TLS through passthrough authenticates (AuthenticationOk ... ReadyForQuery)');
    p.write(query("select ssl from pg_stat_ssl where pid = pg_backend_pid()"));
    t.same(firstColumns(await pr.until('Z')), ['t'], 'and PostgreSQL sees a TLS session');
    p.end(TERMINATE);
    const pline = await waitAccess(lb, from, 'pass', (l) => l.server === 'withSsl', 'passthrough direct TLS line');
    t.equal(pline.sni, 'a.test', 'access line sni a.test');
    noProblems(t, [p1, p2, withSsl]);
  });

  t.test('pgbench through terminate mode, least_conn over two clusters', { timeout: 60_000 }, async (t) => {
    const [c1, c2] = await Promise.all([startPostgres(t), startPostgres(t)]);
    const inits = await Promise.all([pgbenchInit(c1), pgbenchInit(c2)]);
    for (const i of inits) t.equal(i.status, 0, `pgbench -i directly${i.status === 0 ? '' : `: ${i.stderr}`}`);
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [pgListener('term', 'two', terminate())],
      pools: [pgPool('two', { pg1: c1, pg2: c2 }, { balance: 'least_conn' })],
    });
    const run = await pgbench(target(lb.port('term')), { clients: 4, jobs: 2, seconds: 3, connString: 'sslmode=require' });
    t.equal(run.status, 0, `pgbench -c 4 -j 2 -T 3 through l4lb exits 0${run.status === 0 ? '' : `: ${run.stderr}`}`);
    t.ok(run.tps !== null && run.tps > 0, `tps ${run.tps}`);
    await waitFor(() => accessOf(lb, 0, 'term').length >= 4, 10_000, 'the access lines of pgbench sessions').catch(() => {});
    const per: Record<string, number> = {};
    for (const l of accessOf(lb, 0, 'term')) per[String(l.server)] = (per[String(l.server)] ?? 0) + 1;
    t.ok((per.pg1 ?? 0) > 0 && (per.pg2 ?? 0) > 0, `both servers got connections: ${JSON.stringify(per)}`);
    t.ok(accessOf(lb, 0, 'term').every((l) => l.termination === 'client_close'), 'every session ended client_close');
    summary.push(`pgbench through l4lb (terminate, TLS, least_conn over 2): tps ${run.tps}; sessions per server ${JSON.stringify(per)}`);
    t.comment(summary.at(-1)!);
    noProblems(t, [c1, c2]);
  });

  t.test('pool proxy_protocol v2 to HAProxy accept-proxy in front of PostgreSQL: psql works, the header carries the client', { timeout: 60_000 }, async (t) => {
    const bin = requirePeer(t, 'haproxy');
    if (bin === undefined) return;
    t.comment(bin.version);
    const pg = await startPostgres(t);
    const haproxy = await startHaproxy(
      t,
      bin,
      (port) => `${HAPROXY_PREAMBLE}
frontend fe
    bind 127.0.0.1:${port} accept-proxy
    log-format "pp src=%[src] src_port=%[src_port] dst_port=%[dst_port]"
    default_backend be

backend be
    server pg 127.0.0.1:${pg.port}
`,
    );
    const lb = await lbFor(t, {
      log: { level: 'info', access: true },
      listeners: [pgListener('term', 'hap', terminate())],
      pools: [pgPool('hap', { haproxy: `127.0.0.1:${haproxy.port}` }, { proxy_protocol: 'v2' })],
    });
    const from = lb.lines.length;
    t.equal(await sql(t, target(lb.port('term')), 'select 1', 'sslmode=require'), '1', 'psql through l4lb (TLS) and HAProxy: select 1');
    const line = await waitAccess(lb, from, 'term', (l) => l.server === 'haproxy', 'access line');
    const clientPort = String(line.client).split(':')[1]!;
    const m = await waitForText(() => haproxy.stdout(), new RegExp(`^pp src=127\\.0\\.0\\.1 src_port=${esc(clientPort)} dst_port=${lb.port('term')}$`, 'm'), 10_000, "HAProxy's line");
    t.pass(`HAProxy logged "${m[0]}": the client psql, from l4lb's header`);
    // A cancel through HAProxy: the header goes first on the cancel's connection too.
    await cancelScenario(t, lb, lb.port('term'), 'term', { haproxy: pg }, 'sslmode=require', true, 'cancel through HAProxy');
    noProblems(t, [pg]);
  });

  t.test('workers: 2 (CLI child): six cancels all work, whichever thread takes them', { timeout: 60_000 }, async (t) => {
    const [c1, c2] = await Promise.all([startPostgres(t), startPostgres(t)]);
    const clusters = { pg1: c1, pg2: c2 };
    const child = await cliFor(t, {
      workers: 2,
      log: { level: 'info', access: true },
      listeners: [pgListener('plain', 'two'), pgListener('term', 'two', terminate())],
      pools: [pgPool('two', clusters, { balance: 'least_conn' })],
    });
    const latencies: number[] = [];
    for (let i = 1; i <= 6; i++) {
      const listener = i % 2 === 0 ? 'term' : 'plain';
      const r = await cancelScenario(t, child, child.port(listener), listener, clusters, i % 2 === 0 ? 'sslmode=require' : 'sslmode=disable', true, `CLI workers 2, ${listener} #${i}`);
      latencies.push(r.latencyMs);
    }
    summary.push(`CLI workers 2 cancel latency, ms: ${latencies.join(', ')}`);
    t.comment(summary.at(-1)!);
    noProblems(t, [c1, c2]);
  });

  t.test('workers: 2 (in process): a cancel taken by the other thread than its session reaches the right server', { timeout: 60_000 }, async (t) => {
    const [c1, c2] = await Promise.all([startPostgres(t), startPostgres(t)]);
    const clusters = { pg1: c1, pg2: c2 };
    const lb: Running = await lbFor(t, {
      workers: 2,
      log: { level: 'info', access: true },
      listeners: [pgListener('plain', 'two')],
      pools: [pgPool('two', clusters)],
    });
    const listener = lb.app.listeners[0]!;
    const port = lb.port('plain');
    let crossed = 0;
    let runs = 0;
    // Six runs; more (up to twelve) while none crossed threads: the kernel picks the thread.
    for (let i = 1; i <= 6 || (crossed === 0 && i <= 12); i++) {
      runs = i;
      const a0 = listener.stats.acceptedByThread();
      const to = target(port);
      // The session, then (once it is accepted) the cancel: each new accept shows which thread took it.
      const before = Object.fromEntries(Object.entries(clusters).map(([n, c]) => [n, cancels(c)]));
      const from = lb.lines.length;
      const child = spawnPsql(to, ['-At', '-c', 'select pg_sleep(60)'], { connString: 'sslmode=disable', timeoutMs: 20_000 });
      let stderr = '';
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.stdout!.resume();
      const exit = new Promise<number | null>((r) => child.once('close', r));
      await sleep(1_000);
      const a1 = listener.stats.acceptedByThread();
      child.kill('SIGINT');
      const status = await Promise.race([exit, sleep(10_000).then(() => 'timeout')]);
      const a2 = listener.stats.acceptedByThread();
      const sessionThread = a1.findIndex((n, k) => n > a0[k]!);
      const cancelThread = a2.findIndex((n, k) => n > a1[k]!);
      if (sessionThread >= 0 && cancelThread >= 0 && sessionThread !== cancelThread) crossed++;
      t.match(stderr, CANCELED, `#${i}: cancelled (exit ${String(status)}; session on thread ${sessionThread}, cancel on thread ${cancelThread})`);
      const cancelLine = await waitAccess(lb, from, 'plain', (l) => l.termination === 'cancel_forwarded', 'cancel line').catch(() => ({}) as Line);
      const session = await waitAccess(lb, from, 'plain', (l) => l.termination !== 'cancel_forwarded' && typeof l.server === 'string', 'session line').catch(() => ({}) as Line);
      t.equal(cancelLine.server, session.server, `#${i}: the cancel went to the session's server ${String(session.server)}`);
      const server = String(session.server) as 'pg1';
      if (clusters[server] !== undefined) t.equal(cancels(clusters[server]) - before[server]!, 1, `#${i}: ${server} logged the cancel`);
    }
    t.comment(`${crossed} of ${runs} cancels were taken by the other thread than their session`);
    summary.push(`in-process workers 2: ${crossed} of ${runs} cancels crossed threads`);
    t.ok(crossed > 0, 'at least one cancel crossed threads (the key table is shared)');
    noProblems(t, [c1, c2]);
  });

  t.teardown(() => {
    for (const s of summary) console.error(`# ${s}`);
  });
}

if (need(t, postgresMissing()) && need(t, opensslMissing)) main();
