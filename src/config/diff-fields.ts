/**
 * The settings the reload preview compares, each under its configuration
 * key and spelled as the configuration would write it (`timeouts.idle: 1h`,
 * `health.send: "PING\r\n"`), and the comparison of two sections field by
 * field. Values come from models in their JSON form (`GET /config`), which
 * an older instance may serve with fields missing: those read as `?`.
 */
import { formatEndpoint } from './address.js';
import { formatDuration } from './duration.js';
import type { ListenerModel, PoolModel, ServerModel } from './model.js';
import { bytesFromJson, isRedacted, type BytesJson, type Jsonified, type ModelJson } from './model-json.js';

/** A listener as `GET /config` serves it. */
export type ListenerJson = Jsonified<ListenerModel>;
/** A pool as `GET /config` serves it. */
export type PoolJson = Jsonified<PoolModel>;
/** A server as `GET /config` serves it. */
export type ServerJson = Jsonified<ServerModel>;

/** One setting that differs. Values are rendered as the configuration would spell them. */
export interface FieldChange {
  /** The configuration key, e.g. `bind`, `timeouts.idle`, `health.send`, `tls.certs`. */
  readonly field: string;
  readonly from: string;
  readonly to: string;
  /** What the change does at reload, when that is not obvious. */
  readonly note?: string;
}

// ---------------------------------------------------------------------------
// Spelling values

/** `show` for a value that may be missing: `?` then. */
function known<T>(show: (v: T) => string): (v: T | undefined) => string {
  return (v) => (v === undefined ? '?' : show(v));
}

const duration = known(formatDuration);

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

/** `[a, b]`, or `none` for an empty list. */
const formatList = known((list: readonly string[]) => (list.length === 0 ? 'none' : `[${list.join(', ')}]`));

/**
 * One route as `MATCH: pool`; a source names its entries and how many networks
 * they hold, so an edited `@FILE` shows as a change.
 */
function routeText(r: ListenerJson['routes'][number]): string {
  const parts: string[] = [];
  if (r.sni !== undefined) parts.push(r.sni);
  if (r.source !== undefined) parts.push(`source ${r.source.join(' ')} (${r.sourceCidrs?.length ?? 0} networks)`);
  return `${parts.join(' and ')}: ${r.pool}`;
}

/** A limit where 0 means unlimited. */
const formatLimit = known((n: number) => (n === 0 ? 'unlimited' : String(n)));

function formatValue(v: unknown): string {
  if (v === undefined) return '?';
  if (v === null) return 'none';
  return String(v);
}

// ---------------------------------------------------------------------------
// Comparing

