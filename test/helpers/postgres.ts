/**
 * Throw-away PostgreSQL clusters for interop tests, and its clients (psql,
 * pgbench) run asynchronously, so an l4lb in the test's own process keeps
 * serving while they run.
 *
 * `startPostgres(t)` runs initdb into a fresh temporary directory, then
 * `postgres -D DIR` in the foreground on a free loopback port, with its
 * Unix socket and its log inside the data directory, and returns once the
 * server accepts connections. The teardown registered on `t` stops it and
 * removes the directory. Nothing is shared with a cluster the distribution
 * may run (Debian's postinst starts one on 5432): no port, no socket
 * directory, no configuration file.
 *
 * PostgreSQL refuses to run as root. When the tests run as root, initdb and
 * the server run as the `postgres` user the Debian package creates (via
 * setpriv, or runuser), and the temporary directory is given to that user.
 *
 * Bounds, so a hung or crashed test never leaves a server behind:
 * - the server runs under coreutils `timeout` (when present) with a hard
 *   lifetime, longer than tap's per-file timeout;
 * - teardown asks for a fast shutdown (SIGINT: SIGTERM would be PostgreSQL's
 *   "smart" shutdown, which waits for every client to leave), then SIGKILLs
 *   the process group and every process still working in the data directory
 *   (backends lead their own sessions, so a group kill misses them);
 * - a process 'exit' hook SIGKILLs whatever is still alive and removes the
 *   directories;
 * - dynamic shared memory lives in files inside the data directory, and the
 *   small System V segment of a server that did not shut down cleanly is
 *   removed, so a killed server leaves nothing in /dev/shm or the IPC table.
 *
 * Call `need(t, postgresMissing())` (./requirements.js) first: a missing
 * PostgreSQL fails the test when CI is set, and skips it with the reason
 * printed otherwise.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  chownSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { freePort } from './peers.js';

export type PgProgram = 'initdb' | 'postgres' | 'psql' | 'pgbench' | 'pg_ctl' | 'pg_isready';

/** Where a client connects: a cluster, or anything in front of one (an l4lb). A host starting with '/' is a Unix socket directory. */
export interface PgTarget {
  readonly host: string;
  readonly port: number;
}

export interface PgCluster extends PgTarget {
  /** Always 127.0.0.1. */
  readonly host: string;
  readonly port: number;
  /** The data directory; it also holds the Unix socket (pass it as `host` to connect through the socket) and server.log. */
  readonly dataDir: string;
  /** The server's version, e.g. "15.18". */
  readonly version: string;
  /** The postmaster's process id. */
  readonly pid: number;
  /** The server's log so far (after stop(): the whole log, kept in memory). */
  log(): string;
  /** How the server process exited (`code N` or `signal S`), or null while it runs. */
  exited(): string | null;
  /** Fast shutdown, then SIGKILL if need be; removes the directory. Idempotent; also run by the teardown. */
  stop(): Promise<void>;
  /** Sends `signal` to the postmaster alone (e.g. SIGSTOP, SIGCONT, SIGKILL, SIGHUP to reload). */
  kill(signal: NodeJS.Signals): void;
}

export interface PgClusterOptions {
  /**
   * Serve TLS with this certificate and key (and, with `ca`, ask for and
   * verify client certificates against it: `clientcert=verify-ca` in hba
   * lines, or `cert` authentication). The files are copied into the data
   * directory.
   */
  ssl?: { cert: string; key: string; ca?: string };
  /** pg_hba.conf lines, replacing the default (`local all all trust` and `host all all 127.0.0.1/32 trust`). */
  hba?: string[];
  /** postgresql.conf settings, after (so overriding) the harness's own; values are quoted for you. */
  settings?: Record<string, string>;
  /** How long the server may take to accept connections (default 30 s). */
  readyTimeoutMs?: number;
  /** Hard lifetime of the server in seconds (default 300). */
  lifetimeS?: number;
}

