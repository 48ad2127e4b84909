import { availableParallelism } from 'node:os';
import t from 'tap';
import { readFile, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildModel, loadConfig } from '../src/config/load.js';
import { parseDuration, formatDuration, MAX_DURATION_MS } from '../src/config/duration.js';
import { parseAddress } from '../src/config/address.js';
import { editDistance, suggest, didYouMean } from '../src/config/suggest.js';
import { configSchema, type JsonSchema } from '../src/config/schema.js';
import { ConfigError, ConfigReadError } from '../src/errors.js';
import type { Model } from '../src/config/model.js';
import { runCli, writeConfig } from './helpers/cli.js';
import { problemsOf } from './helpers/config.js';
import { seededRandom } from './helpers/random.js';

const confDir = fileURLToPath(new URL('../conf/', import.meta.url));

/** A valid configuration with IP literals only, so no test depends on DNS unless it means to. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function base(): any {
  return {
    log: { level: 'debug', access: false },
    listeners: [
      { name: 'postgres', bind: '127.0.0.1:0', pool: 'pg', timeouts: { idle: '30m' } },
      { name: 'cache', bind: '127.0.0.1:6380', pool: 'redis' },
    ],
    pools: [
      {
        name: 'pg',
        balance: 'source_hash',
        retries: 1,
        timeouts: { connect: '3s', idle: 7200000 },
        servers: [
          { name: 'pg1', address: '10.0.0.11:5432' },
          { address: '10.0.0.12:5432', weight: 2 },
          { address: '[fd00::13]:5432', backup: true },
        ],
      },
      { name: 'redis', servers: [{ address: '10.0.0.21:6379' }] },
    ],
  };
}

/** Pool fields the test configurations leave at their defaults. */
const poolDefaults = {
  health: { intervalMs: 2000, timeoutMs: 1000, rise: 2, fall: 3, kind: 'tcp', port: null, send: null, expect: null, http: null, postgres: null, mysql: null, redis: null, serversTls: false },
  slowStartMs: 0,
  onServerDown: 'keep',
  proxyProtocol: 'off',
  tls: null,
  leastTime: { measure: 'connect' },
  stick: null,
} as const;

/** Listener fields the test configurations leave at their defaults. */
const listenerDefaults = {
  protocol: 'tcp',
  acceptProxy: false,
  trustedProxies: [],
  allow: [],
  deny: [],
  maxConnections: 0,
  perSource: { maxConnections: 0, connectRate: 0, ipv6Prefix: 64 },
  tls: null,
  routes: [],
  systemdSocket: null,
} as const;

const expectedModel: Model = {
  admin: null,
  // workers: auto (the default) is the cores this process may use.
  workers: availableParallelism(),
  warnings: [],
  user: null,
  group: null,
  grace: 0,
  dns: { servers: [], intervalMs: 30_000 },
  log: { level: 'debug', access: false },
  listeners: [
    { name: 'postgres', bind: { host: '127.0.0.1', port: 0, text: '127.0.0.1:0' }, pool: 'pg', timeouts: { idleMs: 1_800_000, handshakeMs: 5000 }, ...listenerDefaults },
    { name: 'cache', bind: { host: '127.0.0.1', port: 6380, text: '127.0.0.1:6380' }, pool: 'redis', timeouts: { idleMs: 3_600_000, handshakeMs: 5000 }, ...listenerDefaults },
  ],
  pools: [
    {
      name: 'pg',
      balance: 'source_hash',
      retries: 1,
      timeouts: { connectMs: 3000, idleMs: 7_200_000 },
      servers: [
        { name: 'pg1', address: { host: '10.0.0.11', port: 5432, text: '10.0.0.11:5432' }, weight: 1, backup: false },
        { name: '10.0.0.12:5432', address: { host: '10.0.0.12', port: 5432, text: '10.0.0.12:5432' }, weight: 2, backup: false },
        { name: '[fd00::13]:5432', address: { host: 'fd00::13', port: 5432, text: '[fd00::13]:5432' }, weight: 1, backup: true },
      ],
      ...poolDefaults,
    },
    {
      name: 'redis',
      balance: 'least_conn',
      retries: 2,
      timeouts: { connectMs: 5000, idleMs: 3_600_000 },
      servers: [{ name: '10.0.0.21:6379', address: { host: '10.0.0.21', port: 6379, text: '10.0.0.21:6379' }, weight: 1, backup: false }],
      ...poolDefaults,
    },
  ],
};

const yamlText = `
log: { level: debug, access: false }
listeners:
  - { name: postgres, bind: "127.0.0.1:0", pool: pg, timeouts: { idle: 30m } }
  - name: cache
    bind: 127.0.0.1:6380
    pool: redis
pools:
  - name: pg
    balance: source_hash
    retries: 1
    timeouts: { connect: 3s, idle: 7200000 }
    servers:
      - { name: pg1, address: "10.0.0.11:5432" }
      - { address: "10.0.0.12:5432", weight: 2 }
      - { address: "[fd00::13]:5432", backup: true }
  - name: redis
    servers: [{ address: "10.0.0.21:6379" }]
`;

function isDeepFrozen(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return true;
  return Object.isFrozen(v) && Object.values(v).every(isDeepFrozen);
}

t.test('a good YAML file gives the expected model, with defaults', async (t) => {
  const dir = t.testdir({ 'l4lb.yaml': yamlText, 'l4lb.YML': yamlText });
  t.same(await loadConfig(join(dir, 'l4lb.yaml')), expectedModel);
  t.same(await loadConfig(join(dir, 'l4lb.YML')), expectedModel, 'extension case does not matter');
});

