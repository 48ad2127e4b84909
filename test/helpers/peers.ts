/**
 * Real peers nobody here wrote (nginx, HAProxy) for interop tests.
 *
 * Each peer runs in the foreground as a child process of the test, on a free
 * loopback port, with its configuration, pid file, logs and temp files in its
 * own temporary directory. A launcher returns once the port accepts
 * connections and registers a teardown that kills the process and removes
 * the directory.
 *
 * Bounds, so a hung or crashed test never leaves a peer behind:
 * - every peer runs under coreutils `timeout` (when present) with a hard
 *   lifetime, longer than tap's per-file timeout;
 * - teardown sends SIGTERM, then SIGKILL to the peer's process group;
 * - a process 'exit' hook SIGKILLs whatever is still alive.
 *
 * `requirePeer(t, name)` finds the binary (and, for nginx, the stream
 * module). When it is missing, the test FAILS if the CI environment variable
 * is set, and is otherwise skipped with the reason printed: never silently.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';

export type PeerName = 'nginx' | 'haproxy';

/** A usable peer program. */
export interface PeerBinary {
  readonly name: PeerName;
  /** Absolute path of the executable. */
  readonly path: string;
  /** First line of its version output, for test comments. */
  readonly version: string;
  /**
   * nginx only: the `load_module` line the stream module needs in a
   * configuration of our own ('' when the stream module is built in).
   */
  readonly streamModuleDirective?: string;
}

type Lookup = { ok: true; peer: PeerBinary } | { ok: false; reason: string };

/** Debian package names, for the skip/fail message. */
const PACKAGES: Record<PeerName, string> = {
  nginx: 'nginx-light (or nginx) and libnginx-mod-stream',
  haproxy: 'haproxy',
};