export interface PgResult {
  /** Exit code, or null when killed by a signal. */
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the harness killed it at timeoutMs. */
  timedOut: boolean;
}

export interface PgClientOptions {
  /** Added to the client's environment (PGSSLMODE, PGPASSWORD, ...); an undefined value removes a variable. */
  env?: NodeJS.ProcessEnv;
  /** Written to the client's standard input, which is then closed. */
  input?: string;
  /** SIGKILLed after this long (psql: default 30 s). */
  timeoutMs?: number;
  /** A libpq connection string (`sslmode=require ...` or a postgresql:// URI), passed as the database name; it overrides host/port. */
  connString?: string;
}

const DEFAULT_LIFETIME_S = 300;
const DEFAULT_READY_TIMEOUT_MS = 30_000;
const DEFAULT_CLIENT_TIMEOUT_MS = 30_000;
/** libpq's connect timeout for every client (seconds). */
const CONNECT_TIMEOUT_S = '10';
const MAX_OUTPUT_CHARS = 1_000_000;
const SERVER_USER = 'postgres';

// ---------------------------------------------------------------------------
// Finding PostgreSQL

interface Found {
  bindir: string;
  bins: Partial<Record<PgProgram, string>>;
  version: string;
  /** Prefix that runs a command as the server user (root only), else []. */
  asUser: string[];
  /** uid/gid of the server user (root only). */
  owner: { uid: number; gid: number } | null;
}

let cached: { ok: true; found: Found } | { ok: false; reason: string } | undefined;

function which(name: string, extra: string[] = []): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), ...extra]) {
    if (dir === '') continue;
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

/** "15" < "16", "9.6" < "10". */
function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * The directory of the server programs: $L4LB_TEST_PG_BINDIR when set, else
 * the highest /usr/lib/postgresql/VERSION/bin (Debian, Ubuntu) holding
 * initdb, else the directory of initdb in PATH.
 */
function locateBindir(): { dir: string | null; where: string } {
  const override = process.env.L4LB_TEST_PG_BINDIR;
  if (override !== undefined && override !== '') {
    return { dir: existsSync(path.join(override, 'initdb')) ? override : null, where: `L4LB_TEST_PG_BINDIR=${override}` };
  }
  let versions: string[] = [];
  try {
    versions = readdirSync('/usr/lib/postgresql').filter((v) => /^\d+(\.\d+)?$/.test(v));
  } catch {
    // not Debian's layout
  }
  versions.sort((a, b) => compareVersions(b, a));
  for (const v of versions) {
    const dir = `/usr/lib/postgresql/${v}/bin`;
    if (existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'postgres'))) return { dir, where: dir };
  }
  const initdb = which('initdb');
  return { dir: initdb === null ? null : path.dirname(initdb), where: '/usr/lib/postgresql/*/bin or PATH' };
}