/** One compared setting of a section of type `T`. */
export interface Field<T> {
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

/** The fields of `a` and `b` that differ, keys prefixed with `prefix`. */
export function compareFields<T>(a: T, b: T, fields: readonly Field<T>[], prefix = ''): FieldChange[] {
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
export function compareSection<S>(
  key: string,
  a: S | null | undefined,
  b: S | null | undefined,
  summary: (s: S | null | undefined) => string,
  fields: readonly Field<S>[],
): FieldChange[] {
  if ((a === null || a === undefined) && (b === null || b === undefined)) return [];
  if (a === null || a === undefined || b === null || b === undefined) return [{ field: key, from: summary(a), to: summary(b) }];
  return compareFields(a, b, fields, `${key}.`);
}

// ---------------------------------------------------------------------------
// The fields of each section

/** `listeners[].tls`. */
export const LISTENER_TLS_FIELDS: readonly Field<NonNullable<ListenerJson['tls']>>[] = [
  { key: 'mode', get: (t) => t.mode },
  {
    key: 'certs',
    get: (t) => t.certs,
    show: known((c: readonly { cert: string; key: string }[]) => formatList(c.map((x) => `${x.cert} + ${x.key}`))),
  },
  { key: 'min_version', get: (t) => t.minVersion },
  { key: 'ciphers', get: (t) => t.ciphers },
  { key: 'alpn', get: (t) => t.alpn, show: formatList },
  { key: 'client_ca', get: (t) => t.clientCa },
  { key: 'strict_sni', get: (t) => t.strictSni },
  { key: 'session_tickets', get: (t) => t.sessionTickets },
];

/** A listener's TLS in a word, for when it appears or goes. */
export function listenerTlsSummary(t: ListenerJson['tls'] | undefined): string {
  if (t === undefined) return '?';
  if (t === null) return 'off (plain TCP)';
  return t.mode === 'passthrough' ? 'passthrough' : `terminate (${t.certs.length} certificate${t.certs.length === 1 ? '' : 's'})`;
}

/** `listeners[]` (bind and tls are compared on their own). */
export const LISTENER_FIELDS: readonly Field<ListenerJson>[] = [
  { key: 'pool', get: (l) => l.pool },
  { key: 'protocol', get: (l) => l.protocol },
  { key: 'timeouts.idle', get: (l) => l.timeouts?.idleMs, show: duration },
  { key: 'timeouts.handshake', get: (l) => l.timeouts?.handshakeMs, show: duration },
  { key: 'accept_proxy', get: (l) => l.acceptProxy },
  { key: 'trusted_proxies', get: (l) => l.trustedProxies, show: formatList, set: true },
  { key: 'allow', get: (l) => l.allow, show: formatList, set: true },
  { key: 'deny', get: (l) => l.deny, show: formatList, set: true },
  { key: 'max_connections', get: (l) => l.maxConnections, show: formatLimit },
  { key: 'per_source.max_connections', get: (l) => l.perSource?.maxConnections, show: formatLimit },
  { key: 'per_source.connect_rate', get: (l) => l.perSource?.connectRate, show: formatLimit },
  { key: 'per_source.ipv6_prefix', get: (l) => l.perSource?.ipv6Prefix },
  { key: 'routes', get: (l) => l.routes, show: known((r: ListenerJson['routes']) => formatList(r.map(routeText))) },
];

/** `pools[].tls`. */
export const POOL_TLS_FIELDS: readonly Field<NonNullable<PoolJson['tls']>>[] = [
  { key: 'servername', get: (t) => t.servername },
  { key: 'ca', get: (t) => t.ca },
  { key: 'verify', get: (t) => t.verify },
  { key: 'cert', get: (t) => t.cert },
  { key: 'key', get: (t) => t.key },
];

/** A pool's TLS in a word, for when it appears or goes. */
export function poolTlsSummary(t: PoolJson['tls'] | undefined): string {
  if (t === undefined) return '?';
  if (t === null) return 'off';
  return `on${t.servername !== null ? ` (servername ${t.servername})` : ''}`;
}

/** `pools[]` (tls and servers are compared on their own). */
export const POOL_FIELDS: readonly Field<PoolJson>[] = [
  { key: 'balance', get: (p) => p.balance },
  { key: 'least_time.measure', get: (p) => p.leastTime?.measure },
  { key: 'retries', get: (p) => p.retries },
  { key: 'timeouts.connect', get: (p) => p.timeouts?.connectMs, show: duration },
  { key: 'timeouts.idle', get: (p) => p.timeouts?.idleMs, show: duration },
  { key: 'slow_start', get: (p) => p.slowStartMs, show: (ms: number | undefined) => (ms === 0 ? 'off' : duration(ms)) },
  { key: 'on_server_down', get: (p) => p.onServerDown },
  { key: 'stick', get: (p) => p.stick, show: known((st: PoolJson['stick']) => (st === null ? 'off' : `expire ${duration(st.expireMs)}, size ${st.size}`)) },
  { key: 'proxy_protocol', get: (p) => p.proxyProtocol },
  { key: 'health.interval', get: (p) => p.health?.intervalMs, show: duration },
  { key: 'health.timeout', get: (p) => p.health?.timeoutMs, show: duration },
  { key: 'health.rise', get: (p) => p.health?.rise },
  { key: 'health.fall', get: (p) => p.health?.fall },
  { key: 'health.send', get: (p) => p.health?.send, show: formatBytes },
  { key: 'health.expect', get: (p) => p.health?.expect, show: formatBytes },
  { key: 'health.kind', get: (p) => p.health?.kind },
  { key: 'health.port', get: (p) => p.health?.port, show: known((port: number | null) => (port === null ? "the server's" : String(port))) },
  { key: 'health.http', get: (p) => p.health?.http, show: known(formatHttpProbe) },
  { key: 'health.postgres', get: (p) => p.health?.postgres, show: known(formatPostgresProbe) },
  { key: 'health.mysql', get: (p) => p.health?.mysql, show: known((m: NonNullable<PoolJson['health']['mysql']> | null) => (m === null ? 'none' : m.user === null ? 'greeting only' : `user ${m.user}`)) },
  { key: 'health.redis', get: (p) => p.health?.redis, show: known(formatRedisProbe) },
];

/** `AUTH from FILE <redacted …>` (the password by its MAC only), `PING only`; `none` for another kind. */
function formatRedisProbe(r: NonNullable<PoolJson['health']['redis']> | null): string {
  if (r === null) return 'none';
  return r.passwordFile === null ? 'PING only' : `AUTH from ${r.passwordFile} ${formatBytes(r.password)}`;
}

/** `GET /primary [200]`, with the Host header when one is set; `none` for another kind. */
function formatHttpProbe(h: NonNullable<PoolJson['health']['http']> | null): string {
  if (h === null) return 'none';
  return `${h.method} ${h.path} [${h.expectStatus.join(', ')}]${h.host === null ? '' : ` Host: ${h.host}`}`;
}

/** `user l4lb_probe, database l4lb_probe`; `none` for another kind. */
function formatPostgresProbe(p: NonNullable<PoolJson['health']['postgres']> | null): string {
  return p === null ? 'none' : `user ${p.user}, database ${p.database}`;
}

/** `pools[].servers[]`. */
export const SERVER_FIELDS: readonly Field<ServerJson>[] = [
  { key: 'address', get: (s) => s.address, show: formatEndpoint },
  { key: 'weight', get: (s) => s.weight },
  { key: 'backup', get: (s) => s.backup },
];

/** `log`. */
export const LOG_FIELDS: readonly Field<ModelJson['log']>[] = [
  { key: 'level', get: (l) => l.level },
  { key: 'access', get: (l) => l.access },
];

/** `user` and `group`. */
export const PROCESS_FIELDS: readonly Field<ModelJson>[] = [
  { key: 'user', get: (m) => m.user },
  { key: 'group', get: (m) => m.group },
];

/** `admin`. */
export const ADMIN_FIELDS: readonly Field<NonNullable<ModelJson['admin']>>[] = [
  { key: 'listen', get: (a) => a.listen, show: formatEndpoint },
  { key: 'token_file', get: (a) => a.tokenFile },
];