t.test('a good JSON file gives the same model', async (t) => {
  // With a byte-order mark, as some editors write it.
  const dir = t.testdir({ 'l4lb.json': `\uFEFF${JSON.stringify(base(), null, 2)}` });
  t.same(await loadConfig(join(dir, 'l4lb.json')), expectedModel);
});

t.test('a minimal configuration gets every default', async (t) => {
  const model = await buildModel({
    listeners: [{ name: 'l', bind: '[::1]:0', pool: 'p' }],
    pools: [{ name: 'p', servers: [{ address: '10.0.0.1:80' }] }],
  });
  t.same(model, {
    admin: null,
    warnings: [],
    user: null,
    group: null,
    grace: 0,
    dns: { servers: [], intervalMs: 30_000 },
    log: { level: 'info', access: true },
    workers: availableParallelism(),
    listeners: [{ name: 'l', bind: { host: '::1', port: 0, text: '[::1]:0' }, pool: 'p', timeouts: { idleMs: 3_600_000, handshakeMs: 5000 }, ...listenerDefaults }],
    pools: [
      {
        name: 'p',
        balance: 'least_conn',
        retries: 2,
        timeouts: { connectMs: 5000, idleMs: 3_600_000 },
        servers: [{ name: '10.0.0.1:80', address: { host: '10.0.0.1', port: 80, text: '10.0.0.1:80' }, weight: 1, backup: false }],
        ...poolDefaults,
      },
    ],
  });
});

t.test('the model is deeply frozen', async (t) => {
  const model = await buildModel(base());
  t.ok(isDeepFrozen(model));
  t.throws(() => {
    (model.pools[0]!.servers[0]!.address as { port: number }).port = 1;
  }, TypeError);
  t.throws(() => {
    (model.pools[0]!.servers as unknown[]).push({});
  }, TypeError);
});

t.test('conf/example-postgres.yaml loads', async (t) => {
  const model = await loadConfig(join(confDir, 'example-postgres.yaml'));
  t.match(model, {
    listeners: [{ name: 'postgres', bind: { host: '0.0.0.0', port: 5432 }, pool: 'pg' }],
    pools: [
      {
        name: 'pg',
        balance: 'least_conn',
        retries: 1,
        timeouts: { connectMs: 3000, idleMs: 3_600_000 },
        servers: [{ address: { port: 5432 } }, { address: { port: 5432 } }],
      },
    ],
  });
  t.equal(model.pools[0]!.servers.length, 2);
});

const TRUSTED_REQUIRED =
  'required with accept_proxy: true: list the addresses of the balancers that send PROXY headers, e.g. [10.0.0.0/8]; ' +
  'any other peer could name its own client address. To accept headers from anyone, write ["0.0.0.0/0", "::/0"]';