function userIds(name: string): { uid: number; gid: number } | null {
  const uid = spawnSync('id', ['-u', name], { encoding: 'utf8', timeout: 10_000 });
  const gid = spawnSync('id', ['-g', name], { encoding: 'utf8', timeout: 10_000 });
  if (uid.status !== 0 || gid.status !== 0) return null;
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

function find(): { ok: true; found: Found } | { ok: false; reason: string } {
  const pkg = 'Debian package postgresql';
  const { dir, where } = locateBindir();
  if (dir === null) return { ok: false, reason: `PostgreSQL's initdb was not found in ${where} (${pkg})` };
  const bins: Partial<Record<PgProgram, string>> = {};
  for (const name of ['initdb', 'postgres', 'psql', 'pgbench', 'pg_ctl', 'pg_isready'] as const) {
    const own = path.join(dir, name);
    const p = existsSync(own) ? own : which(name, ['/usr/bin', '/usr/local/bin']);
    if (p !== null) bins[name] = p;
  }
  const lacking = (['initdb', 'postgres', 'psql', 'pgbench'] as const).filter((n) => bins[n] === undefined);
  if (lacking.length > 0) return { ok: false, reason: `PostgreSQL's ${lacking.join(', ')} not found in ${dir} or PATH (${pkg})` };
  const v = spawnSync(bins.postgres!, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (v.status !== 0) return { ok: false, reason: `${bins.postgres} --version failed: ${(v.stderr || String(v.error)).trim()} (${pkg})` };
  const version = /\(PostgreSQL\)\s+(\S+)/.exec(v.stdout)?.[1] ?? v.stdout.trim();
  let asUser: string[] = [];
  let owner: Found['owner'] = null;
  if (process.getuid?.() === 0) {
    owner = userIds(SERVER_USER);
    if (owner === null) return { ok: false, reason: `PostgreSQL refuses to run as root and user ${SERVER_USER} does not exist (${pkg} creates it)` };
    const setpriv = which('setpriv', ['/usr/bin', '/bin']);
    const runuser = which('runuser', ['/usr/sbin', '/sbin']);
    if (setpriv !== null) asUser = [setpriv, `--reuid=${SERVER_USER}`, `--regid=${SERVER_USER}`, '--init-groups', '--'];
    else if (runuser !== null) asUser = [runuser, '-u', SERVER_USER, '--'];
    else return { ok: false, reason: 'PostgreSQL refuses to run as root and neither setpriv nor runuser was found (Debian package util-linux)' };
  }
  return { ok: true, found: { bindir: dir, bins, version, asUser, owner } };
}

function lookup(): { ok: true; found: Found } | { ok: false; reason: string } {
  return (cached ??= find());
}

/** Why PostgreSQL cannot run here (naming the package to install), or null when initdb, postgres, psql and pgbench are usable. */
export function postgresMissing(): string | null {
  const r = lookup();
  return r.ok ? null : r.reason;
}

/** Absolute path of a PostgreSQL program; throws when it is missing. */
export function pgBin(name: PgProgram): string {
  const r = lookup();
  if (!r.ok) throw new Error(r.reason);
  const p = r.found.bins[name];
  if (p === undefined) throw new Error(`PostgreSQL's ${name} not found in ${r.found.bindir} or PATH`);
  return p;
}

function found(): Found {
  const r = lookup();
  if (!r.ok) throw new Error(r.reason);
  return r.found;
}

// ---------------------------------------------------------------------------
// Processes and leftovers

const timeoutBin = which('timeout', ['/usr/bin', '/bin']);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True when `p` settles within `ms`, else false; the timer never outlives the answer (no idle event loop kept alive). */
function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.then(() => true),
    new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Live servers (process group, data directory, base directory) and clients, for the exit hook. */
const liveServers = new Map<string, { pgid: number | undefined; dataDir: string; pmPid: () => number | undefined }>();
const liveClients = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of liveClients) {
      try {
        child.kill('SIGKILL');
      } catch {
        // gone
      }
    }
    for (const [base, server] of liveServers) {
      const pm = server.pmPid();
      signalGroup(server.pgid, 'SIGKILL');
      for (const pid of processesIn(server.dataDir)) signalPid(pid, 'SIGKILL');
      if (pm !== undefined) removeSysvSegments(pm);
      rmSync(base, { recursive: true, force: true });
    }
  });
}

function signalPid(pid: number | undefined, signal: NodeJS.Signals): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

function signalGroup(pgid: number | undefined, signal: NodeJS.Signals): void {
  if (pgid !== undefined) signalPid(-pgid, signal);
}

/** Processes whose working directory is `dir`: the postmaster and every backend chdir into the data directory (Linux /proc; [] elsewhere). */
function processesIn(dir: string): number[] {
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const e of entries) {
    try {
      if (readlinkSync(`/proc/${e}/cwd`) === dir) pids.push(Number(e));
    } catch {
      // gone, or not ours to look at
    }
  }
  return pids;
}

