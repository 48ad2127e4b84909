/**
 * What a reload would change, compared (`l4lb check --config FILE --diff
 * ADMIN_URL`; the text is rendered by ../cli/diff-render.ts).
 *
 * {@link diffModels} compares the running model (as served by `GET /config`)
 * with a new one: listeners, pools and servers added, removed and changed,
 * field by field in the configuration's own spelling (./diff-fields.ts),
 * with what each change means at reload (a socket re-opened or kept, a
 * server replaced, settings that wait for a restart); and for each
 * source_hash pool the share of client addresses that would go to another
 * server (see ../balance/moves.ts for the sample).
 *
 * Identity: listeners, pools and servers are matched by name. Sockets and
 * servers are matched as the reload matches them, by the rules it shares
 * from here ({@link sameSocket}, {@link sameServer}), so a renamed listener
 * is reported as removed and added, and the added one as taking over the
 * removed one's socket.
 */
import {
  DEFAULT_IPV4_SAMPLES,
  DEFAULT_IPV6_SAMPLES,
  compareSourceHash,
  hashCandidates,
  sameCandidates,
  type SampleOptions,
  type SourceHashMoves,
} from '../balance/moves.js';
import { formatEndpoint } from './address.js';
import { sameAddress, sameServer, sameSocket } from './identity.js';
import {
  ADMIN_FIELDS,
  LISTENER_FIELDS,
  LISTENER_TLS_FIELDS,
  LOG_FIELDS,
  POOL_FIELDS,
  POOL_TLS_FIELDS,
  PROCESS_FIELDS,
  SERVER_FIELDS,
  compareFields,
  compareSection,
  listenerTlsSummary,
  poolTlsSummary,
  type FieldChange,
  type ListenerJson,
  type PoolJson,
  type ServerJson,
} from './diff-fields.js';
import type { Model } from './model.js';
import { modelToJson, type ModelJson } from './model-json.js';

export type { FieldChange } from './diff-fields.js';

/** One added or removed listener. */
export interface ListenerSummary {
  readonly name: string;
  readonly bind: string;
  readonly pool: string;
  /** `plain TCP`, `TLS terminate`, `TLS passthrough`. */
  readonly kind: string;
  /** What happens to its socket at reload. */
  readonly note: string;
}

/** One listener in both configurations whose settings differ. */
export interface ListenerChange {
  readonly name: string;
  readonly fields: readonly FieldChange[];
  /** The bind moves to another socket: the old one stops accepting. */
  readonly reopensSocket: boolean;
}

/** One added or removed server. */
export interface ServerSummary {
  readonly name: string;
  readonly address: string;
  readonly weight: number;
  readonly backup: boolean;
}

/** One server in both configurations whose settings differ. */
export interface ServerChange {
  readonly name: string;
  readonly fields: readonly FieldChange[];
  /** The address changed: a new server (fresh health and counters) replaces the old one, whose connections continue. */
  readonly replaced: boolean;
}

/** One added or removed pool. */
export interface PoolSummary {
  readonly name: string;
  readonly balance: string;
  readonly servers: readonly ServerSummary[];
}

/** One pool in both configurations whose settings or servers differ. */
export interface PoolChange {
  readonly name: string;
  readonly fields: readonly FieldChange[];
  readonly servers: {
    readonly added: readonly ServerSummary[];
    readonly removed: readonly ServerSummary[];
    readonly changed: readonly ServerChange[];
  };
}

/** Client affinity of one pool that is in both configurations and uses source_hash in at least one. */
export type ClientMoves =
  /** source_hash on both sides with other candidates or weights: measured. */
  | { readonly pool: string; readonly kind: 'sampled'; readonly share: number; readonly moves: SourceHashMoves }
  /** source_hash on both sides, same candidate names and weights: exactly nobody moves. */
  | { readonly pool: string; readonly kind: 'unchanged'; readonly share: 0 }
  /** The balance changes to or from source_hash: every client is remapped. */
  | { readonly pool: string; readonly kind: 'remapped'; readonly share: 1; readonly from: string; readonly to: string };

/** Everything a reload would change, ready to render. */
export interface ConfigDiff {
  /** Nothing a reload would change (list order and warnings aside). */
  readonly identical: boolean;
  readonly listeners: { readonly added: readonly ListenerSummary[]; readonly removed: readonly ListenerSummary[]; readonly changed: readonly ListenerChange[] };
  readonly pools: { readonly added: readonly PoolSummary[]; readonly removed: readonly PoolSummary[]; readonly changed: readonly PoolChange[] };
  /** Admin settings; they take effect at the next restart, not on reload. */
  readonly admin: readonly FieldChange[];
  readonly log: readonly FieldChange[];
  /** `user` and `group`; they take effect at the next restart. */
  readonly process: readonly FieldChange[];
  readonly clientMoves: readonly ClientMoves[];
  /** The sample behind `clientMoves`. */
  readonly sample: { readonly ipv4: number; readonly ipv6: number };
  /** Whether the new configuration has certificate or key files (re-read by every reload). */
  readonly certificateFiles: number;
}

