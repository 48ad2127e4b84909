// Memory per idle connection, for one target: a fresh echo backend and a
// fresh proxy, RSS of the proxy's whole process tree (NGINX: master and
// workers) before and after N connections that each sent 4 bytes, got their
// echo, and stay idle. Used by idle-memory.js and by run.js.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startNode, stop, treeMemory, waitForLine } from './children.js';

const script = fileURLToPath(new URL('../idle-memory.js', import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The hard limit of open files (children inherit it; Node raises the soft limit to it). */
export function fileLimit() {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const [soft, hard] = line.trim().split(/\s+/).slice(3, 5).map(Number);
  return { soft, hard };
}

/**
 * `target` comes from targets.js (not started). Returns { name, n, openMs,
 * before, after, closed, perConnKiB }, where before/after/closed are
 * { rssKiB, fds } of the proxy's process tree.
 */
export async function measureIdle(target, { n, settleMs, lifetimeS = 600 }) {
  const backend = startNode(script, ['--role', 'backend'], { name: 'idle backend', group: true, lifetimeS });
  try {
    const backendPort = await waitForLine(backend, (line) => JSON.parse(line).port);
    backend.stdout.resume();
    const endpoints = await target.start({ echo: { port: backendPort, pid: backend.pid } });
    const { port, pid } = endpoints.echo;
    try {
      await sleep(settleMs);
      const before = treeMemory(pid);
      const started = Date.now();
      const clients = startNode(script, ['--role', 'clients', '--port', String(port), '--connections', String(n)], {
        name: 'idle clients',
        group: true,
        lifetimeS,
      });
      try {
        const opened = await waitForLine(clients, (line) => JSON.parse(line), 120_000);
        const openMs = Date.now() - started;
        if (opened.open !== n) throw new Error(`${target.name}: only ${opened.open} of ${n} connections were established (${opened.failed} failed)`);
        await sleep(settleMs);
        const after = treeMemory(pid);
        await stop(clients);
        await sleep(settleMs);
        const closed = treeMemory(pid);
        return { name: target.name, n, openMs, before, after, closed, perConnKiB: (after.rssKiB - before.rssKiB) / n };
      } finally {
        await stop(clients);
      }
    } finally {
      await target.stop();
    }
  } finally {
    await stop(backend);
  }
}
