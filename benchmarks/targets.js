// What the load generator is pointed at. Every target has the same shape:
//
//   { name, kind, workers, description, async start(backends) -> endpoints, async stop() }
//
// `backends` maps a backend service (`duplex`, `echo`, `rr`) to { port, pid }.
// `endpoints` maps each service the target serves to { port, pid }: the port
// to connect to, and the root of the process tree that serves it (null for
// direct) so run.js can read its CPU time and memory. A TLS-capable target
// also serves `tls-rsa` and `tls-ecdsa` (TLS terminated, then the `rr`
// backend) when it is given certificates.
//
// Every proxy gets the same configuration: one listener per backend service
// on 127.0.0.1, one server each, round robin, no logging (l4lb+log aside),
// connect timeout 5 s, idle timeout 1 h, 2 retries, active health checks
// every 2 s where the proxy has them (l4lb's defaults; NGINX's open-source
// stream module has none), TLS 1.2 and 1.3 accepted, nothing else tuned.
// `workers` is l4lb's `workers`, HAProxy's `nbthread`, NGINX's `worker_processes`.
//
// To add a target: write another such object and add it to createTargets().
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startL4lb, startNode, startProcess, stop, waitForLine, waitForPorts } from './lib/children.js';

const here = (file) => fileURLToPath(new URL(file, import.meta.url));

/** `tls-rsa` → the `rsa` certificate; every TLS service forwards to the rr backend. */
const TLS_BACKEND = 'rr';
const tlsServices = (certs, backends) => (certs && backends[TLS_BACKEND] ? Object.keys(certs).map((c) => `tls-${c}`) : []);
const certOf = (certs, service) => certs[service.slice('tls-'.length)];

/** Free ports for the plain and TLS services a target will listen on. */
async function portsFor(services) {
  const ports = {};
  for (const s of services) ports[s] = await freePort();
  return ports;
}

/** No proxy: the load generator talks to the backends themselves. */
function direct() {
  return {
    name: 'direct',
    kind: 'direct',
    workers: null,
    description: 'no proxy',
    async start(backends) {
      return Object.fromEntries(Object.entries(backends).map(([s, b]) => [s, { port: b.port, pid: null }]));
    },
    async stop() {},
  };
}

