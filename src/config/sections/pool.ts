/** `pools[]`: groups of servers, their balancing, timeouts and servers. */
import { DEFAULTS } from '../../defaults.js';
import { BALANCES, ON_SERVER_DOWN, PROXY_PROTOCOL_VERSIONS } from '../enums.js';
import type { PoolModel, PoolTlsModel, ServerModel } from '../model.js';
import { duration, durationNode, flag, integer, kind, name, object, oneWordOf } from '../schema-nodes.js';
import { UNRESOLVED, asObject, asString, boolOr, intOr, oneOf, type Check, type TlsDraft } from './context.js';
import { healthSchema, normaliseHealth } from './health.js';
import { normalisePoolTls, poolTlsSchema } from './pool-tls.js';

const serverSchema = object(
  'A backend server.',
  {
    name: name('Unique within the pool; used in logs, metrics and the admin API. Default: the address as written.'),
    address: kind('address', {
      description: 'Where to connect: "host:port" or "[IPv6]:port". Hostnames are resolved when the configuration is loaded.',
      type: 'string',
      maxLength: 300,
    }),
    weight: integer(`Relative share of new connections, 1 to 256. Default: ${DEFAULTS.weight}.`, 1, 256, DEFAULTS.weight),
    backup: flag('Used only when no primary (non-backup) server of the pool is up.', DEFAULTS.backup),
  },
  ['address'],
  'server',
);

/** The schema node of one `pools[]` entry. */
export const poolSchema = object(
  'A group of servers that share one balancing algorithm.',
  {
    name: name('Unique pool name, referred to by listeners.'),
    balance: oneWordOf(
      'How a server is picked: least_conn (fewest active connections per weight), source_hash (consistent hash of the client IP), ' +
        `round_robin (in turn, by weight), random_two (the less loaded of two random servers). Default: ${DEFAULTS.balance}.`,
      BALANCES,
      DEFAULTS.balance,
    ),
    retries: integer(`How many further servers to try after a failed connect, 0 to 10. Default: ${DEFAULTS.retries}.`, 0, 10, DEFAULTS.retries),
    timeouts: object('Timeouts for connections to this pool\'s servers.', {
      connect: duration('How long a connect to a server may take before it counts as failed.', DEFAULTS.connectTimeoutMs),
      idle: duration('A connection with no traffic in either direction for this long is closed.', DEFAULTS.idleTimeoutMs),
    }),
    health: healthSchema,
    slow_start: durationNode(
      'A server that comes back up ramps its share of new connections from about 10% to 100% over this time ' +
        `(least_conn, round_robin, random_two; source_hash keeps its mapping stable instead). 0 = off. Default: ${DEFAULTS.slowStartMs}.`,
      DEFAULTS.slowStartMs,
    ),
    on_server_down: oneWordOf(
      'What happens to the open connections of a server marked down: keep (they continue) or close ' +
        `(clients reconnect elsewhere, e.g. to a new database primary). Default: ${DEFAULTS.onServerDown}.`,
      ON_SERVER_DOWN,
      DEFAULTS.onServerDown,
    ),
    tls: poolTlsSchema,
    proxy_protocol: oneWordOf(
      'Send a PROXY protocol header to each server so it sees the real client address: off, v1 (text) or v2 (binary, ' +
        `with the TLS server name and details). Health probes send one too (v2 LOCAL, or v1 with the probe's own addresses). Default: ${DEFAULTS.proxyProtocol}.`,
      PROXY_PROTOCOL_VERSIONS,
      DEFAULTS.proxyProtocol,
    ),
    servers: {
      description: 'The servers of this pool; at least one.',
      type: 'array',
      minItems: 1,
      items: serverSchema,
    },
  },
  ['name', 'servers'],
  'pool',
);

