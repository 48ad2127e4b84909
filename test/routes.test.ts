/**
 * Routes by client network (`listeners[].routes[].source`): CIDRs and
 * `@FILE` lists (re-read on reload), every key a route gives must match
 * (source and sni), first match wins, the PROXY header's address is the one
 * matched under accept_proxy, and bad lists are configuration errors naming
 * the file and line. Also the prefix set on its own, against the linear
 * CidrList, with its load and lookup times printed as comments (never asserted).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { buildModel } from '../src/config/load.js';
import { CidrList } from '../src/net/cidr.js';
import { CidrSet } from '../src/net/cidr-set.js';
import { testCerts } from './helpers/certs.js';
import { runCli, writeConfig } from './helpers/cli.js';
import { accessLine, lbFor, namedBackendsFor } from './helpers/lb.js';
import { connect, readLine, whoAnswers } from './helpers/net.js';

const dir = mkdtempSync(join(tmpdir(), 'l4lb-routes-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** A deterministic generator (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const v4 = (n: number): string => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

/** `count` random IPv4 CIDRs with prefixes /12../32 (network bits only), plus a few IPv6 ones. */
function randomCidrs(count: number, rnd: () => number): string[] {
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const prefix = 12 + Math.floor(rnd() * 21);
    const mask = (0xffffffff << (32 - prefix)) >>> 0;
    out.push(`${v4((Math.floor(rnd() * 2 ** 32) & mask) >>> 0)}/${prefix}`);
  }
  for (let i = 0; i < 50; i++) out.push(`2001:db8:${Math.floor(rnd() * 65536).toString(16)}::/48`);
  return out;
}

/** An address inside `cidr` (IPv4), or a random one. */
function addressIn(cidr: string, rnd: () => number): string {
  const [ip, p] = cidr.split('/') as [string, string];
  const base = ip.split('.').reduce((a, b) => a * 256 + Number(b), 0);
  const size = 2 ** (32 - Number(p));
  return v4(base + Math.floor(rnd() * size));
}

t.test('the prefix set agrees with a linear scan on 100k random networks, IPv6 and IPv4-mapped addresses included', async (t) => {
  const rnd = random(17);
  const cidrs = randomCidrs(100_000, rnd);
  const t0 = performance.now();
  const set = new CidrSet(cidrs);
  const loadMs = performance.now() - t0;
  const list = new CidrList(cidrs);
  const probes: string[] = [];
  for (let i = 0; i < 2000; i++) probes.push(i % 2 === 0 ? addressIn(cidrs[Math.floor(rnd() * 100_000)]!, rnd) : v4(Math.floor(rnd() * 2 ** 32)));
  probes.push('::ffff:' + probes[0], '2001:db8::1', `2001:db8:${cidrs[100_010]!.split(':')[2]}::5`, 'fe80::1%eth0', 'not-an-ip', '');
  let mismatches = 0;
  for (const ip of probes) if (set.has(ip) !== list.has(ip)) mismatches++;
  t.equal(mismatches, 0, 'same answer as CidrList for every probe');
  t.ok(probes.filter((ip) => set.has(ip)).length > 1000, 'most probes drawn from the list are in it');
  // Lookup time (printed, never asserted).
  const rounds = 200_000;
  let hits = 0;
  const t1 = performance.now();
  for (let i = 0; i < rounds; i++) if (set.has(probes[i % 2000]!)) hits++;
  const perLookupUs = ((performance.now() - t1) * 1000) / rounds;
  t.comment(`100k CIDRs: CidrSet built in ${loadMs.toFixed(1)} ms (${set.intervals} merged intervals); has() ${perLookupUs.toFixed(3)} µs per lookup (${hits} hits)`);
});