function byName<T extends { readonly name: string }>(list: readonly T[]): Map<string, T> {
  return new Map(list.map((x) => [x.name, x]));
}

function listenerSummary(l: ListenerJson, note: string): ListenerSummary {
  const kind = l.tls === null || l.tls === undefined ? 'plain TCP' : `TLS ${l.tls.mode}`;
  return { name: l.name, bind: formatEndpoint(l.bind), pool: l.pool, kind, note };
}

function serverSummary(s: ServerJson): ServerSummary {
  return { name: s.name, address: formatEndpoint(s.address), weight: s.weight, backup: s.backup };
}

function poolSummary(p: PoolJson): PoolSummary {
  return { name: p.name, balance: p.balance, servers: p.servers.map(serverSummary) };
}

function diffListeners(running: readonly ListenerJson[], next: readonly ListenerJson[]): ConfigDiff['listeners'] {
  // Which running socket each new listener keeps, exactly as the reload decides it.
  const takesFrom = new Map<string, string>();
  const passesTo = new Map<string, string>();
  const claimed = new Set<ListenerJson>();
  for (const l of next) {
    const old = running.find((r) => !claimed.has(r) && sameSocket(r, l));
    if (old === undefined) continue;
    claimed.add(old);
    takesFrom.set(l.name, old.name);
    passesTo.set(old.name, l.name);
  }
  const oldByName = byName(running);
  const newByName = byName(next);
  const closes = 'stops accepting; its open connections finish';

  const added = next
    .filter((l) => !oldByName.has(l.name))
    .map((l) => {
      const from = takesFrom.get(l.name);
      return listenerSummary(l, from !== undefined ? `takes over the socket of listener ${from} (no refused connections)` : 'binds a new socket');
    });
  const removed = running
    .filter((l) => !newByName.has(l.name))
    .map((l) => {
      const to = passesTo.get(l.name);
      return listenerSummary(l, to !== undefined ? `its socket passes to listener ${to}; open connections continue` : closes);
    });
  const changed: ListenerChange[] = [];
  for (const l of next) {
    const old = oldByName.get(l.name);
    if (old === undefined) continue;
    const fields: FieldChange[] = [];
    const from = takesFrom.get(l.name);
    const reopens = from !== l.name;
    if (!sameAddress(old.bind, l.bind) || reopens) {
      let note: string;
      if (!reopens) {
        note = 'same address: the socket is kept';
      } else {
        const opens = from !== undefined ? `takes over the socket of listener ${from}` : 'binds a new socket';
        const to = passesTo.get(l.name);
        const old = to !== undefined ? `its old socket passes to listener ${to}` : `the old socket ${closes}`;
        note = `socket re-opened: ${opens}; ${old}`;
      }
      fields.push({ field: 'bind', from: formatEndpoint(old.bind), to: formatEndpoint(l.bind), note });
    }
    fields.push(...compareFields(old, l, LISTENER_FIELDS));
    fields.push(...compareSection('tls', old.tls, l.tls, listenerTlsSummary, LISTENER_TLS_FIELDS));
    if (fields.length > 0) changed.push({ name: l.name, fields, reopensSocket: reopens });
  }
  return { added, removed, changed };
}

/**
 * Items matched by name: those only in `next` (added), only in `running`
 * (removed), and what `compare` reports for each pair (changed; null when
 * nothing differs).
 */
function matchByName<T extends { readonly name: string }, S, C>(
  running: readonly T[],
  next: readonly T[],
  summary: (x: T) => S,
  compare: (before: T, after: T) => C | null,
): { added: S[]; removed: S[]; changed: C[] } {
  const oldByName = byName(running);
  const newByName = byName(next);
  const changed: C[] = [];
  for (const x of next) {
    const old = oldByName.get(x.name);
    const change = old === undefined ? null : compare(old, x);
    if (change !== null) changed.push(change);
  }
  return {
    added: next.filter((x) => !oldByName.has(x.name)).map(summary),
    removed: running.filter((x) => !newByName.has(x.name)).map(summary),
    changed,
  };
}

