/**
 * The reload preview: `GET /config`, diffModels on built models (listeners,
 * pools, servers, admin, log; what each means at reload), the share of
 * source_hash clients that move (checked against the ideal-hash formula and
 * against the runtime Pool's own picks), the text, and the real CLI
 * (`l4lb check --config NEW --diff ADMIN_URL`) against a running l4lb.
 * The CLI part needs dist/ (npm test builds it).
 */
import t from 'tap';
import { buildModel } from '../src/config/load.js';
import { configDoc, modelToJson, parseConfigDoc, redactBytes, redactionKey, type ModelJson } from '../src/config/model-json.js';
import type { Model } from '../src/config/model.js';
import { expectedMovedShare, ipv4SampleKey, ipv6SampleKeys } from '../src/balance/moves.js';
import { Pool } from '../src/pool.js';
import { diffModels, type ClientMoves, type ConfigDiff } from '../src/config/diff.js';
import { formatBytes } from '../src/config/diff-fields.js';
import { formatDuration } from '../src/config/duration.js';
import { formatEndpoint } from '../src/config/address.js';
import { formatDiff, formatInt, formatShare } from '../src/cli/diff-render.js';
import { backendFor, lbFor } from './helpers/lb.js';
import { BIN, adminPortOf, cliFor, runCli, writeConfig } from './helpers/cli.js';

type Raw = {
  admin?: Record<string, unknown>;
  log?: Record<string, unknown>;
  listeners: Array<Record<string, unknown>>;
  pools: Array<Record<string, unknown> & { servers: Array<Record<string, unknown>> }>;
};

function servers(n: number, from = 1): Array<Record<string, unknown>> {
  return Array.from({ length: n }, (_, i) => ({ name: `pg${from + i}`, address: `10.0.0.${from + i}:5432` }));
}

function base(): Raw {
  return {
    log: { level: 'info', access: false },
    listeners: [
      { name: 'postgres', bind: '127.0.0.1:5432', pool: 'pg' },
      { name: 'mqtt', bind: '127.0.0.1:1883', pool: 'mq', allow: ['10.0.0.0/8', '192.168.0.0/16'] },
    ],
    pools: [
      { name: 'pg', balance: 'source_hash', servers: servers(10) },
      { name: 'mq', balance: 'least_conn', servers: servers(3), health: { send: 'PING\r\n', expect: '+PONG' } },
      { name: 'old', balance: 'round_robin', servers: servers(2) },
    ],
  };
}

/** The running side as `GET /config` delivers it: through JSON. */
function served(model: Model): ModelJson {
  const doc = parseConfigDoc(JSON.parse(JSON.stringify(configDoc(model))));
  if (typeof doc === 'string') throw new Error(doc);
  return doc;
}

async function diff(before: Raw, change: (r: Raw) => void, sample = { ipv4: 200_000, ipv6: 20_000 }): Promise<ConfigDiff> {
  const after = structuredClone(before);
  change(after);
  return diffModels(served(await buildModel(before)), await buildModel(after), sample);
}

function moves(d: ConfigDiff, pool: string): ClientMoves {
  const m = d.clientMoves.find((x) => x.pool === pool);
  if (m === undefined) throw new Error(`no client moves for ${pool}`);
  return m;
}

function pool(raw: Raw, name: string): Raw['pools'][number] {
  return raw.pools.find((p) => p.name === name)!;
}

// ---------------------------------------------------------------------------
// GET /config and the document

t.test('GET /config serves the running model with the token: payloads redacted, in hex with reveal=secrets; read-only; never the token', async (t) => {
  const dir = t.testdir({ 'admin.token': 'secret-token-value-42\n' });
  const auth = { Authorization: 'Bearer secret-token-value-42' };
  const raw = {
    admin: { listen: '127.0.0.1:0', token_file: `${dir}/admin.token` },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'source_hash', servers: [{ name: 'a', address: '127.0.0.1:1' }], health: { send: 'hex:00ff0d0a', expect: 'OK' } }],
  };
  const lb = await lbFor(t, raw);
  const url = `http://127.0.0.1:${lb.app.admin!.address()!.port}`;
  t.equal((await fetch(`${url}/config`)).status, 401, 'no token: 401');
  const res = await fetch(`${url}/config`, { headers: auth });
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /application\/json/);
  t.match(res.headers.get('cache-control'), 'no-store');
  const text = await res.text();
  t.notMatch(text, 'secret-token-value-42', 'the token never appears, only its file');
  const doc = JSON.parse(text) as { version: number; model: ModelJson };
  t.equal(doc.version, 1);
  const key = redactionKey('secret-token-value-42');
  t.same(doc.model.pools[0]!.health.send, redactBytes(Buffer.from('00ff0d0a', 'hex'), key), 'probe bytes redacted');
  t.same(doc.model.pools[0]!.health.expect, redactBytes(Buffer.from('OK'), key));
  t.equal(doc.model.admin?.tokenFile, `${dir}/admin.token`);

  const revealed = await fetch(`${url}/config?reveal=secrets`, { headers: auth });
  t.equal(revealed.status, 200);
  const full = (await revealed.json()) as { version: number; model: ModelJson };
  t.same(full.model, modelToJson(lb.app.model), 'with reveal=secrets: the running model, exactly');
  t.same(full.model.pools[0]!.health.send, { hex: '00ff0d0a' }, 'probe bytes as hex');
  t.same(full.model.pools[0]!.health.expect, { hex: '4f4b' });
  t.ok(diffModels(full.model, lb.app.model).identical, 'the served model compares equal to the one it came from');

  const head = await fetch(`${url}/config`, { method: 'HEAD', headers: auth });
  t.equal(head.status, 200, 'HEAD works');
  const post = await fetch(`${url}/config`, { method: 'POST', body: '{}', headers: auth });
  t.equal(post.status, 405, 'read-only');
  t.equal(post.headers.get('allow'), 'GET, HEAD');
});

