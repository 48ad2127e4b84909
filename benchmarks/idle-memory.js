#!/usr/bin/env node
// Memory per idle connection: opens N idle connections through l4lb and
// reports how much l4lb's resident set grew per connection (both of the
// sockets l4lb holds for it: the client's and the backend's).
//
//   node benchmarks/idle-memory.js [--connections 9900] [--settle 3] [--with-bare]
//
// Three processes besides this one, so that each holds only its own sockets:
//   backend  an echo server (this file with --role backend)        N sockets
//   l4lb     bin/l4lb.js run (the built dist/), access log off      2N sockets
//   clients  this file with --role clients: N connections that      N sockets
//            each send 4 bytes, read their echo, then stay idle
// --with-bare measures benchmarks/bare-proxy.js (net + pipe, the Node floor)
// the same way afterwards, for comparison.
//
// l4lb needs 2N file descriptors plus a few. Node raises its soft limit to
// the hard limit when it starts, but never past it: the hard limit
// (`ulimit -Hn`) is what counts, and only root can raise it. On these
// machines it is 20,000, so 9,900 is as close to 10,000 as fits:
//
//   npm run build && node benchmarks/idle-memory.js
//
// Every child process is killed at the end, also on an error or Ctrl-C.
import net from 'node:net';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { killAll, startL4lb, startNode, stop, waitForLine } from './lib/children.js';

const TARGET_KIB = 64;
const PING = Buffer.from('ping');
const here = (file) => fileURLToPath(new URL(file, import.meta.url));

const { values: opts } = parseArgs({
  options: {
    role: { type: 'string' },
    port: { type: 'string' },
    connections: { type: 'string', default: '9900' },
    settle: { type: 'string', default: '3' },
    'with-bare': { type: 'boolean', default: false },
  },
});


// ---------------------------------------------------------------------------
// Children

/** Echo server on 127.0.0.1; prints {"port":N}. */
function runBackend() {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  server.on('error', (err) => {
    console.error(`backend: ${err.message}`);
    process.exit(1);
  });
  server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
    console.log(JSON.stringify({ port: server.address().port }));
  });
}

/** Opens `n` connections (256 at a time), each pinged once; prints {"open":N} and then holds them. */
async function runClients(port, n) {
  const sockets = [];
  let failed = 0;
  const one = () =>
    new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      let got = 0;
      const done = (ok) => {
        s.removeAllListeners('data');
        if (!ok) {
          failed++;
          s.destroy();
        }
        resolve();
      };
      s.on('error', () => done(false));
      s.once('connect', () => s.write(PING));
      s.on('data', (d) => {
        got += d.length;
        if (got >= PING.length) done(true);
      });
      sockets.push(s);
    });
  for (let i = 0; i < n; i += 256) {
    await Promise.all(Array.from({ length: Math.min(256, n - i) }, one));
  }
  // Idle from here on: no timers, no reads pending beyond the open sockets.
  const open = sockets.filter((s) => !s.destroyed).length;
  console.log(JSON.stringify({ open, failed }));
}

// ---------------------------------------------------------------------------
// Measurement

function status(pid) {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rss: kib('VmRSS'), hwm: kib('VmHWM'), anon: kib('RssAnon') };
}

