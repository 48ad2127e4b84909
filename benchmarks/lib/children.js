// Every process the benchmark starts goes through here, so that all of them
// are killed at the end: on success, on an error, and on Ctrl-C.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

const children = new Set();

const timeoutBin = ['/usr/bin/timeout', '/bin/timeout'].find((p) => existsSync(p)) ?? null;

/**
 * Start `command args...`; stdout is piped to us, stderr kept for error messages.
 * `group`: the child leads a process group of its own, and stop() and killAll()
 * signal the whole group (NGINX's master and its workers). `lifetimeS`: with
 * a group, coreutils `timeout` (when present) bounds its life, so nothing
 * outlives a run that was itself killed with SIGKILL.
 */
export function startProcess(command, args = [], { name = command, group = false, lifetimeS } = {}) {
  const [cmd, argv] =
    group && lifetimeS && timeoutBin ? [timeoutBin, ['--kill-after=5', String(Math.ceil(lifetimeS)), command, ...args]] : [command, args];
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: group });
  child.label = name;
  child.group = group;
  child.stderrText = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text) => {
    // Keep only the tail: enough to explain a failure, bounded in size.
    child.stderrText = (child.stderrText + text).slice(-4000);
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Send `signal` to the child, or to its whole process group. */
function signalChild(child, signal) {
  try {
    if (child.group && child.pid) process.kill(-child.pid, signal);
    else child.kill(signal);
  } catch {
    // already gone
  }
}

/** Start `node script args...` with the same Node as ours. */
export function startNode(script, args = [], { name = script, ...options } = {}) {
  return startProcess(process.execPath, [...shebangNodeFlags(script), script, ...args], { name, ...options });
}

/**
 * Start l4lb as an operator runs it: the `bin/l4lb` launcher of the checkout
 * at `root` (the Node.js it brings, its V8 flags), or, for an older checkout
 * without one, `bin/l4lb.js` on our node with its shebang's flags.
 */
export function startL4lb(root, args = [], { name = 'l4lb', ...options } = {}) {
  const launcher = join(root, 'bin', 'l4lb');
  if (existsSync(launcher)) return startProcess(launcher, args, { name, ...options });
  return startNode(join(root, 'bin', 'l4lb.js'), args, { name, ...options });
}

/**
 * The node flags a script's `#!/usr/bin/env -S node FLAGS` line asks for
 * (bin/l4lb.js sets a V8 heap flag), so a script is measured as an operator
 * runs it, with this process's node.
 */
function shebangNodeFlags(script) {
  const first = readFileSync(script, 'utf8').split('\n', 1)[0];
  const m = /^#!\S*env -S node((?: --?[\w-]+(?:=\S+)?)*)\s*$/.exec(first);
  return m ? m[1].trim().split(/\s+/).filter(Boolean) : [];
}

/**
 * Call `onLine(line)` for each stdout line until it returns a value other
 * than undefined; resolve with that value. Rejects if the child exits or
 * `timeoutMs` passes first.
 */
export function waitForLine(child, onLine, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout.removeListener('data', onData);
      child.removeListener('exit', onExit);
    };
    const onData = (chunk) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        const value = onLine(line);
        if (value !== undefined) {
          cleanup();
          resolve(value);
          return;
        }
      }
    };
    const onExit = (code, signal) => {
      cleanup();
      reject(new Error(`${child.label} exited (${signal ?? code}) before it was ready: ${child.stderrText.trim()}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${child.label} not ready after ${timeoutMs} ms: ${child.stderrText.trim()}`));
    }, timeoutMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.once('exit', onExit);
  });
}

/** A free port on 127.0.0.1 (bound, read, closed): every target listens on ports chosen here. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once every port accepts a connection; rejects if the child exits or `timeoutMs` passes. */
export async function waitForPorts(child, ports, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (const port of ports) {
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        await new Promise((r) => setTimeout(r, 100)); // let stderr arrive
        throw new Error(`${child.label} exited (${child.signalCode ?? child.exitCode}): ${child.stderrText.trim()}`);
      }
      const ok = await new Promise((resolve) => {
        const s = net.connect({ port, host: '127.0.0.1' });
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      });
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`${child.label} did not accept on 127.0.0.1:${port} within ${timeoutMs} ms: ${child.stderrText.trim()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Run a program to completion and parse the JSON of its last stdout line. */
export async function runJson(command, args, timeoutMs) {
  const child = startProcess(command, args);
  const what = `${command} ${args.join(' ')}`;
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (text) => {
    out += text;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  // 'close', not 'exit': by then stdout has been read to its end.
  const [code, signal] = await new Promise((resolve) => child.once('close', (c, s) => resolve([c, s])));
  clearTimeout(timer);
  if (code !== 0) {
    throw new Error(`${what} failed (${signal ?? code}): ${child.stderrText.trim()}`);
  }
  return JSON.parse(out.trim().split('\n').pop());
}

/** Ask a child to exit with SIGTERM; SIGKILL it if it is still there after `graceMs`. */
export function stop(child, graceMs = 3000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => signalChild(child, 'SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    signalChild(child, 'SIGTERM');
  });
}

/** Last resort, synchronous so it also works from an 'exit' handler. */
export function killAll() {
  for (const child of children) signalChild(child, 'SIGKILL');
  children.clear();
}

/** A process and all its descendants (NGINX's workers, the server under `timeout`), from /proc. */
export function processTree(pid) {
  const all = [];
  const queue = [pid];
  while (queue.length > 0 && all.length < 1000) {
    const p = queue.shift();
    all.push(p);
    let tasks = [];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      try {
        const kids = readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8').trim();
        if (kids) queue.push(...kids.split(/\s+/).map(Number));
      } catch {
        // the thread ended meanwhile
      }
    }
  }
  return all;
}

/** CPU seconds (user + system) one process (all its threads) has used so far; null where /proc is not available. */
function cpuSeconds(pid) {
  if (!pid) return null;
  try {
    // Fields after the ")" that closes the command name: utime and stime are the 12th and 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
}

/** CPU seconds of a process and its descendants together (NGINX: master + workers). */
export function treeCpuSeconds(pid) {
  if (!pid) return null;
  let total = null;
  for (const p of processTree(pid)) {
    const s = cpuSeconds(p);
    if (s != null) total = (total ?? 0) + s;
  }
  return total;
}

/** Resident set (KiB) and open files of a process and its descendants together. */
export function treeMemory(pid) {
  let rssKiB = 0;
  let fds = 0;
  for (const p of processTree(pid)) {
    try {
      rssKiB += Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
      fds += readdirSync(`/proc/${p}/fd`).length;
    } catch {
      // gone meanwhile
    }
  }
  return { rssKiB, fds };
}