t.test('parseConfigDoc rejects what it cannot compare', async (t) => {
  const model = modelToJson(await buildModel(base()));
  t.same(parseConfigDoc({ version: 1, model }), model);
  t.match(parseConfigDoc('<html>'), /expected a JSON object/);
  t.match(parseConfigDoc({ version: 2, model }), /version 2, this l4lb reads version 1/);
  t.match(parseConfigDoc({ version: 1, model: { ...model, pools: 'x' } }), /model.pools is not a list/);
  const bad = structuredClone(model) as unknown as { pools: Array<{ servers: Array<{ weight: number }> }> };
  bad.pools[0]!.servers[3]!.weight = 0;
  t.match(parseConfigDoc({ version: 1, model: bad }), /model.pools\[0\].servers\[3\] is not a server/);
  const noBind = structuredClone(model) as unknown as { listeners: Array<{ bind: unknown }> };
  noBind.listeners[1]!.bind = '127.0.0.1:80';
  t.match(parseConfigDoc({ version: 1, model: noBind }), /model.listeners\[1\].bind is not an address/);
});

// ---------------------------------------------------------------------------
// Structure

t.test('identical configurations show no changes', async (t) => {
  const d = await diff(base(), () => {});
  t.ok(d.identical);
  t.same(d.listeners, { added: [], removed: [], changed: [] });
  t.same(d.pools, { added: [], removed: [], changed: [] });
  t.equal(moves(d, 'pg').kind, 'unchanged');
  t.equal(formatDiff(d), 'no changes\n');

  const reordered = await diff(base(), (r) => {
    r.pools.reverse();
    r.listeners.reverse();
    pool(r, 'pg').servers.reverse();
    r.listeners.find((l) => l.name === 'mqtt')!.allow = ['192.168.0.0/16', '10.0.0.0/8'];
  });
  t.ok(reordered.identical, 'order of listeners, pools, servers and CIDRs does not matter');
});

t.test('added, removed and changed listeners are shown; a bind change re-opens the socket', async (t) => {
  const d = await diff(base(), (r) => {
    r.listeners[0]!.bind = '127.0.0.1:6432';
    r.listeners[0]!.max_connections = 100;
    r.listeners[0]!.timeouts = { idle: '30m' };
    r.listeners[1]!.allow = ['10.0.0.0/8', '172.16.0.0/12'];
    r.listeners[1]!.per_source = { connect_rate: 50 };
    r.listeners.push({ name: 'redis', bind: '127.0.0.1:6379', pool: 'mq' });
  });
  t.notOk(d.identical);
  t.same(
    d.listeners.added.map((l) => [l.name, l.bind, l.pool, l.kind, l.note]),
    [['redis', '127.0.0.1:6379', 'mq', 'plain TCP', 'binds a new socket']],
  );
  t.same(d.listeners.removed, []);
  const pg = d.listeners.changed.find((l) => l.name === 'postgres')!;
  t.ok(pg.reopensSocket);
  t.match(pg.fields, [
    { field: 'bind', from: '127.0.0.1:5432', to: '127.0.0.1:6432', note: /socket re-opened: binds a new socket; the old socket stops accepting; its open connections finish/ },
    { field: 'timeouts.idle', from: '1h', to: '30m' },
    { field: 'max_connections', from: 'unlimited', to: '100' },
  ]);
  const mqtt = d.listeners.changed.find((l) => l.name === 'mqtt')!;
  t.notOk(mqtt.reopensSocket);
  t.match(mqtt.fields, [
    { field: 'allow', from: '[10.0.0.0/8, 192.168.0.0/16]', to: '[10.0.0.0/8, 172.16.0.0/12]', note: '+172.16.0.0/12 -192.168.0.0/16' },
    { field: 'per_source.connect_rate', from: 'unlimited', to: '50' },
  ]);

  const removed = await diff(base(), (r) => {
    r.listeners.pop();
  });
  t.same(
    removed.listeners.removed.map((l) => [l.name, l.note]),
    [['mqtt', 'stops accepting; its open connections finish']],
  );
});