// Each case changes one thing in a valid configuration and must produce exactly this problem.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const oneProblem: [string, (c: any) => void, string, string][] = [
  ['misspelled key', (c) => ((c.pools[0].balanse = c.pools[0].balance), delete c.pools[0].balance), 'pools[0].balanse', 'unknown key; did you mean "balance"?'],
  ['misspelled top-level key', (c) => ((c.logs = c.log), delete c.log), 'logs', 'unknown key; did you mean "log"?'],
  ['unknown key, nothing close', (c) => (c.listeners[0].color = 'red'), 'listeners[0].color', 'unknown key'],
  ['unknown key that is not a word', (c) => (c.listeners[0]['max conn'] = 1), 'listeners[0]["max conn"]', 'unknown key'],
  ['bad enum', (c) => (c.pools[0].balance = 'leastconn'), 'pools[0].balance', 'expected one of least_conn, source_hash, round_robin, random_two, least_time, got "leastconn"'],
  ['bad log level', (c) => (c.log.level = 'verbose'), 'log.level', 'expected one of trace, debug, info, warn, error, got "verbose"'],
  ['missing required key', (c) => delete c.pools[0].servers[2].address, 'pools[0].servers[2]', 'missing required key "address"'],
  ['missing pools', (c) => ((c.listeners = [c.listeners[0]]), delete c.pools), '', 'missing required key "pools"'],
  ['weight too low', (c) => (c.pools[0].servers[1].weight = 0), 'pools[0].servers[1].weight', 'expected an integer between 1 and 256, got 0'],
  ['weight not an integer', (c) => (c.pools[0].servers[1].weight = 1.5), 'pools[0].servers[1].weight', 'expected an integer between 1 and 256, got 1.5'],
  ['weight a string', (c) => (c.pools[0].servers[1].weight = 'heavy'), 'pools[0].servers[1].weight', 'expected an integer between 1 and 256, got "heavy"'],
  ['retries too high', (c) => (c.pools[0].retries = 11), 'pools[0].retries', 'expected an integer between 0 and 10, got 11'],
  ['backup a string', (c) => (c.pools[0].servers[2].backup = 'true'), 'pools[0].servers[2].backup', 'expected true or false, got "true"'],
  ['access log a number', (c) => (c.log.access = 1), 'log.access', 'expected true or false, got 1'],
  ['empty name', (c) => (c.listeners[0].name = ''), 'listeners[0].name', 'expected a non-empty string of at most 200 characters, got ""'],
  ['bad duration', (c) => (c.pools[0].timeouts.connect = '3x'), 'pools[0].timeouts.connect', 'expected a duration like "500ms", "3s", "1h" or integer milliseconds, got "3x"'],
  ['duration of the wrong type', (c) => (c.listeners[0].timeouts.idle = true), 'listeners[0].timeouts.idle', 'expected a duration like "500ms", "3s", "1h" or integer milliseconds, got true'],
  ['negative duration', (c) => (c.listeners[0].timeouts.idle = -5), 'listeners[0].timeouts.idle', 'expected a duration like "500ms", "3s", "1h" or integer milliseconds, got -5'],
  ['fractional milliseconds', (c) => (c.listeners[0].timeouts.idle = '1.5ms'), 'listeners[0].timeouts.idle', 'a duration must be a whole number of milliseconds, got "1.5ms"'],
  ['duration too long for a timer', (c) => (c.pools[0].timeouts.idle = '600h'), 'pools[0].timeouts.idle', 'a duration can be at most 2147483647ms (about 24.8 days), got "600h"'],
  ['zero timeout', (c) => (c.pools[0].timeouts.connect = 0), 'pools[0].timeouts.connect', 'expected a timeout longer than 0ms, got 0'],
  ['address without port', (c) => (c.pools[0].servers[0].address = '10.0.0.1'), 'pools[0].servers[0].address', 'expected host:port, got "10.0.0.1"'],
  ['server on port 0', (c) => (c.pools[0].servers[0].address = '10.0.0.1:0'), 'pools[0].servers[0].address', 'expected a port between 1 and 65535, got "10.0.0.1:0"'],
  ['bind port too high', (c) => (c.listeners[1].bind = '127.0.0.1:65536'), 'listeners[1].bind', 'expected a port between 0 and 65535, got "127.0.0.1:65536"'],
  ['IPv6 without brackets', (c) => (c.pools[0].servers[0].address = 'fd00::1:5432'), 'pools[0].servers[0].address', 'expected host:port with an IPv6 host in brackets, like "[::1]:5432", got "fd00::1:5432"'],
  ['bad IPv4', (c) => (c.pools[0].servers[0].address = '999.0.0.1:80'), 'pools[0].servers[0].address', 'expected a valid IPv4 address before the port, got "999.0.0.1:80"'],
  ['bad hostname', (c) => (c.listeners[1].bind = 'db host:80'), 'listeners[1].bind', 'expected a hostname or IP address before the port, got "db host:80"'],
  ['address a number', (c) => (c.pools[1].servers[0].address = 6379), 'pools[1].servers[0].address', 'expected host:port, got 6379'],
  ['duplicate listener name', (c) => (c.listeners[1].name = 'postgres'), 'listeners[1].name', 'duplicate listener name "postgres" (also listeners[0])'],
  ['duplicate pool name', (c) => ((c.pools[1].name = 'pg'), (c.listeners[1].pool = 'pg')), 'pools[1].name', 'duplicate pool name "pg" (also pools[0])'],
  ['duplicate server name', (c) => (c.pools[0].servers[1].name = 'pg1'), 'pools[0].servers[1].name', 'duplicate server name "pg1" in pool "pg" (also servers[0])'],
  [
    'same address twice without names',
    (c) => c.pools[1].servers.push({ address: '10.0.0.21:6379' }),
    'pools[1].servers[1].address',
    'duplicate server "10.0.0.21:6379" in pool "redis" (also servers[0]); give each a distinct name to list an address twice',
  ],
  ['listener pool missing', (c) => (c.listeners[1].pool = 'pgg'), 'listeners[1].pool', 'no pool named "pgg"; did you mean "pg"?'],
  ['listener pool missing, nothing close', (c) => (c.listeners[1].pool = 'mysql'), 'listeners[1].pool', 'no pool named "mysql"'],
  ['pool without servers', (c) => (c.pools[1].servers = []), 'pools[1].servers', 'expected at least one server, got an empty list'],
  ['no listeners', (c) => (c.listeners = []), 'listeners', 'expected at least one listener, got an empty list'],
  ['listeners not a list', (c) => (c.listeners = { name: 'x' }), 'listeners', 'expected a list, got an object'],
  ['server not an object', (c) => (c.pools[0].servers[0] = 'pg1'), 'pools[0].servers[0]', 'expected an object, got "pg1"'],
  ['duplicate bind', (c) => (c.listeners[0].bind = '127.0.0.1:6380'), 'listeners[1].bind', 'duplicate bind address "127.0.0.1:6380" (also listeners[0])'],
  ['bind under a v4 wildcard', (c) => (c.listeners[0].bind = '0.0.0.0:6380'), 'listeners[1].bind', '"127.0.0.1:6380" overlaps "0.0.0.0:6380" of listeners[0]'],
  ['v4 wildcard over a bind', (c) => (c.listeners[1].bind = '0.0.0.0:6380') && (c.listeners[0].bind = '127.0.0.1:6380'), 'listeners[1].bind', '"0.0.0.0:6380" overlaps "127.0.0.1:6380" of listeners[0]'],
  ['bind under the dual-stack wildcard', (c) => (c.listeners[0].bind = '[::]:6380'), 'listeners[1].bind', '"127.0.0.1:6380" overlaps "[::]:6380" of listeners[0]'],
  ['root is null', () => null, '', 'the configuration is empty; expected an object with "listeners" and "pools"'],
  ['accept_proxy without trusted_proxies', (c) => (c.listeners[1].accept_proxy = true), 'listeners[1].trusted_proxies', TRUSTED_REQUIRED],
  ['accept_proxy with no trusted proxy', (c) => ((c.listeners[1].accept_proxy = true), (c.listeners[1].trusted_proxies = [])), 'listeners[1].trusted_proxies', TRUSTED_REQUIRED],
  ['ipv6_prefix 0', (c) => (c.listeners[0].per_source = { max_connections: 1, ipv6_prefix: 0 }), 'listeners[0].per_source.ipv6_prefix', 'expected an integer between 1 and 128, got 0'],
  ['ipv6_prefix 129', (c) => (c.listeners[0].per_source = { ipv6_prefix: 129 }), 'listeners[0].per_source.ipv6_prefix', 'expected an integer between 1 and 128, got 129'],
  ['ipv6_prefix as CIDR text', (c) => (c.listeners[0].per_source = { ipv6_prefix: '/64' }), 'listeners[0].per_source.ipv6_prefix', 'expected an integer between 1 and 128, got "/64"'],
  ['health kind unknown', (c) => (c.pools[0].health = { kind: 'ssh', http: {} }), 'pools[0].health.kind', 'expected one of tcp, tls, http, postgres, mysql, redis, smtp, got "ssh"'],
  ['health port 0', (c) => (c.pools[0].health = { port: 0 }), 'pools[0].health.port', 'expected an integer between 1 and 65535, got 0'],
  ['health.http without kind http', (c) => (c.pools[0].health = { http: { path: '/primary' } }), 'pools[0].health.http', 'only used with kind: http, but kind is tcp'],
  ['health.postgres with kind http', (c) => (c.pools[0].health = { kind: 'http', postgres: {} }), 'pools[0].health.postgres', 'only used with kind: postgres, but kind is http'],
  ['health.send with kind http', (c) => (c.pools[0].health = { kind: 'http', send: 'PING' }), 'pools[0].health.send', 'only used with kind: tcp; kind http sends its own request'],
  ['health.expect with kind postgres', (c) => (c.pools[0].health = { kind: 'postgres', expect: 'R' }), 'pools[0].health.expect', 'only used with kinds tcp and smtp; kind postgres judges its own reply'],
  ['health.http.method POST', (c) => (c.pools[0].health = { kind: 'http', http: { method: 'POST' } }), 'pools[0].health.http.method', 'expected one of GET, HEAD, OPTIONS, got "POST"'],
  [
    'health.http.path without "/"',
    (c) => (c.pools[0].health = { kind: 'http', http: { path: 'primary' } }),
    'pools[0].health.http.path',
    'expected a path starting with "/", in printable ASCII without spaces (percent-encode the rest), got "primary"',
  ],
  [
    'health.http.path with a line break',
    (c) => (c.pools[0].health = { kind: 'http', http: { path: '/a\r\nX-Evil: 1' } }),
    'pools[0].health.http.path',
    'expected a path starting with "/", in printable ASCII without spaces (percent-encode the rest), got "/a\\r\\nX-Evil: 1"',
  ],
  ['health.http.host with a space', (c) => (c.pools[0].health = { kind: 'http', http: { host: 'a b' } }), 'pools[0].health.http.host', 'expected a host name (and optional :port) in printable ASCII without spaces, got "a b"'],
  ['health.http.expect_status 99', (c) => (c.pools[0].health = { kind: 'http', http: { expect_status: [200, 99] } }), 'pools[0].health.http.expect_status[1]', 'expected an integer between 100 and 599, got 99'],
  ['health.http.expect_status empty', (c) => (c.pools[0].health = { kind: 'http', http: { expect_status: [] } }), 'pools[0].health.http.expect_status', 'expected at least one status code, got an empty list'],
  ['health.postgres.user with a NUL', (c) => (c.pools[0].health = { kind: 'postgres', postgres: { user: 'a\u0000b' } }), 'pools[0].health.postgres.user', 'must not contain a NUL character'],
];

