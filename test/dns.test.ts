/**
 * Server names that follow DNS: l4lb asks a DNS server the test runs on
 * loopback (answers from a table the test changes, SERVFAIL on demand) and
 * follows its answers at run time.
 */
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { adminPort, clientFor, lbFor, type Owner } from './helpers/lb.js';
import { echoes, readLine, sleep, waitFor, whoAnswers, type Running } from './helpers/net.js';
import { execFile } from 'node:child_process';
import { BIN, writeConfig } from './helpers/cli.js';
import { testCerts } from './helpers/certs.js';
import { DnsResolver } from '../src/dns/resolver.js';
import { nextDelayMs } from '../src/runtime/dns-refresh.js';

/** A tiny authoritative DNS server: A and AAAA records from `records`, with `ttl`; SERVFAIL while `servfail`; NXDOMAIN for other names. */
interface DnsServer {
  readonly port: number;
  records: Map<string, string[]>;
  ttl: number;
  servfail: boolean;
  /** Questions received so far. */
  queries: number;
}

async function dnsServerFor(t: Owner, records: Record<string, string[]> = {}): Promise<DnsServer> {
  const socket = dgram.createSocket('udp4');
  const server: DnsServer = { port: 0, records: new Map(Object.entries(records)), ttl: 60, servfail: false, queries: 0 };
  socket.on('message', (msg, peer) => {
    const answer = answerTo(server, msg);
    if (answer !== null) socket.send(answer, peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => socket.close(() => resolve())));
  return Object.assign(server, { port: socket.address().port });
}

function answerTo(server: DnsServer, msg: Buffer): Buffer | null {
  if (msg.length < 12) return null;
  // The question: labels up to a zero byte, then QTYPE and QCLASS.
  let i = 12;
  const labels: string[] = [];
  while (i < msg.length && msg[i] !== 0) {
    const n = msg[i]!;
    labels.push(msg.subarray(i + 1, i + 1 + n).toString('ascii'));
    i += 1 + n;
  }
  const qtype = msg.readUInt16BE(i + 1);
  const question = msg.subarray(12, i + 5);
  server.queries++;
  const name = labels.join('.').toLowerCase();
  const known = server.records.get(name);
  const rcode = server.servfail ? 2 : known === undefined ? 3 : 0;
  const family = qtype === 1 ? 4 : qtype === 28 ? 6 : 0;
  const ips = rcode === 0 ? (known ?? []).filter((ip) => net.isIP(ip) === family) : [];
  const header = Buffer.alloc(12);
  msg.copy(header, 0, 0, 2); // id
  header.writeUInt16BE(0x8400 | 0x0100 | rcode, 2); // response, authoritative, recursion desired echoed
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(ips.length, 6);
  const answers = ips.map((ip) => {
    const rdata = family === 4 ? Buffer.from(ip.split('.').map(Number)) : ipv6Bytes(ip);
    const rr = Buffer.alloc(12);
    rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    rr.writeUInt16BE(qtype, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(server.ttl, 6);
    rr.writeUInt16BE(rdata.length, 10);
    return Buffer.concat([rr, rdata]);
  });
  return Buffer.concat([header, question, ...answers]);
}

function ipv6Bytes(ip: string): Buffer {
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const tl = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...h, ...Array(8 - h.length - tl.length).fill('0'), ...tl];
  const b = Buffer.alloc(16);
  groups.forEach((g, k) => b.writeUInt16BE(parseInt(g, 16), k * 2));
  return b;
}

/** A backend on `host:port` that writes its name on connect, then echoes. */
async function namedAt(t: Owner, name: string, host: string, port = 0): Promise<{ port: number; accepted: number }> {
  const b = { port: 0, accepted: 0 };
  const open = new Set<net.Socket>();
  const server = net.createServer((s) => {
    b.accepted++;
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
    s.write(`${name}\n`);
    s.pipe(s);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  );
  b.port = (server.address() as net.AddressInfo).port;
  return b;
}

/** Backends `a` on 127.0.0.2 and `b` on 127.0.0.3, on one port (a name's addresses share the server's port). */
async function twoBackends(t: Owner): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const a = await namedAt(t, 'a', '127.0.0.2');
    try {
      await namedAt(t, 'b', '127.0.0.3', a.port);
      return a.port;
    } catch (err) {
      if (attempt >= 5) throw err;
    }
  }
}

/** `l4lb check ...`, run without blocking this process (whose DNS server must answer meanwhile). */
function check(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, 'check', ...args], { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

function config(dnsPort: number, port: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    log: { level: 'debug', access: false },
    admin: { listen: '127.0.0.1:0' },
    dns: { servers: [`127.0.0.1:${dnsPort}`], interval: '500ms' },
    listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'round_robin', retries: 0, servers: [{ name: 'svc', address: `svc.test:${port}` }], ...extra }],
  };
}