t.test('changes of per_source.ipv6_prefix, tls.strict_sni and tls.session_tickets are shown', async (t) => {
  const d = await diff(base(), (r) => {
    r.listeners[1]!.per_source = { max_connections: 10, ipv6_prefix: 48 };
  });
  const mqtt = d.listeners.changed.find((l) => l.name === 'mqtt')!;
  t.match(mqtt.fields, [
    { field: 'per_source.max_connections', from: 'unlimited', to: '10' },
    { field: 'per_source.ipv6_prefix', from: '64', to: '48' },
  ]);
  // Terminate settings, compared on the served form (no certificate files needed).
  const running = served(await buildModel(base()));
  const withTls = (strict: boolean, tickets: boolean): ModelJson => {
    const m = structuredClone(running) as { listeners: Array<Record<string, unknown>> };
    m.listeners[0]!.tls = { mode: 'terminate', certs: [{ cert: '/c.pem', key: '/k.pem' }], minVersion: 'TLSv1.2', ciphers: null, alpn: [], clientCa: null, strictSni: strict, sessionTickets: tickets };
    return m as unknown as ModelJson;
  };
  const tlsDiff = diffModels(withTls(false, true), withTls(true, false));
  t.match(tlsDiff.listeners.changed.find((l) => l.name === 'postgres')!.fields, [
    { field: 'tls.strict_sni', from: 'false', to: 'true' },
    { field: 'tls.session_tickets', from: 'true', to: 'false' },
  ]);
});

t.test('a listener renamed on the same address keeps its socket; swapped binds pass sockets', async (t) => {
  const renamed = await diff(base(), (r) => {
    r.listeners[1]!.name = 'mqtt-plain';
  });
  t.same(renamed.listeners.added.map((l) => [l.name, l.note]), [['mqtt-plain', 'takes over the socket of listener mqtt (no refused connections)']]);
  t.same(renamed.listeners.removed.map((l) => [l.name, l.note]), [['mqtt', 'its socket passes to listener mqtt-plain; open connections continue']]);

  const swapped = await diff(base(), (r) => {
    r.listeners[0]!.bind = '127.0.0.1:1883';
    r.listeners[1]!.bind = '127.0.0.1:5432';
  });
  const pg = swapped.listeners.changed.find((l) => l.name === 'postgres')!;
  t.match(pg.fields[0], { field: 'bind', note: 'socket re-opened: takes over the socket of listener mqtt; its old socket passes to listener mqtt' });

  const sameAddress = await diff({ ...base(), listeners: [{ name: 'postgres', bind: 'localhost:5432', pool: 'pg' }] }, (r) => {
    r.listeners[0]!.bind = '127.0.0.1:5432';
  });
  const changed = sameAddress.listeners.changed[0];
  if (changed?.fields[0]?.from === 'localhost:5432 (127.0.0.1:5432)') {
    t.notOk(changed.reopensSocket, 'a new spelling of the same address keeps the socket');
    t.match(changed.fields[0], { field: 'bind', from: 'localhost:5432 (127.0.0.1:5432)', to: '127.0.0.1:5432', note: 'same address: the socket is kept' });
  } else {
    t.comment('localhost does not resolve to 127.0.0.1 first here; skipped');
  }
});

t.test('listener TLS that appears, changes or goes is shown', async (t) => {
  const d = await diff(base(), (r) => {
    r.listeners[1]!.tls = { mode: 'passthrough' };
    r.listeners[1]!.routes = [{ sni: 'a.example.com', pool: 'pg' }];
  });
  t.match(d.listeners.changed[0]!.fields, [
    { field: 'routes', from: 'none', to: '[a.example.com: pg]' },
    { field: 'tls', from: 'off (plain TCP)', to: 'passthrough' },
  ]);
});

