#!/usr/bin/env node
// Memory per idle connection: opens N idle connections through a proxy and
// reports how much its resident set grew per connection (both of the sockets
// a proxy holds for it: the client's and the backend's). l4lb, and side by
// side HAProxy and NGINX (and the bare Node proxy), each measured alone.
//
//   node benchmarks/idle-memory.js [--connections 9900] [--settle 3] [--targets l4lb-2w,haproxy-2t,nginx-2w|all] [--with-bare]
//
// Three processes besides this one, so that each holds only its own sockets:
//   backend  an echo server (this file with --role backend)        N sockets
//   proxy    the target, from targets.js, with one plain listener  2N sockets
//   clients  this file with --role clients: N connections that      N sockets
//            each send 4 bytes, read their echo, then stay idle
// A proxy's RSS and open files are those of its whole process tree (NGINX:
// the master and every worker).
//
// A proxy needs 2N file descriptors plus a few. Node raises its soft limit
// to the hard limit when it starts, but never past it: the hard limit
// (`ulimit -Hn`) is what counts, and only root can raise it. On these
// machines it is 20,000, so 9,900 is as close to 10,000 as fits:
//
//   npm run build && node benchmarks/idle-memory.js
//
// Every child process is killed at the end, also on an error or Ctrl-C.
import net from 'node:net';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { existsSync } from 'node:fs';
import { killAll } from './lib/children.js';
import { fileLimit, measureIdle } from './lib/idle.js';
import { findHaproxy, findNginx } from './lib/peers.js';
import { createTargets } from './targets.js';

const TARGET_KIB = 64;
const PING = Buffer.from('ping');
const here = (file) => fileURLToPath(new URL(file, import.meta.url));

const { values: opts } = parseArgs({
  options: {
    role: { type: 'string' },
    port: { type: 'string' },
    connections: { type: 'string', default: '9900' },
    settle: { type: 'string', default: '3' },
    targets: { type: 'string' },
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

function report(r) {
  const mib = (kib) => `${(kib / 1024).toFixed(1)} MiB`;
  console.log(`\n${r.name}: ${r.n} idle connections (opened and pinged in ${r.openMs} ms)`);
  console.log(`  RSS before          ${mib(r.before.rssKiB)}   (${r.before.fds} open files)`);
  console.log(`  RSS with ${r.n} idle ${mib(r.after.rssKiB)}   (${r.after.fds} open files: +${r.after.fds - r.before.fds}, 2 per connection)`);
  console.log(`  RSS after closing   ${mib(r.closed.rssKiB)}   (${r.closed.fds} open files)`);
  console.log(`  => ${r.perConnKiB.toFixed(1)} KiB of RSS per connection (client + backend socket)`);
}

async function main() {
  const n = Number(opts.connections);
  const settleMs = Number(opts.settle) * 1000;
  if (!Number.isInteger(n) || n < 1) throw new Error('--connections must be a positive integer');
  if (!(settleMs >= 0 && settleMs <= 60_000)) throw new Error('--settle must be 0..60 seconds');
  if (!existsSync(here('../dist/cli/main.js'))) {
    console.error('dist/ is missing: build first (npx tsc -p tsconfig.json, or npm run build)');
    process.exit(2);
  }
  const need = 2 * n + 64;
  const { soft, hard } = fileLimit();
  if (soft < need) {
    // Node has already raised `soft` to `hard` if it could; what is left is the hard limit (or a wrapper's).
    console.error(
      `a proxy needs about ${need} open files for ${n} connections, but the limit is ${soft} (hard limit ${hard}).\n` +
        (hard >= need
          ? `Raise it in the shell first:  ulimit -n ${hard} && node benchmarks/idle-memory.js --connections ${n}`
          : `The hard limit (only root can raise it) allows about ${Math.floor((hard - 64) / 2)} connections: ` +
            `--connections ${Math.floor((hard - 64) / 2)}`),
    );
    process.exit(2);
  }
  const cores = availableParallelism();
  const haproxy = findHaproxy();
  const nginx = findNginx();
  for (const [name, found] of [['haproxy', haproxy], ['nginx', nginx]]) if (found.missing) console.log(`${name}: ${found.missing}; skipped`);
  const all = createTargets({ cores, haproxy, nginx, fdLimit: hard }).filter((t) => t.kind !== 'direct');
  const wanted =
    opts.targets === 'all'
      ? all.map((t) => t.name)
      : (opts.targets?.split(',') ?? [`l4lb-${cores}w`, `haproxy-${cores}t`, `nginx-${cores}w`].filter((w) => all.some((t) => t.name === w)));
  if (opts['with-bare'] && !wanted.includes('bare')) wanted.push('bare');
  const unknown = wanted.filter((w) => !all.some((t) => t.name === w));
  if (unknown.length) throw new Error(`unknown or unavailable target(s): ${unknown.join(', ')} (have: ${all.map((t) => t.name).join(', ')})`);

  const results = [];
  for (const name of wanted) {
    // A fresh target object each time: a target is started once.
    const target = createTargets({ cores, haproxy, nginx, fdLimit: hard }).find((t) => t.name === name);
    results.push(await measureIdle(target, { n, settleMs }));
  }
  for (const r of results) report(r);
  let ok = true;
  for (const r of results.filter((x) => x.name.startsWith('l4lb'))) {
    const met = r.perConnKiB < TARGET_KIB;
    ok &&= met;
    console.log(`\n${r.name}: under ${TARGET_KIB} KiB per connection: ${met ? 'ok' : 'MISSED'} (${r.perConnKiB.toFixed(1)} KiB)`);
  }
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
else {
  main().catch((err) => {
    console.error(`idle-memory: ${err.message}`);
    process.exit(1);
  });
}