t.test('each kind of problem is reported with its path and message', async (t) => {
  for (const [what, mutate, path, message] of oneProblem) {
    const c = base();
    const replaced = what === 'root is null' ? null : (mutate(c), c);
    t.same(await problemsOf(replaced), [{ path, message }], what);
  }
  t.same(await problemsOf([1]), [{ path: '', message: 'expected an object with "listeners" and "pools" at the top level, got a list' }]);
});

t.test('binds that do not clash are accepted', async (t) => {
  const c = base();
  c.listeners.push({ name: 'a', bind: '127.0.0.1:0', pool: 'pg' }); // port 0: each gets its own port
  c.listeners.push({ name: 'b', bind: '127.0.0.2:6380', pool: 'pg' });
  c.listeners.push({ name: 'c', bind: '[::1]:6380', pool: 'pg' });
  c.listeners.push({ name: 'd', bind: '0.0.0.0:7000', pool: 'pg' });
  c.listeners.push({ name: 'e', bind: '[::1]:7000', pool: 'pg' }); // 0.0.0.0 covers IPv4 only
  t.equal((await buildModel(c)).listeners.length, 7);
});

t.test('several problems are all reported, grouped by item', async (t) => {
  const c = base();
  c.log.level = 'loud';
  c.listeners[1].pool = 'pgg';
  c.listeners[1].timeouts = { idle: '3x' };
  c.pools[0].balance = 'leastconn';
  c.pools[0].servers[0].address = '10.0.0.1';
  c.pools[0].servers[1].weight = 0;
  c.pools[1].retrys = 3;
  c.extra = true;
  const problems = await problemsOf(c);
  t.same(problems, [
    { path: 'extra', message: 'unknown key' },
    { path: 'listeners[1].pool', message: 'no pool named "pgg"; did you mean "pg"?' },
    { path: 'listeners[1].timeouts.idle', message: 'expected a duration like "500ms", "3s", "1h" or integer milliseconds, got "3x"' },
    { path: 'log.level', message: 'expected one of trace, debug, info, warn, error, got "loud"' },
    { path: 'pools[0].balance', message: 'expected one of least_conn, source_hash, round_robin, random_two, least_time, got "leastconn"' },
    { path: 'pools[0].servers[0].address', message: 'expected host:port, got "10.0.0.1"' },
    { path: 'pools[0].servers[1].weight', message: 'expected an integer between 1 and 256, got 0' },
    { path: 'pools[1].retrys', message: 'unknown key; did you mean "retries"?' },
  ]);
  const err = await buildModel(c, 'l4lb.yaml').catch((e: unknown) => e);
  t.type(err, ConfigError);
  t.equal((err as ConfigError).code, 'L4LB_CONFIG_INVALID');
  t.match((err as ConfigError).message, /^invalid configuration in l4lb\.yaml:\n/);
  t.match((err as ConfigError).message, /\npools\[0\]\.servers\[1\]\.weight: expected an integer between 1 and 256, got 0/);
});