/**
 * Removes the System V segments created by `pid` (a postmaster that did not
 * shut down cleanly leaves its small interlock segment behind). Linux only.
 */
function removeSysvSegments(pid: number): void {
  let table = '';
  try {
    table = readFileSync('/proc/sysvipc/shm', 'utf8');
  } catch {
    return;
  }
  const [header, ...rows] = table.trim().split('\n');
  const cols = (header ?? '').trim().split(/\s+/);
  const idCol = cols.indexOf('shmid');
  const cpidCol = cols.indexOf('cpid');
  if (idCol < 0 || cpidCol < 0) return;
  for (const row of rows) {
    const f = row.trim().split(/\s+/);
    if (Number(f[cpidCol]) === pid && f[idCol] !== undefined) spawnSync('ipcrm', ['-m', f[idCol]], { timeout: 5_000 });
  }
}

/** Environment for PostgreSQL programs: no PG* variable from the caller's environment leaks in. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return env;
}

/** Runs a program to its end, asynchronously; SIGKILLed at timeoutMs. */
function collect(child: ChildProcess, timeoutMs: number, input?: string): Promise<PgResult> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < MAX_OUTPUT_CHARS) stdout += d;
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_OUTPUT_CHARS) stderr += d;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      resolve({ status: null, signal: null, stdout, stderr: `${stderr}spawn error: ${e.message}\n`, timedOut });
    });
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, timedOut });
    });
    if (child.stdin) {
      child.stdin.on('error', () => {});
      child.stdin.end(input ?? '');
    }
  });
}

// ---------------------------------------------------------------------------
// Clients

function clientEnv(target: PgTarget, options: PgClientOptions): NodeJS.ProcessEnv {
  return {
    ...cleanEnv(),
    PGHOST: target.host,
    PGPORT: String(target.port),
    PGUSER: SERVER_USER,
    PGDATABASE: 'postgres',
    PGCONNECT_TIMEOUT: CONNECT_TIMEOUT_S,
    ...options.env,
  };
}

function spawnClient(program: PgProgram, args: string[], target: PgTarget, options: PgClientOptions, stdin: 'pipe' | 'ignore'): ChildProcess {
  const child = spawn(pgBin(program), args, { env: clientEnv(target, options), stdio: [stdin, 'pipe', 'pipe'] });
  installExitHook();
  liveClients.add(child);
  const done = (): void => {
    liveClients.delete(child);
  };
  child.once('exit', done);
  child.once('error', done);
  return child;
}

function psqlArgs(args: string[], options: PgClientOptions): string[] {
  return ['-X', '-q', '-v', 'ON_ERROR_STOP=1', ...(options.connString !== undefined ? ['-d', options.connString] : []), ...args];
}

/**
 * psql against `target`, asynchronously: `psql -X -q -v ON_ERROR_STOP=1
 * [-d connString] ...args` as user postgres, database postgres, with
 * PGCONNECT_TIMEOUT; SIGKILLed at timeoutMs (default 30 s). libpq's default
 * sslmode (prefer) applies unless connString or env says otherwise.
 * Example: `psql(cluster, ['-At', '-c', 'select 1'])`.
 */
export function psql(target: PgTarget, args: string[], options: PgClientOptions = {}): Promise<PgResult> {
  const child = spawnClient('psql', psqlArgs(args, options), target, options, options.input !== undefined ? 'pipe' : 'ignore');
  return collect(child, options.timeoutMs ?? DEFAULT_CLIENT_TIMEOUT_MS, options.input);
}

/**
 * psql as {@link psql} runs it, but returned as it starts, for tests that
 * signal it (SIGINT makes psql send a cancel request for the running
 * query). Its stdin is a pipe (`input`, when given, is written and stdin
 * closed); stdout/stderr are pipes the caller reads. SIGKILLed at timeoutMs
 * (default 30 s) and on process exit.
 */
