/**
 * Config fuzzing: thousands of mutations of valid configurations (every key
 * family: tls, routes, accept_proxy, trusted_proxies, allow/deny, per_source,
 * health, proxy_protocol, admin) go through buildModel. Each must end as a
 * valid, deeply frozen Model or as a ConfigError whose problems name a path
 * and say something; never another exception, never "internal error".
 *
 * Knobs: FUZZ_SEED (printed each run), FUZZ_MUTATIONS (default 5,000),
 * FUZZ_BATCH (checks run concurrently, default 16), FUZZ_SHOW_SLOWEST=1.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { buildModel } from '../src/config/load.js';
import { ConfigError } from '../src/errors.js';
import type { Model } from '../src/config/model.js';
import { testCerts } from './helpers/certs.js';
import { seedFrom, seededRandom } from './helpers/random.js';

const MUTATIONS = Number(process.env.FUZZ_MUTATIONS ?? 5_000);
// A guard against a pathological (exponential) case, not a speed test: 5,000 loads take 6-8 s alone, 30 s on a loaded machine.
const BUDGET_MS = 120_000;
const seed = seedFrom(t, 'FUZZ_SEED', 'config fuzz');
t.comment(`${MUTATIONS} mutations`);

// Real files for the keys that name files: certificates, keys, CAs, the admin token.
const { dir: DIR, file: f } = testCerts();
writeFileSync(f('admin.token'), 'fuzz-token-0123456789\n');
writeFileSync(f('empty.token'), '');
writeFileSync(f('garbage.pem'), '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n');
/** Paths that exist (of every kind) and paths that do not: all fine values to fuzz file keys with. */
const FILES = [
  f('default.test.crt'),
  f('default.test.key'),
  f('a.test.crt'),
  f('a.test.key'),
  f('expired.test.crt'),
  f('ca.crt'),
  f('client-ca.crt'),
  f('admin.token'),
  f('empty.token'),
  f('garbage.pem'),
  DIR,
  f('no-such-file.pem'),
  '/dev/null',
  '/nonexistent/dir/x.pem',
  'relative/missing.crt',
];

// ---------------------------------------------------------------------------
// Valid configurations to start from

