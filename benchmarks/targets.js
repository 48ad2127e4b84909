// What the load generator is pointed at. Every target has the same shape:
//
//   { name, description, async start(backends) -> endpoints, async stop() }
//
// where `backends` and `endpoints` are { sink, source, echo }, each
// { port, pid }: the port to connect to for that backend, and the process
// that serves it (null for the direct target) so run.js can read its CPU time.
//
// To add HAProxy or NGINX later: write a target whose start() renders a config
// with one listener per backend (free ports on 127.0.0.1), spawns the binary
// with startProcess() from lib/children.js (so it is killed at the end), waits
// until the ports accept, and returns the endpoints with the server's pid
// (the worker's, for CPU time); then add it to the list in createTargets().
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startL4lb, startNode, stop, waitForLine } from './lib/children.js';

const here = (file) => fileURLToPath(new URL(file, import.meta.url));
const SERVICES = ['sink', 'source', 'echo'];

/** No proxy: the load generator talks to the backends themselves. */
function direct() {
  return {
    name: 'direct',
    description: 'no proxy',
    async start(backends) {
      return Object.fromEntries(SERVICES.map((s) => [s, { port: backends[s].port, pid: null }]));
    },
    async stop() {},
  };
}

/** The floor: benchmarks/bare-proxy.js, one process per backend (only one is busy at a time). */
function bare() {
  const procs = [];
  return {
    name: 'bare',
    description: 'bare Node proxy (net + pipe, bare-proxy.js)',
    async start(backends) {
      const endpoints = {};
      for (const s of SERVICES) {
        const child = startNode(here('./bare-proxy.js'), ['0', String(backends[s].port)], { name: `bare-proxy ${s}` });
        procs.push(child);
        const port = await waitForLine(child, (line) => JSON.parse(line).port);
        endpoints[s] = { port, pid: child.pid };
      }
      return endpoints;
    },
    async stop() {
      await Promise.all(procs.map((p) => stop(p)));
    },
  };
}

/**
 * l4lb itself (bin/l4lb, built dist/, on the Node.js it brings): one process, one listener and one
 * single-server round_robin pool per backend, as a user would configure it.
 * `baseline`: the checkout of another version (built), measured in the same
 * run as `l4lb@baseline`, for before/after figures of a change.
 */
function l4lb({ access, baseline }) {
  let child;
  let dir;
  const root = baseline ?? here('..');
  const target = {
    name: baseline !== undefined ? 'l4lb@baseline' : access ? 'l4lb+log' : 'l4lb',
    description: `l4lb${baseline !== undefined ? ` from ${baseline}` : ''}, access log ${access ? 'on (to a pipe read by run.js)' : 'off'}`,
    /** Lines l4lb wrote after it started: with the access log on, about one per connection. */
    logLines: 0,
    async start(backends) {
      dir = mkdtempSync(join(tmpdir(), 'l4lb-bench-'));
      const config = {
        log: { level: 'info', access },
        listeners: SERVICES.map((s) => ({ name: s, bind: '127.0.0.1:0', pool: s })),
        pools: SERVICES.map((s) => ({
          name: s,
          balance: 'round_robin',
          servers: [{ address: `127.0.0.1:${backends[s].port}` }],
        })),
      };
      const file = join(dir, 'bench.json');
      writeFileSync(file, JSON.stringify(config));
      child = startL4lb(root, ['run', '--config', file, '--drain-timeout', '1s'], { name: target.name });
      const ports = {};
      await waitForLine(child, (line) => {
        let msg;
        try {
          msg = JSON.parse(line);
        } catch {
          return undefined;
        }
        if (msg.msg === 'listening') ports[msg.listener] = msg.port;
        return msg.msg === 'started' ? true : undefined;
      });
      // Keep reading stdout (a full pipe would stall l4lb); counting newlines is all we do.
      child.stdout.on('data', (text) => {
        for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) target.logLines++;
      });
      for (const s of SERVICES) {
        if (!ports[s]) throw new Error(`l4lb did not log a port for listener ${s}`);
      }
      return Object.fromEntries(SERVICES.map((s) => [s, { port: ports[s], pid: child.pid }]));
    },
    async stop() {
      if (child) await stop(child);
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
  return target;
}

/** The targets of one run, in the order they are measured within a round. */
export function createTargets({ accessLog = true, baseline } = {}) {
  const list = [direct(), bare(), l4lb({ access: false })];
  if (baseline !== undefined) list.push(l4lb({ access: false, baseline }));
  if (accessLog) list.push(l4lb({ access: true }));
  return list;
}

/** Start benchmarks/backend.js; resolves with { sink, source, echo } as { port, pid }, and a stop(). */
export async function startBackends() {
  const child = startNode(here('./backend.js'), [], { name: 'backend' });
  const ports = await waitForLine(child, (line) => JSON.parse(line));
  const backends = Object.fromEntries(SERVICES.map((s) => [s, { port: ports[s], pid: child.pid }]));
  return { backends, stop: () => stop(child) };
}