export function spawnPsql(target: PgTarget, args: string[], options: PgClientOptions = {}): ChildProcess {
  const child = spawnClient('psql', psqlArgs(args, options), target, options, 'pipe');
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? DEFAULT_CLIENT_TIMEOUT_MS);
  child.once('exit', () => clearTimeout(timer));
  child.stdin?.on('error', () => {});
  if (options.input !== undefined) child.stdin?.end(options.input);
  return child;
}

/** `pgbench -i -s SCALE` (default 1): creates and fills the pgbench tables. */
export function pgbenchInit(target: PgTarget, options: PgClientOptions & { scale?: number } = {}): Promise<PgResult> {
  const args = ['-i', '-s', String(options.scale ?? 1), ...(options.connString !== undefined ? [options.connString] : [])];
  return collect(spawnClient('pgbench', args, target, options, 'ignore'), options.timeoutMs ?? 60_000);
}

export interface PgbenchOptions extends PgClientOptions {
  /** -c (default 4). */
  clients?: number;
  /** -j (default 2). */
  jobs?: number;
  /** -T (default 3). */
  seconds?: number;
  /** More pgbench options, before the database name (e.g. ['-S'] for select-only, ['-C'] to connect per transaction). */
  args?: string[];
}

/**
 * A pgbench run, `pgbench -c C -j J -T S ...args`, after {@link pgbenchInit};
 * default timeout: the run's length plus 30 s. `tps` is pgbench's figure
 * without the initial connection time (null when it printed none).
 */
export async function pgbench(target: PgTarget, options: PgbenchOptions = {}): Promise<PgResult & { tps: number | null }> {
  const seconds = options.seconds ?? 3;
  const args = [
    '-c',
    String(options.clients ?? 4),
    '-j',
    String(options.jobs ?? 2),
    '-T',
    String(seconds),
    ...(options.args ?? []),
    ...(options.connString !== undefined ? [options.connString] : []),
  ];
  const r = await collect(spawnClient('pgbench', args, target, options, 'ignore'), options.timeoutMs ?? seconds * 1000 + 30_000);
  return { ...r, tps: parseTps(r.stdout) };
}

/** pgbench's "tps = N (without initial connection time)" (older: "excluding connections establishing"), else its first tps line. */
export function parseTps(out: string): number | null {
  const m = /^tps = ([\d.]+) \((?:without initial connection time|excluding connections establishing)\)/m.exec(out) ?? /^tps = ([\d.]+)/m.exec(out);
  return m ? Number(m[1]) : null;
}

// ---------------------------------------------------------------------------
// Servers

/** A temporary-directory root the server user can traverse: os.tmpdir() when every ancestor is world-searchable, else /tmp. */
function tmpRoot(asRoot: boolean): string {
  const dir = os.tmpdir();
  if (!asRoot) return dir;
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      if ((statSync(d).mode & 0o001) === 0) return '/tmp';
    } catch {
      return '/tmp';
    }
    if (d === path.dirname(d)) return dir;
  }
}

