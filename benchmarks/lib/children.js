// Every process the benchmark starts goes through here, so that all of them
// are killed at the end: on success, on an error, and on Ctrl-C.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const children = new Set();

/** Start `command args...`; stdout is piped to us, stderr kept for error messages. */
export function startProcess(command, args = [], { name = command } = {}) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.label = name;
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

/** Start `node script args...` with the same Node as ours. */
export function startNode(script, args = [], { name = script } = {}) {
  return startProcess(process.execPath, [...shebangNodeFlags(script), script, ...args], { name });
}

/**
 * Start l4lb as an operator runs it: the `bin/l4lb` launcher of the checkout
 * at `root` (the Node.js it brings, its V8 flags), or, for an older checkout
 * without one, `bin/l4lb.js` on our node with its shebang's flags.
 */
export function startL4lb(root, args = [], { name = 'l4lb' } = {}) {
  const launcher = join(root, 'bin', 'l4lb');
  if (existsSync(launcher)) return startProcess(launcher, args, { name });
  return startNode(join(root, 'bin', 'l4lb.js'), args, { name });
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

/** Run `node script args` to completion and parse the JSON of its last stdout line. */
export async function runNodeJson(script, args, timeoutMs) {
  const child = startNode(script, args);
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (text) => {
    out += text;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = await new Promise((resolve) => child.once('exit', (c, s) => resolve([c, s])));
  clearTimeout(timer);
  if (code !== 0) {
    throw new Error(`${script} ${args.join(' ')} failed (${signal ?? code}): ${child.stderrText.trim()}`);
  }
  return JSON.parse(out.trim().split('\n').pop());
}

/** Ask a child to exit with SIGTERM; SIGKILL it if it is still there after `graceMs`. */
export function stop(child, graceMs = 3000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Last resort, synchronous so it also works from an 'exit' handler. */
export function killAll() {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
}

/** CPU seconds (user + system) a process has used so far; null where /proc is not available. */
export function cpuSeconds(pid) {
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