t.test('list indices sort as numbers, and a flood of problems is capped', async (t) => {
  const c = base();
  c.pools[0].servers = Array.from({ length: 150 }, (_, i) => ({ address: `nope${i}` }));
  const problems = await problemsOf(c);
  t.equal(problems.length, 101);
  t.equal(problems[2]!.path, 'pools[0].servers[2].address');
  t.equal(problems[10]!.path, 'pools[0].servers[10].address');
  t.same(problems[100], { path: '', message: 'and 50 more problems' });
});

t.test('hostnames are resolved when the configuration is loaded', async (t) => {
  const c = base();
  c.pools[1].servers = [{ address: 'localhost:6379' }, { name: 'again', address: 'localhost:6380' }];
  c.listeners[1].bind = 'localhost:0';
  const model = await buildModel(c);
  const server = model.pools[1]!.servers[0]!;
  t.not(isIP(server.address.host), 0, `localhost resolved to ${server.address.host}`);
  t.equal(server.address.text, 'localhost:6379');
  t.equal(server.name, 'localhost:6379');
  t.not(isIP(model.listeners[1]!.bind.host), 0);
});

// Changed with issue 16 (server names that follow DNS): an unresolvable server name no longer makes the file
// invalid; the server starts unresolved and the running l4lb asks again every dns.interval.
t.test('an unresolvable server host is a warning with its path, and the server starts unresolved', async (t) => {
  const c = base();
  c.pools[0].servers[1].address = 'db1.invalid:5432';
  c.pools[1].servers[0].address = 'db1.invalid:6379';
  const model = await buildModel(c);
  const warned = model.warnings.filter((w) => /cannot resolve host "db1\.invalid"/.test(w));
  t.equal(warned.length, 2);
  t.match(warned[0], /^pools\[0\]\.servers\[1\]\.address: /);
  t.match(warned[1], /^pools\[1\]\.servers\[0\]\.address: /);
  t.notOk(model.pools[0]!.servers.some((s) => s.address.text === 'db1.invalid:5432'), 'no server until it resolves');
  t.same(model.pools[0]!.hostnames?.map((h) => [h.name, h.addresses.length]), [['db1.invalid:5432', 0]]);
});

t.test('a malformed server host name is still a problem', async (t) => {
  const c = base();
  c.pools[0].servers[1].address = 'db_1..invalid:5432';
  const problems = await problemsOf(c);
  t.equal(problems.length, 1);
  t.equal(problems[0]!.path, 'pools[0].servers[1].address');
});

t.test('files that cannot be read or parsed give ConfigReadError', async (t) => {
  const dir = t.testdir({
    'bad.yaml': 'listeners:\n  - name: a\n    bind: [\n',
    'dup.yaml': 'log: {}\nlog: {}\n',
    'bad.json': '{\n  "log": {},\n}\n',
    'empty.yaml': '',
    'l4lb.toml': 'x = 1',
    'l4lb': '{}',
    'dir.yaml': {},
  });
  const readError = async (name: string, pattern: RegExp) => {
    const err = await loadConfig(join(dir, name)).catch((e: unknown) => e);
    t.type(err, ConfigReadError, name);
    t.equal((err as ConfigReadError).code, 'L4LB_CONFIG_READ');
    t.match((err as Error).message, pattern, name);
  };
  await readError('bad.yaml', /line 4, column 1/);
  await readError('dup.yaml', /Map keys must be unique at line 2/);
  await readError('bad.json', /line 3, column 1/);
  await readError('l4lb.toml', /unsupported file extension "\.toml"; use \.yaml, \.yml or \.json/);
  await readError('l4lb', /no file extension/);
  await readError('missing.yaml', /ENOENT/);
  await readError('dir.yaml', /EISDIR/);
  const empty = await loadConfig(join(dir, 'empty.yaml')).catch((e: unknown) => e);
  t.type(empty, ConfigError);
  t.same((empty as ConfigError).problems, [{ path: '', message: 'the configuration is empty; expected an object with "listeners" and "pools"' }]);
});