t.test('edge ranges: /0, /32, /128, adjacent and nested networks, IPv4-mapped ranges fold to IPv4', async (t) => {
  const set = new CidrSet(['10.0.0.0/8', '10.1.0.0/16', '192.168.1.255/32', '192.168.2.0/24', '::ffff:172.16.0.0/12', '2001:db8::1/128']);
  t.ok(set.has('10.255.255.255') && set.has('10.0.0.0') && set.has('::ffff:10.2.3.4'), '10/8 ends and mapped form');
  t.notOk(set.has('11.0.0.0') || set.has('9.255.255.255'), 'just outside 10/8');
  t.ok(set.has('192.168.1.255') && !set.has('192.168.1.254') && !set.has('192.168.3.0'), '/32 and /24 exactly');
  t.ok(set.has('172.16.5.5') && !set.has('172.32.0.0'), '::ffff:172.16.0.0/12 is 172.16.0.0/12');
  t.ok(set.has('2001:db8::1') && !set.has('2001:db8::2'), '/128');
  const all = new CidrSet(['0.0.0.0/0', '::/0']);
  t.ok(all.has('255.255.255.255') && all.has('0.0.0.0') && all.has('ffff::1') && all.has('::'), '/0 covers everything');
  t.notOk(new CidrSet([]).has('1.2.3.4'), 'an empty set has nothing');
});

/** Two pools whose backends say their names, and a writable list file. */
async function twoPools(t: Test): Promise<{ pools: unknown[] }> {
  const [A, B] = await namedBackendsFor(t, ['A', 'B']);
  return {
    pools: [
      { name: 'A', servers: [{ address: A.address }] },
      { name: 'B', servers: [{ address: B.address }] },
    ],
  };
}

t.test('source routes send 127.0.0.2 and 127.0.0.3 to different pools; others get the listener pool', async (t) => {
  const { pools } = await twoPools(t);
  const lb = await lbFor(t, {
    log: { level: 'debug', access: true },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'A', routes: [{ source: ['127.0.0.3/32', '10.9.0.0/16'], pool: 'B' }] }],
    pools,
  });
  t.equal(await whoAnswers(lb.port(), '127.0.0.2'), 'A', '127.0.0.2 matches no route: listener pool');
  t.equal(await whoAnswers(lb.port(), '127.0.0.3'), 'B', '127.0.0.3 → B');
  const s = await connect(lb.port(), '127.0.0.3');
  s.on('error', () => {});
  t.teardown(() => s.destroy());
  t.equal(await readLine(s, 10_000), 'B', 'a connection from 127.0.0.3 reaches B');
  s.end();
  t.equal((await accessLine(lb, `127.0.0.3:${s.localPort!}`)).pool, 'B', 'the access line names the routed pool');
});

t.test('@FILE lists (comments, blank lines) route, and a reload after the file changes moves new connections', async (t) => {
  const { pools } = await twoPools(t);
  const file = join(dir, 'moves.cidrs');
  writeFileSync(file, '# site B clients\n\n127.0.0.3/32   # one host\n  10.0.0.0/8\n');
  const raw = {
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'A', routes: [{ source: [`@${file}`], pool: 'B' }] }],
    pools,
  };
  const lb = await lbFor(t, raw);
  t.equal(await whoAnswers(lb.port(), '127.0.0.3'), 'B', '127.0.0.3 listed → B');
  t.equal(await whoAnswers(lb.port(), '127.0.0.2'), 'A', '127.0.0.2 not listed → A');
  const open = await connect(lb.port(), '127.0.0.3');
  open.on('error', () => {});
  t.teardown(() => open.destroy());
  t.equal(await readLine(open, 10_000), 'B', 'a connection open across the reload');

  writeFileSync(file, '127.0.0.2/32\n');
  // The same configuration built again (as a reload does), which reads the file again; the listener keeps its socket.
  await lb.app.reload(await buildModel({ ...raw, workers: lb.app.model.workers }));
  t.equal(await whoAnswers(lb.port(), '127.0.0.2'), 'B', 'after reload 127.0.0.2 → B');
  t.equal(await whoAnswers(lb.port(), '127.0.0.3'), 'A', 'after reload 127.0.0.3 → A');
  open.write('still\n');
  t.equal(await readLine(open, 10_000), 'still', 'the open connection kept its server');
});