/** Whether CI is set (an empty value, "0" and "false" do not count). */
export function inCi(): boolean {
  const v = process.env.CI;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/**
 * The peer's executable: $L4LB_TEST_NGINX / $L4LB_TEST_HAPROXY when set (a
 * path, e.g. a newer build; a missing path counts as not installed), else
 * the first match in PATH and the usual sbin/bin directories.
 */
function locate(name: PeerName): { path: string | null; where: string } {
  const variable = `L4LB_TEST_${name.toUpperCase()}`;
  const override = process.env[variable];
  if (override !== undefined && override !== '') {
    return { path: existsSync(override) ? override : null, where: `${variable}=${override}` };
  }
  return { path: which(name), where: 'PATH or /usr/sbin' };
}

function which(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin', '/usr/bin', '/usr/local/bin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

const cache = new Map<PeerName, Lookup>();

/** Finds a peer and checks it can run what the tests need; cached per process. */
export function findPeer(name: PeerName): Lookup {
  let found = cache.get(name);
  if (found === undefined) {
    found = name === 'nginx' ? findNginx() : findHaproxy();
    cache.set(name, found);
  }
  return found;
}

function findHaproxy(): Lookup {
  const { path: bin, where } = locate('haproxy');
  if (bin === null) return { ok: false, reason: `haproxy not found in ${where} (Debian package ${PACKAGES.haproxy})` };
  const v = spawnSync(bin, ['-v'], { encoding: 'utf8', timeout: 10_000 });
  if (v.status !== 0) return { ok: false, reason: `${bin} -v failed: ${(v.stderr || String(v.error)).trim()}` };
  return { ok: true, peer: { name: 'haproxy', path: bin, version: v.stdout.split('\n')[0]!.trim() } };
}

/**
 * The stream module: built in (`--with-stream`), or dynamic
 * (`--with-stream=dynamic`, Debian's libnginx-mod-stream). Debian loads
 * dynamic modules from /etc/nginx/nginx.conf via `include
 * /etc/nginx/modules-enabled/*.conf`, whose `load_module` paths are relative
 * to the compiled-in prefix; our own config (run with `-p DIR`) must name the
 * module by absolute path.
 */
function findNginx(): Lookup {
  const { path: bin, where } = locate('nginx');
  if (bin === null) return { ok: false, reason: `nginx not found in ${where} (Debian packages ${PACKAGES.nginx})` };
  const v = spawnSync(bin, ['-V'], { encoding: 'utf8', timeout: 10_000 });
  const info = `${v.stdout ?? ''}${v.stderr ?? ''}`;
  if (v.status !== 0) return { ok: false, reason: `${bin} -V failed: ${info.trim() || String(v.error)}` };
  const version = info.split('\n')[0]!.trim();
  const configure = /configure arguments:(.*)/.exec(info)?.[1] ?? '';
  const staticStream = /(^|\s)--with-stream(\s|$)/.test(configure);
  let directive = '';
  if (!staticStream) {
    const module = findStreamModule(configure);
    if (module === null) {
      return {
        ok: false,
        reason: `${version} has no built-in stream module and ngx_stream_module.so was not found (Debian package libnginx-mod-stream)`,
      };
    }
    directive = `load_module ${module};`;
  }
  // Prove it: nginx -t on a minimal stream configuration.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'l4lb-nginx-check-'));
  try {
    writeFileSync(
      path.join(dir, 'nginx.conf'),
      `${directive}\npid ${dir}/nginx.pid;\nevents { worker_connections 16; }\nstream { server { listen 127.0.0.1:1 proxy_protocol; return "x"; } }\n`,
    );
    const check = spawnSync(bin, ['-t', '-q', '-e', 'stderr', '-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'error_log stderr;'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    if (check.status !== 0) {
      return { ok: false, reason: `${version} cannot load a stream configuration: ${(check.stderr || String(check.error)).trim()}` };
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { ok: true, peer: { name: 'nginx', path: bin, version, streamModuleDirective: directive } };
}

function findStreamModule(configure: string): string | null {
  const prefix = /--prefix=(\S+)/.exec(configure)?.[1] ?? '/usr/share/nginx';
  const modulesPath = /--modules-path=(\S+)/.exec(configure)?.[1];
  const candidates: string[] = [];
  // What the distribution enables: /etc/nginx/modules-enabled/*.conf (Debian, Ubuntu).
  for (const dir of ['/etc/nginx/modules-enabled', '/usr/share/nginx/modules-available']) {
    let files: string[] = [];
    try {
      files = readdirSync(dir).filter((f) => f.endsWith('.conf'));
    } catch {
      continue;
    }
    for (const f of files) {
      let text = '';
      try {
        text = readFileSync(path.join(dir, f), 'utf8');
      } catch {
        continue;
      }
      for (const m of text.matchAll(/^\s*load_module\s+(\S*ngx_stream_module\.so)\s*;/gm)) {
        const p = m[1]!;
        candidates.push(path.isAbsolute(p) ? p : path.join(prefix, p));
      }
    }
  }
  if (modulesPath !== undefined) candidates.push(path.join(modulesPath, 'ngx_stream_module.so'));
  candidates.push(
    path.join(prefix, 'modules/ngx_stream_module.so'),
    '/usr/lib/nginx/modules/ngx_stream_module.so',
    '/usr/share/nginx/modules/ngx_stream_module.so',
    '/usr/lib64/nginx/modules/ngx_stream_module.so',
  );
  return candidates.find((p) => existsSync(p)) ?? null;
}

/**
 * Call first thing in a test that needs `name`. Returns the peer, or
 * undefined after failing the test (CI set) or marking it skipped with the
 * reason printed (otherwise); the caller then returns.
 */
export function requirePeer(t: Test, name: PeerName): PeerBinary | undefined {
  const found = findPeer(name);
  if (found.ok) return found.peer;
  if (inCi()) {
    t.fail(`${name} is required when CI is set (install ${PACKAGES[name]}): ${found.reason}`);
    return undefined;
  }
  const reason = `${name} not available: ${found.reason}; set CI to make this a failure`;
  console.error(`# skipping "${t.name}": ${reason}`);
  t.plan(0, reason);
  return undefined;
}

// ---------------------------------------------------------------------------
// Ports, waiting

/** A free port on `host`: bind port 0, read the port, close. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves once `host:port` accepts a TCP connection (the connection is closed at once). */
function accepts(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1_000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `read()` every 50ms until `re` matches its text; returns the match.
 * The error names what was awaited and shows the end of the text.
 */
export async function waitForText(read: () => string, re: RegExp, timeoutMs: number, what: string): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = read();
    const m = re.exec(text);
    if (m) return m;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what} (${re}); text so far:\n${text.slice(-2_000)}`);
    }
    await sleep(50);
  }
}

/** A file's text, or '' while it does not exist. */
export function readIfExists(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------------------
// Processes

/** Process groups of live peers, killed on process exit whatever happens. */
const live = new Set<number>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pgid of live) {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

/** SIGKILL process group `pgid` when this process exits, unless {@link forgetGroupOnExit} came first. */
export function killGroupOnExit(pgid: number): void {
  installExitHook();
  live.add(pgid);
}

export function forgetGroupOnExit(pgid: number): void {
  live.delete(pgid);
}

/** Hard lifetime of a peer process: longer than tap's per-file timeout (180 s). */
const DEFAULT_LIFETIME_S = 300;
const MAX_OUTPUT_CHARS = 1_000_000;

const timeoutBin = which('timeout');

export interface RunningPeer {
  readonly name: PeerName;
  /** The loopback port it listens on (127.0.0.1). */
  readonly port: number;
  /** Its private directory (config, pid file, logs). */
  readonly dir: string;
  /** stdout and stderr so far (capped at 1 MB each). */
  stdout(): string;
  stderr(): string;
  /** Exit code or signal once exited, else null. */
  exited(): string | null;
  /** Stop it (SIGTERM, then SIGKILL to its process group) and remove its directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Files to write into the peer's directory, given its port and directory. */
  files: (port: number, dir: string) => Record<string, string>;
  /** Program arguments, given the directory. */
  args: (dir: string) => string[];
  /** How long the port may take to accept connections (default 20 s). */
  readyTimeoutMs?: number;
  /** Hard lifetime in seconds (default 300). */
  lifetimeS?: number;
}

/**
 * Start `bin` in the foreground on a fresh free port; retried on a new port
 * (at most 3 attempts) if the port was taken in between. The teardown is
 * registered on `t`.
 */
export async function startPeer(t: Test, bin: PeerBinary, options: StartOptions): Promise<RunningPeer> {
  let lastError: Error | undefined;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const peer = launch(bin, port, options);
    t.teardown(() => peer.stop());
    try {
      await peer.ready;
      return peer;
    } catch (err) {
      lastError = err as Error;
      await peer.stop();
      if (!/in use|cannot bind|bind\(\)/i.test(lastError.message)) break;
    }
  }
  throw lastError ?? new Error(`${bin.name} did not start`);
}

function launch(bin: PeerBinary, port: number, options: StartOptions): RunningPeer & { ready: Promise<void> } {
  const dir = mkdtempSync(path.join(os.tmpdir(), `l4lb-${bin.name}-`));
  for (const [name, text] of Object.entries(options.files(port, dir))) writeFileSync(path.join(dir, name), text);
  const lifetime = String(options.lifetimeS ?? DEFAULT_LIFETIME_S);
  const [cmd, argv] =
    timeoutBin !== null
      ? [timeoutBin, ['--kill-after=5', lifetime, bin.path, ...options.args(dir)]]
      : [bin.path, options.args(dir)];
  // detached: the child leads its own process group, so the whole group can be killed.
  const child: ChildProcess = spawn(cmd, argv, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  if (child.pid !== undefined) killGroupOnExit(child.pid);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    if (out.length < MAX_OUTPUT_CHARS) out += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    if (err.length < MAX_OUTPUT_CHARS) err += d;
  });
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
  exited.then(() => {
    if (child.pid !== undefined) forgetGroupOnExit(child.pid);
  });

  const readyTimeoutMs = options.readyTimeoutMs ?? 20_000;
  const ready = (async () => {
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      // Let the pipes deliver what the process printed before it died.
      if (exitStatus !== null) {
        await sleep(50);
        throw new Error(`${bin.name} exited (${exitStatus}) before port ${port} accepted connections; stderr:\n${err}\nstdout:\n${out}`);
      }
      if (await accepts(port, '127.0.0.1')) return;
      if (Date.now() > deadline) {
        throw new Error(`${bin.name} did not accept on 127.0.0.1:${port} within ${readyTimeoutMs}ms; stderr:\n${err}\nstdout:\n${out}`);
      }
      await sleep(50);
    }
  })();

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (exitStatus === null && child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGTERM');
        } catch {
          child.kill('SIGTERM');
        }
        const killed = await Promise.race([exited.then(() => true), sleep(5_000).then(() => false)]);
        if (!killed) {
          try {
            process.kill(-child.pid, 'SIGKILL');
          } catch {
            child.kill('SIGKILL');
          }
          await Promise.race([exited, sleep(5_000)]);
        }
      }
      child.stdout?.destroy();
      child.stderr?.destroy();
      rmSync(dir, { recursive: true, force: true });
    })());

  return {
    name: bin.name,
    port,
    dir,
    ready,
    stdout: () => out,
    stderr: () => err,
    exited: () => exitStatus,
    stop,
  };
}

// ---------------------------------------------------------------------------
// nginx

export interface NginxPeer extends RunningPeer {
  /** Absolute path of a file in its directory. */
  file(name: string): string;
}

/**
 * nginx with one `stream {}` block of the caller's making, e.g.
 * `server { listen 127.0.0.1:${port} proxy_protocol; return "ok\n"; }`.
 * Runs `nginx -p DIR -c DIR/nginx.conf -g 'daemon off; master_process off; error_log stderr;'`
 * (plus `-e stderr`, so nothing is opened outside DIR before the config is read).
 */
export async function startNginx(
  t: Test,
  bin: PeerBinary,
  stream: (port: number, dir: string) => string,
  options: { readyTimeoutMs?: number } = {},
): Promise<NginxPeer> {
  const peer = await startPeer(t, bin, {
    ...options,
    files: (port, dir) => ({ 'nginx.conf': nginxConfig(bin, dir, stream(port, dir)) }),
    args: (dir) => ['-e', 'stderr', '-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off; master_process off; error_log stderr;'],
  });
  return { ...peer, file: (name) => path.join(peer.dir, name) };
}

/** The whole nginx.conf: module, pid and lock file inside DIR, one stream block. */
export function nginxConfig(bin: PeerBinary, dir: string, stream: string): string {
  return [
    bin.streamModuleDirective ?? '',
    `pid ${dir}/nginx.pid;`,
    `lock_file ${dir}/nginx.lock;`,
    'worker_rlimit_nofile 1024;',
    'events { worker_connections 512; }',
    'stream {',
    stream.replace(/^/gm, '    '),
    '}',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------
// HAProxy

/**
 * HAProxy from a configuration of the caller's making, run as
 * `haproxy -f DIR/haproxy.cfg -db` (foreground, no daemon, no master).
 * {@link HAPROXY_PREAMBLE} is a sensible start: logs in raw format on stdout.
 */
export function startHaproxy(
  t: Test,
  bin: PeerBinary,
  config: (port: number, dir: string) => string,
  options: { readyTimeoutMs?: number } = {},
): Promise<RunningPeer> {
  return startPeer(t, bin, {
    ...options,
    files: (port, dir) => ({ 'haproxy.cfg': config(port, dir) }),
    args: (dir) => ['-f', path.join(dir, 'haproxy.cfg'), '-db'],
  });
}

/** global + defaults for tests: mode tcp, one thread, raw log lines on stdout, generous timeouts. */
export const HAPROXY_PREAMBLE = `global
    log stdout format raw local0
    nbthread 1
    maxconn 1000

defaults
    mode tcp
    log global
    timeout connect 10s
    timeout client 60s
    timeout server 60s
`;