t.test('a YAML alias bomb is refused', async (t) => {
  const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
  for (let i = 1; i < 9; i++) levels.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9).fill(`*${String.fromCharCode(96 + i)}`).join(',')}]`);
  const dir = t.testdir({ 'bomb.yaml': `${levels.join('\n')}\n` });
  await t.rejects(loadConfig(join(dir, 'bomb.yaml')), ConfigReadError);
});

t.test('parseDuration reads ms, s, m and h and words every problem; formatDuration writes the largest whole unit', async (t) => {
  const ok: [unknown, number][] = [
    ['500ms', 500], ['3s', 3000], ['5m', 300_000], ['1h', 3_600_000], ['1.5s', 1500], ['1.001s', 1001],
    ['0.5m', 30_000], ['0s', 0], [0, 0], [250, 250], [MAX_DURATION_MS, MAX_DURATION_MS],
  ];
  for (const [value, ms] of ok) t.equal(parseDuration(value), ms, String(value));
  const expected = 'expected a duration like "500ms", "3s", "1h" or integer milliseconds, got ';
  const bad: [unknown, string][] = [
    ['3x', `${expected}"3x"`], ['3', `${expected}"3"`], [' 3s', `${expected}" 3s"`], ['3S', `${expected}"3S"`],
    ['1d', `${expected}"1d"`], ['.5s', `${expected}".5s"`], ['-1s', `${expected}"-1s"`], [-1, `${expected}-1`],
    [1.5, `${expected}1.5`], [NaN, `${expected}NaN`], [Infinity, `${expected}Infinity`], [null, `${expected}null`],
    [{}, `${expected}an object`], [[], `${expected}a list`], [undefined, `${expected}nothing`],
    ['0.5ms', 'a duration must be a whole number of milliseconds, got "0.5ms"'],
    [MAX_DURATION_MS + 1, 'a duration can be at most 2147483647ms (about 24.8 days), got 2147483648'],
  ];
  for (const [value, message] of bad) t.equal(parseDuration(value), message, String(value));
  const huge = '9'.repeat(100_000) + 's';
  t.equal(parseDuration(huge), `${expected}"${'9'.repeat(60)}…"`, 'long input is cut short in the message');
  t.equal(formatDuration(3_600_000), '1h');
  t.equal(formatDuration(90_000), '90s');
  t.equal(formatDuration(120_000), '2m');
  t.equal(formatDuration(1500), '1500ms');
  t.equal(formatDuration(0), '0ms');
});

t.test('parseAddress reads host:port and [IPv6]:port and words every problem', async (t) => {
  t.same(parseAddress('10.0.0.1:80'), { host: '10.0.0.1', port: 80, text: '10.0.0.1:80' });
  t.same(parseAddress('[::1]:443'), { host: '::1', port: 443, text: '[::1]:443' });
  t.same(parseAddress('db.internal.:5432'), { host: 'db.internal.', port: 5432, text: 'db.internal.:5432' });
  t.same(parseAddress('redis_1:6379'), { host: 'redis_1', port: 6379, text: 'redis_1:6379' });
  t.same(parseAddress('0.0.0.0:0', { allowPortZero: true }), { host: '0.0.0.0', port: 0, text: '0.0.0.0:0' });
  t.equal(parseAddress('0.0.0.0:0'), 'expected a port between 1 and 65535, got "0.0.0.0:0"');
  t.equal(parseAddress('[10.0.0.1]:80'), 'expected an IPv6 address inside the brackets, got "[10.0.0.1]:80"');
  t.equal(parseAddress('[::1]'), 'expected "[IPv6]:port", got "[::1]"');
  t.equal(parseAddress(':80'), 'expected host:port, got ":80"');
  t.equal(parseAddress('db:'), 'expected host:port with a numeric port, got "db:"');
  t.equal(parseAddress('db:pg'), 'expected host:port with a numeric port, got "db:pg"');
  t.equal(parseAddress('db:123456'), 'expected host:port with a numeric port, got "db:123456"');
  t.equal(parseAddress(`${'a'.repeat(64)}:80`), `expected a hostname or IP address before the port, got "${'a'.repeat(60)}…"`);
  t.equal(parseAddress(null), 'expected host:port, got null');
});

t.test('suggestions offer the closest known name within a small edit distance', async (t) => {
  t.equal(editDistance('balance', 'balnace'), 1, 'a swap is one edit');
  t.equal(editDistance('kitten', 'sitting'), 3);
  t.equal(editDistance('', 'abc'), 3);
  t.equal(editDistance('abcdef', 'uvwxyz', 2), 3, 'stops past the limit');
  t.equal(editDistance('a', 'abcdef', 2), 3, 'length alone exceeds the limit');
  t.equal(suggest('Balance', ['balance']), 'balance');
  t.equal(suggest('servres', ['name', 'servers', 'balance']), 'servers');
  t.equal(suggest('pgg', ['redis', 'pg']), 'pg');
  t.equal(suggest('xyz', ['balance', 'retries']), undefined);
  t.equal(suggest('timeout', ['timeouts', 'timeouts2']), 'timeouts', 'ties go to the first');
  t.equal(didYouMean('acess', ['level', 'access']), '; did you mean "access"?');
  t.equal(didYouMean('zzz', ['level', 'access']), '');
});

t.test('the schema documents every key and matches conf/l4lb.schema.json', async (t) => {
  const undocumented: string[] = [];
  const walk = (node: JsonSchema, path: string) => {
    const props = (node.properties ?? {}) as Record<string, JsonSchema>;
    for (const [key, child] of Object.entries(props)) {
      if (typeof child.description !== 'string' || child.description === '') undocumented.push(`${path}${key}`);
      walk(child, `${path}${key}.`);
    }
    if (node.items) walk(node.items as JsonSchema, `${path}[].`);
    if (node.type === 'object') t.equal(node.additionalProperties, false, `${path || 'root'} rejects unknown keys`);
  };
  walk(configSchema, '');
  t.same(undocumented, []);
  t.match(configSchema, { $schema: 'http://json-schema.org/draft-07/schema#', title: String });
  const exported = JSON.parse(await readFile(join(confDir, 'l4lb.schema.json'), 'utf8'));
  t.same(exported, JSON.parse(JSON.stringify(configSchema)), 'conf/l4lb.schema.json is current (npm run build && npm run schema)');
});

t.test('internal failures still come out as ConfigError', async (t) => {
  const hostile = new Proxy({}, {
    get() {
      throw new Error('boom');
    },
  });
  const err = await buildModel(hostile).catch((e: unknown) => e);
  t.type(err, ConfigError);
  t.match((err as ConfigError).problems[0]!.message, /internal error while checking the configuration: boom/);
});

// ---------------------------------------------------------------------------
// Random mutation: malformed input of any shape gives ConfigError and nothing else.

const junk: unknown[] = [
  null, undefined, 0, -1, 1.5, 65536, 2 ** 53, NaN, Infinity, -Infinity, true, false, '', ' ', '3x', '0s', '10.0.0.1',
  '[::1]:80', '10.0.0.1:0', 'x'.repeat(100_000), '🙂:80', 'db.invalid:80', 'pg', '__proto__', 'constructor', [], [[[]]], {},
  { __proto__: null, a: 1 }, JSON.parse('{"__proto__": {"polluted": 1}}'), [null], { name: 1 }, new Date(0), 'least_conn',
];

t.test('random mutations never throw anything but ConfigError', async (t) => {
  const random = seededRandom(20240601);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  let accepted = 0;
  let rejected = 0;
  for (let round = 0; round < 500; round++) {
    const c = base();
    for (let n = 1 + Math.floor(random() * 3); n > 0; n--) {
      // Every container in the tree, with each of its keys.
      const spots: [Record<string, unknown>, string][] = [];
      const collect = (v: unknown) => {
        if (typeof v !== 'object' || v === null) return;
        for (const [k, child] of Object.entries(v)) {
          spots.push([v as Record<string, unknown>, k]);
          collect(child);
        }
      };
      collect(c);
      if (spots.length === 0) break;
      const [parent, key] = pick(spots);
      const op = random();
      if (op < 0.3) delete parent[key];
      else if (op < 0.7) parent[key] = pick(junk);
      else if (op < 0.85) parent[pick(['name', 'extra', 'balanse', '', 'servers', 'timeouts'])] = pick(junk);
      else if (Array.isArray(parent)) parent.push(structuredClone(parent[0]));
      else parent[key] = [parent[key]];
    }
    try {
      const model = await buildModel(c);
      t.ok(isDeepFrozen(model), `round ${round}: frozen`);
      accepted++;
    } catch (err) {
      if (!(err instanceof ConfigError)) {
        t.fail(`round ${round}: threw ${String(err)}`);
        continue;
      }
      rejected++;
      for (const p of err.problems) {
        if (typeof p.path !== 'string' || typeof p.message !== 'string' || /internal error|undefined/.test(p.message)) {
          t.fail(`round ${round}: bad problem ${JSON.stringify(p)}`);
        }
      }
    }
  }
  t.ok(rejected > 300, `${rejected} rejected, ${accepted} accepted`);
});

t.test('damaged files never throw anything but ConfigReadError or ConfigError', async (t) => {
  const random = seededRandom(7);
  const text = await readFile(join(confDir, 'example-postgres.yaml'), 'utf8');
  const dir = t.testdir({});
  const file = join(dir, 'damaged.yaml');
  const chars = [':', '-', '[', '{', '"', "'", '&', '*', '!', '\t', '\n', ' ', '#', '|', '>', '%', '@', '`', '\0'];
  for (let round = 0; round < 150; round++) {
    let damaged = text;
    for (let n = 1 + Math.floor(random() * 4); n > 0; n--) {
      const at = Math.floor(random() * damaged.length);
      const c = chars[Math.floor(random() * chars.length)]!;
      damaged = random() < 0.5 ? damaged.slice(0, at) + c + damaged.slice(at + 1) : damaged.slice(0, at);
    }
    await writeFile(file, damaged);
    try {
      await loadConfig(file);
    } catch (err) {
      if (!(err instanceof ConfigError) && !(err instanceof ConfigReadError)) t.fail(`round ${round}: threw ${String(err)}`);
    }
  }
  t.pass('150 damaged files handled');
});