t.test('added, removed and changed pools and servers are shown field by field', async (t) => {
  const d = await diff(base(), (r) => {
    const mq = pool(r, 'mq');
    mq.retries = 5;
    mq.timeouts = { connect: '1500ms' };
    mq.proxy_protocol = 'v2';
    mq.slow_start = '30s';
    mq.health = { send: 'hex:00ff', expect: '+PONG', interval: '5s' };
    mq.tls = { servername: 'mq.internal' };
    mq.servers[0]!.weight = 3;
    mq.servers[1]!.backup = true;
    mq.servers[2]!.address = '10.0.1.3:5432';
    mq.servers.push({ address: '10.0.0.9:1883' });
    r.pools = r.pools.filter((p) => p.name !== 'old');
    r.pools.push({ name: 'cache', balance: 'round_robin', servers: servers(2) });
  });
  t.same(d.pools.added.map((p) => [p.name, p.balance, p.servers.length]), [['cache', 'round_robin', 2]]);
  t.same(d.pools.removed.map((p) => p.name), ['old']);
  t.equal(d.pools.changed.length, 1);
  const mq = d.pools.changed[0]!;
  t.equal(mq.name, 'mq');
  t.same(
    mq.fields.map((f) => `${f.field}: ${f.from} → ${f.to}`),
    [
      'retries: 2 → 5',
      'timeouts.connect: 5s → 1500ms',
      'slow_start: off → 30s',
      'proxy_protocol: off → v2',
      'health.interval: 2s → 5s',
      'health.send: "PING\\r\\n" → hex:00ff',
      'tls: off → on (servername mq.internal)',
    ],
  );
  t.same(mq.servers.added, [{ name: '10.0.0.9:1883', address: '10.0.0.9:1883', weight: 1, backup: false }], 'a server without name is named by its address');
  t.same(mq.servers.removed, []);
  t.same(
    mq.servers.changed.map((s) => [s.name, s.replaced, s.fields.map((f) => `${f.field}: ${f.from} → ${f.to}`)]),
    [
      ['pg1', false, ['weight: 1 → 3']],
      ['pg2', false, ['backup: false → true']],
      ['pg3', true, ['address: 10.0.0.3:5432 → 10.0.1.3:5432']],
    ],
  );
  t.match(mq.servers.changed[2]!.fields[0]!.note, /replaced: a new server with fresh health and counters/);

  const text = formatDiff(d);
  t.match(text, /^Pools: 1 added, 1 removed, 1 changed$/m);
  t.match(text, /^ {2}\+ cache {2}round_robin, 2 servers$/m);
  t.match(text, /^ {2}- old {4}round_robin, 2 servers; takes no new connections, open ones continue$/m);
  t.match(text, /^ {6}servers: 1 added, 3 changed$/m);
  t.match(text, /^ {8}\+ 10\.0\.0\.9:1883 {2}10\.0\.0\.9:1883 {2}weight 1$/m);
  t.match(text, /^ {12}weight {2}1 → 3$/m);
  t.match(text, /^ {6}retries {11}2 → 5\n {6}timeouts\.connect {2}5s → 1500ms$/m, 'field names aligned');
});

t.test('admin and log changes are shown, admin ones as taking effect at the next restart', async (t) => {
  const d = await diff({ ...base(), admin: { listen: '127.0.0.1:9900' } }, (r) => {
    r.admin = { listen: '127.0.0.1:9901' };
    r.log = { level: 'debug', access: true };
  });
  t.same(d.admin, [{ field: 'listen', from: '127.0.0.1:9900', to: '127.0.0.1:9901' }]);
  t.same(d.log.map((f) => [f.field, f.from, f.to]), [['level', 'info', 'debug'], ['access', 'false', 'true']]);
  const text = formatDiff(d);
  t.match(text, /^Admin \(takes effect at the next restart, not on reload\)\n {2}listen {2}127\.0\.0\.1:9900 → 127\.0\.0\.1:9901$/m);
  t.match(text, /^Log\n {2}level {3}info → debug\n {2}access {2}false → true$/m);

  const gone = await diff({ ...base(), admin: { listen: '127.0.0.1:9900' } }, (r) => {
    delete r.admin;
  });
  t.same(gone.admin, [{ field: 'admin', from: '127.0.0.1:9900', to: 'off' }]);
});

// ---------------------------------------------------------------------------
// source_hash client moves

t.test('source_hash: removing 1 of 10 equal servers moves about 10%, only its clients', async (t) => {
  const started = performance.now();
  const d = await diff(
    base(),
    (r) => {
      pool(r, 'pg').servers.pop();
    },
    { ipv4: 1_000_000, ipv6: 100_000 },
  );
  const ms = performance.now() - started;
  t.comment(`diff with the full sample (1,000,000 IPv4 + 100,000 IPv6, 10 servers): ${ms.toFixed(0)}ms`);
  const m = moves(d, 'pg');
  if (m.kind !== 'sampled') throw new Error(m.kind);
  t.ok(m.share > 0.09 && m.share < 0.11, `IPv4 share ${m.share}`);
  t.equal(m.moves.ipv4.sampled, 1_000_000);
  const v6 = m.moves.ipv6.moved / m.moves.ipv6.sampled;
  t.ok(v6 > 0.09 && v6 < 0.11, `IPv6 share ${v6}`);
  t.ok(Math.abs(m.moves.expected - 0.1) < 1e-12, 'ideal hash: exactly 1/10');
  // Only pg10's clients move: every flow leaves pg10, nobody else loses any.
  t.ok(m.moves.flows.every((f) => f.from === 'pg10'), 'every flow leaves the removed server');
  const pg10 = m.moves.servers.find((s) => s.name === 'pg10')!;
  t.equal(pg10.after, 0);
  t.equal(pg10.lost, pg10.before);
  t.equal(m.moves.ipv4.moved, Math.round(pg10.before * 1_000_000), 'moved = the removed server\'s share');
  for (const s of m.moves.servers.filter((x) => x.name !== 'pg10')) t.equal(s.lost, 0, `${s.name} keeps all its clients`);

  const text = formatDiff(d);
  t.match(text, new RegExp(`^ {2}pool pg: ${formatShare(m.share).replace('.', '\\.')} of client addresses move to another server$`, 'm'));
  t.match(text, /^ {4}IPv4: [\d,]+ of 1,000,000 sampled addresses \(\d+\.\d\d%\)$/m);
  t.match(text, /^ {4}IPv6: [\d,]+ of 100,000 sampled addresses \(\d+\.\d\d%\)$/m);
  t.match(text, /^ {4}ideal hash with these weights: 10\.00%$/m);
  t.match(text, /^ {4}SERVER +BEFORE +AFTER +GAINS +LOSES$/m);
  t.match(text, /^ {4}pg10 +\d+\.\d\d% +0% +0% +-\d+\.\d\d%$/m);
  t.match(text, /^ {4}flows: pg10 → pg\d+ \d\.\d\d%/m);
  t.match(text, /every server up and ready, primaries only/);
});

