/**
 * The admin server's HTML status page (`GET /`) in a real browser: Debian's
 * headless Chromium loads it from a running l4lb and the rendered DOM shows
 * every pool and server with its state (up, down, drain, maint, backup), the
 * page's own refresh shows a change made meanwhile, and it references nothing
 * outside itself.
 *
 * Needs `chromium` (Debian package). Missing: skipped with the reason
 * locally, a failure in CI.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { PAGE_REFRESH_S } from '../src/admin/page.js';
import { deadPort, waitFor } from './helpers/net.js';
import { lbFor, namedBackendsFor } from './helpers/lb.js';
import { need } from './helpers/requirements.js';

const CHROMIUM = ['chromium', 'chromium-browser'].find((c) => spawnSync(c, ['--version'], { encoding: 'utf8' }).status === 0);

function requireChromium(t: Test): string | undefined {
  return need(t, CHROMIUM === undefined ? 'Debian chromium is not installed (apt-get install chromium)' : null) ? CHROMIUM : undefined;
}

/** Headless Chromium with a fresh profile; resolves with its stdout. Killed after 60 s. */
function chromium(t: Test, bin: string, args: string[]): Promise<string> {
  const profile = mkdtempSync(join(tmpdir(), 'l4lb-chromium-'));
  t.teardown(() => rmSync(profile, { recursive: true, force: true }));
  const child = spawn(bin, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', `--user-data-dir=${profile}`, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`chromium did not finish within 60 s; stderr: ${err.slice(-2000)}`));
    }, 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`chromium exited ${code}; stderr: ${err.slice(-2000)}`));
    });
  });
}

/** The text of the table row (`<tr>…</tr>`) that names `server`, tags stripped. */
function rowOf(dom: string, server: string): string {
  const row = dom.match(/<tr[^>]*>[\s\S]*?<\/tr>/g)?.find((r) => new RegExp(`<td class="name">${server}\\b`).test(r));
  return row === undefined ? '' : row.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim();
}