t.test('health, slow_start, on_server_down, proxy_protocol and accept_proxy keys reach the model', async (t) => {
  const raw = base();
  raw.listeners[0].accept_proxy = true;
  raw.listeners[0].trusted_proxies = ['10.0.0.0/8', '::1', '2001:db8::/32'];
  raw.listeners[0].timeouts.handshake = '2s';
  Object.assign(raw.pools[0], {
    health: { interval: '200ms', timeout: '100ms', rise: 1, fall: 5, send: 'PING\r\n', expect: 'hex:2b504f4e47' },
    slow_start: '30s',
    on_server_down: 'close',
    proxy_protocol: 'v2',
  });
  const model = await buildModel(raw);
  const l = model.listeners[0]!;
  t.equal(l.acceptProxy, true);
  t.same(l.trustedProxies, ['10.0.0.0/8', '::1', '2001:db8::/32']);
  t.equal(l.timeouts.handshakeMs, 2000);
  const p = model.pools[0]!;
  t.match(p.health, { intervalMs: 200, timeoutMs: 100, rise: 1, fall: 5 });
  t.equal(p.health.send!.toString(), 'PING\r\n');
  t.equal(p.health.expect!.toString(), '+PONG', 'hex: payloads are bytes');
  t.equal(p.slowStartMs, 30_000);
  t.equal(p.onServerDown, 'close');
  t.equal(p.proxyProtocol, 'v2');
});