async function status(lb: Running): Promise<{ pools: Array<{ name: string; servers: Array<{ name: string; state: string; address: string }> }> }> {
  const res = await fetch(`http://127.0.0.1:${adminPort(lb)}/status`);
  return (await res.json()) as never;
}

async function metrics(lb: Running): Promise<string> {
  return (await fetch(`http://127.0.0.1:${adminPort(lb)}/metrics`)).text();
}

t.test('an answer that changes moves new connections to the new address; an open connection to the old one stays', async (t) => {
  const port = await twoBackends(t);
  const dns = await dnsServerFor(t, { 'svc.test': ['127.0.0.2'] });
  const lb = await lbFor(t, config(dns.port, port));
  t.equal(await whoAnswers(lb.port()), 'a');
  const old = await clientFor(t, lb.port());
  t.equal(await readLine(old), 'a');

  dns.records.set('svc.test', ['127.0.0.3']);
  const changed = performance.now();
  let followMs = -1;
  for (let i = 0; i < 200 && followMs < 0; i++) {
    if ((await whoAnswers(lb.port())) === 'b') followMs = performance.now() - changed;
    else await sleep(25);
  }
  t.ok(followMs >= 0, 'new connections reach the new address');
  t.comment(`follow time (answer changed → first new connection on the new address): ${Math.round(followMs)} ms with dns.interval 500ms`);
  t.equal(await echoes(old, 'still here'), 'still here', 'the connection to the old address stays open and works');

  const change = lb.lines.find((l) => l.msg === 'dns change');
  t.match(change, { pool: 'p', server: 'svc', host: 'svc.test', added: ['127.0.0.3'], removed: ['127.0.0.2'] });
  t.notOk(lb.lines.some((l) => l.msg === 'configuration reloaded'), 'not logged as a configuration reload');
  t.equal(lb.app.reloads.succeeded, 0, 'not counted as a reload');
  const s = await status(lb);
  t.same(s.pools[0]!.servers.filter((x) => x.state !== 'removed').map((x) => [x.name, x.state]), [['svc', 'up']]);
});

t.test('a name with two addresses is two servers NAME/ADDRESS, both used', async (t) => {
  const port = await twoBackends(t);
  const dns = await dnsServerFor(t, { 'svc.test': ['127.0.0.3', '127.0.0.2'] });
  const lb = await lbFor(t, config(dns.port, port));
  const s = await status(lb);
  t.same(
    s.pools[0]!.servers.map((x) => [x.name, x.state]),
    [
      [`svc/127.0.0.2:${port}`, 'up'],
      [`svc/127.0.0.3:${port}`, 'up'],
    ],
  );
  const seen = new Set<string>();
  for (let i = 0; i < 10; i++) seen.add(await whoAnswers(lb.port()));
  t.same([...seen].sort(), ['a', 'b']);

  // Down to one address: the one left is the server as configured.
  dns.records.set('svc.test', ['127.0.0.2']);
  await waitFor(() => lb.app.pools.get('p')!.servers.length === 1, 10_000, 'the pool to follow');
  t.equal(lb.app.pools.get('p')!.servers[0]!.name, 'svc');
  t.equal(await whoAnswers(lb.port()), 'a');
});

t.test('SERVFAIL changes nothing and counts in l4lb_dns_failures_total', async (t) => {
  const port = await twoBackends(t);
  const dns = await dnsServerFor(t, { 'svc.test': ['127.0.0.2'] });
  const lb = await lbFor(t, config(dns.port, port));
  t.match(await metrics(lb), /l4lb_dns_failures_total\{pool="p",server="svc"\} 0/);
  dns.servfail = true;
  await waitFor(() => [...lb.app.dnsFailures.values()].some((f) => f.count >= 2), 10_000, 'two failed lookups');
  t.match(await metrics(lb), /l4lb_dns_failures_total\{pool="p",server="svc"\} [2-9]/);
  t.equal(await whoAnswers(lb.port()), 'a', 'the last good address stays');
  t.same(lb.app.pools.get('p')!.servers.map((s) => s.address.host), ['127.0.0.2']);
  const warned = lb.lines.filter((l) => l.msg === 'dns lookup failed; keeping the last good addresses');
  t.equal(warned.length, 1, 'logged once (bounded), not at every lookup');
  t.match(warned[0], { pool: 'p', server: 'svc', code: 'L4LB_DNS_FAILED', reason: 'ESERVFAIL', addresses: ['127.0.0.2'] });
  // An empty answer is a failure too: the pool is never emptied.
  dns.servfail = false;
  dns.records.set('svc.test', []);
  const before = [...lb.app.dnsFailures.values()][0]!.count;
  await waitFor(() => [...lb.app.dnsFailures.values()][0]!.count > before, 10_000, 'an empty answer counted');
  t.equal(await whoAnswers(lb.port()), 'a');
});

