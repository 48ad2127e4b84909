/**
 * What the documentation promises holds: every error code and every
 * termination is documented in the README, each code with the termination
 * the code really gives, and every rejection reason the metrics export is
 * reached by a real connection.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';
import { ERROR_CODES } from '../src/errors.js';
import { FdBudget } from '../src/net/fd-budget.js';
import { Pool } from '../src/pool.js';
import { Listener } from '../src/proxy/listener.js';
import { REJECT_REASONS, type RejectReason } from '../src/proxy/stats.js';
import { DATA_PATH_CODES, TERMINATIONS } from '../src/proxy/termination.js';
import { buildModel } from '../src/config/load.js';
import { ROOT } from './helpers/cli.js';
import { backendFor, lbFor } from './helpers/lb.js';
import { silentLogger } from './helpers/logs.js';
import { closed, connect, waitFor, type Running } from './helpers/net.js';
import { testCerts } from './helpers/certs.js';

const readme = readFileSync(`${ROOT}/README.md`, 'utf8');

/** The rows of the README's "Error codes" table: code → termination ('' when none). */
function documentedCodes(): Map<string, string> {
  const section = readme.slice(readme.indexOf('## Error codes'));
  const table = section.slice(0, section.indexOf('\n## '));
  const rows = new Map<string, string>();
  for (const m of table.matchAll(/^\| `(L4LB_[A-Z_]+)` \|[^|]*\| *`?([a-z_]*)`? *\|$/gm)) rows.set(m[1]!, m[2]!);
  return rows;
}

t.test('every error code is documented in the README, and only those', async (t) => {
  const documented = documentedCodes();
  t.same([...documented.keys()].sort(), [...ERROR_CODES].sort());
});

t.test('each code that ends a connection is documented with the termination it gives', async (t) => {
  const documented = documentedCodes();
  for (const code of ERROR_CODES) {
    t.equal(documented.get(code), DATA_PATH_CODES.get(code) ?? '', code);
  }
});

t.test('every termination is named in the README access log section', async (t) => {
  const section = readme.slice(readme.indexOf('Access log fields'), readme.indexOf('## Example'));
  for (const termination of TERMINATIONS) t.match(section, new RegExp(`\\b${termination}\\b`), termination);
});

t.test('every rejection reason the metrics export is reached by a real connection', async (t) => {
  const scenarios: Record<RejectReason, (t: Tap) => Promise<number>> = {
    acl: async (t) => {
      const lb = await lbFor(t, config({ deny: ['127.0.0.0/8'] }));
      await refused(lb.port());
      return rejected(lb, 'acl');
    },
    limit: async (t) => {
      const lb = await lbFor(t, config({ max_connections: 1 }));
      const held = await connect(lb.port());
      t.teardown(() => held.destroy());
      await waitFor(() => lb.app.connections === 1, 2_000, 'the first connection');
      await refused(lb.port());
      return rejected(lb, 'limit');
    },
    proxy_header: async (t) => {
      const lb = await lbFor(t, config({ accept_proxy: true, trusted_proxies: ['127.0.0.0/8'] }));
      await refused(lb.port(), 'GARBAGE\r\n');
      return rejected(lb, 'proxy_header');
    },
    tls: async (t) => {
      const lb = await lbFor(t, config({ tls: { mode: 'passthrough' } }));
      await refused(lb.port(), 'GET / HTTP/1.0\r\n\r\n');
      return rejected(lb, 'tls');
    },
    tls_required: async (t) => {
      const certs = testCerts();
      const lb = await lbFor(t, config({ protocol: 'postgres', tls: { mode: 'terminate', certs: [certs.pair('a.test')] } }));
      // A PostgreSQL StartupMessage in plaintext: user=x.
      const startup = Buffer.from([0, 0, 0, 17, 0, 3, 0, 0, 0x75, 0x73, 0x65, 0x72, 0, 0x78, 0, 0, 0]);
      await refused(lb.port(), startup);
      return rejected(lb, 'tls_required');
    },
    no_server: async (t) => {
      const lb = await lbFor(t, config({}));
      const pool = lb.app.pools.get('p')!;
      pool.setAdminState(pool.servers[0]!, 'maint');
      await refused(lb.port());
      return rejected(lb, 'no_server');
    },
    local: async (t) => {
      // A listener whose descriptor budget is spent: the balancer's own shortage.
      const model = await buildModel(config({}));
      const pool = new Pool(model.pools[0]!);
      pool.start();
      const spent = new FdBudget({ limit: 8, count: () => 8 });
      const listener = new Listener(model.listeners[0]!, new Map([[pool.name, pool]]), silentLogger(), false, { fds: spent });
      t.teardown(() => listener.destroy());
      await listener.start();
      await refused(listener.address().port);
      await waitFor(() => listener.stats.rejected.get('local') === 1, 2_000, 'the local rejection');
      return listener.stats.rejected.get('local') ?? 0;
    },
  };
  t.same(Object.keys(scenarios).sort(), [...REJECT_REASONS].sort(), 'a scenario for every exported reason');
  const backend = await backendFor(t);
  const config = (listener: Record<string, unknown>): Record<string, unknown> => ({
    log: { level: 'info', access: false },
    listeners: [{ name: 'front', bind: '127.0.0.1:0', pool: 'p', ...listener }],
    pools: [{ name: 'p', servers: [{ address: backend.address }], health: { interval: '1h' } }],
  });
  for (const reason of REJECT_REASONS) {
    await t.test(reason, async (t) => {
      t.equal(await scenarios[reason](t), 1, `one connection counted as ${reason}`);
    });
  }
});

type Tap = Parameters<Parameters<typeof t.test>[1]>[0];

/** Connect, optionally send `bytes`, and wait until l4lb closes the connection. */
async function refused(port: number, bytes?: string | Buffer): Promise<void> {
  const c = net.connect({ port, host: '127.0.0.1' });
  c.on('error', () => {});
  if (bytes !== undefined) c.write(bytes);
  await closed(c, 5_000);
}

async function rejected(lb: Running, reason: RejectReason): Promise<number> {
  const stats = lb.app.listeners[0]!.stats;
  await waitFor(() => (stats.rejected.get(reason) ?? 0) > 0, 2_000, `a ${reason} rejection`);
  return stats.rejected.get(reason) ?? 0;
}