t.test('SIGHUP re-reads an @FILE list', { skip: process.platform === 'win32' ? 'no SIGHUP' : false, timeout: 90_000 }, async (t) => {
  const { cliFor } = await import('./helpers/cli.js');
  const { pools } = await twoPools(t);
  const file = join(dir, 'hup.cidrs');
  writeFileSync(file, '127.0.0.3\n');
  const child = await cliFor(t, {
    log: { level: 'info' },
    workers: Number(process.env.L4LB_TEST_WORKERS ?? 1),
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'A', routes: [{ source: [`@${file}`], pool: 'B' }] }],
    pools,
  });
  const port = child.port('front');
  t.equal(await whoAnswers(port, '127.0.0.3'), 'B', 'before: 127.0.0.3 → B');
  writeFileSync(file, '# moved\n127.0.0.2\n');
  const before = child.lines.length;
  child.proc.kill('SIGHUP');
  await child.waitForLine((l) => l.msg === 'configuration reloaded' && child.lines.indexOf(l) >= before, 30_000);
  t.equal(await whoAnswers(port, '127.0.0.3'), 'A', 'after SIGHUP: 127.0.0.3 → A');
  t.equal(await whoAnswers(port, '127.0.0.2'), 'B', 'after SIGHUP: 127.0.0.2 → B');

  writeFileSync(file, '127.0.0.2\n300.1.1.1/8\n');
  const failedFrom = child.lines.length;
  child.proc.kill('SIGHUP');
  const problem = await child.waitForLine((l) => l.msg === 'configuration problem' && child.lines.indexOf(l) >= failedFrom, 30_000);
  t.match(problem, { path: 'listeners[0].routes[0].source', problem: `${file}:2: expected a CIDR, got "300.1.1.1/8"` }, 'a bad line fails the reload, naming file and line');
  await child.waitForLine((l) => /reload failed/.test(String(l.msg)) && child.lines.indexOf(l) >= failedFrom, 30_000);
  t.equal(await whoAnswers(port, '127.0.0.2'), 'B', 'the running routes are unchanged');
});

t.test('a route giving source and sni needs both: the TLS listener routes only a listed client with that name', async (t) => {
  const certs = testCerts();
  const { pools } = await twoPools(t);
  const lb = await lbFor(t, {
    listeners: [
      {
        name: 'tls',
        bind: '127.0.0.1:0',
        pool: 'A',
        tls: { mode: 'terminate', certs: [certs.pair('default.test'), certs.pair('a.test')] },
        routes: [{ sni: 'a.test', source: ['127.0.0.3/32'], pool: 'B' }],
      },
    ],
    pools,
  });
  const who = async (servername: string, localAddress: string): Promise<string> => {
    const c = tls.connect({ port: lb.port(), host: '127.0.0.1', localAddress, servername, ca: certs.ca });
    c.on('error', () => {});
    t.teardown(() => c.destroy());
    await new Promise<void>((resolve, reject) => {
      c.once('secureConnect', resolve);
      c.once('error', reject);
    });
    try {
      return await readLine(c, 10_000);
    } finally {
      c.destroy();
    }
  };
  t.equal(await who('a.test', '127.0.0.3'), 'B', 'listed client, matching name → B');
  t.equal(await who('a.test', '127.0.0.2'), 'A', 'other client, matching name → A');
  t.equal(await who('default.test', '127.0.0.3'), 'A', 'listed client, other name → A');
});

t.test('accept_proxy: the PROXY header address is matched against a 100k-network @FILE list', { timeout: 120_000 }, async (t) => {
  const { pools } = await twoPools(t);
  const rnd = random(99);
  const cidrs = randomCidrs(100_000, rnd);
  const file = join(dir, 'big.cidrs');
  writeFileSync(file, `# 100k random networks\n${cidrs.join('\n')}\n`);
  const t0 = performance.now();
  const model = await buildModel({
    listeners: [
      {
        name: 'pp',
        bind: '127.0.0.1:0',
        pool: 'A',
        accept_proxy: true,
        trusted_proxies: ['127.0.0.1/32'],
        routes: [{ source: ['192.0.2.0/24', `@${file}`], pool: 'B' }],
      },
    ],
    pools,
  });
  t.comment(`configuration with a 100k-line @FILE checked and built in ${(performance.now() - t0).toFixed(0)} ms`);
  t.equal(model.listeners[0]!.routes[0]!.sourceCidrs?.length, cidrs.length + 1, 'every line and the inline CIDR are in the model');
  const lb = await lbFor(t, {
    listeners: [
      {
        name: 'pp',
        bind: '127.0.0.1:0',
        pool: 'A',
        accept_proxy: true,
        trusted_proxies: ['127.0.0.1/32'],
        routes: [{ source: ['192.0.2.0/24', `@${file}`], pool: 'B' }],
      },
    ],
    pools,
  });
  const reference = new CidrList(['192.0.2.0/24', ...cidrs]);
  const addresses: string[] = ['192.0.2.77'];
  for (let i = 0; i < 199; i++) addresses.push(i % 2 === 0 ? addressIn(cidrs[Math.floor(rnd() * cidrs.length)]!, rnd) : v4(Math.floor(rnd() * 2 ** 32)));
  const wrong: string[] = [];
  let routed = 0;
  // A few at a time: bounded, and quick on a loaded machine.
  for (let i = 0; i < addresses.length; i += 10) {
    await Promise.all(
      addresses.slice(i, i + 10).map(async (ip) => {
        const s = await connect(lb.port(), '127.0.0.1');
        s.on('error', () => {});
        try {
          s.write(`PROXY TCP4 ${ip} 127.0.0.1 40000 ${lb.port()}\r\n`);
          const got = await readLine(s, 20_000);
          const want = reference.has(ip) ? 'B' : 'A';
          if (got === 'B') routed++;
          if (got !== want) wrong.push(`${ip}: ${got}, expected ${want}`);
        } finally {
          s.destroy();
        }
      }),
    );
  }
  t.same(wrong, [], 'every client address reached the pool the list says');
  t.ok(routed > 50 && routed < addresses.length, `both pools used (${routed} of ${addresses.length} to B)`);
});