t.test('a name that does not resolve at start: l4lb starts, the server is unresolved, and it comes up once the name resolves', async (t) => {
  const port = await twoBackends(t);
  const dns = await dnsServerFor(t, {});
  const lb = await lbFor(t, config(dns.port, port));
  t.ok(lb.app.model.warnings.some((w) => /pools\[0\]\.servers\[0\]\.address: cannot resolve host "svc\.test" \(ENOTFOUND\)/.test(w)));
  const s = await status(lb);
  t.same(s.pools[0]!.servers.map((x) => [x.name, x.state, x.address]), [['svc', 'unresolved', `svc.test:${port}`]]);
  const client = await clientFor(t, lb.port());
  await new Promise((resolve) => client.once('close', resolve));
  t.pass('a connection meanwhile is closed at once (no server)');

  dns.records.set('svc.test', ['127.0.0.3']);
  await waitFor(() => lb.app.pools.get('p')!.servers.length === 1, 10_000, 'the server to appear');
  t.equal(await whoAnswers(lb.port()), 'b');
  t.same((await status(lb)).pools[0]!.servers.map((x) => [x.name, x.state]), [['svc', 'up']]);
});

t.test('l4lb check warns about an unresolvable name, fails for a malformed one, and --no-resolve asks nothing', async (t) => {
  const dns = await dnsServerFor(t, {});
  const good = config(dns.port, 5432);
  delete good.admin;
  const { file, cleanup } = writeConfig(good);
  t.teardown(cleanup);
  const warned = await check(['--config', file]);
  t.equal(warned.status, 0, warned.stderr);
  t.match(warned.stderr, /warning: pools\[0\]\.servers\[0\]\.address: cannot resolve host "svc\.test" \(ENOTFOUND\): server "svc" of pool "p" starts unresolved/);
  t.ok(dns.queries > 0);

  const asked = dns.queries;
  const offline = await check(['--no-resolve', '--config', file]);
  t.equal(offline.status, 0, offline.stderr);
  t.notMatch(offline.stderr, /cannot resolve/);
  t.match(offline.stderr, /1 server host name not looked up \(--no-resolve\)/);
  t.equal(dns.queries, asked, 'no lookup with --no-resolve');

  const bad = config(dns.port, 5432);
  delete bad.admin;
  (bad.pools as Array<{ servers: Array<{ address: string }> }>)[0]!.servers[0]!.address = 'svc..test:5432';
  const malformed = writeConfig(bad);
  t.teardown(malformed.cleanup);
  const failed = await check(['--no-resolve', '--config', malformed.file]);
  t.equal(failed.status, 1);
  t.match(failed.stderr + failed.stdout, /pools\[0\]\.servers\[0\]\.address: expected a hostname or IP address/);
});

t.test('the resolver picks one family, sorts, and reports the TTL; the wait follows a shorter TTL with a 1 s floor', async (t) => {
  const dns = await dnsServerFor(t, { 'both.test': ['127.0.0.9', '127.0.0.8', '::1'], 'six.test': ['::1'] });
  dns.ttl = 7;
  const r = new DnsResolver({ servers: [`127.0.0.1:${dns.port}`] });
  t.same(await r.resolve('both.test'), { addresses: ['127.0.0.8', '127.0.0.9'], ttl: 7 });
  t.same(await r.resolve('six.test'), { addresses: ['::1'], ttl: 7 });
  await t.rejects(r.resolve('none.test'), { code: 'L4LB_DNS_FAILED', reason: 'ENOTFOUND' });
  t.same(await new DnsResolver().resolve('localhost'), { addresses: ['127.0.0.1'], ttl: null }, '/etc/hosts through the system resolver');
  t.equal(nextDelayMs(30_000, 7), 7_000);
  t.equal(nextDelayMs(30_000, 0), 1_000);
  t.equal(nextDelayMs(500, 60), 500);
  t.equal(nextDelayMs(30_000, null), 30_000);
});

t.test('a DNS change reads no certificate: it applies even when a certificate file has turned bad since', async (t) => {
  const port = await twoBackends(t);
  const dns = await dnsServerFor(t, { 'svc.test': ['127.0.0.2'] });
  const dir = t.testdir({});
  const certs = testCerts().pem('a.test');
  writeFileSync(join(dir, 'a.crt'), certs.cert);
  writeFileSync(join(dir, 'a.key'), certs.key);
  const raw = config(dns.port, port);
  (raw.listeners as Array<Record<string, unknown>>).push({
    name: 'tls',
    bind: '127.0.0.1:0',
    pool: 'p',
    tls: { mode: 'terminate', certs: [{ cert: join(dir, 'a.crt'), key: join(dir, 'a.key') }] },
  });
  const lb = await lbFor(t, raw);
  writeFileSync(join(dir, 'a.crt'), 'not a certificate\n');
  dns.records.set('svc.test', ['127.0.0.3']);
  await waitFor(() => lb.lines.some((l) => l.msg === 'dns change' || l.msg === 'dns change not applied'), 10_000, 'the change');
  t.notOk(lb.lines.some((l) => l.msg === 'dns change not applied'), 'applied: no certificate was re-read');
  t.equal(await whoAnswers(lb.port()), 'b');
});