/** The pools read, and what the listeners and the file checks need of them. */
export interface Pools {
  /** Servers' addresses are filled in once resolved. */
  readonly pools: PoolModel[];
  /** Pool name → its path; null when some pool has no usable name (then "no pool named" would be a guess). */
  readonly names: ReadonlyMap<string, string> | null;
  /** Pools with TLS to their servers, for {@link checkPoolTls}. */
  readonly tls: TlsDraft<PoolTlsModel>[];
}

/** Reads `pools:` with its defaults; names must be unique, and servers' names within a pool. */
export function normalisePools(check: Check, value: unknown): Pools {
  const pools: PoolModel[] = [];
  const tls: TlsDraft<PoolTlsModel>[] = [];
  const names = new Map<string, string>();
  let namesComplete = Array.isArray(value);
  for (const [i, item] of (Array.isArray(value) ? value : []).entries()) {
    const path = `pools[${i}]`;
    const o = asObject(item);
    const poolName = asString(o?.name);
    if (poolName === undefined) namesComplete = false;
    if (!o) continue;
    if (poolName !== undefined) {
      const earlier = names.get(poolName);
      if (earlier !== undefined) check.add(`${path}.name`, `duplicate pool name "${poolName}" (also ${earlier})`);
      else names.set(poolName, path);
    }
    const t = asObject(o.timeouts) ?? {};
    const pool = {
      name: poolName ?? '',
      balance: oneOf(o.balance, BALANCES, DEFAULTS.balance),
      retries: intOr(o.retries, DEFAULTS.retries),
      timeouts: {
        connectMs: check.timeout(`${path}.timeouts.connect`, t.connect, DEFAULTS.connectTimeoutMs),
        idleMs: check.timeout(`${path}.timeouts.idle`, t.idle, DEFAULTS.idleTimeoutMs),
      },
      servers: [] as ServerModel[],
      health: normaliseHealth(check, `${path}.health`, o.health),
      slowStartMs: check.duration(`${path}.slow_start`, o.slow_start, DEFAULTS.slowStartMs),
      onServerDown: oneOf(o.on_server_down, ON_SERVER_DOWN, DEFAULTS.onServerDown),
      proxyProtocol: oneOf(o.proxy_protocol, PROXY_PROTOCOL_VERSIONS, DEFAULTS.proxyProtocol),
      tls: normalisePoolTls(check, `${path}.tls`, o.tls),
    };
    if (pool.tls !== null) tls.push({ path: `${path}.tls`, model: pool.tls });
    pools.push(pool);
    pool.servers.push(...normaliseServers(check, path, pool.name, o.servers));
  }
  return { pools, names: namesComplete ? names : null, tls };
}

/** A pool's `servers:`; a name (by default the address as written) may appear once. */
function normaliseServers(check: Check, poolPath: string, poolName: string, value: unknown): ServerModel[] {
  const servers: ServerModel[] = [];
  const names = new Map<string, number>();
  for (const [j, item] of (Array.isArray(value) ? value : []).entries()) {
    const path = `${poolPath}.servers[${j}]`;
    const s = asObject(item);
    if (!s) continue;
    const server = {
      name: asString(s.name) ?? asString(s.address) ?? '',
      address: UNRESOLVED,
      weight: intOr(s.weight, DEFAULTS.weight),
      backup: boolOr(s.backup, DEFAULTS.backup),
    };
    servers.push(server);
    check.address(`${path}.address`, s.address, false, (ep) => (server.address = ep));
    if (server.name === '') continue;
    const earlier = names.get(server.name);
    if (earlier === undefined) names.set(server.name, j);
    else if (s.name !== undefined) {
      check.add(`${path}.name`, `duplicate server name "${server.name}" in pool "${poolName}" (also servers[${earlier}])`);
    } else {
      check.add(
        `${path}.address`,
        `duplicate server "${server.name}" in pool "${poolName}" (also servers[${earlier}]); give each a distinct name to list an address twice`,
      );
    }
  }
  return servers;
}