/** A postgresql.conf value, single-quoted. */
function quote(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1_000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/**
 * A fresh cluster: initdb (superuser postgres, trust authentication, UTF8,
 * locale C, no sync), then the server on a free 127.0.0.1 port (retried on
 * a new port, at most 3 attempts, if the port was taken in between) with
 * fsync off, small shared buffers and max_connections 50. Resolves once it
 * accepts connections; the teardown is registered on `t`.
 */
export async function startPostgres(t: Test, options: PgClusterOptions = {}): Promise<PgCluster> {
  const pg = found();
  const asRoot = pg.owner !== null;
  const base = mkdtempSync(path.join(tmpRoot(asRoot), 'l4lb-pg-'));
  const dataDir = path.join(base, 'data');
  installExitHook();
  liveServers.set(base, { pgid: undefined, dataDir, pmPid: () => undefined });
  let server: Launched | undefined;
  t.teardown(async () => {
    if (server !== undefined) await server.stop();
    liveServers.delete(base);
    rmSync(base, { recursive: true, force: true });
  });

  if (pg.owner !== null) {
    chmodSync(base, 0o755);
    chownSync(base, pg.owner.uid, pg.owner.gid);
  }
  const env = { ...cleanEnv(), HOME: base, LC_ALL: 'C' };
  const initdb = [...pg.asUser, pg.bins.initdb!, '-D', dataDir, '-U', SERVER_USER, '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'];
  const initChild = spawn(initdb[0]!, initdb.slice(1), { cwd: base, env, stdio: ['ignore', 'pipe', 'pipe'] });
  liveClients.add(initChild);
  const init = await collect(initChild, 60_000);
  liveClients.delete(initChild);
  if (init.status !== 0) {
    throw new Error(`initdb failed (${init.status ?? init.signal}${init.timedOut ? ', timed out' : ''}):\n${init.stderr}\n${init.stdout}`);
  }
  configure(dataDir, options, pg.owner);

  let lastError: Error | undefined;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    server = launch(pg, base, dataDir, port, options);
    try {
      await server.ready;
      return server;
    } catch (err) {
      lastError = err as Error;
      await server.stop({ keepDir: true });
      if (!/could not bind|already in use|could not create any TCP\/IP sockets/i.test(lastError.message)) break;
    }
  }
  throw lastError ?? new Error('postgres did not start');
}

function configure(dataDir: string, options: PgClusterOptions, owner: Found['owner']): void {
  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: dataDir,
    logging_collector: 'off',
    log_destination: 'stderr',
    log_line_prefix: '%m [%p] ',
    lc_messages: 'C',
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    shared_buffers: '16MB',
    max_connections: '50',
    // In files under the data directory (pg_dynshmem): nothing left in /dev/shm when a test SIGKILLs the server.
    dynamic_shared_memory_type: 'mmap',
  };
  const give = (file: string, mode: number): void => {
    chmodSync(file, mode);
    if (owner !== null) chownSync(file, owner.uid, owner.gid);
  };
  if (options.ssl !== undefined) {
    copyFileSync(options.ssl.cert, path.join(dataDir, 'server.crt'));
    give(path.join(dataDir, 'server.crt'), 0o644);
    copyFileSync(options.ssl.key, path.join(dataDir, 'server.key'));
    give(path.join(dataDir, 'server.key'), 0o600);
    Object.assign(settings, { ssl: 'on', ssl_cert_file: 'server.crt', ssl_key_file: 'server.key' });
    if (options.ssl.ca !== undefined) {
      copyFileSync(options.ssl.ca, path.join(dataDir, 'root.crt'));
      give(path.join(dataDir, 'root.crt'), 0o644);
      settings.ssl_ca_file = 'root.crt';
    }
  }
  Object.assign(settings, options.settings);
  const conf = Object.entries(settings).map(([k, v]) => `${k} = ${quote(v)}`);
  appendFileSync(path.join(dataDir, 'postgresql.conf'), `\n# test harness\n${conf.join('\n')}\n`);
  const hba = options.hba ?? ['local all all trust', 'host all all 127.0.0.1/32 trust'];
  writeFileSync(path.join(dataDir, 'pg_hba.conf'), `${hba.join('\n')}\n`);
  give(path.join(dataDir, 'pg_hba.conf'), 0o600);
}

/** A server as launch() returns it: `ready` settles once it accepts connections; stop() may keep the directory for a retry. */
type Launched = PgCluster & { ready: Promise<void>; stop(o?: { keepDir?: boolean }): Promise<void> };