t.test('configuration errors name the route, the file and the line', async (t) => {
  const bad = join(dir, 'bad.cidrs');
  writeFileSync(bad, '10.0.0.0/8\n# fine\n\n10.0.0.0/33\nfoo\n');
  const base = { pools: [{ name: 'A', servers: [{ address: '127.0.0.1:1' }] }, { name: 'B', servers: [{ address: '127.0.0.1:2' }] }] };
  const problems = async (routes: unknown[], extra: Record<string, unknown> = {}): Promise<string[]> => {
    try {
      await buildModel({ ...base, ...extra, listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'A', routes }] });
      return [];
    } catch (err) {
      return ((err as { problems?: Array<{ path: string; message: string }> }).problems ?? []).map((p) => `${p.path}: ${p.message}`);
    }
  };
  const lines = await problems([{ source: ['10.1.0.0/16'], pool: 'B' }, { source: ['10.2.0.0/16', `@${bad}`], pool: 'B' }]);
  t.ok(lines.includes(`listeners[0].routes[1].source: ${bad}:4: expected a CIDR, got "10.0.0.0/33"`), 'bad prefix: file and line');
  t.ok(lines.includes(`listeners[0].routes[1].source: ${bad}:5: expected a CIDR, got "foo"`), 'junk line: file and line');
  const missing = await problems([{ source: [`@${join(dir, 'nope.cidrs')}`], pool: 'B' }]);
  t.match(missing, [new RegExp(`^listeners\\[0\\]\\.routes\\[0\\]\\.source: cannot read .*nope\\.cidrs: no such file$`)], 'a missing file');
  t.match(await problems([{ source: ['10.0.0.0/40'], pool: 'B' }]), [/^listeners\[0\]\.routes\[0\]\.source\[0\]: expected a prefix length 0\.\.32/], 'an inline bad CIDR by index');
  t.match(await problems([{ sni: 'a.test', pool: 'B' }]), [/^listeners\[0\]\.routes: SNI routes need tls/], 'sni routes still need tls');
  t.same(await problems([{ source: ['10.0.0.0/8'], pool: 'B' }]), [], 'source-only routes need no tls');
  t.match(await problems([{ pool: 'B' }]), [/^listeners\[0\]\.routes\[0\]: a route needs sni, source or both/], 'a route matching everything');
  t.match(
    await problems([{ country: ['DE', 'FR'], pool: 'B' }], { geoip: { database: join(dir, 'x.mmdb') } }),
    [/^listeners\[0\]\.routes\[0\]\.country: country routes need a GeoIP reader, not available in this build$/],
    'country is refused',
  );
  // The CLI says the same.
  const { file, cleanup } = writeConfig({ ...base, listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'A', routes: [{ source: [`@${bad}`], pool: 'B' }] }] });
  t.teardown(cleanup);
  const out = runCli(['check', '--config', file]);
  t.not(out.status, 0, 'l4lb check fails');
  t.match(out.stdout + out.stderr, `${bad}:4: expected a CIDR, got "10.0.0.0/33"`, 'and names the file and line');
});
