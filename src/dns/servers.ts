/**
 * What a server whose address is a host name stands for: one server named
 * as configured for one address; for several, one per address named
 * `NAME/ADDRESS` (`replicas/10.0.0.7:5432`), each with the configured
 * weight and role. None while the name is unresolved.
 */
import { formatEndpoint } from '../config/address.js';
import type { HostnameServerModel, Model, PoolModel, ServerModel } from '../config/model.js';

/** The servers `h` stands for when its name resolves to `addresses` (sorted). */
export function serversOf(h: Omit<HostnameServerModel, 'addresses' | 'at'>, addresses: readonly string[]): ServerModel[] {
  return addresses.map((ip) =>
    Object.freeze({
      name: addresses.length === 1 ? h.name : `${h.name}/${formatEndpoint({ host: ip, port: h.port })}`,
      address: Object.freeze({ host: ip, port: h.port, text: h.text }),
      weight: h.weight,
      backup: h.backup,
    }),
  );
}

/**
 * `model` with the server `server` of pool `pool` (a host name) standing for
 * `addresses` now: its servers replaced, every other server the same object
 * (so a reload keeps them as they are). Null when there is no such server.
 */
export function withAddresses(model: Model, pool: string, server: string, addresses: readonly string[]): Model | null {
  const p = model.pools.find((x) => x.name === pool);
  const hostnames = p?.hostnames ?? [];
  if (p === undefined || !hostnames.some((h) => h.name === server)) return null;
  const servers: ServerModel[] = [];
  const next: HostnameServerModel[] = [];
  let cursor = 0;
  for (const h of hostnames) {
    servers.push(...p.servers.slice(cursor, h.at));
    const mine = h.name === server;
    const at = servers.length;
    servers.push(...(mine ? serversOf(h, addresses) : p.servers.slice(h.at, h.at + h.addresses.length)));
    next.push(Object.freeze({ ...h, at, addresses: mine ? Object.freeze([...addresses]) : h.addresses }));
    cursor = h.at + h.addresses.length;
  }
  servers.push(...p.servers.slice(cursor));
  const pools = model.pools.map((x): PoolModel => (x === p ? Object.freeze({ ...p, servers: Object.freeze(servers), hostnames: Object.freeze(next) }) : x));
  return Object.freeze({ ...model, pools: Object.freeze(pools) });
}

/** Every configured host-name server of `model`, with its pool. */
export function hostnameServers(model: Model): Array<{ pool: string; server: HostnameServerModel }> {
  return model.pools.flatMap((p) => (p.hostnames ?? []).map((server) => ({ pool: p.name, server })));
}