t.test('source_hash: adding one to 10 moves about 1/11, all to the new server', async (t) => {
  const d = await diff(base(), (r) => {
    pool(r, 'pg').servers.push({ name: 'pg11', address: '10.0.0.11:5432' });
  });
  const m = moves(d, 'pg');
  if (m.kind !== 'sampled') throw new Error(m.kind);
  t.ok(Math.abs(m.share - 1 / 11) < 0.01, `share ${m.share}`);
  t.ok(Math.abs(m.moves.expected - 1 / 11) < 1e-12);
  t.ok(m.moves.flows.every((f) => f.to === 'pg11'), 'every flow goes to the new server');
  t.same(d.pools.changed[0]!.servers.added.map((s) => s.name), ['pg11']);
});

t.test('source_hash: a weight change moves the minimum, as the formula says', async (t) => {
  const d = await diff(base(), (r) => {
    pool(r, 'pg').servers[3]!.weight = 2;
  });
  const m = moves(d, 'pg');
  if (m.kind !== 'sampled') throw new Error(m.kind);
  // pg4 goes from 1/10 to 2/11 of the clients: 2/11 − 1/10 = 8.18% must move, and no more.
  const expected = 2 / 11 - 1 / 10;
  t.ok(Math.abs(m.moves.expected - expected) < 1e-12, `formula ${m.moves.expected}`);
  t.ok(Math.abs(m.share - expected) < 0.01, `sampled ${m.share}`);
  t.ok(m.moves.flows.every((f) => f.to === 'pg4'), 'clients only move to the heavier server');

  const down = await diff(base(), (r) => {
    for (const s of pool(r, 'pg').servers) s.weight = 3;
  });
  const same = moves(down, 'pg');
  t.equal(same.share, 0, 'scaling every weight alike moves nobody');
  if (same.kind === 'sampled') t.equal(same.moves.expected, 0, 'nor would an ideal hash');
});

t.test('source_hash: addresses, backups and retries move no client', async (t) => {
  const d = await diff(base(), (r) => {
    const pg = pool(r, 'pg');
    pg.servers[0]!.address = '10.0.9.1:5432';
    pg.servers.push({ name: 'spare', address: '10.0.0.99:5432', backup: true });
    pg.retries = 4;
  });
  t.same(moves(d, 'pg'), { pool: 'pg', kind: 'unchanged', share: 0 }, 'hashing uses names and weights of primaries only');
  t.match(formatDiff(d), /^ {2}pool pg: no client moves \(0%\): same servers with the same weights$/m);
  t.equal(d.clientMoves.length, 1, 'pools without source_hash on either side are not listed');
});

t.test('source_hash: the first primary after backups only takes every client', async (t) => {
  const raw = base();
  pool(raw, 'pg').servers = [
    { name: 'a', address: '10.0.0.1:1', backup: true },
    { name: 'b', address: '10.0.0.2:1', backup: true },
  ];
  const d = await diff(raw, (r) => {
    pool(r, 'pg').servers.push({ name: 'c', address: '10.0.0.3:1' });
  });
  const m = moves(d, 'pg');
  if (m.kind !== 'sampled') throw new Error(m.kind);
  t.equal(m.share, 1, 'the first primary takes every client from the backups');
  t.ok(Math.abs(m.moves.expected - 1) < 1e-12);
});

t.test('a balance change to or from source_hash remaps all clients', async (t) => {
  const d = await diff(base(), (r) => {
    pool(r, 'pg').balance = 'least_conn';
    pool(r, 'mq').balance = 'source_hash';
  });
  t.same(moves(d, 'pg'), { pool: 'pg', kind: 'remapped', share: 1, from: 'source_hash', to: 'least_conn' });
  t.same(moves(d, 'mq'), { pool: 'mq', kind: 'remapped', share: 1, from: 'least_conn', to: 'source_hash' });
  const text = formatDiff(d);
  t.match(text, /pool pg: all clients remapped \(100%\)\n {4}balance source_hash → least_conn: client affinity ends/);
  t.match(text, /pool mq: all clients remapped \(100%\)\n {4}balance least_conn → source_hash: every client is mapped to a server by hash from now on/);
});

