/**
 * `pools[]`: groups of servers, their balancing, timeouts and servers.
 *
 * A server's host name is resolved here, through `dns` (src/dns/), and
 * stands for one server per address (src/dns/servers.ts). A name that does
 * not resolve is a warning, not a problem: its server starts unresolved
 * and the running l4lb asks again every `dns.interval`.
 */
import { isIP } from 'node:net';
import { DEFAULTS } from '../../defaults.js';
import type { DnsResolver } from '../../dns/resolver.js';
import { serversOf } from '../../dns/servers.js';
import { describe } from '../../errors.js';
import { parseAddress } from '../address.js';
import { BALANCES, LEAST_TIME_MEASURES, ON_SERVER_DOWN, PROXY_PROTOCOL_VERSIONS } from '../enums.js';
import type { HostnameServerModel, PoolModel, PoolTlsModel, ServerModel, StickModel } from '../model.js';
import { MAX_STICK_SIZE } from '../../balance/stick-table.js';
import { duration, durationNode, flag, integer, kind, name, object, oneWordOf } from '../schema-nodes.js';
import { asObject, asString, boolOr, intOr, oneOf, type Check, type TlsDraft } from './context.js';
import { healthSchema, normaliseHealth } from './health.js';
import { normalisePoolTls, poolTlsSchema } from './pool-tls.js';

const serverSchema = object(
  'A backend server.',
  {
    name: name('Unique within the pool; used in logs, metrics and the admin API. Default: the address as written.'),
    address: kind('address', {
      description:
        'Where to connect: "host:port" or "[IPv6]:port". A host name is resolved at load and again every dns.interval; ' +
        'several addresses make one server per address, named NAME/ADDRESS.',
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
        `round_robin (in turn, by weight), random_two (the less loaded of two random servers), ` +
        `least_time (lowest (active + 1) × average response time ÷ weight). Default: ${DEFAULTS.balance}.`,
      BALANCES,
      DEFAULTS.balance,
    ),
    least_time: object('What least_time averages per server (shown in /status and metrics for every pool).', {
      measure: oneWordOf(
        'connect (TCP connect, and the TLS handshake when the pool has tls) or first_byte (from connect to the server\'s first byte: ' +
          `a greeting, or the reply to the client's first bytes). Default: ${DEFAULTS.leastTimeMeasure}.`,
        LEAST_TIME_MEASURES,
        DEFAULTS.leastTimeMeasure,
      ),
    }),
    stick: object(
      'Stick table (HAProxy "stick on src"): a client address keeps the server it was first balanced to while it has open ' +
        'connections and for expire after its last one closes, whatever servers are added, re-weighted or removed; only its server ' +
        'going down or being removed moves it. Shared by all workers. Absent: off.',
      {
        expire: duration('How long a client keeps its server after its last connection closes.', DEFAULTS.stickExpireMs),
        size: integer(
          `Most clients remembered (about 70 bytes each); when full, idle ones are forgotten oldest first. Default: ${DEFAULTS.stickSize}.`,
          1,
          MAX_STICK_SIZE,
          DEFAULTS.stickSize,
        ),
      },
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
  /** Once every lookup has settled: fills in each pool's servers, host names expanded to their addresses. */
  settle(): void;
}

/** How server host names are resolved while a configuration loads; null resolver: not at all (`l4lb check --no-resolve`). */
export interface PoolDns {
  readonly resolver: DnsResolver | null;
}

/** A configured server: an IP address, or a host name with the addresses it resolved to. */
type Configured = { server: ServerModel } | { hostname: Omit<HostnameServerModel, 'at'> & { addresses: string[] } };

/** Reads `pools:` with its defaults; names must be unique, and servers' names within a pool. */
export function normalisePools(check: Check, value: unknown, dns: PoolDns = { resolver: null }): Pools {
  const pools: PoolModel[] = [];
  const configured: Configured[][] = [];
  const lookups = new Map<string, ReturnType<DnsResolver['resolve']>>();
  const lookup = (host: string): ReturnType<DnsResolver['resolve']> | null => {
    if (dns.resolver === null) return null;
    let pending = lookups.get(host);
    if (pending === undefined) lookups.set(host, (pending = dns.resolver.resolve(host)));
    return pending;
  };
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
      leastTime: { measure: oneOf(asObject(o.least_time)?.measure, LEAST_TIME_MEASURES, DEFAULTS.leastTimeMeasure) },
      stick: normaliseStick(check, `${path}.stick`, o.stick),
    };
    if (pool.tls !== null) tls.push({ path: `${path}.tls`, model: pool.tls });
    pools.push(pool);
    configured.push(normaliseServers(check, path, pool.name, o.servers, lookup));
  }
  const settle = (): void => {
    for (const [i, pool] of pools.entries()) {
      const hostnames: HostnameServerModel[] = [];
      const servers = pool.servers as ServerModel[];
      for (const c of configured[i] ?? []) {
        if ('server' in c) servers.push(c.server);
        else {
          const addresses = [...new Set(c.hostname.addresses)].sort();
          hostnames.push({ ...c.hostname, addresses, at: servers.length });
          servers.push(...serversOf(c.hostname, addresses));
        }
      }
      if (hostnames.length > 0) (pool as { hostnames?: HostnameServerModel[] }).hostnames = hostnames;
    }
  };
  return { pools, names: namesComplete ? names : null, tls, settle };
}

/** `stick`: absent is off; `{}` takes the defaults. */
function normaliseStick(check: Check, path: string, value: unknown): StickModel | null {
  const o = asObject(value);
  if (o === undefined) return null;
  return { expireMs: check.timeout(`${path}.expire`, o.expire, DEFAULTS.stickExpireMs), size: intOr(o.size, DEFAULTS.stickSize) };
}

/** A pool's `servers:`; a name (by default the address as written) may appear once. */
function normaliseServers(
  check: Check,
  poolPath: string,
  poolName: string,
  value: unknown,
  lookup: (host: string) => ReturnType<DnsResolver['resolve']> | null,
): Configured[] {
  const servers: Configured[] = [];
  const names = new Map<string, number>();
  for (const [j, item] of (Array.isArray(value) ? value : []).entries()) {
    const path = `${poolPath}.servers[${j}]`;
    const s = asObject(item);
    if (!s) continue;
    const server = {
      name: asString(s.name) ?? asString(s.address) ?? '',
      weight: intOr(s.weight, DEFAULTS.weight),
      backup: boolOr(s.backup, DEFAULTS.backup),
    };
    const parsed = s.address === undefined ? null : parseAddress(s.address);
    if (typeof parsed === 'string') check.add(`${path}.address`, parsed);
    else if (parsed !== null && isIP(parsed.host) !== 0) {
      servers.push({ server: { ...server, address: Object.freeze({ host: parsed.host, port: parsed.port, text: parsed.text }) } });
    } else if (parsed !== null) {
      const hostname = { ...server, text: parsed.text, host: parsed.host, port: parsed.port, addresses: [] as string[] };
      servers.push({ hostname });
      const pending = lookup(parsed.host);
      if (pending !== null) {
        check.wait(
          pending.then(
            (answer) => void hostname.addresses.push(...answer.addresses),
            (err: unknown) =>
              void check.warnings.push(
                `${path}.address: ${err instanceof Error ? err.message : describe(err)}: server "${server.name}" of pool "${poolName}" starts unresolved (down) and is asked again every dns.interval`,
              ),
          ),
        );
      }
    }
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
