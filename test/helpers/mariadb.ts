/**
 * Throw-away MariaDB servers for interop tests, and its client run
 * asynchronously (an l4lb in the test's own process keeps probing while it
 * runs).
 *
 * `startMariadb(t)` runs mariadb-install-db into a fresh temporary
 * directory (no test database, a root that logs in over the Unix socket
 * without a password, small InnoDB files), then `mariadbd` in the
 * foreground on a free loopback port with its socket, pid file and error
 * log in that directory, and returns once it accepts connections. Nothing
 * is shared with a server the distribution may run (Debian's on 3306): no
 * port, no socket, no option file (`--no-defaults`).
 *
 * mariadbd refuses to run as root unless told to: as root it runs with
 * `--user=root` (the directory is root's and thrown away).
 *
 * Bounds, so a hung or crashed test never leaves a server behind:
 * - the server runs under coreutils `timeout` (when present) with a hard
 *   lifetime, longer than tap's per-file timeout;
 * - teardown wakes a stopped server (SIGCONT), asks for a normal shutdown
 *   (SIGTERM), then SIGKILLs its process group, and removes the directory;
 * - a process 'exit' hook SIGKILLs whatever is still alive and removes the
 *   directories.
 *
 * Call `need(t, mariadbMissing())` (./requirements.js) first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { freePort } from './peers.js';

export interface MariadbServer {
  /** Always 127.0.0.1. */
  readonly host: string;
  readonly port: number;
  /** Its private directory (data, socket, error log). */
  readonly dir: string;
  /** The server's version line, e.g. "mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 ...". */
  readonly version: string;
  /** The error log so far (after stop(): the whole log, kept in memory). */
  log(): string;
  /** Sends `signal` to the server process (e.g. SIGSTOP, SIGCONT). */
  kill(signal: NodeJS.Signals): void;
  /** Runs SQL as root over the Unix socket; rejects with the client's stderr when it fails. Output: tab-separated rows, no header. */
  sql(statements: string): Promise<string>;
  /** Shutdown, SIGKILL if need be, directory removed. Idempotent; also run by the teardown. */
  stop(): Promise<void>;
}

export interface MariadbOptions {
  /** More server options (`--log-warnings=3`...). */
  args?: string[];
  /** Hard lifetime in seconds (default 300). */
  lifetimeS?: number;
  /** How long the server may take to accept connections (default 30 s). */
  readyTimeoutMs?: number;
}

const DEFAULT_LIFETIME_S = 300;
const DEFAULT_READY_TIMEOUT_MS = 30_000;
const CLIENT_TIMEOUT_MS = 30_000;
const MAX_OUTPUT_CHARS = 1_000_000;

function which(name: string): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', '/sbin', '/bin']) {
    if (dir === '') continue;
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

interface Found {
  server: string;
  installDb: string;
  client: string;
}

let cached: { ok: true; found: Found } | { ok: false; reason: string } | undefined;

function lookup(): { ok: true; found: Found } | { ok: false; reason: string } {
  if (cached !== undefined) return cached;
  const server = which('mariadbd');
  const installDb = which('mariadb-install-db');
  const client = which('mariadb');
  const lacking = [
    server === null ? 'mariadbd (Debian package mariadb-server)' : '',
    installDb === null ? 'mariadb-install-db (mariadb-server)' : '',
    client === null ? 'mariadb (mariadb-client)' : '',
  ].filter(Boolean);
  if (lacking.length > 0) cached = { ok: false, reason: `not found: ${lacking.join(', ')}` };
  else cached = { ok: true, found: { server: server!, installDb: installDb!, client: client! } };
  return cached;
}

/** Why MariaDB cannot run here (naming the packages), or null. */
export function mariadbMissing(): string | null {
  const r = lookup();
  return r.ok ? null : r.reason;
}

const timeoutBin = which('timeout');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Process groups and directories of live servers, for the exit hook. */
const live = new Map<string, number | undefined>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const [dir, pgid] of live) {
      if (pgid !== undefined) {
        try {
          process.kill(-pgid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

/** Runs a program to its end; SIGKILLed at timeoutMs. */
function run(argv: string[], timeoutMs: number, cwd: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < MAX_OUTPUT_CHARS) stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_OUTPUT_CHARS) stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      resolve({ status: null, stdout, stderr: `${stderr}spawn error: ${e.message}` });
    });
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
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
 * A fresh MariaDB on a free 127.0.0.1 port (retried on a new port, at most
 * 3 attempts, if the port was taken in between), with `--skip-name-resolve`
 * (clients are known by IP: `'user'@'127.0.0.1'`). The teardown is
 * registered on `t`.
 */
export async function startMariadb(t: Test, options: MariadbOptions = {}): Promise<MariadbServer> {
  const r = lookup();
  if (!r.ok) throw new Error(r.reason);
  const bins = r.found;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'l4lb-mariadb-'));
  installExitHook();
  live.set(dir, undefined);
  let server: ReturnType<typeof launch> | undefined;
  t.teardown(async () => {
    if (server !== undefined) await server.stop();
    live.delete(dir);
    rmSync(dir, { recursive: true, force: true });
  });
  const asRoot = process.getuid?.() === 0 ? ['--user=root'] : [];
  // Small InnoDB files: the install takes ~3 s and 22 MB instead of 114 MB.
  const small = ['--innodb-log-file-size=4M', '--innodb-buffer-pool-size=16M'];
  const dataDir = path.join(dir, 'data');
  const install = await run(
    [bins.installDb, '--no-defaults', `--datadir=${dataDir}`, ...asRoot, '--auth-root-authentication-method=normal', '--skip-test-db', '--skip-name-resolve', ...small],
    120_000,
    dir,
  );
  if (install.status !== 0) throw new Error(`mariadb-install-db failed (${install.status}):\n${install.stderr}\n${install.stdout}`);
  const version = (await run([bins.server, '--version'], 10_000, dir)).stdout.trim();

  let lastError: Error | undefined;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    server = launch(bins, dir, dataDir, port, version, [...asRoot, ...small, ...(options.args ?? [])], options);
    try {
      await server.ready;
      return server;
    } catch (err) {
      lastError = err as Error;
      await server.stop({ keepDir: true });
      if (!/Can't start server: Bind|Address already in use/i.test(lastError.message)) break;
    }
  }
  throw lastError ?? new Error('mariadbd did not start');
}