t.test('the sampled numbers are what the running pool picks, key for key', async (t) => {
  const before = base();
  const after = structuredClone(before);
  const pg = pool(after, 'pg');
  pg.servers.splice(2, 2);
  pg.servers.push({ name: 'pg11', address: '10.0.0.11:5432', weight: 3 }, { name: 'pg12', address: '10.0.0.12:5432', weight: 2 });
  pg.servers[0]!.weight = 2;
  const a = await buildModel(before);
  const b = await buildModel(after);
  const n = 200_000;
  const d = diffModels(served(a), b, { ipv4: n, ipv6: 20_000 });
  const m = moves(d, 'pg');
  if (m.kind !== 'sampled') throw new Error(m.kind);

  const oldPool = new Pool(a.pools.find((p) => p.name === 'pg')!);
  const newPool = new Pool(b.pools.find((p) => p.name === 'pg')!, oldPool);
  newPool.activate();
  let moved = 0;
  for (let i = 0; i < n; i++) {
    const key = ipv4SampleKey(i, n);
    if (oldPool.pick(key)?.name !== newPool.pick(key)?.name) moved++;
  }
  let moved6 = 0;
  for (const key of ipv6SampleKeys(20_000)) if (oldPool.pick(key)?.name !== newPool.pick(key)?.name) moved6++;
  oldPool.close();
  newPool.close();
  t.equal(m.moves.ipv4.moved, moved, `IPv4: ${moved} of ${n}`);
  t.equal(m.moves.ipv6.moved, moved6, `IPv6: ${moved6} of 20000`);
  t.ok(Math.abs(m.share - m.moves.expected) < 0.01, `sampled ${m.share} ≈ ideal ${m.moves.expected}`);
});

t.test('expectedMovedShare follows the formula, and the sample keys are distinct and deterministic', async (t) => {
  const s = (spec: Array<[string, number]>) => spec.map(([name, weight]) => ({ name, weight, backup: false }));
  t.equal(expectedMovedShare(s([['a', 1]]), s([['a', 5]])), 0, 'one server: nobody moves');
  // a keeps only the keys where it beats both b and c: 1/3 of all.
  t.ok(Math.abs(expectedMovedShare(s([['a', 1], ['b', 1]]), s([['a', 1], ['c', 1]])) - 2 / 3) < 1e-12, 'replace one of two: 2/3');
  t.equal(expectedMovedShare(s([['a', 1], ['b', 2]]), s([['a', 3], ['b', 6]])), 0, 'proportional weights: exactly nobody');
  t.ok(Math.abs(expectedMovedShare(s([['a', 1], ['b', 3]]), s([['a', 3], ['b', 1]])) - 0.5) < 1e-12, 'swap 1:3 weights: half');
  t.equal(expectedMovedShare(s([['a', 1]]), s([['b', 1]])), 1, 'disjoint: everybody');
  t.equal(ipv4SampleKey(0, 4), '32.0.0.0');
  t.equal(ipv4SampleKey(3, 4), '224.0.0.0');
  t.equal(ipv4SampleKey(999_999, 1_000_000), '255.255.247.156');
  const v6 = ipv6SampleKeys(1000);
  t.equal(new Set(v6).size, 1000, 'distinct');
  t.ok(v6.every((k) => /^[23][0-9a-f]{3}(:[0-9a-f]{1,4}){7}$/.test(k)), 'full RFC 5952 form in 2000::/3');
  t.same(ipv6SampleKeys(1000), v6, 'deterministic');
});

t.test('durations, payloads, endpoints and shares are rendered as an operator reads them', async (t) => {
  t.equal(formatDuration(3_600_000), '1h');
  t.equal(formatDuration(90_000), '90s');
  t.equal(formatDuration(300_000), '5m');
  t.equal(formatDuration(1500), '1500ms');
  t.equal(formatBytes({ hex: '50494e470d0a' }), '"PING\\r\\n"');
  t.equal(formatBytes(Buffer.from([0, 255])), 'hex:00ff');
  t.equal(formatBytes(null), 'none');
  t.equal(formatEndpoint({ host: '10.0.0.5', port: 5432, text: 'db.internal:5432' }), 'db.internal:5432 (10.0.0.5:5432)');
  t.equal(formatEndpoint({ host: '::1', port: 80, text: '[::1]:80' }), '[::1]:80');
  t.equal(formatEndpoint({ host: '::1', port: 80, text: 'localhost:80' }), 'localhost:80 ([::1]:80)');
  t.equal(formatEndpoint({ host: '', port: 0, text: 'systemd:pg' }), 'systemd:pg');
  t.equal(formatShare(0), '0%');
  t.equal(formatShare(0.000001), '<0.01%');
  t.equal(formatShare(0.100213), '10.02%');
  t.equal(formatShare(1), '100.00%');
});

