/**
 * Throw-away Redis servers for interop tests: `startRedis(t, options)` runs
 * redis-server in the foreground on a free loopback port (plaintext, or TLS
 * only: `--port 0 --tls-port N`), with its configuration file, log file and
 * working directory in a fresh temporary directory, no persistence, and
 * returns once it answers. The teardown registered on `t` stops it and
 * removes the directory.
 *
 * Bounds, so a hung or crashed test never leaves a server behind: it runs
 * under coreutils `timeout` (when present) with a hard lifetime longer than
 * tap's per-file timeout; teardown sends SIGCONT and SIGTERM, then SIGKILL;
 * a process 'exit' hook SIGKILLs whatever is still alive.
 *
 * Call `need(t, redisMissing())` (./requirements.js) first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import type { Test } from 'tap';
import { forgetGroupOnExit, freePort, killGroupOnExit } from './peers.js';

export interface RedisServer {
  readonly host: string;
  readonly port: number;
  readonly dir: string;
  /** The log file so far (after stop(): the whole log, kept in memory). */
  log(): string;
  /** Sends `signal` to the server process. */
  kill(signal: NodeJS.Signals): void;
  /** SIGTERM, SIGKILL if need be, directory removed. Idempotent; also run by the teardown. */
  stop(): Promise<void>;
}

export interface RedisOptions {
  /** Serve TLS only, with these PEM files (the port is then the TLS port). */
  tls?: { cert: string; key: string; ca: string };
  /** requirepass: clients must AUTH with this password. */
  password?: string;
  /** Redis's loglevel (default verbose). */
  loglevel?: 'debug' | 'verbose' | 'notice' | 'warning';
  /** Hard lifetime in seconds (default 300). */
  lifetimeS?: number;
}

const DEFAULT_LIFETIME_S = 300;
const READY_TIMEOUT_MS = 20_000;

function which(name: string): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), '/usr/bin', '/usr/local/bin', '/usr/sbin']) {
    if (dir === '') continue;
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

const serverBin = which('redis-server');
const timeoutBin = which('timeout');

/** Why redis-server cannot run here (naming the package), or null. */
export function redisMissing(): string | null {
  return serverBin === null ? 'redis-server is not installed (Debian package redis-server)' : null;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A RESP command: Redis reads any bytes in it as they are (a password with spaces too). */
function command(...words: string[]): string {
  return `*${words.length}\r\n${words.map((w) => `$${Buffer.byteLength(w)}\r\n${w}\r\n`).join('')}`;
}

/**
 * One PING, plaintext or TLS (verifying nothing: this only asks whether it
 * is up), then QUIT: Redis closes the connection itself, so the check
 * leaves nothing in its log. True on +PONG.
 */
function pings(port: number, options: RedisOptions): Promise<boolean> {
  return new Promise((resolve) => {
    const socket: net.Socket =
      options.tls !== undefined ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }) : net.connect({ host: '127.0.0.1', port });
    let got = '';
    socket.setTimeout(2_000, () => socket.destroy());
    socket.once(options.tls !== undefined ? 'secureConnect' : 'connect', () => {
      const auth = options.password !== undefined ? command('AUTH', options.password) : '';
      socket.write(`${auth}${command('PING')}${command('QUIT')}`);
    });
    socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
    socket.on('error', () => {});
    socket.once('close', () => resolve(got.includes('+PONG')));
  });
}

/** A fresh redis-server on a free 127.0.0.1 port; retried on a new port (at most 3 attempts) if it was taken in between. */
export async function startRedis(t: Test, options: RedisOptions = {}): Promise<RedisServer> {
  if (serverBin === null) throw new Error(redisMissing()!);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'l4lb-redis-'));
  let server: RedisServer | undefined;
  t.teardown(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  let lastError: Error | undefined;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const launched = launch(serverBin, dir, port, options);
    server = launched;
    try {
      await launched.ready;
      return launched;
    } catch (err) {
      lastError = err as Error;
      await launched.stop();
      if (!/Address already in use/i.test(lastError.message)) break;
    }
  }
  throw lastError ?? new Error('redis-server did not start');
}

function launch(bin: string, dir: string, port: number, options: RedisOptions): RedisServer & { ready: Promise<void> } {
  const logFile = path.join(dir, `redis-${port}.log`);
  const lines = [
    'bind 127.0.0.1',
    `dir ${dir}`,
    `logfile ${logFile}`,
    `loglevel ${options.loglevel ?? 'verbose'}`,
    'save ""',
    'appendonly no',
    'daemonize no',
  ];
  if (options.tls !== undefined) {
    lines.push('port 0', `tls-port ${port}`, `tls-cert-file ${options.tls.cert}`, `tls-key-file ${options.tls.key}`, `tls-ca-cert-file ${options.tls.ca}`, 'tls-auth-clients no');
  } else {
    lines.push(`port ${port}`);
  }
  // In the file, not on the command line (where ps shows it).
  if (options.password !== undefined) lines.push(`requirepass "${options.password}"`);
  const conf = path.join(dir, `redis-${port}.conf`);
  writeFileSync(conf, `${lines.join('\n')}\n`, { mode: 0o600 });
  const lifetime = String(options.lifetimeS ?? DEFAULT_LIFETIME_S);
  const argv = timeoutBin !== null ? [timeoutBin, '--kill-after=5', lifetime, bin, conf] : [bin, conf];
  const child: ChildProcess = spawn(argv[0]!, argv.slice(1), { cwd: dir, stdio: 'ignore', detached: true });
  if (child.pid !== undefined) killGroupOnExit(child.pid);
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
  /** redis-server itself: `timeout` execs nothing, it forks; the server is its only child, found by the log's pid prefix. */
  const serverPid = (): number | undefined => {
    const m = /^(\d+):M /m.exec(log());
    return m === null ? undefined : Number(m[1]);
  };
  const signal = (pid: number | undefined, sig: NodeJS.Signals): void => {
    if (pid === undefined) return;
    try {
      process.kill(pid, sig);
    } catch {
      // gone
    }
  };
  const ready = (async () => {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (exitStatus !== null) throw new Error(`redis-server exited (${exitStatus}) before it answered on 127.0.0.1:${port}; log:\n${log()}`);
      if (/Ready to accept connections/.test(log()) && (await pings(port, options))) return;
      if (Date.now() > deadline) throw new Error(`redis-server did not answer on 127.0.0.1:${port} within ${READY_TIMEOUT_MS}ms; log:\n${log()}`);
      await sleep(50);
    }
  })();
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (exitStatus === null && child.pid !== undefined) {
        signal(-child.pid, 'SIGCONT');
        signal(-child.pid, 'SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const done = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 5_000)))]);
        clearTimeout(timer);
        if (!done) {
          signal(-child.pid, 'SIGKILL');
          await exited;
        }
      }
      if (child.pid !== undefined) forgetGroupOnExit(child.pid);
      finalLog = log();
    })());
  return {
    host: '127.0.0.1',
    port,
    dir,
    log,
    ready,
    stop,
    kill: (sig) => {
      const pid = serverPid();
      if (pid === undefined) throw new Error(`cannot send ${sig} to redis-server: its pid is not in the log yet`);
      process.kill(pid, sig);
    },
  };
}