function launch(
  bins: Found,
  dir: string,
  dataDir: string,
  port: number,
  version: string,
  extra: string[],
  options: MariadbOptions,
): MariadbServer & { ready: Promise<void>; stop(o?: { keepDir?: boolean }): Promise<void> } {
  const logFile = path.join(dir, 'error.log');
  const socketPath = path.join(dir, 'mariadb.sock');
  const outFd = openSync(path.join(dir, 'stdout.log'), 'a');
  const lifetime = String(options.lifetimeS ?? DEFAULT_LIFETIME_S);
  const args = [
    bins.server,
    '--no-defaults',
    `--datadir=${dataDir}`,
    `--port=${port}`,
    '--bind-address=127.0.0.1',
    `--socket=${socketPath}`,
    `--pid-file=${path.join(dir, 'mariadbd.pid')}`,
    `--log-error=${logFile}`,
    '--skip-name-resolve',
    '--skip-log-bin',
    ...extra,
  ];
  // On expiry timeout sends SIGTERM (a normal shutdown), then SIGKILL 5 s later.
  const argv = timeoutBin !== null ? [timeoutBin, '--kill-after=5', lifetime, ...args] : args;
  // detached: the child leads its own process group, so the whole group can be killed.
  const child: ChildProcess = spawn(argv[0]!, argv.slice(1), { cwd: dir, stdio: ['ignore', outFd, outFd], detached: true });
  closeSync(outFd);
  live.set(dir, child.pid);
  let finalLog: string | undefined;
  const log = (): string => {
    if (finalLog !== undefined) return finalLog;
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
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
  /** The server's own pid (the child is `timeout` when present), from its pid file. */
  const serverPid = (): number | undefined => {
    try {
      const pid = Number(readFileSync(path.join(dir, 'mariadbd.pid'), 'utf8').trim());
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  };
  const signal = (pid: number | undefined, sig: NodeJS.Signals): void => {
    if (pid === undefined) return;
    try {
      process.kill(pid, sig);
    } catch {
      // gone
    }
  };

  const readyTimeoutMs = options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  const ready = (async () => {
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (exitStatus !== null) throw new Error(`mariadbd exited (${exitStatus}) before it accepted connections on 127.0.0.1:${port}; log:\n${log()}`);
      // "ready for connections" is logged once both the port and the socket listen.
      if (/ready for connections/.test(log()) && (await accepts(port))) return;
      if (Date.now() > deadline) throw new Error(`mariadbd did not accept connections on 127.0.0.1:${port} within ${readyTimeoutMs}ms; log:\n${log()}`);
      await sleep(50);
    }
  })();

  let stopping: Promise<void> | undefined;
  const stop = (o: { keepDir?: boolean } = {}): Promise<void> =>
    (stopping ??= (async () => {
      if (exitStatus === null) {
        // A test may have stopped it (SIGSTOP): wake it so it can shut down.
        signal(serverPid(), 'SIGCONT');
        signal(serverPid(), 'SIGTERM');
        const timer = new Promise<boolean>((r) => setTimeout(() => r(false), 15_000).unref());
        const done = await Promise.race([exited.then(() => true), timer]);
        if (!done && child.pid !== undefined) {
          signal(-child.pid, 'SIGKILL');
          signal(serverPid(), 'SIGKILL');
          await Promise.race([exited, sleep(5_000)]);
        }
      }
      finalLog = log();
      if (!o.keepDir) {
        live.delete(dir);
        rmSync(dir, { recursive: true, force: true });
      }
    })());

  return {
    host: '127.0.0.1',
    port,
    dir,
    version,
    log,
    ready,
    stop,
    kill: (sig) => {
      const pid = serverPid();
      if (pid === undefined) throw new Error(`cannot send ${sig} to mariadbd: no pid file`);
      process.kill(pid, sig);
    },
    sql: async (statements) => {
      const r = await run([bins.client, '--no-defaults', `--socket=${socketPath}`, '--user=root', '--batch', '--skip-column-names', '-e', statements], CLIENT_TIMEOUT_MS, dir);
      if (r.status !== 0) throw new Error(`mariadb client failed (${r.status}): ${r.stderr.trim()}`);
      return r.stdout;
    },
  };
}