// ---------------------------------------------------------------------------
// The real CLI against a running l4lb

t.test('l4lb check --diff previews a change against a running instance', async (t) => {
  const dir = t.testdir({ 'admin.token': 'diff-test-token\n' });
  const running = {
    // The checked file names the same token file: check --diff takes the token from it.
    admin: { listen: '127.0.0.1:0', token_file: `${dir}/admin.token` },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'pg' }],
    pools: [{ name: 'pg', balance: 'source_hash', servers: servers(10), health: { interval: '1h' } }],
  };
  const child = await cliFor(t, running);
  const admin = `http://127.0.0.1:${await adminPortOf(child)}`;

  const same = runCli(['check', '--config', child.file, '--diff', admin]);
  t.equal(same.status, 0, same.stderr);
  t.match(same.stdout, /: ok \(1 listener, 1 pool, 10 servers\)\n\nReload preview: .* against the running l4lb at http:\/\/127\.0\.0\.1:\d+\n\nno changes\n$/);

  const next = structuredClone(running);
  next.pools[0]!.servers.splice(4, 1);
  next.pools[0]!.servers.push({ name: 'pg11', address: '10.0.0.11:5432' });
  const changed = writeConfig(next, 'next.json');
  t.teardown(changed.cleanup);
  const started = Date.now();
  const r = runCli(['check', '--config', changed.file, '--diff', `${admin}/`]);
  t.comment(`l4lb check --diff took ${Date.now() - started}ms`);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stderr, '');
  t.match(r.stdout, /^Pools: 1 changed$/m);
  t.match(r.stdout, /^ {8}\+ pg11 {2}10\.0\.0\.11:5432 {2}weight 1$/m, 'names the added server');
  t.match(r.stdout, /^ {8}- pg5 {3}10\.0\.0\.5:5432 {2}weight 1; takes no new connections, open ones continue$/m, 'names the removed one');
  // The printed share is the one diffModels computes from the same two models.
  const expected = diffModels(served(await buildModel(running)), await buildModel(next));
  const m = moves(expected, 'pg');
  if (m.kind !== 'sampled') throw new Error(m.kind);
  t.ok(m.share > 0.15 && m.share < 0.21, `replacing 1 of 10 moves about 2/11 (pg5 out, pg11 in): ${m.share}`);
  t.match(r.stdout, `pool pg: ${formatShare(m.share)} of client addresses move to another server`);
  t.match(r.stdout, `IPv4: ${formatInt(m.moves.ipv4.moved)} of 1,000,000 sampled addresses`);
  t.match(r.stdout, /flows: pg5 → pg11 /);
});

t.test('l4lb check --diff explains each failure: no token, no admin server, a bad URL, an invalid file, an older l4lb', async (t) => {
  const tokenFile = `${t.testdir({ 'admin.token': 'some-token\n' })}/admin.token`;
  const { file, cleanup } = writeConfig({
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: '127.0.0.1:1' }] }],
  });
  t.teardown(cleanup);
  // A port nothing listens on.
  const net = await import('node:net');
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as import('node:net').AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const noToken = runCli(['check', '--config', file, '--diff', `http://127.0.0.1:${port}`]);
  t.equal(noToken.status, 1);
  t.match(noToken.stderr, /no admin token for --diff \(GET \/config needs it\): pass --token-file FILE, set L4LB_ADMIN_TOKEN, or set admin\.token_file in the checked file/);

  const down = runCli(['check', '--config', file, '--diff', `http://127.0.0.1:${port}`, '--token-file', tokenFile]);
  t.equal(down.status, 1);
  t.match(down.stdout, /: ok \(/, 'the file was checked first');
  t.match(down.stderr, new RegExp(`^l4lb: cannot reach the admin server at http://127\\.0\\.0\\.1:${port}: ECONNREFUSED .*see --diff\\)\\n$`));

  const badUrl = runCli(['check', '--config', file, '--diff', 'not a url']);
  t.equal(badUrl.status, 1);
  t.match(badUrl.stderr, /--diff: expected a URL like http:\/\/127\.0\.0\.1:9900, got "not a url"/);

  const bad = writeConfig({ listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'nope' }], pools: [{ name: 'p', servers: [{ address: '127.0.0.1:1' }] }] });
  t.teardown(bad.cleanup);
  const invalid = runCli(['check', '--config', bad.file, '--diff', `http://127.0.0.1:${port}`]);
  t.equal(invalid.status, 1);
  t.match(invalid.stderr, /listeners\[0\]\.pool: no pool named "nope"/);
  t.notMatch(invalid.stderr, /cannot reach/, 'an invalid file is not compared');

  // Something that answers, but is not l4lb's /config.
  const http = await import('node:http');
  const other = http.createServer((_req, res) => res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":"not found"}'));
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  t.teardown(() => other.close());
  const otherPort = (other.address() as import('node:net').AddressInfo).port;
  const r = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
    // Not runCli: this process must keep serving while the CLI runs.
    void import('node:child_process').then(({ execFile }) => {
      const p = execFile(process.execPath, [BIN, 'check', '--config', file, '--diff', `http://127.0.0.1:${otherPort}`, '--token-file', tokenFile], (_err, _out, stderr) =>
        resolve({ status: p.exitCode, stderr }),
      );
    });
  });
  t.equal(r.status, 1);
  t.match(r.stderr, /admin server answered 404: not found; is the running l4lb older than this one\?/);
});

