#!/usr/bin/env node
// Makes docs/status-page.png: l4lb (the built dist/) with two pools in front
// of demo backends, one server dead, one drained, one in maintenance, some
// traffic, then a screenshot of the admin page by headless Chromium (Debian
// package `chromium`).
//
//   npm run build && node scripts/screenshot-status-page.js [OUT.png]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = resolve(process.argv[2] ?? join(root, 'docs', 'status-page.png'));
const dir = mkdtempSync(join(tmpdir(), 'l4lb-screenshot-'));
const cleanups = [() => rmSync(dir, { recursive: true, force: true })];
const cleanup = () => {
  for (const c of cleanups.reverse()) c();
};
process.on('exit', cleanup);

/** A backend that answers its name, then echoes. */
function backend(name) {
  return new Promise((ok) => {
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.write(`${name}\n`);
      s.pipe(s);
    });
    server.listen(0, '127.0.0.1', () => ok({ server, port: server.address().port }));
    cleanups.push(() => server.close());
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const [pg1, pg2, pg3, r1, r2, r3] = await Promise.all(['pg1', 'pg2', 'pg3', 'redis1', 'redis2', 'redis3'].map(backend));
const deadPort = await new Promise((ok) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => ok(p));
  });
});
writeFileSync(join(dir, 'admin.token'), 'screenshot-token\n');
const config = {
  admin: { listen: '127.0.0.1:0', token_file: join(dir, 'admin.token') },
  log: { level: 'info', access: false },
  listeners: [
    { name: 'postgres', bind: '127.0.0.1:0', pool: 'pg' },
    { name: 'redis', bind: '127.0.0.1:0', pool: 'redis' },
  ],
  pools: [
    {
      name: 'pg',
      balance: 'least_conn',
      health: { interval: '1s', timeout: '500ms', fall: 2 },
      servers: [
        { name: 'pg1', address: `127.0.0.1:${pg1.port}` },
        { name: 'pg2', address: `127.0.0.1:${pg2.port}` },
        { name: 'pg3', address: `127.0.0.1:${pg3.port}`, backup: true },
        { name: 'pg4', address: `127.0.0.1:${deadPort}` },
      ],
    },
    {
      name: 'redis',
      balance: 'source_hash',
      health: { interval: '1s', timeout: '500ms', send: 'PING\r\n', expect: 'redis' },
      servers: [
        { name: 'redis1', address: `127.0.0.1:${r1.port}` },
        { name: 'redis2', address: `127.0.0.1:${r2.port}`, weight: 2 },
        { name: 'redis3', address: `127.0.0.1:${r3.port}` },
      ],
    },
  ],
};
const file = join(dir, 'l4lb.json');
writeFileSync(file, JSON.stringify(config));
const lb = spawn(process.execPath, [join(root, 'bin', 'l4lb.js'), 'run', '--config', file, '--drain-timeout', '1s'], { stdio: ['ignore', 'pipe', 'inherit'] });
cleanups.push(() => lb.kill('SIGKILL'));
const ports = {};
let adminPort;
await new Promise((ok, fail) => {
  let buf = '';
  lb.stdout.on('data', (d) => {
    buf += d;
    for (let i; (i = buf.indexOf('\n')) >= 0; ) {
      const line = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      if (line.msg === 'listening') ports[line.listener] = line.port;
      if (line.msg === 'admin listening') adminPort = line.port;
      if (line.msg === 'started') ok();
    }
  });
  lb.on('exit', (code) => fail(new Error(`l4lb exited ${code}`)));
});
const admin = `http://127.0.0.1:${adminPort}`;

// Some traffic: a few long connections and some short ones with bytes.
const open = [];
for (let i = 0; i < 24; i++) {
  const s = net.connect(i % 2 ? ports.postgres : ports.redis, '127.0.0.1');
  s.on('error', () => {});
  s.write('x'.repeat(2000 * (i + 1)));
  if (i % 3 === 0) open.push(s);
  else setTimeout(() => s.end(), 200);
}
cleanups.push(() => open.forEach((s) => s.destroy()));
for (const [server, state] of [
  ['redis3', 'drain'],
  ['pg2', 'maint'],
]) {
  await fetch(`${admin}/pools/${config.pools.find((p) => p.servers.some((s) => s.name === server)).name}/servers/${server}/state`, {
    method: 'POST',
    headers: { authorization: 'Bearer screenshot-token' },
    body: JSON.stringify({ state }),
  });
}
await sleep(3500); // pg4 is found down, checks have results

const profile = join(dir, 'profile');
// Not spawnSync: the demo backends live in this process and must keep answering probes meanwhile.
const chromium = spawn(
  'chromium',
  ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', `--user-data-dir=${profile}`, '--hide-scrollbars', '--window-size=1280,860', `--screenshot=${out}`, `${admin}/`],
  { stdio: ['ignore', 'ignore', 'pipe'] },
);
cleanups.push(() => chromium.kill('SIGKILL'));
let stderr = '';
chromium.stderr.on('data', (d) => (stderr += d));
const timer = setTimeout(() => {
  stderr += '\nchromium did not finish within 60 s; killed';
  chromium.kill('SIGKILL');
}, 60_000);
const started = Date.now();
const code = await new Promise((ok) => chromium.on('exit', ok));
clearTimeout(timer);
if (code !== 0) {
  console.error(stderr);
  process.exitCode = 1;
} else {
  console.log(`wrote ${out} (chromium took ${Date.now() - started} ms)`);
}
lb.kill('SIGTERM');
process.exit();