function fds(pid) {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** The soft and hard "Max open files" of this process (children inherit them). */
function fileLimits() {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const [soft, hard] = line.trim().split(/\s+/).slice(3, 5).map(Number);
  return { soft, hard };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Start l4lb with one listener in front of the backend; resolves with { child, port }. */
async function startL4lb(backendPort, dir) {
  const config = {
    log: { level: 'info', access: false },
    listeners: [{ name: 'idle', bind: '127.0.0.1:0', pool: 'echo' }],
    pools: [{ name: 'echo', servers: [{ address: `127.0.0.1:${backendPort}` }], health: { interval: '1h' } }],
  };
  const file = join(dir, 'idle-memory.json');
  writeFileSync(file, JSON.stringify(config));
  const child = startL4lb(here('..'), ['run', '--config', file, '--drain-timeout', '1s'], { name: 'l4lb' });
  let port;
  await waitForLine(child, (line) => {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      return undefined;
    }
    if (msg.msg === 'listening') port = msg.port;
    return msg.msg === 'started' ? true : undefined;
  });
  child.stdout.resume(); // keep the pipe drained
  return { child, port };
}

async function startBare(backendPort) {
  const child = startNode(here('./bare-proxy.js'), ['0', String(backendPort)], { name: 'bare-proxy' });
  const port = await waitForLine(child, (line) => JSON.parse(line).port);
  child.stdout.resume();
  return { child, port };
}

/** One measurement: a fresh backend and proxy, N idle connections, RSS before and after. */
async function measure(name, startProxy, n, settleMs) {
  const backend = startNode(here('./idle-memory.js'), ['--role', 'backend'], { name: 'backend' });
  const backendPort = await waitForLine(backend, (line) => JSON.parse(line).port);
  const { child: proxy, port } = await startProxy(backendPort);
  try {
    await sleep(settleMs);
    const before = { ...status(proxy.pid), fds: fds(proxy.pid) };
    const started = Date.now();
    const clients = startNode(here('./idle-memory.js'), ['--role', 'clients', '--port', String(port), '--connections', String(n)], {
      name: 'clients',
    });
    const opened = await waitForLine(clients, (line) => JSON.parse(line), 120_000);
    const openMs = Date.now() - started;
    if (opened.open !== n) throw new Error(`only ${opened.open} of ${n} connections were established (${opened.failed} failed)`);
    await sleep(settleMs);
    const after = { ...status(proxy.pid), fds: fds(proxy.pid) };
    const backendFds = fds(backend.pid);
    await stop(clients);
    await sleep(settleMs);
    const closed = { ...status(proxy.pid), fds: fds(proxy.pid) };
    const perConnKiB = (after.rss - before.rss) / n;
    return { name, n, openMs, before, after, closed, backendFds, perConnKiB };
  } finally {
    await stop(proxy);
    await stop(backend);
  }
}

function report(r) {
  const mib = (kib) => `${(kib / 1024).toFixed(1)} MiB`;
  console.log(`\n${r.name}: ${r.n} idle connections (opened and pinged in ${r.openMs} ms)`);
  console.log(`  RSS before          ${mib(r.before.rss)}   (${r.before.fds} open files)`);
  console.log(`  RSS with ${r.n} idle ${mib(r.after.rss)}   (${r.after.fds} open files: +${r.after.fds - r.before.fds}, 2 per connection)`);
  console.log(`  RSS after closing   ${mib(r.closed.rss)}   (${r.closed.fds} open files)`);
  console.log(`  peak RSS (VmHWM)    ${mib(r.after.hwm)}`);
  console.log(`  backend held        ${r.backendFds} open files`);
  console.log(`  => ${r.perConnKiB.toFixed(1)} KiB of RSS per connection (client + backend socket)`);
}

async function main() {
  const n = Number(opts.connections);
  const settleMs = Number(opts.settle) * 1000;
  if (!Number.isInteger(n) || n < 1) throw new Error('--connections must be a positive integer');
  if (!existsSync(here('../dist/cli/main.js'))) {
    console.error('dist/ is missing: build first (npx tsc -p tsconfig.json, or npm run build)');
    process.exit(2);
  }
  const need = 2 * n + 64;
  const { soft, hard } = fileLimits();
  if (soft < need) {
    const fits = Math.floor((Math.min(hard, soft) - 64) / 2);
    // Node has already raised `soft` to `hard` if it could; what is left is the hard limit (or a wrapper's).
    console.error(
      `l4lb needs about ${need} open files for ${n} connections, but the limit is ${soft} (hard limit ${hard}).\n` +
        (hard >= need
          ? `Raise it in the shell first:  ulimit -n ${hard} && node benchmarks/idle-memory.js --connections ${n}`
          : `The hard limit (only root can raise it) allows about ${Math.floor((hard - 64) / 2)} connections: ` +
            `--connections ${Math.floor((hard - 64) / 2)}`) +
        (fits > 0 && soft < hard ? `\n(with the current limit: --connections ${fits})` : ''),
    );
    process.exit(2);
  }

  const dir = mkdtempSync(join(tmpdir(), 'l4lb-idle-'));
  const results = [];
  try {
    results.push(await measure('l4lb', (bp) => startL4lb(bp, dir), n, settleMs));
    if (opts['with-bare']) results.push(await measure('bare-proxy', startBare, n, settleMs));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  for (const r of results) report(r);
  const l4lb = results[0];
  const ok = l4lb.perConnKiB < TARGET_KIB;
  console.log(`\ntarget: under ${TARGET_KIB} KiB per connection: ${ok ? 'ok' : 'MISSED'} (${l4lb.perConnKiB.toFixed(1)} KiB)`);
  console.log(JSON.stringify({ results }));
  process.exitCode = ok ? 0 : 1;
}

process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

if (opts.role === 'backend') runBackend();
else if (opts.role === 'clients') await runClients(Number(opts.port), Number(opts.connections));
else await main();
