#!/usr/bin/env node
// New TLS connections per second: l4lb terminating TLS in front of a plain
// echo backend, against a Node TLS echo server (what Node itself can do) and,
// when installed, HAProxy (`mode tcp`, `ssl crt`) and NGINX (`stream`, `ssl`),
// each with one thread, same certificate (EC P-256), same machine, same run.
//
//   npm run build && node benchmarks/tls-handshake.js [--quick] [--duration S] [--rounds N] [--concurrency C]
//
// Each connection is a full handshake (no session resumption), then 16 bytes
// there and back, then close. A second figure reuses each worker's first
// session (resumption). Rounds are interleaved across targets, the order
// rotating; the table shows medians, and the CPU each server process spent
// per 1,000 handshakes (steadier than the rates on a busy machine).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuSeconds, killAll, runNodeJson, startL4lb, startNode, startProcess, waitForLine } from './lib/children.js';

const here = (file) => fileURLToPath(new URL(file, import.meta.url));
const { values: flags } = parseArgs({
  options: {
    role: { type: 'string' },
    port: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    duration: { type: 'string' },
    rounds: { type: 'string' },
    concurrency: { type: 'string', default: '16' },
    resume: { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
  },
});

// ---- roles run in child processes -------------------------------------------

if (flags.role === 'echo') {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
} else if (flags.role === 'tls-echo') {
  const server = tls.createServer({ cert: readFileSync(flags.cert), key: readFileSync(flags.key) }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
} else if (flags.role === 'load') {
  await load();
} else {
  await main();
}

/** C workers: connect, handshake, 16 bytes there and back, close; count until the duration is over. */
async function load() {
  const port = Number(flags.port);
  const durationMs = Number(flags.duration);
  const payload = Buffer.alloc(16, 'h');
  const deadline = performance.now() + durationMs;
  let done = 0;
  let errors = 0;
  const once = (session) =>
    new Promise((resolve) => {
      const s = tls.connect({ port, host: '127.0.0.1', servername: 'a.test', rejectUnauthorized: false, session });
      let got = 0;
      let saved;
      s.on('session', (sess) => (saved ??= sess));
      s.on('error', () => {
        errors++;
        resolve(undefined);
      });
      s.on('secureConnect', () => s.write(payload));
      s.on('data', (d) => {
        got += d.length;
        if (got >= payload.length) {
          done++;
          s.destroy();
          resolve(saved);
        }
      });
    });
  const worker = async () => {
    let session;
    while (performance.now() < deadline) {
      const next = await once(flags.resume ? session : undefined);
      if (flags.resume) session ??= next;
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: Number(flags.concurrency) }, worker));
  const seconds = (performance.now() - started) / 1000;
  console.log(JSON.stringify({ handshakes: done, errors, seconds, rate: done / seconds }));
}

// ---- the run ----------------------------------------------------------------

function findNginxStream() {
  const nginx = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((p) => existsSync(p));
  if (!nginx) return null;
  const module = ['/usr/share/nginx/modules/ngx_stream_module.so', '/usr/lib/nginx/modules/ngx_stream_module.so'].find((p) => existsSync(p));
  const v = spawnSync(nginx, ['-V'], { encoding: 'utf8' });
  const builtIn = /--with-stream(?!=dynamic)(\s|$)/.test(v.stderr);
  if (!module && !builtIn) return null;
  return { nginx, loadModule: module && !builtIn ? `load_module ${module};` : '' };
}

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

async function waitForPort(port, child, timeoutMs = 10_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${child.label} exited: ${child.stderrText}`);
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`${child.label} did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main() {
  const quick = flags.quick;
  const durationMs = Math.round(Number(flags.duration ?? (quick ? 1 : 2.5)) * 1000);
  const rounds = Number(flags.rounds ?? (quick ? 1 : 3));
  const dir = mkdtempSync(join(os.tmpdir(), 'l4lb-tls-bench-'));
  process.on('exit', () => {
    killAll();
    rmSync(dir, { recursive: true, force: true });
  });
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]]) process.on(signal, () => process.exit(code));

  const gen = spawnSync('bash', [here('../scripts/gen-test-certs.sh'), dir], { encoding: 'utf8' });
  if (gen.status !== 0) throw new Error(`gen-test-certs.sh failed: ${gen.stderr}`);
  const cert = join(dir, 'a.test.crt');
  const key = join(dir, 'a.test.key');
  writeFileSync(join(dir, 'a.test.pem'), readFileSync(cert, 'utf8') + readFileSync(key, 'utf8'));

  const echo = startNode(here('./tls-handshake.js'), ['--role', 'echo'], { name: 'echo backend' });
  const echoPort = (await waitForLine(echo, (l) => JSON.parse(l).port)) ?? 0;

  const targets = [];
  const direct = startNode(here('./tls-handshake.js'), ['--role', 'tls-echo', '--cert', cert, '--key', key], { name: 'node-tls' });
  targets.push({ name: 'node-tls', port: await waitForLine(direct, (l) => JSON.parse(l).port), pid: direct.pid });

  const config = {
    log: { level: 'info', access: false },
    listeners: [{ name: 'tls', bind: '127.0.0.1:0', pool: 'echo', tls: { mode: 'terminate', certs: [{ cert, key }] } }],
    pools: [{ name: 'echo', balance: 'round_robin', servers: [{ address: `127.0.0.1:${echoPort}` }] }],
  };
  writeFileSync(join(dir, 'l4lb.json'), JSON.stringify(config));
  const lb = startL4lb(here('..'), ['run', '--config', join(dir, 'l4lb.json'), '--drain-timeout', '1s'], { name: 'l4lb' });
  let lbPort;
  await waitForLine(lb, (l) => {
    const m = JSON.parse(l);
    if (m.msg === 'listening') lbPort = m.port;
    return m.msg === 'started' ? true : undefined;
  });
  lb.stdout.resume();
  targets.push({ name: 'l4lb', port: lbPort, pid: lb.pid });

  const haproxy = spawnSync('haproxy', ['-v'], { encoding: 'utf8' });
  if (haproxy.status === 0) {
    const port = await freePort();
    writeFileSync(
      join(dir, 'haproxy.cfg'),
      `global\n    nbthread 1\n    maxconn 4000\n    ssl-default-bind-options ssl-min-ver TLSv1.2\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n` +
        `frontend f\n    bind 127.0.0.1:${port} ssl crt ${join(dir, 'a.test.pem')}\n    default_backend b\nbackend b\n    server s1 127.0.0.1:${echoPort}\n`,
    );
    const child = startProcess('haproxy', ['-f', join(dir, 'haproxy.cfg'), '-db'], { name: 'haproxy' });
    child.stdout.resume();
    await waitForPort(port, child);
    targets.push({ name: 'haproxy', port, pid: child.pid });
  } else {
    console.log('haproxy: not installed, skipped');
  }
  const ng = findNginxStream();
  if (ng) {
    const port = await freePort();
    writeFileSync(
      join(dir, 'nginx.conf'),
      `${ng.loadModule}\nworker_processes 1;\ndaemon off;\nmaster_process off;\npid ${join(dir, 'nginx.pid')};\nerror_log ${join(dir, 'nginx-error.log')} warn;\n` +
        `events { worker_connections 10000; }\nstream {\n  server {\n    listen 127.0.0.1:${port} ssl;\n    ssl_certificate ${cert};\n    ssl_certificate_key ${key};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    proxy_pass 127.0.0.1:${echoPort};\n  }\n}\n`,
    );
    const child = startProcess(ng.nginx, ['-c', join(dir, 'nginx.conf'), '-p', dir, '-e', join(dir, 'nginx-error.log')], { name: 'nginx' });
    child.stdout.resume();
    await waitForPort(port, child);
    targets.push({ name: 'nginx', port, pid: child.pid });
  } else {
    console.log('nginx with the stream module: not installed, skipped');
  }

  console.log(`targets: ${targets.map((t) => t.name).join(', ')}; ${rounds} round(s) of ${durationMs} ms, ${flags.concurrency} workers; ${os.cpus().length} CPUs`);
  const results = {};
  for (const resume of [false, true]) {
    const mode = resume ? 'resumed' : 'full';
    for (let round = 0; round < rounds; round++) {
      const order = targets.map((_, i) => targets[(i + round) % targets.length]);
      const line = [];
      for (const t of order) {
        const args = ['--role', 'load', '--port', String(t.port), '--duration', String(durationMs), '--concurrency', flags.concurrency, ...(resume ? ['--resume'] : [])];
        if (round === 0 && !quick) await runNodeJson(here('./tls-handshake.js'), [...args.slice(0, 5), '500', ...args.slice(6)], 30_000); // warm-up
        const before = cpuSeconds(t.pid);
        const r = await runNodeJson(here('./tls-handshake.js'), args, durationMs + 30_000);
        const cpu = cpuSeconds(t.pid) - before;
        ((results[mode] ??= {})[t.name] ??= []).push({ rate: r.rate, errors: r.errors, cpuMsPer1000: (cpu * 1e6) / Math.max(1, r.handshakes) });
        line.push(`${t.name} ${Math.round(r.rate)}/s`);
      }
      console.log(`${mode.padEnd(8)} round ${round + 1}/${rounds}: ${line.join(' | ')}`);
    }
  }

  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const names = targets.map((t) => t.name);
  const pad = (s, n) => String(s).padStart(n);
  console.log(`\n${'median of rounds'.padEnd(26)}${names.map((n) => pad(n, 10)).join('')}${names.filter((n) => n !== 'l4lb').map((n) => pad(`l4lb/${n}`, 15)).join('')}`);
  for (const mode of ['full', 'resumed']) {
    const rate = Object.fromEntries(names.map((n) => [n, median(results[mode][n].map((x) => x.rate))]));
    const cpu = Object.fromEntries(names.map((n) => [n, median(results[mode][n].map((x) => x.cpuMsPer1000))]));
    console.log(`${`${mode} handshakes/s`.padEnd(26)}${names.map((n) => pad(Math.round(rate[n]), 10)).join('')}${names.filter((n) => n !== 'l4lb').map((n) => pad((rate.l4lb / rate[n]).toFixed(2), 15)).join('')}`);
    console.log(`${`${mode} CPU ms/1000`.padEnd(26)}${names.map((n) => pad(Math.round(cpu[n]), 10)).join('')}${names.filter((n) => n !== 'l4lb').map((n) => pad((cpu.l4lb / cpu[n]).toFixed(2), 15)).join('')}`);
  }
  const errors = Object.values(results).flatMap((byName) => Object.values(byName).flat()).reduce((a, x) => a + x.errors, 0);
  console.log(`\nrates: higher is better; CPU: milliseconds of the server process's CPU per 1,000 connections, lower is better. errors: ${errors}`);
  process.exit(0);
}