function diffServers(running: readonly ServerJson[], next: readonly ServerJson[]): PoolChange['servers'] {
  return matchByName(running, next, serverSummary, (old, s): ServerChange | null => {
    const fields = compareFields(old, s, SERVER_FIELDS);
    const replaced = !sameServer(old, s);
    if (replaced) {
      const i = fields.findIndex((f) => f.field === 'address');
      if (i >= 0) fields[i] = { ...fields[i]!, note: 'replaced: a new server with fresh health and counters; the old one takes no new connections, its open ones continue' };
    }
    return fields.length > 0 ? { name: s.name, fields, replaced } : null;
  });
}

function diffPools(running: readonly PoolJson[], next: readonly PoolJson[]): ConfigDiff['pools'] {
  return matchByName(running, next, poolSummary, (old, p): PoolChange | null => {
    const fields = [...compareFields(old, p, POOL_FIELDS), ...compareSection('tls', old.tls, p.tls, poolTlsSummary, POOL_TLS_FIELDS)];
    const servers = diffServers(old.servers, p.servers);
    const serversChange = servers.added.length + servers.removed.length + servers.changed.length > 0;
    return fields.length > 0 || serversChange ? { name: p.name, fields, servers } : null;
  });
}

function diffClientMoves(running: readonly PoolJson[], next: readonly PoolJson[], sample: SampleOptions): ClientMoves[] {
  const oldByName = byName(running);
  const out: (ClientMoves | { pool: string; index: number })[] = [];
  const toSample: { before: ReturnType<typeof hashCandidates>; after: ReturnType<typeof hashCandidates> }[] = [];
  for (const p of next) {
    const old = oldByName.get(p.name);
    if (old === undefined) continue;
    const was = old.balance === 'source_hash';
    const is = p.balance === 'source_hash';
    if (!was && !is) continue;
    if (was !== is) {
      out.push({ pool: p.name, kind: 'remapped', share: 1, from: old.balance, to: p.balance });
      continue;
    }
    const before = hashCandidates(old.servers);
    const after = hashCandidates(p.servers);
    if (sameCandidates(before, after)) {
      out.push({ pool: p.name, kind: 'unchanged', share: 0 });
      continue;
    }
    out.push({ pool: p.name, index: toSample.length });
    toSample.push({ before, after });
  }
  const measured = compareSourceHash(toSample, sample);
  return out.map((m) => {
    if (!('index' in m)) return m;
    const moves = measured[m.index]!;
    return { pool: m.pool, kind: 'sampled', share: moves.ipv4.moved / Math.max(1, moves.ipv4.sampled), moves };
  });
}

/**
 * Compares the running model with the next one.
 *
 * @param running the running model as `GET /config` serves it (or a Model)
 * @param next the model a reload would apply
 * @param sample sizes of the client address sample (defaults: 1,000,000 IPv4 and 100,000 IPv6)
 */
export function diffModels(running: ModelJson | Model, next: ModelJson | Model, sample: SampleOptions = {}): ConfigDiff {
  const a = modelToJson(running);
  const b = modelToJson(next);
  const listeners = diffListeners(a.listeners, b.listeners);
  const pools = diffPools(a.pools, b.pools);
  const admin = compareSection('admin', a.admin, b.admin, (x) => (x === null || x === undefined ? 'off' : formatEndpoint(x.listen)), ADMIN_FIELDS).map((f) => ({
    ...f,
    field: f.field.replace(/^admin\./, ''),
  }));
  const log = a.log === undefined ? [] : compareFields(a.log, b.log, LOG_FIELDS);
  const process = compareFields(a, b, PROCESS_FIELDS);
  const clientMoves = diffClientMoves(a.pools, b.pools, sample);
  const certificateFiles =
    b.listeners.reduce((n, l) => n + (l.tls?.certs.length ?? 0) * 2 + (l.tls?.clientCa ? 1 : 0), 0) +
    b.pools.reduce((n, p) => n + (p.tls ? [p.tls.ca, p.tls.cert, p.tls.key].filter((x) => x !== null).length : 0), 0);
  const identical =
    listeners.added.length + listeners.removed.length + listeners.changed.length === 0 &&
    pools.added.length + pools.removed.length + pools.changed.length === 0 &&
    admin.length === 0 &&
    log.length === 0 &&
    process.length === 0;
  return {
    identical,
    listeners,
    pools,
    admin,
    log,
    process,
    clientMoves,
    sample: { ipv4: sample.ipv4 ?? DEFAULT_IPV4_SAMPLES, ipv6: sample.ipv6 ?? DEFAULT_IPV6_SAMPLES },
    certificateFiles,
  };
}

export { sameServer, sameSocket } from './identity.js';