t.test('the preview matches a real reload: 200 clients (127.0.0.2-201) move exactly as predicted, flows included', async (t) => {
  const { namedBackend, whoAnswers } = await import('./helpers/net.js');
  const { writeFileSync } = await import('node:fs');
  const names = Array.from({ length: 11 }, (_, i) => `s${i + 1}`);
  const backends = new Map<string, string>();
  for (const name of names) {
    const b = await backendFor(t, namedBackend(name));
    backends.set(name, b.address);
  }
  const tokenFile = `${t.testdir({ 'admin.token': 'reload-test-token\n' })}/admin.token`;
  const config = (members: Array<[string, number]>) => ({
    admin: { listen: '127.0.0.1:0', token_file: tokenFile },
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', balance: 'source_hash', health: { interval: '1h' }, servers: members.map(([name, weight]) => ({ name, address: backends.get(name)!, weight })) }],
  });
  const before = config(names.slice(0, 10).map((n) => [n, 1]));
  // s5 leaves, s11 joins, s2 doubles its weight.
  const after = config([...names.slice(0, 10).filter((n) => n !== 's5').map((n): [string, number] => [n, n === 's2' ? 2 : 1]), ['s11', 1]]);
  const child = await cliFor(t, before);
  const admin = `http://127.0.0.1:${await adminPortOf(child)}`;
  const port = child.port('front');
  const clients = Array.from({ length: 200 }, (_, i) => `127.0.0.${i + 2}`);
  const servedBy = async (): Promise<string[]> => {
    const out: string[] = [];
    for (const ip of clients) out.push(await whoAnswers(port, ip));
    return out;
  };
  const first = await servedBy();

  // The preview: the CLI's text, and the same computation for exactly these clients.
  const next = writeConfig(after, 'next.json');
  t.teardown(next.cleanup);
  const preview = runCli(['check', '--config', next.file, '--diff', admin]);
  t.equal(preview.status, 0, preview.stderr);
  const printed = /pool p: ([\d.]+)% of client addresses move to another server/.exec(preview.stdout);
  t.ok(printed, 'the preview prints the share for pool p');
  const running = ((await (await fetch(`${admin}/config`, { headers: { Authorization: 'Bearer reload-test-token' } })).json()) as { model: ModelJson }).model;
  const forClients = moves(diffModels(running, await buildModel(after), { clients, ipv6: 0 }), 'p');
  if (forClients.kind !== 'sampled') throw new Error(forClients.kind);

  writeFileSync(child.file, JSON.stringify(after));
  child.proc.kill('SIGHUP');
  await child.waitForLine((l) => l.msg === 'configuration reloaded');
  const second = await servedBy();

  const observed = new Map<string, number>();
  let moved = 0;
  for (let i = 0; i < clients.length; i++) {
    if (first[i] === second[i]) continue;
    moved++;
    const k = `${first[i]} → ${second[i]}`;
    observed.set(k, (observed.get(k) ?? 0) + 1);
  }
  t.comment(`real reload: ${moved} of ${clients.length} clients moved; preview for the same clients: ${forClients.moves.ipv4.moved}; printed share (1,000,000 sampled addresses): ${printed?.[1]}%`);
  t.equal(moved, forClients.moves.ipv4.moved, 'as many clients moved as the preview said');
  t.same(
    Object.fromEntries([...observed].sort()),
    Object.fromEntries(forClients.moves.flows.map((f): [string, number] => [`${f.from} → ${f.to}`, f.count]).sort()),
    'and along the same flows (server to server)',
  );
  t.ok(first.every((s) => s !== 's11') && second.every((s) => s !== 's5'), 's11 only after, s5 only before');
  // The printed share is over a million addresses; 200 clients agree with it within sampling error (4 sigma).
  const share = Number(printed?.[1]) / 100;
  const sigma = Math.sqrt((share * (1 - share)) / clients.length);
  t.ok(Math.abs(moved / clients.length - share) <= 4 * sigma, `observed ${((100 * moved) / clients.length).toFixed(1)}% vs printed ${printed?.[1]}% (4 sigma = ${(400 * sigma).toFixed(1)} points)`);
});