/** The floor: benchmarks/bare-proxy.js, one process per service (only one is busy at a time). */
function bare({ certs, lifetimeS }) {
  const procs = [];
  return {
    name: 'bare',
    kind: 'bare',
    workers: 1,
    description: 'bare Node proxy (net/tls + pipe, bare-proxy.js), one process per service',
    async start(backends) {
      const endpoints = {};
      const services = [...Object.keys(backends), ...tlsServices(certs, backends)];
      for (const s of services) {
        const tlsArgs = s.startsWith('tls-') ? [certOf(certs, s).cert, certOf(certs, s).key] : [];
        const backendPort = s.startsWith('tls-') ? backends[TLS_BACKEND].port : backends[s].port;
        const child = startNode(here('./bare-proxy.js'), ['0', String(backendPort), ...tlsArgs], {
          name: `bare-proxy ${s}`,
          group: true,
          lifetimeS,
        });
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
 * l4lb itself (bin/l4lb, built dist/, on the Node.js it brings), `workers: N`.
 * `baseline`: the checkout of another version (built), measured in the same
 * run as `l4lb@baseline`, for before/after figures of a change; its
 * configuration has no `workers` key (older versions do not know it).
 */
function l4lb({ workers, access = false, baseline, certs, lifetimeS }) {
  let child;
  let dir;
  const root = baseline ?? here('..');
  const name = baseline !== undefined ? 'l4lb@baseline' : access ? 'l4lb+log' : `l4lb-${workers}w`;
  const target = {
    name,
    kind: baseline !== undefined ? 'baseline' : 'l4lb',
    workers: baseline !== undefined ? null : workers,
    description:
      baseline !== undefined
        ? `l4lb from ${baseline}, its default workers, access log off`
        : `l4lb, workers: ${workers}, access log ${access ? 'on (to a pipe read by run.js)' : 'off'}`,
    /** Lines l4lb wrote after it started: with the access log on, about one per connection. */
    logLines: 0,
    async start(backends) {
      dir = mkdtempSync(join(tmpdir(), 'l4lb-bench-'));
      const plain = Object.keys(backends);
      const secure = tlsServices(certs, backends);
      const ports = await portsFor([...plain, ...secure]);
      const config = {
        ...(baseline === undefined ? { workers } : {}),
        log: { level: 'info', access },
        listeners: [
          ...plain.map((s) => ({ name: s, bind: `127.0.0.1:${ports[s]}`, pool: s })),
          ...secure.map((s) => ({
            name: s,
            bind: `127.0.0.1:${ports[s]}`,
            pool: TLS_BACKEND,
            tls: { mode: 'terminate', certs: [{ cert: certOf(certs, s).cert, key: certOf(certs, s).key }] },
          })),
        ],
        pools: plain.map((s) => ({ name: s, balance: 'round_robin', servers: [{ address: `127.0.0.1:${backends[s].port}` }] })),
      };
      const file = join(dir, 'bench.json');
      writeFileSync(file, JSON.stringify(config));
      child = startL4lb(root, ['run', '--config', file, '--drain-timeout', '1s'], { name, group: true, lifetimeS });
      // Keep reading stdout (a full pipe would stall l4lb): count newlines, keep the tail for errors.
      let tail = '';
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (text) => {
        for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) target.logLines++;
        tail = (tail + text).slice(-2000);
      });
      try {
        await waitForPorts(child, Object.values(ports));
      } catch (err) {
        await new Promise((r) => setTimeout(r, 100)); // let the last log lines arrive
        // The lines that say why: warnings and errors (l4lb logs JSON on stdout), or anything else it printed.
        const why = tail.split('\n').filter((l) => l.trim() && (!l.startsWith('{') || /"level":"(warn|error|fatal)"/.test(l)));
        throw new Error(`${err.message} ${why.join('\n')}`);
      }
      target.logLines = 0;
      return Object.fromEntries(Object.entries(ports).map(([s, port]) => [s, { port, pid: child.pid }]));
    },
    async stop() {
      if (child) await stop(child);
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
  return target;
}

/** HAProxy `mode tcp`, `nbthread N`, foreground (`-db`), one process. */
function haproxy({ bin, workers, certs, fdLimit, lifetimeS }) {
  let child;
  let dir;
  const name = `haproxy-${workers}t`;
  return {
    name,
    kind: 'haproxy',
    workers,
    description: `HAProxy ${bin.version}, mode tcp, nbthread ${workers}`,
    async start(backends) {
      dir = mkdtempSync(join(tmpdir(), 'l4lb-bench-haproxy-'));
      const plain = Object.keys(backends);
      const secure = tlsServices(certs, backends);
      const ports = await portsFor([...plain, ...secure]);
      const lines = [
        'global',
        `    nbthread ${workers}`,
        // HAProxy needs two descriptors per connection and a few of its own.
        `    maxconn ${Math.floor((fdLimit - 200) / 2)}`,
        '    ssl-default-bind-options ssl-min-ver TLSv1.2',
        'defaults',
        '    mode tcp',
        '    timeout connect 5s',
        '    timeout client 1h',
        '    timeout server 1h',
        '    retries 2',
      ];
      for (const s of plain) {
        lines.push(`frontend ${s}`, `    bind 127.0.0.1:${ports[s]}`, `    default_backend ${s}`);
        lines.push(`backend ${s}`, '    balance roundrobin', `    server s1 127.0.0.1:${backends[s].port} check inter 2s fall 3 rise 2`);
      }
      for (const s of secure) {
        lines.push(`frontend ${s}`, `    bind 127.0.0.1:${ports[s]} ssl crt ${certOf(certs, s).pem}`, `    default_backend ${TLS_BACKEND}`);
      }
      const file = join(dir, 'haproxy.cfg');
      writeFileSync(file, `${lines.join('\n')}\n`);
      child = startProcess(bin.path, ['-f', file, '-db'], { name, group: true, lifetimeS });
      child.stdout.resume();
      await waitForPorts(child, Object.values(ports));
      return Object.fromEntries(Object.entries(ports).map(([s, port]) => [s, { port, pid: child.pid }]));
    },
    async stop() {
      if (child) await stop(child);
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** NGINX `stream`, a master and `worker_processes N`, in the foreground; CPU and memory are the sum of all of them. */
function nginx({ bin, workers, certs, fdLimit, lifetimeS }) {
  let child;
  let dir;
  const name = `nginx-${workers}w`;
  return {
    name,
    kind: 'nginx',
    workers,
    description: `NGINX ${bin.version}, stream, worker_processes ${workers}`,
    async start(backends) {
      dir = mkdtempSync(join(tmpdir(), 'l4lb-bench-nginx-'));
      const plain = Object.keys(backends);
      const secure = tlsServices(certs, backends);
      const ports = await portsFor([...plain, ...secure]);
      const servers = [
        ...plain.map((s) => `    upstream ${s} { server 127.0.0.1:${backends[s].port}; }\n    server { listen 127.0.0.1:${ports[s]}; proxy_pass ${s}; }`),
        ...secure.map(
          (s) =>
            `    server {\n        listen 127.0.0.1:${ports[s]} ssl;\n        ssl_certificate ${certOf(certs, s).cert};\n` +
            `        ssl_certificate_key ${certOf(certs, s).key};\n        ssl_protocols TLSv1.2 TLSv1.3;\n        proxy_pass ${TLS_BACKEND};\n    }`,
        ),
      ];
      const conf = [
        bin.loadModule,
        `worker_processes ${workers};`,
        'daemon off;',
        'master_process on;',
        `pid ${dir}/nginx.pid;`,
        `lock_file ${dir}/nginx.lock;`,
        `error_log ${dir}/error.log warn;`,
        `worker_rlimit_nofile ${fdLimit};`,
        // A worker's connections count both sides; one worker may get them all.
        `events { worker_connections ${fdLimit - 100}; }`,
        'stream {',
        '    proxy_connect_timeout 5s;',
        '    proxy_timeout 1h;',
        ...servers,
        '}',
        '',
      ].join('\n');
      const file = join(dir, 'nginx.conf');
      writeFileSync(file, conf);
      child = startProcess(bin.path, ['-p', dir, '-c', file, '-e', join(dir, 'error.log')], { name, group: true, lifetimeS });
      child.stdout.resume();
      await waitForPorts(child, Object.values(ports));
      return Object.fromEntries(Object.entries(ports).map(([s, port]) => [s, { port, pid: child.pid }]));
    },
    async stop() {
      if (child) await stop(child);
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The targets of one run, in the order they are measured within a round:
 * direct, bare, then l4lb, HAProxy and NGINX each with 1 and `cores`
 * workers/threads (once if cores is 1). `haproxy`, `nginx`: from
 * lib/peers.js (skipped when missing); `certs`: from lib/certs.js (no TLS
 * services without); `fdLimit`: the hard limit of open files.
 */
export function createTargets({ cores, accessLog = false, baseline, haproxy: hap, nginx: ngx, certs, fdLimit, lifetimeS }) {
  const counts = cores > 1 ? [1, cores] : [1];
  const list = [direct(), bare({ certs, lifetimeS })];
  for (const n of counts) list.push(l4lb({ workers: n, certs, lifetimeS }));
  if (baseline !== undefined) list.push(l4lb({ baseline, certs, lifetimeS }));
  if (accessLog) list.push(l4lb({ workers: cores, access: true, certs, lifetimeS }));
  if (hap?.path) for (const n of counts) list.push(haproxy({ bin: hap, workers: n, certs, fdLimit, lifetimeS }));
  if (ngx?.path) for (const n of counts) list.push(nginx({ bin: ngx, workers: n, certs, fdLimit, lifetimeS }));
  return list;
}

/** Start the C backend (benchmarks/c/backend.c); resolves with { duplex, echo, rr } as { port, pid }, and a stop(). */
export async function startBackends(backendBin, lifetimeS) {
  const child = startProcess(backendBin, ['--lifetime', String(Math.ceil(lifetimeS))], { name: 'backend' });
  const ports = await waitForLine(child, (line) => JSON.parse(line));
  child.stdout.resume();
  const backends = Object.fromEntries(['duplex', 'echo', 'rr'].map((s) => [s, { port: ports[s], pid: child.pid }]));
  return { backends, stop: () => stop(child) };
}