const SEEDS: Array<Record<string, unknown>> = [
  // Minimal.
  {
    listeners: [{ name: 'l', bind: '127.0.0.1:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: '127.0.0.1:5432' }] }],
  },
  // Everything on one listener with TLS termination, SNI routes and protection.
  {
    admin: { listen: '127.0.0.1:0', token_file: f('admin.token') },
    log: { level: 'debug', access: true },
    listeners: [
      {
        name: 'tls',
        bind: '127.0.0.1:0',
        pool: 'web',
        max_connections: 20_000,
        per_source: { max_connections: 200, connect_rate: 100 },
        allow: ['10.0.0.0/8', '127.0.0.0/8', '::1/128'],
        deny: ['10.9.9.9', '2001:db8::/32'],
        timeouts: { handshake: '5s', idle: '1h' },
        tls: {
          mode: 'terminate',
          certs: [
            { cert: f('default.test.crt'), key: f('default.test.key') },
            { cert: f('a.test.crt'), key: f('a.test.key') },
          ],
          min_version: 'TLSv1.2',
          alpn: ['h2', 'postgresql'],
          client_ca: f('client-ca.crt'),
        },
        routes: [
          { sni: 'a.test', pool: 'db' },
          { sni: '*.wild.test', pool: 'web' },
        ],
      },
    ],
    pools: [
      {
        name: 'web',
        balance: 'round_robin',
        retries: 2,
        proxy_protocol: 'v2',
        timeouts: { connect: '3s', idle: 3_600_000 },
        slow_start: '30s',
        on_server_down: 'close',
        health: { interval: '2s', timeout: '1s', rise: 2, fall: 3, send: 'PING\r\n', expect: '+PONG' },
        servers: [
          { name: 'w1', address: '127.0.0.1:8081', weight: 1 },
          { address: '127.0.0.1:8082', weight: 2 },
          { address: '127.0.0.1:8083', backup: true },
        ],
      },
      {
        name: 'db',
        balance: 'source_hash',
        proxy_protocol: 'v1',
        tls: { servername: 'backend.test', ca: f('ca.crt'), verify: true },
        health: { send: 'hex:0d0a', expect: 'hex:2b4f4b' },
        servers: [{ address: '[::1]:5432' }, { name: 'db2', address: '127.0.0.2:5432' }],
      },
    ],
  },
  // Passthrough with routes, accept_proxy with trusted proxies.
  {
    log: { level: 'warn', access: false },
    listeners: [
      {
        name: 'pass',
        bind: '[::1]:0',
        pool: 'a',
        tls: { mode: 'passthrough' },
        routes: [
          { sni: 'a.example.com', pool: 'a' },
          { sni: '*.b.example.com', pool: 'b' },
        ],
        timeouts: { handshake: 500 },
      },
      {
        name: 'pp',
        bind: '127.0.0.1:0',
        pool: 'b',
        accept_proxy: true,
        trusted_proxies: ['127.0.0.0/8', '10.0.0.0/8'],
        deny: ['192.0.2.0/24'],
        per_source: { connect_rate: 10 },
      },
    ],
    pools: [
      { name: 'a', balance: 'least_conn', servers: [{ address: '127.0.0.1:9001' }] },
      {
        name: 'b',
        balance: 'random_two',
        proxy_protocol: 'off',
        retries: 0,
        health: { interval: 1000, timeout: 500, rise: 1, fall: 1 },
        servers: [
          { address: '127.0.0.1:9002', weight: 256 },
          { address: '127.0.0.1:9003', weight: 1 },
        ],
      },
    ],
  },
  // Several listeners on fixed ports, mutual TLS and re-encryption with a client certificate.
  {
    admin: { listen: '127.0.0.1:19900' },
    listeners: [
      { name: 'one', bind: '127.0.0.1:15432', pool: 'p1' },
      { name: 'two', bind: '127.0.0.2:15432', pool: 'p2', max_connections: 1 },
      {
        name: 'three',
        bind: '127.0.0.1:15433',
        pool: 'p2',
        tls: { mode: 'terminate', certs: [{ cert: f('a.test.crt'), key: f('a.test.key') }], min_version: 'TLSv1.3', ciphers: 'ECDHE+AESGCM' },
      },
    ],
    pools: [
      { name: 'p1', servers: [{ address: '127.0.0.1:1' }] },
      {
        name: 'p2',
        tls: { ca: f('ca.crt'), cert: f('client1.crt'), key: f('client1.key') },
        servers: [{ address: '127.0.0.1:2' }, { name: 'same-address', address: '127.0.0.1:2' }],
      },
    ],
  },  // Plain listeners with every protection key, YAML-style integer durations, and an admin server.
  {
    admin: { listen: '[::1]:0', token_file: f('admin.token') },
    log: { level: 'trace' },
    listeners: [
      {
        name: 'guarded',
        bind: '0.0.0.0:0',
        pool: 'hash',
        accept_proxy: true,
        trusted_proxies: ['::ffff:10.0.0.0/8', '192.168.0.0/16', 'fd00::/8'],
        allow: ['0.0.0.0/0', '::/0'],
        deny: ['127.0.0.9/32', '::ffff:127.0.0.10'],
        max_connections: 1,
        per_source: { max_connections: 10_000_000, connect_rate: 1 },
        timeouts: { handshake: 1, idle: 86_400_000 },
      },
      { name: 'second', bind: '127.0.0.1:0', pool: 'hash', timeouts: { idle: '5m' } },
    ],
    pools: [
      {
        name: 'hash',
        balance: 'source_hash',
        retries: 10,
        proxy_protocol: 'v2',
        slow_start: 0,
        on_server_down: 'keep',
        timeouts: { connect: 1, idle: '1h' },
        health: { interval: '500ms', timeout: '250ms', rise: 100, fall: 100, send: 'hex:00 01 02 ff', expect: 'x' },
        servers: Array.from({ length: 20 }, (_, i) => ({ name: `s${i}`, address: `127.0.0.${i + 1}:${6000 + i}`, weight: 1 + i, backup: i % 5 === 4 })),
      },
    ],
  },
];
/** How often each seed is mutated: those that terminate TLS load certificates on every check (~5 ms), so they get less. */
const SEED_WEIGHTS = [0.22, 0.1, 0.35, 0.06, 0.27];

// ---------------------------------------------------------------------------
// Mutations

const rnd = seededRandom(seed);
const int = (n: number): number => Math.floor(rnd() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

const JUNK_STRINGS = [
  '',
  ' ',
  '\t\n',
  '\u0000',
  'x'.repeat(5_000),
  '💥🔥',
  'é\u0301',
  '\u202eevil',
  'Ω≈ç√',
  '%s%n',
  '${HOME}',
  '../../etc/passwd',
  '127.0.0.1',
  '127.0.0.1:',
  '127.0.0.1:99999',
  '127.0.0.1:-1',
  '999.1.1.1:80',
  '[::1]',
  '[::1]:0',
  '[fe80::1%eth0]:80',
  '::1:80',
  'localhost:5432',
  'systemd:',
  'systemd:web',
  '0.0.0.0:0',
  '10.0.0.0/33',
  '::/129',
  '10.0.0.1/8',
  '1.2.3.4/-1',
  'hex:',
  'hex:zz',
  'hex:abc',
  '1e3ms',
  '-5s',
  '0s',
  '0',
  '5 s',
  '999999999999999h',
  '1.5s',
  'terminate',
  'passthrough',
  'TLSv1.1',
  'v3',
  'true',
  'null',
  '__proto__',
  'constructor',
  '*.',
  '*',
  '*.*.example.com',
  'UPPER.Example.COM',
  '-leading-dash.example',
  'a'.repeat(300),
];
const NUMBERS = [0, -0, 1, -1, 0.5, -3.7, 255, 256, 257, 65535, 65536, 2 ** 31, 2 ** 53 + 2, -(2 ** 53), 1e308, -1e308, Number.MAX_VALUE, Number.MIN_VALUE, Infinity, -Infinity, NaN];
const PROTO_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__'];
const KNOWN_KEYS = [
  'name', 'bind', 'pool', 'pools', 'listeners', 'servers', 'address', 'tls', 'mode', 'certs', 'cert', 'key', 'routes', 'sni',
  'accept_proxy', 'trusted_proxies', 'allow', 'deny', 'per_source', 'max_connections', 'connect_rate', 'health', 'interval',
  'timeout', 'rise', 'fall', 'send', 'expect', 'proxy_protocol', 'admin', 'listen', 'token_file', 'timeouts', 'handshake',
  'idle', 'connect', 'balance', 'retries', 'weight', 'backup', 'slow_start', 'on_server_down', 'servername', 'ca', 'verify',
  'client_ca', 'alpn', 'min_version', 'ciphers', 'log', 'level', 'access', 'user', 'group', 'workers',
];

/** Sets an own property, even one named `__proto__` (as JSON.parse and YAML would). */
function setOwn(o: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
}

function nested(depth: number): unknown {
  if (depth === 0) return leaf();
  return rnd() < 0.5 ? [nested(depth - 1), leaf()] : { [pick(KNOWN_KEYS)]: nested(depth - 1), junk: leaf() };
}

function leaf(): unknown {
  switch (int(7)) {
    case 0:
      return pick(JUNK_STRINGS);
    case 1:
      return pick(NUMBERS);
    case 2:
      return pick([true, false, null]);
    case 3:
      return pick(FILES);
    case 4:
      return [];
    case 5:
      return {};
    default:
      return `${pick(KNOWN_KEYS)}${int(3) === 0 ? pick(JUNK_STRINGS) : ''}`;
  }
}

/** A replacement value of some other kind. */
function junkValue(): unknown {
  switch (int(6)) {
    case 0:
      return nested(1 + int(6));
    case 1: {
      // Deep nesting (YAML can produce it): parsers and freezing must not blow the stack.
      let v: unknown = leaf();
      for (let i = 0, n = 50 + int(200); i < n; i++) v = rnd() < 0.5 ? [v] : { a: v };
      return v;
    }
    case 2: {
      const o: Record<string, unknown> = {};
      setOwn(o, pick(PROTO_KEYS), rnd() < 0.5 ? { polluted: true } : leaf());
      return o;
    }
    case 3:
      return Array.from({ length: int(40) }, leaf);
    default:
      return leaf();
  }
}

type Container = Record<string, unknown> | unknown[];
interface Slot {
  parent: Container;
  key: string | number;
}

/** Every (container, key) in the tree. */
function slots(root: unknown): Slot[] {
  const out: Slot[] = [];
  const walk = (v: unknown, depth: number): void => {
    if (depth > 12 || typeof v !== 'object' || v === null) return;
    if (Array.isArray(v)) {
      v.forEach((item, i) => {
        out.push({ parent: v, key: i });
        walk(item, depth + 1);
      });
    } else {
      for (const k of Object.keys(v)) {
        out.push({ parent: v as Record<string, unknown>, key: k });
        walk((v as Record<string, unknown>)[k], depth + 1);
      }
    }
  };
  walk(root, 0);
  return out;
}

function containers(root: unknown): Container[] {
  const out: Container[] = [];
  const walk = (v: unknown, depth: number): void => {
    if (depth > 12 || typeof v !== 'object' || v === null) return;
    out.push(v as Container);
    for (const child of Object.values(v)) walk(child, depth + 1);
  };
  walk(root, 0);
  return out;
}

function get(s: Slot): unknown {
  return (s.parent as Record<string | number, unknown>)[s.key];
}
function put(s: Slot, value: unknown): void {
  if (Array.isArray(s.parent)) s.parent[s.key as number] = value;
  else setOwn(s.parent, String(s.key), value);
}

const OPS: Array<[string, (root: Record<string, unknown>) => void]> = [
  [
    'delete',
    (root) => {
      const s = pick(slots(root));
      if (!s) return;
      if (Array.isArray(s.parent)) s.parent.splice(s.key as number, 1);
      else delete s.parent[s.key as string];
    },
  ],
  ['retype', (root) => maybe(pick(slots(root)), (s) => put(s, junkValue()))],
  ['junk string', (root) => maybe(pick(slots(root)), (s) => put(s, pick(JUNK_STRINGS)))],
  ['number', (root) => maybe(pick(slots(root)), (s) => put(s, pick(NUMBERS)))],
  [
    'file',
    (root) => {
      // Point a file key at another file, a directory, or nothing.
      const files = slots(root).filter((s) => ['cert', 'key', 'ca', 'client_ca', 'token_file'].includes(String(s.key)));
      maybe(files.length > 0 ? pick(files) : undefined, (s) => put(s, pick(FILES)));
    },
  ],
  [
    'unknown key',
    (root) => {
      const objects = containers(root).filter((c) => !Array.isArray(c)) as Array<Record<string, unknown>>;
      const key = pick([...KNOWN_KEYS, ...PROTO_KEYS, 'listner', 'Pools', 'tls ', '', '💥', 'a.b', '[0]', 'x'.repeat(500)]);
      setOwn(pick(objects), key, junkValue());
    },
  ],
  [
    'duplicate',
    (root) => {
      // Copy an item of a list (same name twice), or give it a sibling's name.
      const lists = containers(root).filter((c): c is unknown[] => Array.isArray(c) && c.length > 0);
      const list = lists.length > 0 ? pick(lists) : undefined;
      if (!list) return;
      const item = pick(list);
      if (rnd() < 0.5) list.push(structuredClone(item));
      else {
        const named = list.filter((x): x is Record<string, unknown> => typeof x === 'object' && x !== null && 'name' in x);
        if (named.length >= 2) named[0]!.name = named[1]!.name;
        else list.push(structuredClone(item));
      }
    },
  ],
  [
    'unicode name',
    (root) => {
      const named = slots(root).filter((s) => ['name', 'pool', 'sni'].includes(String(s.key)));
      maybe(named.length > 0 ? pick(named) : undefined, (s) => put(s, pick(['ünïcødé', '名前', '🚀', 'a\u0000b', 'ＦＵＬＬ', 'Ω', 'e\u0301', ' '])));
    },
  ],
  [
    'wrap',
    (root) => maybe(pick(slots(root)), (s) => put(s, rnd() < 0.5 ? [get(s)] : { value: get(s) })),
  ],
  [
    'empty',
    (root) => maybe(pick(slots(root)), (s) => put(s, pick([[], {}, '', null]))),
  ],
  [
    'swap mode',
    (root) => {
      const tlsSlots = slots(root).filter((s) => s.key === 'tls');
      maybe(tlsSlots.length > 0 ? pick(tlsSlots) : undefined, (s) =>
        put(s, pick([{ mode: 'passthrough' }, { mode: 'terminate' }, { mode: 'passthrough', certs: [{ cert: pick(FILES), key: pick(FILES) }] }, { mode: 'terminate', certs: [] }])),
      );
    },
  ],
  [
    'long list',
    (root) => {
      const lists = containers(root).filter((c): c is unknown[] => Array.isArray(c) && c.length > 0);
      const list = lists.length > 0 ? pick(lists) : undefined;
      if (!list) return;
      const item = pick(list);
      // Listeners with TLS load certificates each (~5 ms): a few dozen of those are enough.
      const tlsItems = typeof item === 'object' && item !== null && 'tls' in item;
      for (let i = 0, n = tlsItems ? 5 + int(20) : 50 + int(300); i < n; i++) list.push(rnd() < 0.8 ? structuredClone(item) : leaf());
    },
  ],
];

function maybe<T>(v: T | undefined, fn: (v: T) => void): void {
  if (v !== undefined) fn(v);
}

function pickSeed(): number {
  let x = rnd();
  for (const [i, w] of SEED_WEIGHTS.entries()) {
    if ((x -= w) < 0) return i;
  }
  return 0;
}

function mutate(base: Record<string, unknown>): { config: unknown; ops: string[] } {
  const ops: string[] = [];
  if (rnd() < 0.02) {
    // Not an object at all.
    return { config: junkValue(), ops: ['replace root'] };
  }
  const root = structuredClone(base);
  for (let i = 0, n = 1 + int(4); i < n; i++) {
    // A long list costs a hundred ordinary checks: pick it half as often.
    let [name, op] = pick(OPS);
    if (name === 'long list' && rnd() < 0.5) [name, op] = pick(OPS);
    op(root);
    ops.push(name);
  }
  return { config: root, ops };
}

// ---------------------------------------------------------------------------
// Checks

function deeplyFrozen(v: unknown, seen = new Set<unknown>()): boolean {
  if (typeof v !== 'object' || v === null || ArrayBuffer.isView(v) || seen.has(v)) return true;
  seen.add(v);
  if (!Object.isFrozen(v)) return false;
  return Object.values(v).every((x) => deeplyFrozen(x, seen));
}

/** Problems with an empty path must be about the configuration as a whole. */
const ROOT_MESSAGE = /configuration is empty|at the top level|missing required key|more problems/;
/** A path as load.ts writes them: keys joined with dots, list indices and odd keys in brackets. */
const PATH = /^(?:[A-Za-z_][A-Za-z0-9_-]*|\[(?:\d+|"(?:[^"\\]|\\.)*…?")\])(?:\.[A-Za-z_][A-Za-z0-9_-]*|\[(?:\d+|"(?:[^"\\]|\\.)*…?")\])*$/s;

const positive = (n: unknown): boolean => typeof n === 'number' && Number.isFinite(n) && n > 0;
const count = (n: unknown): boolean => Number.isSafeInteger(n) && (n as number) >= 0;

/** A model that was accepted must also make sense: what the runtime relies on without checking again. */
function modelProblem(m: Model): string | null {
  if (m.listeners.length === 0 || m.pools.length === 0) return 'valid model without listeners or pools';
  const pools = new Set(m.pools.map((p) => p.name));
  if (pools.size !== m.pools.length) return 'valid model with duplicate pool names';
  if (new Set(m.listeners.map((l) => l.name)).size !== m.listeners.length) return 'valid model with duplicate listener names';
  for (const l of m.listeners) {
    if (!pools.has(l.pool)) return `listener ${l.name} refers to a missing pool`;
    for (const r of l.routes) if (!pools.has(r.pool)) return `route of ${l.name} refers to a missing pool`;
    if (l.systemdSocket === null && (l.bind.host === '' || !count(l.bind.port) || l.bind.port > 65535)) return `listener ${l.name} has no usable bind`;
    if (!positive(l.timeouts.idleMs) || !positive(l.timeouts.handshakeMs)) return `listener ${l.name} has a non-positive timeout`;
    if (![l.maxConnections, l.perSource.maxConnections, l.perSource.connectRate].every(count)) return `listener ${l.name} has a bad limit`;
    if (l.tls?.mode === 'terminate' && l.tls.certs.length === 0) return `listener ${l.name} terminates TLS without certificates`;
  }
  for (const p of m.pools) {
    if (p.servers.length === 0) return `pool ${p.name} has no servers`;
    if (new Set(p.servers.map((s) => s.name)).size !== p.servers.length) return `pool ${p.name} has duplicate server names`;
    for (const s of p.servers) {
      if (s.address.host === '' || !(s.address.port >= 1 && s.address.port <= 65535)) return `server ${s.name} has no usable address`;
      if (!Number.isSafeInteger(s.weight) || s.weight < 1) return `server ${s.name} has weight ${s.weight}`;
    }
    if (![p.timeouts.connectMs, p.timeouts.idleMs, p.health.intervalMs, p.health.timeoutMs].every(positive)) return `pool ${p.name} has a non-positive timeout`;
    if (!count(p.retries) || !count(p.slowStartMs) || !(p.health.rise >= 1) || !(p.health.fall >= 1)) return `pool ${p.name} has a bad count`;
  }
  return null;
}

/** What is wrong with this outcome, or null when it is acceptable. */
function verdict(outcome: { model?: unknown; error?: unknown }): string | null {
  if ('model' in outcome) {
    const m = outcome.model as Model;
    if (!Array.isArray(m.listeners) || !Array.isArray(m.pools)) return 'model without listeners and pools';
    if (!deeplyFrozen(m)) return 'model is not deeply frozen';
    return modelProblem(m);
  }
  const err = outcome.error;
  if (!(err instanceof ConfigError)) return `threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`;
  if (err.problems.length === 0) return 'ConfigError without problems';
  for (const p of err.problems) {
    if (typeof p.path !== 'string' || typeof p.message !== 'string') return `malformed problem ${JSON.stringify(p)}`;
    if (p.message.trim() === '') return `empty message at ${JSON.stringify(p.path)}`;
    if (/internal error/i.test(p.message)) return `internal error: ${p.message}`;
    if (p.path === '' && !ROOT_MESSAGE.test(p.message)) return `no path for: ${p.message}`;
    if (p.path !== '' && !PATH.test(p.path)) return `odd path ${JSON.stringify(p.path)} (${p.message})`;
  }
  return null;
}

// ---------------------------------------------------------------------------

t.test('the seed configurations are valid', async (t) => {
  for (const [i, config] of SEEDS.entries()) {
    await t.resolves(buildModel(structuredClone(config)), `seed ${i}`);
  }
});

t.test(`${MUTATIONS} mutated configurations: a frozen model or path-named problems, never an exception`, async (t) => {
  const started = Date.now();
  const failures = new Map<string, { count: number; ops: string[]; config: string }>();
  let valid = 0;
  let rejected = 0;
  let problemsSeen = 0;
  const BATCH = Number(process.env.FUZZ_BATCH ?? 16);
  /** Time spent per kind of mutation (a batch runs together, so this is indicative only). */
  const opMs = new Map<string, number>();
  const slowest = { ms: 0, ops: [] as string[], config: undefined as unknown };
  for (let i = 0; i < MUTATIONS; i += BATCH) {
    // A few at a time: file checks and name lookups overlap, and one order of events is not all we test.
    const batch = Array.from({ length: Math.min(BATCH, MUTATIONS - i) }, () => mutate(SEEDS[pickSeed()]!));
    const outcomes = await Promise.all(
      batch.map(({ config, ops }) => {
        const t0 = performance.now();
        const took = (): void => {
          const ms = performance.now() - t0;
          for (const op of new Set(ops)) opMs.set(op, (opMs.get(op) ?? 0) + ms);
          if (ms > slowest.ms) Object.assign(slowest, { ms, ops, config });
        };
        return buildModel(config).then(
          (model) => (took(), { model }),
          (error: unknown) => (took(), { error }),
        );
      }),
    );
    for (const [j, outcome] of outcomes.entries()) {
      const bad = verdict(outcome);
      if ('model' in outcome) valid++;
      else {
        rejected++;
        if (outcome.error instanceof ConfigError) problemsSeen += outcome.error.problems.length;
      }
      if (bad === null) continue;
      const key = bad.replace(/\d+/g, 'N').slice(0, 200);
      const seen = failures.get(key);
      if (seen) seen.count++;
      else {
        let shown: string;
        try {
          shown = JSON.stringify(batch[j]!.config).slice(0, 2_000);
        } catch {
          shown = '(not serialisable)';
        }
        failures.set(key, { count: 1, ops: batch[j]!.ops, config: shown });
      }
    }
  }
  const elapsed = Date.now() - started;
  t.comment(`${MUTATIONS} mutations in ${elapsed} ms: ${valid} valid models, ${rejected} rejected with ${problemsSeen} problems`);
  const byOp = [...opMs].sort((a, b) => b[1] - a[1]).map(([op, ms]) => `${op} ${Math.round(ms)}`);
  t.comment(`ms by mutation: ${byOp.join(', ')}; slowest ${Math.round(slowest.ms)} ms (${slowest.ops.join(', ')})`);
  if (process.env.FUZZ_SHOW_SLOWEST) t.comment(JSON.stringify(slowest.config).slice(0, 20_000));
  for (const [what, f] of failures) t.comment(`FAILURE ×${f.count}: ${what}\n  ops: ${f.ops.join(', ')}\n  config: ${f.config}`);
  t.same([...failures.keys()], [], 'every outcome is a frozen model or a ConfigError with path-named problems');
  t.ok(valid > 0 && rejected > 0, 'both outcomes occur (the mutations are neither all harmless nor all fatal)');
  t.ok(elapsed < BUDGET_MS, `within ${BUDGET_MS / 1000} s`);
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype is untouched');
});