t.test('health kinds: http and postgres settings reach the model with their defaults', async (t) => {
  const raw = base();
  raw.pools[0].health = { kind: 'http', port: 8008, http: { path: '/primary' } };
  raw.pools[1].health = { kind: 'postgres' };
  let model = await buildModel(raw);
  t.match(model.pools[0]!.health, { kind: 'http', port: 8008, send: null, expect: null, postgres: null });
  t.same(model.pools[0]!.health.http, { method: 'GET', path: '/primary', expectStatus: [200], host: null }, 'http defaults');
  t.same(model.pools[1]!.health.postgres, { user: 'l4lb_probe', database: 'l4lb_probe' }, 'postgres defaults: database is the user');
  t.equal(model.pools[1]!.health.http, null);
  raw.pools[0].health = { kind: 'http', http: { method: 'HEAD', path: '/replica?lag=1MB', expect_status: [200, 204], host: 'patroni.internal' } };
  raw.pools[1].health = { kind: 'postgres', postgres: { user: 'probe', database: 'postgres' } };
  model = await buildModel(raw);
  t.same(model.pools[0]!.health.http, { method: 'HEAD', path: '/replica?lag=1MB', expectStatus: [200, 204], host: 'patroni.internal' });
  t.equal(model.pools[0]!.health.port, null, 'no port: the server\'s own');
  t.same(model.pools[1]!.health.postgres, { user: 'probe', database: 'postgres' });
});

t.test('bad values of the newer keys are named by path', async (t) => {
  const raw = base();
  raw.listeners[0].trusted_proxies = ['10.0.0.0/33', 'nonsense'];
  raw.pools[0].proxy_protocol = 'v3';
  raw.pools[0].health = { expect: 'hex:abc', fall: 0 };
  raw.pools[0].on_server_down = 'kill';
  const problems = (await problemsOf(raw)).map((p) => `${p.path}: ${p.message}`);
  t.match(problems.join('\n'), /listeners\[0\]\.trusted_proxies: has no effect without accept_proxy: true/);
  t.match(problems.join('\n'), /listeners\[0\]\.trusted_proxies\[0\]: expected a prefix length 0\.\.32/);
  t.match(problems.join('\n'), /listeners\[0\]\.trusted_proxies\[1\]: expected an address or CIDR/);
  t.match(problems.join('\n'), /pools\[0\]\.proxy_protocol: expected one of off, v1, v2, got "v3"/);
  t.match(problems.join('\n'), /pools\[0\]\.health\.expect: expected "hex:" followed by pairs of hex digits/);
  t.match(problems.join('\n'), /pools\[0\]\.health\.fall: expected an integer between 1 and 100, got 0/);
  t.match(problems.join('\n'), /pools\[0\]\.on_server_down: expected one of keep, close, got "kill"/);
});

t.test('accept_proxy needs trusted_proxies; "0.0.0.0/0" and "::/0" still trust everyone for those who mean it', async (t) => {
  const raw = base();
  raw.listeners[0].accept_proxy = true;
  raw.listeners[0].trusted_proxies = ['0.0.0.0/0', '::/0'];
  const model = await buildModel(raw);
  t.same(model.listeners[0]!.trustedProxies, ['0.0.0.0/0', '::/0']);
  // Only the entries' own problems when every entry is bad: the list is there, just wrong.
  raw.listeners[0].trusted_proxies = ['10.0.0.0/33'];
  t.same(await problemsOf(raw), [{ path: 'listeners[0].trusted_proxies[0]', message: 'expected a prefix length 0..32 after "/", got "10.0.0.0/33"' }]);
});

t.test('l4lb check refuses accept_proxy without trusted_proxies and names the key', async (t) => {
  const raw = base();
  raw.listeners[0].accept_proxy = true;
  const { file, cleanup } = writeConfig(raw);
  t.teardown(cleanup);
  const r = runCli(['check', '--config', file]);
  t.equal(r.status, 1, 'exit 1');
  t.match(r.stderr, /listeners\[0\]\.trusted_proxies: required with accept_proxy: true/);
  t.match(r.stderr, /"0\.0\.0\.0\/0", "::\/0"/, 'says how to trust everyone');
});

t.test('per_source.ipv6_prefix defaults to 64 and takes any of 1..128', async (t) => {
  const raw = base();
  raw.listeners[0].per_source = { max_connections: 10 };
  t.same((await buildModel(raw)).listeners[0]!.perSource, { maxConnections: 10, connectRate: 0, ipv6Prefix: 64 });
  raw.listeners[0].per_source = { connect_rate: 5, ipv6_prefix: 48 };
  t.same((await buildModel(raw)).listeners[0]!.perSource, { maxConnections: 0, connectRate: 5, ipv6Prefix: 48 });
  raw.listeners[0].per_source = { max_connections: 1, ipv6_prefix: 128 };
  t.equal((await buildModel(raw)).listeners[0]!.perSource.ipv6Prefix, 128);
  raw.listeners[0].per_source = { max_connections: 1, ipv6_prefx: 56 };
  t.same(await problemsOf(raw), [{ path: 'listeners[0].per_source.ipv6_prefx', message: 'unknown key; did you mean "ipv6_prefix"?' }]);
});
