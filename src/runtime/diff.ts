/**
 * What a reload would change: `l4lb check --config FILE --diff ADMIN_URL`.
 *
 * {@link diffModels} compares the running model (as served by `GET /config`)
 * with a new one: listeners, pools and servers added, removed and changed,
 * field by field in the configuration's own spelling, with what each change
 * means at reload (a socket re-opened or kept, a server replaced, settings
 * that wait for a restart); and for each source_hash pool the share of
 * client addresses that would go to another server (see ../balance/moves.ts
 * for the sample). {@link formatDiff} renders it for people.
 *
 * Identity: listeners, pools and servers are matched by name. Sockets are
 * matched as the reload matches them (same bound address; port 0 only for
 * the same listener), so a renamed listener is reported as removed and
 * added, and the added one as taking over the removed one's socket.
 */
import type { ListenerModel, Model, PoolModel, ServerModel } from '../config/model.js';
import { bytesFromJson, isRedacted, modelToJson, type BytesJson, type Jsonified, type ModelJson } from '../config/model-json.js';
import { formatTable } from '../admin/client.js';
import {
  DEFAULT_IPV4_SAMPLES,
  DEFAULT_IPV6_SAMPLES,
  compareSourceHash,
  hashCandidates,
  sameCandidates,
  type SampleOptions,
  type SourceHashMoves,
} from '../balance/moves.js';

type ListenerJson = Jsonified<ListenerModel>;
type PoolJson = Jsonified<PoolModel>;
type ServerJson = Jsonified<ServerModel>;
type EndpointJson = ListenerJson['bind'];

/** One setting that differs. Values are rendered as the configuration would spell them. */
export interface FieldChange {
  /** The configuration key, e.g. `bind`, `timeouts.idle`, `health.send`, `tls.certs`. */
  readonly field: string;
  readonly from: string;
  readonly to: string;
  /** What the change does at reload, when that is not obvious. */
  readonly note?: string;
}

export interface ListenerSummary {
  readonly name: string;
  readonly bind: string;
  readonly pool: string;
  /** `plain TCP`, `TLS terminate`, `TLS passthrough`. */
  readonly kind: string;
  /** What happens to its socket at reload. */
  readonly note: string;
}

export interface ListenerChange {
  readonly name: string;
  readonly fields: readonly FieldChange[];
  /** The bind moves to another socket: the old one stops accepting. */
  readonly reopensSocket: boolean;
}

export interface ServerSummary {
  readonly name: string;
  readonly address: string;
  readonly weight: number;
  readonly backup: boolean;
}

export interface ServerChange {
  readonly name: string;
  readonly fields: readonly FieldChange[];
  /** The address changed: a new server (fresh health and counters) replaces the old one, whose connections continue. */
  readonly replaced: boolean;
}

export interface PoolSummary {
  readonly name: string;
  readonly balance: string;
  readonly servers: readonly ServerSummary[];
}

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

export const ADMIN_RESTART_NOTE = 'takes effect at the next restart, not on reload';
export const PROCESS_RESTART_NOTE = 'takes effect at the next restart, not on reload';

// ---------------------------------------------------------------------------
// Rendering values

/** `3600000` → `1h`, `1500` → `1500ms`: the largest unit that is exact. */
export function formatDuration(ms: number | undefined): string {
  if (typeof ms !== 'number') return '?';
  if (ms === 0) return '0';
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1_000]] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** An address as written, with what it resolved to when that is a different spelling. */
export function formatEndpoint(ep: EndpointJson | undefined): string {
  if (ep === undefined || ep === null) return '?';
  // `systemd:NAME`: a socket passed by systemd, nothing resolved.
  if (ep.host === '') return ep.text;
  const written = ep.text.startsWith('[') ? ep.text.slice(1, ep.text.lastIndexOf(']')) : ep.text.slice(0, ep.text.lastIndexOf(':'));
  return written === ep.host ? ep.text : `${ep.text} (${ep.host.includes(':') ? `[${ep.host}]` : ep.host}:${ep.port})`;
}