t.test('the status page in headless Chromium shows every pool and server with its state', { timeout: 180_000 }, async (t) => {
  const bin = requireChromium(t);
  if (bin === undefined) return;
  const dir = t.testdir({ 'admin.token': 'page-test-token\n' });
  const [a, b, spare] = await namedBackendsFor(t, ['a', 'b', 'spare']);
  const dead = await deadPort();
  const lb = await lbFor(t, {
    admin: { listen: '127.0.0.1:0', token_file: `${dir}/admin.token` },
    log: { level: 'info', access: false },
    listeners: [
      { name: 'postgres', bind: '127.0.0.1:0', pool: 'pg' },
      { name: 'redis', bind: '127.0.0.1:0', pool: 'cache' },
    ],
    pools: [
      {
        name: 'pg',
        balance: 'least_conn',
        health: { interval: '200ms', timeout: '200ms', fall: 1, rise: 1 },
        servers: [
          { name: 'pg-a', address: a.address },
          { name: 'pg-dead', address: `127.0.0.1:${dead}` },
          { name: 'pg-spare', address: spare.address, backup: true },
        ],
      },
      {
        name: 'cache',
        balance: 'source_hash',
        health: { interval: '200ms', timeout: '200ms', fall: 1, rise: 1 },
        servers: [
          { name: 'cache-b', address: b.address },
          { name: 'cache-drained', address: a.address },
          { name: 'cache-maint', address: spare.address },
        ],
      },
    ],
  });
  const admin = `http://127.0.0.1:${lb.app.admin!.address()!.port}`;
  for (const [server, state] of [
    ['cache-drained', 'drain'],
    ['cache-maint', 'maint'],
  ]) {
    const res = await fetch(`${admin}/pools/cache/servers/${server}/state`, {
      method: 'POST',
      headers: { authorization: 'Bearer page-test-token', 'content-type': 'application/json' },
      body: JSON.stringify({ state }),
    });
    t.equal(res.status, 200, `${server} set to ${state}`);
  }
  await waitFor(() => lb.app.pools.get('pg')!.servers.find((s) => s.name === 'pg-dead')!.health.up === false, 5_000, 'pg-dead to be marked down');

  const started = Date.now();
  const dom = await chromium(t, bin, ['--dump-dom', `${admin}/`]);
  t.comment(`chromium --dump-dom took ${Date.now() - started} ms`);
  t.match(dom, /<html/, 'the page rendered');
  for (const pool of ['pg', 'cache']) t.match(dom, new RegExp(`<h2>.*\\bpool ${pool}\\b`), `pool ${pool} has its section`);
  for (const listener of ['postgres', 'redis']) t.match(dom, new RegExp(`>${listener}<`), `listener ${listener} is listed`);
  const expected: Array<[string, RegExp]> = [
    ['pg-a', /^up pg-a /],
    ['pg-dead', /^down pg-dead /],
    ['pg-spare', /^up pg-spare backup /],
    ['cache-b', /^up cache-b /],
    ['cache-drained', /^drain cache-drained /],
    ['cache-maint', /^maint cache-maint /],
  ];
  for (const [server, re] of expected) t.match(rowOf(dom, server), re, `${server}: ${rowOf(dom, server)}`);
  t.match(rowOf(dom, 'pg-dead'), /ECONNREFUSED/, 'the down server shows why');
  t.match(dom, /<meta http-equiv="refresh" content="\d+">/, 'the page refreshes itself');
  const external = [...dom.matchAll(/\b(?:src|href)="([^"]*)"/g)].map((m) => m[1]!).filter((u) => /^(?:https?:)?\/\//.test(u) && !u.startsWith(admin));
  t.same(external, [], 'no external assets');

  // The page's own refresh, in the browser: Chromium's virtual time lets the
  // <meta http-equiv="refresh"> fire twice within one run. A counting proxy in
  // front of the admin server changes a server's state before the browser's
  // second load (which must then show it) and answers the third with 204 No
  // Content, which leaves the browser on the second document (else the page
  // would refresh for as long as Chromium runs).
  const loads: number[] = [];
  const proxy = http.createServer((req, res) => {
    if (req.url !== '/') {
      res.writeHead(404).end();
      return;
    }
    loads.push(Date.now());
    if (loads.length > 2) {
      res.writeHead(204).end();
      return;
    }
    const forward = async (): Promise<void> => {
      if (loads.length === 2) {
        const r = await fetch(`${admin}/pools/cache/servers/cache-drained/state`, {
          method: 'POST',
          headers: { authorization: 'Bearer page-test-token', 'content-type': 'application/json' },
          body: '{"state":"ready"}',
        });
        if (r.status !== 200) throw new Error(`state change answered ${r.status}`);
      }
      const page = await fetch(`${admin}/`);
      res.writeHead(page.status, Object.fromEntries([...page.headers].filter(([k]) => k !== 'content-length' && k !== 'connection' && k !== 'keep-alive')));
      res.end(await page.text());
    };
    forward().catch((err: unknown) => res.writeHead(502).end(String(err)));
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    proxy.close(() => resolve());
    proxy.closeAllConnections();
  }));
  const viaProxy = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/`;
  const budget = 2 * PAGE_REFRESH_S * 1000 + 2000;
  const refreshStarted = Date.now();
  const refreshed = await chromium(t, bin, [`--virtual-time-budget=${budget}`, '--dump-dom', viaProxy]);
  t.comment(`chromium --dump-dom with ${budget} ms of virtual time took ${Date.now() - refreshStarted} ms`);
  t.equal(loads.length, 3, 'the browser loaded the page, refreshed it by itself, and tried again');
  t.match(rowOf(refreshed, 'cache-drained'), /^up cache-drained /, 'the refreshed page shows the new state (drain → up)');
  t.match(rowOf(refreshed, 'pg-dead'), /^down pg-dead /, 'and still the rest');

  // A screenshot renders (docs/status-page.png is made the same way by scripts/screenshot-status-page.js).
  const shot = join(t.testdirName, 'page.png');
  await chromium(t, bin, ['--hide-scrollbars', '--window-size=1280,900', `--screenshot=${shot}`, `${admin}/`]);
  t.ok(statSync(shot).size > 10_000, `a screenshot of ${statSync(shot).size} bytes`);
});
