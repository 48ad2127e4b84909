/**
 * The admin server's HTML status page (`GET /`) in a real browser: Debian's
 * headless Chromium loads it from a running l4lb and the rendered DOM shows
 * every pool and server with its state (up, down, drain, maint, backup), the
 * page refreshes itself, and it references nothing outside itself.
 *
 * Needs `chromium` (Debian package). Missing: skipped with the reason
 * locally, a failure in CI.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { deadPort, namedBackend, startL4lb, waitFor } from './helpers/net.js';

const CHROMIUM = ['chromium', 'chromium-browser'].find((c) => spawnSync(c, ['--version'], { encoding: 'utf8' }).status === 0);

function requireChromium(t: Test): string | undefined {
  if (CHROMIUM !== undefined) return CHROMIUM;
  const reason = 'Debian chromium is not installed (apt-get install chromium)';
  if (process.env.CI) {
    t.fail(`${reason}: required in CI`);
  } else {
    console.error(`# skipping the status page browser test: ${reason}`);
    t.skip(reason);
  }
  return undefined;
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
  const [a, b, spare] = await Promise.all([namedBackend('a'), namedBackend('b'), namedBackend('spare')]);
  t.teardown(() => Promise.all([a.close(), b.close(), spare.close()]));
  const dead = await deadPort();
  const lb = await startL4lb({
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
  t.teardown(() => lb.stop());
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

  // After a change, the next load shows it.
  const res = await fetch(`${admin}/pools/cache/servers/cache-drained/state`, {
    method: 'POST',
    headers: { authorization: 'Bearer page-test-token', 'content-type': 'application/json' },
    body: '{"state":"ready"}',
  });
  t.equal(res.status, 200);
  const again = await chromium(t, bin, ['--dump-dom', `${admin}/`]);
  t.match(rowOf(again, 'cache-drained'), /^up cache-drained /, 'ready again: up on the next load');

  // A screenshot renders (docs/status-page.png is made the same way by scripts/screenshot-status-page.js).
  const shot = join(t.testdirName, 'page.png');
  await chromium(t, bin, ['--hide-scrollbars', '--window-size=1280,900', `--screenshot=${shot}`, `${admin}/`]);
  const { statSync } = await import('node:fs');
  t.ok(statSync(shot).size > 10_000, `a screenshot of ${statSync(shot).size} bytes`);
});
