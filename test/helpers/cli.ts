/** Run the real CLI (bin/l4lb.js, built into dist/ by `npm test`) as a child process. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jsonLines } from './logs.js';
import type { Owner } from './lb.js';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const BIN = join(ROOT, 'bin', 'l4lb.js');

/** Write a config (object → JSON file, string → YAML file) to a fresh temp dir. */
export function writeConfig(config: unknown, name?: string): { file: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'l4lb-test-'));
  const file = join(dir, name ?? (typeof config === 'string' ? 'l4lb.yaml' : 'l4lb.json'));
  writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config, null, 2));
  return { file, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function runCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export interface Child {
  readonly proc: ChildProcess;
  readonly lines: Array<Record<string, unknown>>;
  /** Port of listener `name`, from its `listening` log line. */
  port(name: string): number;
  waitForLine(pred: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  exited(timeoutMs?: number): Promise<number | null>;
  kill(): void;
}

/** Start `l4lb run --config file ...args` and resolve once every listener is bound ("started"). */
export async function startCli(
  file: string,
  args: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
  options: { untraced?: boolean; fdLimit?: number; launcher?: boolean; onSpawn?: (proc: ChildProcess) => void } = {},
): Promise<Child> {
  const argv = [BIN, 'run', '--config', file, ...args];
  // launcher: bin/l4lb, as an operator and the systemd unit run it (the Node it brings, its V8 flags).
  const launcher = join(ROOT, 'bin', 'l4lb');
  // untraced: started through env(1) with a clean environment, out of reach of
  // tap's process hooks (they write coverage data at exit, which a child that
  // dropped root privileges may not).
  // fdLimit: run under `ulimit -n` (soft and hard), as an operator's small limit would.
  const proc = options.launcher
    ? spawn(launcher, ['run', '--config', file, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env })
    : options.untraced
    ? spawn('env', ['-i', `PATH=${process.env.PATH ?? '/usr/bin:/bin'}`, process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
    : options.fdLimit !== undefined
      ? spawn('bash', ['-c', `ulimit -n ${options.fdLimit} && exec "$0" "$@"`, process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env })
      : spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
  // onSpawn: act on the process while it starts (signals during start-up).
  options.onSpawn?.(proc);
  const lines: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  const feed = jsonLines(lines);
  proc.stdout!.on('data', (d: Buffer) => {
    feed(d);
    for (const w of waiters) w();
  });
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let exitCode: number | null | undefined;
  const exit = new Promise<number | null>((r) => proc.on('exit', (code) => r((exitCode = code))));

  const child: Child = {
    proc,
    lines,
    port(name) {
      const l = lines.find((x) => x.msg === 'listening' && x.listener === name);
      if (!l) throw new Error(`listener ${name} not listening`);
      return l.port as number;
    },
    waitForLine(pred, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = lines.find(pred);
          if (found) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(found);
          } else if (exitCode !== undefined) {
            clearTimeout(timer);
            waiters.delete(check);
            reject(new Error(`l4lb exited (${exitCode}) first; stderr: ${stderr}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no matching log line within ${timeoutMs}ms; stderr: ${stderr}`));
        }, timeoutMs);
        waiters.add(check);
        void exit.then(check);
        check();
      });
    },
    exited(timeoutMs = 10_000) {
      return Promise.race([
        exit,
        new Promise<number | null>((_, reject) => setTimeout(() => reject(new Error('l4lb did not exit')), timeoutMs).unref()),
      ]);
    },
    kill() {
      if (exitCode === undefined) proc.kill('SIGKILL');
    },
  };
  await child.waitForLine((l) => l.msg === 'started');
  return child;
}

/**
 * Writes `config` (see writeConfig) and runs `l4lb run` on it (see
 * startCli); the process is killed and the file removed when `t` ends.
 */
export async function cliFor(
  t: Owner,
  config: unknown,
  args: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
  options: Parameters<typeof startCli>[3] = {},
): Promise<Child & { readonly file: string }> {
  const { file, cleanup } = writeConfig(config);
  t.teardown(cleanup);
  const child = await startCli(file, args, env, options);
  t.teardown(() => child.kill());
  return Object.assign(child, { file });
}

/** The admin server's port, once the child logged `admin listening`. */
export async function adminPortOf(child: Child): Promise<number> {
  return (await child.waitForLine((l) => l.msg === 'admin listening')).port as number;
}

/** Resident set size of a process in bytes (Linux /proc). */
export function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}