/**
 * Probe bytes as the configuration spells them: a quoted string when printable, else `hex:…`;
 * redacted bytes (see config/model-json.ts) by the start of their MAC, which tells values apart
 * without saying anything about them.
 */
export function formatBytes(value: BytesJson | Buffer | null | undefined): string {
  if (isRedacted(value)) return `<redacted ${value.mac.slice(0, 8)}>`;
  const buf = bytesFromJson(value);
  if (buf === null) return 'none';
  const text = buf.toString('utf8');
  const printable = Buffer.from(text, 'utf8').equals(buf) && !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text);
  return printable ? JSON.stringify(text) : `hex:${buf.toString('hex')}`;
}

function formatList(list: readonly string[] | undefined): string {
  if (list === undefined) return '?';
  return list.length === 0 ? 'none' : `[${list.join(', ')}]`;
}

function formatCount(n: number | undefined, zero = 'unlimited'): string {
  if (typeof n !== 'number') return '?';
  return n === 0 ? zero : String(n);
}

function formatValue(v: unknown): string {
  if (v === undefined) return '?';
  if (v === null) return 'none';
  return String(v);
}

/** `1234567` → `1,234,567`, the same in every locale. */
export function formatInt(n: number): string {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** A share as a percentage: `10.02%`, `0%` only when exactly nothing, `<0.01%` for a sliver. */
export function formatShare(share: number): string {
  if (share === 0) return '0%';
  if (share < 0.00005) return '<0.01%';
  return `${(share * 100).toFixed(2)}%`;
}

// ---------------------------------------------------------------------------
// Comparing

interface Field<T> {
  readonly key: string;
  readonly get: (x: T) => unknown;
  readonly show?: (v: never) => string;
  /** Order does not matter (CIDR lists). */
  readonly set?: boolean;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function sortedList(v: unknown): unknown {
  return Array.isArray(v) ? [...(v as string[])].sort() : v;
}

function compareFields<T>(a: T, b: T, fields: readonly Field<T>[], prefix = ''): FieldChange[] {
  const out: FieldChange[] = [];
  for (const f of fields) {
    let va = f.get(a);
    let vb = f.get(b);
    if (f.set === true) {
      va = sortedList(va);
      vb = sortedList(vb);
    }
    if (same(va, vb)) continue;
    const show = (f.show ?? formatValue) as (v: unknown) => string;
    const change: { field: string; from: string; to: string; note?: string } = { field: prefix + f.key, from: show(va), to: show(vb) };
    if (f.set === true && Array.isArray(va) && Array.isArray(vb) && va.length > 0 && vb.length > 0) {
      const gone = (va as string[]).filter((x) => !(vb as string[]).includes(x));
      const fresh = (vb as string[]).filter((x) => !(va as string[]).includes(x));
      change.note = [...fresh.map((x) => `+${x}`), ...gone.map((x) => `-${x}`)].join(' ');
    }
    out.push(change);
  }
  return out;
}

/** A nullable section (`tls`): one change when it appears or goes, else its fields. */
function compareSection<S>(key: string, a: S | null | undefined, b: S | null | undefined, summary: (s: S | null | undefined) => string, fields: readonly Field<S>[]): FieldChange[] {
  if ((a === null || a === undefined) && (b === null || b === undefined)) return [];
  if (a === null || a === undefined || b === null || b === undefined) return [{ field: key, from: summary(a), to: summary(b) }];
  return compareFields(a, b, fields, `${key}.`);
}

const LISTENER_TLS_FIELDS: readonly Field<NonNullable<ListenerJson['tls']>>[] = [
  { key: 'mode', get: (t) => t.mode },
  {
    key: 'certs',
    get: (t) => t.certs,
    show: (c: readonly { cert: string; key: string }[] | undefined) => (c === undefined ? '?' : formatList(c.map((x) => `${x.cert} + ${x.key}`))),
  },
  { key: 'min_version', get: (t) => t.minVersion },
  { key: 'ciphers', get: (t) => t.ciphers },
  { key: 'alpn', get: (t) => t.alpn, show: formatList },
  { key: 'client_ca', get: (t) => t.clientCa },
  { key: 'strict_sni', get: (t) => t.strictSni },
  { key: 'session_tickets', get: (t) => t.sessionTickets },
];

function listenerTlsSummary(t: ListenerJson['tls'] | undefined): string {
  if (t === undefined) return '?';
  if (t === null) return 'off (plain TCP)';
  return t.mode === 'passthrough' ? 'passthrough' : `terminate (${t.certs.length} certificate${t.certs.length === 1 ? '' : 's'})`;
}

const LISTENER_FIELDS: readonly Field<ListenerJson>[] = [
  { key: 'pool', get: (l) => l.pool },
  { key: 'timeouts.idle', get: (l) => l.timeouts?.idleMs, show: formatDuration },
  { key: 'timeouts.handshake', get: (l) => l.timeouts?.handshakeMs, show: formatDuration },
  { key: 'accept_proxy', get: (l) => l.acceptProxy },
  { key: 'trusted_proxies', get: (l) => l.trustedProxies, show: formatList, set: true },
  { key: 'allow', get: (l) => l.allow, show: formatList, set: true },
  { key: 'deny', get: (l) => l.deny, show: formatList, set: true },
  { key: 'max_connections', get: (l) => l.maxConnections, show: (n: number | undefined) => formatCount(n) },
  { key: 'per_source.max_connections', get: (l) => l.perSource?.maxConnections, show: (n: number | undefined) => formatCount(n) },
  { key: 'per_source.connect_rate', get: (l) => l.perSource?.connectRate, show: (n: number | undefined) => formatCount(n) },
  { key: 'per_source.ipv6_prefix', get: (l) => l.perSource?.ipv6Prefix },
  { key: 'routes', get: (l) => l.routes, show: (r: ListenerJson['routes'] | undefined) => (r === undefined ? '?' : formatList(r.map((x) => `${x.sni}: ${x.pool}`))) },
];

const POOL_TLS_FIELDS: readonly Field<NonNullable<PoolJson['tls']>>[] = [
  { key: 'servername', get: (t) => t.servername },
  { key: 'ca', get: (t) => t.ca },
  { key: 'verify', get: (t) => t.verify },
  { key: 'cert', get: (t) => t.cert },
  { key: 'key', get: (t) => t.key },
];

function poolTlsSummary(t: PoolJson['tls'] | undefined): string {
  if (t === undefined) return '?';
  if (t === null) return 'off';
  return `on${t.servername !== null ? ` (servername ${t.servername})` : ''}`;
}

const POOL_FIELDS: readonly Field<PoolJson>[] = [
  { key: 'balance', get: (p) => p.balance },
  { key: 'retries', get: (p) => p.retries },
  { key: 'timeouts.connect', get: (p) => p.timeouts?.connectMs, show: formatDuration },
  { key: 'timeouts.idle', get: (p) => p.timeouts?.idleMs, show: formatDuration },
  { key: 'slow_start', get: (p) => p.slowStartMs, show: (ms: number | undefined) => (ms === 0 ? 'off' : formatDuration(ms)) },
  { key: 'on_server_down', get: (p) => p.onServerDown },
  { key: 'proxy_protocol', get: (p) => p.proxyProtocol },
  { key: 'health.interval', get: (p) => p.health?.intervalMs, show: formatDuration },
  { key: 'health.timeout', get: (p) => p.health?.timeoutMs, show: formatDuration },
  { key: 'health.rise', get: (p) => p.health?.rise },
  { key: 'health.fall', get: (p) => p.health?.fall },
  { key: 'health.send', get: (p) => p.health?.send, show: formatBytes },
  { key: 'health.expect', get: (p) => p.health?.expect, show: formatBytes },
];

const SERVER_FIELDS: readonly Field<ServerJson>[] = [
  { key: 'address', get: (s) => s.address, show: formatEndpoint },
  { key: 'weight', get: (s) => s.weight },
  { key: 'backup', get: (s) => s.backup },
];

const LOG_FIELDS: readonly Field<ModelJson['log']>[] = [
  { key: 'level', get: (l) => l.level },
  { key: 'access', get: (l) => l.access },
];

const PROCESS_FIELDS: readonly Field<ModelJson>[] = [
  { key: 'user', get: (m) => m.user },
  { key: 'group', get: (m) => m.group },
];

const ADMIN_FIELDS: readonly Field<NonNullable<ModelJson['admin']>>[] = [
  { key: 'listen', get: (a) => a.listen, show: formatEndpoint },
  { key: 'token_file', get: (a) => a.tokenFile },
];

/** The reload's rule: the same bound address is the same socket; port 0 only within one listener. */
export function sameSocket(
  a: { name: string; bind: EndpointJson; systemdSocket?: string | null },
  b: { name: string; bind: EndpointJson; systemdSocket?: string | null },
): boolean {
  const sa = a.systemdSocket ?? null;
  const sb = b.systemdSocket ?? null;
  if (sa !== null || sb !== null) return sa === sb;
  if (a.bind.host !== b.bind.host || a.bind.port !== b.bind.port) return false;
  return a.bind.port !== 0 || a.name === b.name;
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

function sameAddress(a: EndpointJson, b: EndpointJson): boolean {
  return a.text === b.text && a.host === b.host && a.port === b.port;
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

function diffServers(running: readonly ServerJson[], next: readonly ServerJson[]): PoolChange['servers'] {
  const oldByName = byName(running);
  const newByName = byName(next);
  const changed: ServerChange[] = [];
  for (const s of next) {
    const old = oldByName.get(s.name);
    if (old === undefined) continue;
    const fields = compareFields(old, s, SERVER_FIELDS);
    const replaced = !sameAddress(old.address, s.address);
    if (replaced) {
      const i = fields.findIndex((f) => f.field === 'address');
      if (i >= 0) fields[i] = { ...fields[i]!, note: 'replaced: a new server with fresh health and counters; the old one takes no new connections, its open ones continue' };
    }
    if (fields.length > 0) changed.push({ name: s.name, fields, replaced });
  }
  return {
    added: next.filter((s) => !oldByName.has(s.name)).map(serverSummary),
    removed: running.filter((s) => !newByName.has(s.name)).map(serverSummary),
    changed,
  };
}

function diffPools(running: readonly PoolJson[], next: readonly PoolJson[]): ConfigDiff['pools'] {
  const oldByName = byName(running);
  const newByName = byName(next);
  const changed: PoolChange[] = [];
  for (const p of next) {
    const old = oldByName.get(p.name);
    if (old === undefined) continue;
    const fields = [...compareFields(old, p, POOL_FIELDS), ...compareSection('tls', old.tls, p.tls, poolTlsSummary, POOL_TLS_FIELDS)];
    const servers = diffServers(old.servers, p.servers);
    if (fields.length > 0 || servers.added.length > 0 || servers.removed.length > 0 || servers.changed.length > 0) {
      changed.push({ name: p.name, fields, servers });
    }
  }
  return {
    added: next.filter((p) => !oldByName.has(p.name)).map(poolSummary),
    removed: running.filter((p) => !newByName.has(p.name)).map(poolSummary),
    changed,
  };
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

// ---------------------------------------------------------------------------
// Text

/** Largest flows shown per pool; the rest are summed up. */
const MAX_FLOWS = 8;

function tally(parts: Record<string, number>): string {
  return Object.entries(parts)
    .filter(([, n]) => n > 0)
    .map(([what, n]) => `${n} ${what}`)
    .join(', ');
}

/** `field  from → to  (note)` lines, field names aligned. */
function fieldLines(fields: readonly FieldChange[], indent: string): string[] {
  const width = Math.max(...fields.map((f) => f.field.length));
  return fields.map((f) => `${indent}${f.field.padEnd(width)}  ${f.from} → ${f.to}${f.note ? `  (${f.note})` : ''}`);
}

/** `+ name  rest` lines, names aligned. */
function itemLines(items: readonly { mark: string; name: string; rest: string }[], indent: string): string[] {
  const width = Math.max(...items.map((i) => i.name.length));
  return items.map((i) => `${indent}${i.mark} ${i.name.padEnd(width)}  ${i.rest}`.trimEnd());
}

function serverText(s: ServerSummary): string {
  return `${s.address}  weight ${s.weight}${s.backup ? ', backup' : ''}`;
}

function clientMovesLines(m: ClientMoves): string[] {
  if (m.kind === 'remapped') {
    const why =
      m.to === 'source_hash'
        ? `balance ${m.from} → source_hash: every client is mapped to a server by hash from now on; there was no affinity before`
        : `balance source_hash → ${m.to}: client affinity ends; clients are spread by ${m.to} from now on`;
    return [`  pool ${m.pool}: all clients remapped (100%)`, `    ${why}`];
  }
  if (m.kind === 'unchanged') return [`  pool ${m.pool}: no client moves (0%): same servers with the same weights`];
  const { ipv4, ipv6, expected, servers, flows } = m.moves;
  const lines = [
    `  pool ${m.pool}: ${formatShare(m.share)} of client addresses move to another server`,
    `    IPv4: ${formatInt(ipv4.moved)} of ${formatInt(ipv4.sampled)} sampled addresses (${formatShare(ipv4.moved / Math.max(1, ipv4.sampled))})`,
    `    IPv6: ${formatInt(ipv6.moved)} of ${formatInt(ipv6.sampled)} sampled addresses (${formatShare(ipv6.moved / Math.max(1, ipv6.sampled))})`,
    `    ideal hash with these weights: ${formatShare(expected)}`,
  ];
  const signed = (sign: string, share: number): string => (share === 0 ? '0%' : `${sign}${formatShare(share)}`);
  lines.push(
    formatTable(
      ['SERVER', 'BEFORE', 'AFTER', 'GAINS', 'LOSES'],
      servers.map((s) => [s.name, formatShare(s.before), formatShare(s.after), signed('+', s.gained), signed('-', s.lost)]),
      new Set([1, 2, 3, 4]),
      '    ',
    ),
  );
  if (flows.length > 0) {
    const shown = flows.slice(0, MAX_FLOWS).map((f) => `${f.from} → ${f.to} ${formatShare(f.share)}`);
    const rest = flows.slice(MAX_FLOWS).reduce((n, f) => n + f.share, 0);
    lines.push(`    flows: ${shown.join(', ')}${flows.length > MAX_FLOWS ? `, and ${flows.length - MAX_FLOWS} smaller (${formatShare(rest)})` : ''}`);
  }
  return lines;
}

/**
 * The diff as text for people: sections with aligned columns, `no changes`
 * when a reload would change nothing.
 */
export function formatDiff(diff: ConfigDiff): string {
  const out: string[] = [];
  const certNote =
    diff.certificateFiles > 0
      ? `A reload re-reads the ${diff.certificateFiles} certificate, key and CA file${diff.certificateFiles === 1 ? '' : 's'} even when their paths are unchanged.`
      : null;
  if (diff.identical) {
    out.push('no changes');
    if (certNote !== null) out.push(certNote);
    return `${out.join('\n')}\n`;
  }
  const { listeners, pools } = diff;
  const section = (title: string, lines: string[]): void => {
    if (out.length > 0) out.push('');
    out.push(title, ...lines);
  };

  if (listeners.added.length + listeners.removed.length + listeners.changed.length > 0) {
    const lines = itemLines(
      [
        ...listeners.added.map((l) => ({ mark: '+', name: l.name, rest: `${l.bind} → pool ${l.pool}, ${l.kind}; ${l.note}` })),
        ...listeners.removed.map((l) => ({ mark: '-', name: l.name, rest: `${l.bind} → pool ${l.pool}, ${l.kind}; ${l.note}` })),
        ...listeners.changed.map((l) => ({ mark: '~', name: l.name, rest: '' })),
      ],
      '  ',
    );
    // Changed listeners get their fields right under their own line.
    const changedStart = listeners.added.length + listeners.removed.length;
    const body: string[] = lines.slice(0, changedStart);
    listeners.changed.forEach((l, i) => body.push(lines[changedStart + i]!, ...fieldLines(l.fields, '      ')));
    section(`Listeners: ${tally({ added: listeners.added.length, removed: listeners.removed.length, changed: listeners.changed.length })}`, body);
  }

  if (pools.added.length + pools.removed.length + pools.changed.length > 0) {
    const body: string[] = itemLines(
      [
        ...pools.added.map((p) => ({ mark: '+', name: p.name, rest: `${p.balance}, ${p.servers.length} server${p.servers.length === 1 ? '' : 's'}` })),
        ...pools.removed.map((p) => ({
          mark: '-',
          name: p.name,
          rest: `${p.balance}, ${p.servers.length} server${p.servers.length === 1 ? '' : 's'}; takes no new connections, open ones continue`,
        })),
      ],
      '  ',
    );
    for (const p of pools.changed) {
      body.push(`  ~ ${p.name}`);
      if (p.fields.length > 0) body.push(...fieldLines(p.fields, '      '));
      const s = p.servers;
      const items = [
        ...s.added.map((x) => ({ mark: '+', name: x.name, rest: serverText(x) })),
        ...s.removed.map((x) => ({ mark: '-', name: x.name, rest: `${serverText(x)}; takes no new connections, open ones continue` })),
        ...s.changed.map((x) => ({ mark: '~', name: x.name, rest: '' })),
      ];
      if (items.length === 0) continue;
      body.push(`      servers: ${tally({ added: s.added.length, removed: s.removed.length, changed: s.changed.length })}`);
      const lines = itemLines(items, '        ');
      const changedStart = s.added.length + s.removed.length;
      body.push(...lines.slice(0, changedStart));
      s.changed.forEach((x, i) => body.push(lines[changedStart + i]!, ...fieldLines(x.fields, '            ')));
    }
    section(`Pools: ${tally({ added: pools.added.length, removed: pools.removed.length, changed: pools.changed.length })}`, body);
  }

  if (diff.clientMoves.length > 0) {
    const body = diff.clientMoves.flatMap(clientMovesLines);
    if (diff.clientMoves.some((m) => m.kind === 'sampled')) {
      body.push(
        `  Sample: ${formatInt(diff.sample.ipv4)} IPv4 addresses spread evenly over 0.0.0.0/0 (the headline figure) and ${formatInt(diff.sample.ipv6)}`,
        `  fixed-seed IPv6 addresses in 2000::/3; servers and flows are from the IPv4 sample.`,
      );
    }
    body.push(
      '  Assumed: every server up and ready, primaries only (backups only in a pool without primaries), configured weights.',
      '  Open connections stay where they are; this is where each client\'s new connections go after the reload.',
    );
    section('Client moves (source_hash)', body);
  }

  if (diff.admin.length > 0) section(`Admin (${ADMIN_RESTART_NOTE})`, fieldLines(diff.admin, '  '));
  if (diff.log.length > 0) section('Log', fieldLines(diff.log, '  '));
  if (diff.process.length > 0) section(`Process (${PROCESS_RESTART_NOTE})`, fieldLines(diff.process, '  '));

  const notes = ['Changed settings apply to new connections; open connections keep those they started with.'];
  if (certNote !== null) notes.push(certNote);
  section('Notes', notes.map((n) => `  ${n}`));
  return `${out.join('\n')}\n`;
}