function launch(pg: Found, base: string, dataDir: string, port: number, options: PgClusterOptions): Launched {
  const logFile = path.join(dataDir, 'server.log');
  // A killed earlier attempt may have left its pid file (reading "ready"): start from none.
  rmSync(path.join(dataDir, 'postmaster.pid'), { force: true });
  const logFd = openSync(logFile, 'w');
  const lifetime = String(options.lifetimeS ?? DEFAULT_LIFETIME_S);
  const server = [...pg.asUser, pg.bins.postgres!, '-D', dataDir, '-p', String(port)];
  // On expiry timeout sends SIGINT (fast shutdown), then SIGKILL 5 s later.
  const argv = timeoutBin !== null ? [timeoutBin, '--signal=INT', '--kill-after=5', lifetime, ...server] : server;
  const env = { ...cleanEnv(), HOME: base, LC_ALL: 'C' };
  // detached: the child leads its own process group, so the whole group can be killed.
  const child = spawn(argv[0]!, argv.slice(1), { cwd: dataDir, env, stdio: ['ignore', logFd, logFd], detached: true });
  closeSync(logFd);
  let finalLog: string | undefined;
  const log = (): string => {
    if (finalLog !== undefined) return finalLog;
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  let pmPid: number | undefined;
  liveServers.set(base, { pgid: child.pid, dataDir, pmPid: () => pmPid });

  let exitStatus: string | null = null;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitStatus = signal !== null ? `signal ${signal}` : `code ${code}`;
      resolve();
    });
    child.once('error', (e) => {
      exitStatus = `spawn error ${e.message}`;
      resolve();
    });
  });

  const readyTimeoutMs = options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  // postmaster.pid's 8th line is "ready" once connections are accepted (PostgreSQL 10+); reading it,
  // unlike a connection attempt, puts no "the database system is starting up" FATAL in the log.
  const ready = (async () => {
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (exitStatus !== null) throw new Error(`postgres exited (${exitStatus}) before it accepted connections on 127.0.0.1:${port}; log:\n${log()}`);
      let lines: string[] = [];
      try {
        lines = readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n');
      } catch {
        // not yet written
      }
      const pid = Number(lines[0]);
      if (Number.isInteger(pid) && pid > 0) pmPid = pid;
      const status = lines[7]?.trim();
      if ((status === 'ready' || (lines.length > 0 && lines.length < 8)) && (await accepts(port))) return;
      if (Date.now() > deadline) throw new Error(`postgres did not accept connections on 127.0.0.1:${port} within ${readyTimeoutMs}ms; log:\n${log()}`);
      await sleep(50);
    }
  })();

  let stopping: Promise<void> | undefined;
  const stop = (o: { keepDir?: boolean } = {}): Promise<void> =>
    (stopping ??= (async () => {
      if (exitStatus === null) {
        // A test may have stopped the postmaster (SIGSTOP): wake it so it can shut down.
        signalPid(pmPid, 'SIGCONT');
        signalGroup(child.pid, 'SIGCONT');
        signalGroup(child.pid, 'SIGINT');
        signalPid(pmPid, 'SIGINT');
        const done = await within(exited, 10_000);
        if (!done) {
          signalGroup(child.pid, 'SIGKILL');
          await within(exited, 5_000);
        }
      }
      // Backends lead their own sessions: anything still working in the data directory goes too.
      const left = processesIn(dataDir);
      for (const pid of left) signalPid(pid, 'SIGKILL');
      if (left.length > 0) await sleep(100);
      finalLog = log();
      if (pmPid !== undefined && !/database system is shut down/.test(finalLog)) removeSysvSegments(pmPid);
      if (!o.keepDir) {
        liveServers.delete(base);
        rmSync(base, { recursive: true, force: true });
      } else {
        liveServers.set(base, { pgid: undefined, dataDir, pmPid: () => undefined });
      }
    })());

  return {
    host: '127.0.0.1',
    port,
    dataDir,
    version: pg.version,
    get pid(): number {
      return pmPid ?? child.pid ?? 0;
    },
    log,
    exited: () => exitStatus,
    ready,
    stop,
    kill: (signal) => {
      if (pmPid === undefined || !signalPid(pmPid, signal)) throw new Error(`cannot send ${signal} to the postmaster (pid ${pmPid ?? 'unknown'}): not running`);
    },
  };
}
