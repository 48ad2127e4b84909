/** `listeners[]`: where l4lb accepts connections, who may connect, and where they go. */
import { readFile, stat } from 'node:fs/promises';
import { DEFAULTS } from '../../defaults.js';
import { parseCidr } from '../../net/cidr.js';
import { DEFAULT_IPV6_PREFIX } from '../../protect/per-source.js';
import { sniPatternProblem } from '../../tls/sni-routes.js';
import type { ListenerModel, ListenerTlsModel, RouteModel } from '../model.js';
import { LISTENER_PROTOCOLS } from '../enums.js';
import { cidrList, duration, flag, integer, kind, name, object, oneWordOf, text, type JsonSchema } from '../schema-nodes.js';
import { show } from '../show.js';
import { didYouMean } from '../suggest.js';
import { UNRESOLVED, asObject, asString, boolOr, intOr, type Check, type Draft, type Obj, type TlsDraft, unreadableReason } from './context.js';
import { listenerTlsSchema, normaliseListenerTls } from './listener-tls.js';

/** A count limit: at least 1; absent means unlimited. */
function limit(description: string): JsonSchema {
  return integer(description, 1, 10_000_000);
}

/** The schema node of one `listeners[]` entry. */
export const listenerSchema = object(
  'A TCP port on which l4lb accepts client connections.',
  {
    name: name('Unique listener name; used in logs and metrics.'),
    bind: kind('bind', {
      description:
        'Address to listen on: "host:port" or "[IPv6]:port"; "0.0.0.0:PORT" for all IPv4 interfaces, "[::]:PORT" for all; ' +
        'or "systemd:NAME" for a socket passed by systemd socket activation (FileDescriptorName=NAME).',
      type: 'string',
      maxLength: 300,
    }),
    pool: name('Name of the pool that receives this listener\'s connections.'),
    protocol: oneWordOf(
      'What the listener understands before it splices. tcp: nothing, bytes flow from the first. postgres: PostgreSQL\'s ' +
        'SSLRequest and GSSENCRequest are answered before TLS (so tls terminate and passthrough work with PostgreSQL clients, ' +
        'direct TLS too), and a CancelRequest goes to the server of the session it cancels. Default: tcp.',
      LISTENER_PROTOCOLS,
      'tcp',
    ),
    accept_proxy: flag(
      'Every connection must begin with a PROXY protocol v1 or v2 header from an upstream balancer (cloud NLB, HAProxy); ' +
        'its client address is then used everywhere. Connections without a valid header are closed. Needs trusted_proxies.',
      DEFAULTS.acceptProxy,
    ),
    allow: cidrList('Client addresses (CIDR, IPv4 or IPv6) allowed to connect; others are closed before any byte is read. Default: everyone.', 10_000),
    deny: cidrList('Client addresses (CIDR) refused at once; deny wins over allow. With accept_proxy, the address from the PROXY header is checked.', 10_000),
    max_connections: limit('Open connections on this listener; the excess is closed at once. Default: unlimited.'),
    per_source: object('Limits per client IP address; the excess is closed at once.', {
      max_connections: limit('Concurrent connections from one client IP. Default: unlimited.'),
      connect_rate: limit('New connections per second from one client IP (a token bucket, bursts up to one second\'s worth). Default: unlimited.'),
      ipv6_prefix: integer(
        `IPv6 clients are counted per network of this prefix length (a host often holds a whole /64); 128 = per address. IPv4 clients are counted per address. Default: ${DEFAULT_IPV6_PREFIX}.`,
        1,
        128,
        DEFAULT_IPV6_PREFIX,
      ),
    }),
    tls: listenerTlsSchema,
    routes: {
      description:
        'Where connections go by what is known of them: the first route whose every given key matches (sni, source) sends the ' +
        'connection to its pool; no match uses the listener\'s pool. sni needs tls on the listener; source does not.',
      type: 'array',
      maxItems: 10000,
      items: object(
        'One route: give sni, source or both.',
        {
          sni: text('An exact server name, or "*.suffix" for any name ending in ".suffix". Case-insensitive.', 255),
          source: {
            description:
              'Client networks (CIDR, IPv4 or IPv6; with accept_proxy the PROXY header\'s address), or "@FILE": a file of CIDRs, one a line, ' +
              '"#" comments and blank lines allowed, read at start and at every reload (SIGHUP). Matched without a scan: lists of 100k networks are fine.',
            type: 'array',
            minItems: 1,
            maxItems: 10000,
            items: { type: 'string', minLength: 1, maxLength: 4096 },
          },
          country: {
            description: 'Client countries (ISO 3166 codes, e.g. DE) looked up in geoip.database. Not available in this build: refused.',
            type: 'array',
            minItems: 1,
            maxItems: 300,
            items: { type: 'string', pattern: '^[A-Z]{2}$' },
          },
          pool: name('The pool that serves matching connections.'),
        },
        ['pool'],
      ),
    },
    trusted_proxies: cidrList(
      'Required (non-empty) with accept_proxy: the addresses (CIDR) allowed to send a PROXY header; others are closed before any byte is read. ' +
        '["0.0.0.0/0", "::/0"] trusts every peer.',
      1000,
    ),
    timeouts: object('Timeouts for client connections on this listener.', {
      idle: duration('A client connection with no traffic in either direction for this long is closed.', DEFAULTS.idleTimeoutMs),
      handshake: duration('Everything before the data flows (PROXY header, TLS handshake) must finish within this.', DEFAULTS.handshakeTimeoutMs),
    }),
  },
  ['name', 'bind', 'pool'],
  'listener',
);

/** The schema node of `geoip` (top level): accepted so that configurations written for it read, but country routes are refused. */
export const geoipSchema = object('A MaxMind-format database for country routes. Not available in this build: country routes are refused.', {
  database: text('Path of the .mmdb file.', 4096),
});

/** `geoip` alone changes nothing here: say so rather than accept it silently. */
export function checkGeoip(check: Check, value: unknown): void {
  if (value !== undefined) check.warnings.push('geoip: not used: country routes need a GeoIP reader, not available in this build');
}

/** The listeners read, and the terminating ones whose certificates are checked once their files are known readable. */
export interface Listeners {
  /** Binds are filled in once resolved. */
  readonly listeners: Draft<ListenerModel>[];
  readonly terminating: TlsDraft<ListenerTlsModel>[];
}

/**
 * Reads `listeners:` with their defaults.
 *
 * @param pools pool name → path, or null when the pool names are incomplete
 *   (a pool without a usable name): references are then not checked.
 */
export function normaliseListeners(check: Check, value: unknown, pools: ReadonlyMap<string, string> | null): Listeners {
  const listeners: Draft<ListenerModel>[] = [];
  const terminating: TlsDraft<ListenerTlsModel>[] = [];
  const names = new Map<string, string>();
  for (const [i, item] of (Array.isArray(value) ? value : []).entries()) {
    const path = `listeners[${i}]`;
    const o = asObject(item);
    if (!o) continue;
    const listenerName = asString(o.name);
    if (listenerName !== undefined) {
      const earlier = names.get(listenerName);
      if (earlier !== undefined) check.add(`${path}.name`, `duplicate listener name "${listenerName}" (also ${earlier})`);
      else names.set(listenerName, path);
    }
    const pool = asString(o.pool);
    // With a pool whose own name is broken, "no pool named" would be a guess; its own problem is reported.
    if (pool !== undefined && pools !== null && !pools.has(pool)) {
      check.add(`${path}.pool`, `no pool named "${pool}"${didYouMean(pool, pools.keys())}`);
    }
    const t = asObject(o.timeouts) ?? {};
    const perSource = asObject(o.per_source);
    const draft: Draft<ListenerModel> = {
      path,
      value: {
        name: listenerName ?? '',
        bind: UNRESOLVED,
        pool: pool ?? '',
        protocol: o.protocol === 'postgres' ? 'postgres' : 'tcp',
        timeouts: {
          idleMs: check.timeout(`${path}.timeouts.idle`, t.idle, DEFAULTS.idleTimeoutMs),
          handshakeMs: check.timeout(`${path}.timeouts.handshake`, t.handshake, DEFAULTS.handshakeTimeoutMs),
        },
        acceptProxy: boolOr(o.accept_proxy, DEFAULTS.acceptProxy),
        trustedProxies: check.cidrs(`${path}.trusted_proxies`, o.trusted_proxies),
        allow: check.cidrs(`${path}.allow`, o.allow),
        deny: check.cidrs(`${path}.deny`, o.deny),
        // 0: unlimited (the schema accepts 1 and up).
        maxConnections: intOr(o.max_connections, 0),
        perSource: {
          maxConnections: intOr(perSource?.max_connections, 0),
          connectRate: intOr(perSource?.connect_rate, 0),
          ipv6Prefix: intOr(perSource?.ipv6_prefix, DEFAULT_IPV6_PREFIX),
        },
        tls: normaliseListenerTls(check, `${path}.tls`, o.tls, terminating, o.protocol === 'postgres' ? ['postgresql'] : []),
        routes: normaliseRoutes(check, `${path}.routes`, o.routes, o.tls !== undefined, pools),
        systemdSocket: null,
      },
    };
    checkTrustedProxies(check, path, o);
    listeners.push(draft);
    bind(check, draft, o.bind);
  }
  return { listeners, terminating };
}

/** `trusted_proxies` goes with `accept_proxy: true`, and that needs it. */
function checkTrustedProxies(check: Check, path: string, o: Obj): void {
  if (o.trusted_proxies !== undefined && o.accept_proxy !== true) {
    check.add(`${path}.trusted_proxies`, 'has no effect without accept_proxy: true');
  }
  // Without it any client could write its own PROXY header and choose the address ACLs, limits and hashing see.
  if (o.accept_proxy === true && (o.trusted_proxies === undefined || (Array.isArray(o.trusted_proxies) && o.trusted_proxies.length === 0))) {
    check.add(
      `${path}.trusted_proxies`,
      'required with accept_proxy: true: list the addresses of the balancers that send PROXY headers, e.g. [10.0.0.0/8]; ' +
        'any other peer could name its own client address. To accept headers from anyone, write ["0.0.0.0/0", "::/0"]',
    );
  }
}

/** `bind`: an address resolved in the background, or `systemd:NAME` for a socket systemd passes. */
function bind(check: Check, draft: Draft<ListenerModel>, value: unknown): void {
  const path = `${draft.path}.bind`;
  if (typeof value === 'string' && value.startsWith('systemd:')) {
    // Socket activation: the socket comes from systemd (LISTEN_FDNAMES), nothing to resolve.
    const fdName = value.slice('systemd:'.length);
    if (!/^[A-Za-z0-9_.:-]{1,255}$/.test(fdName)) {
      check.add(path, `expected "systemd:NAME" with the FileDescriptorName of a .socket unit, got ${show(value)}`);
    }
    draft.value = { ...draft.value, bind: { host: '', port: 0, text: value }, systemdSocket: fdName };
  } else {
    check.address(path, value, true, (ep) => (draft.value = { ...draft.value, bind: ep }));
  }
}

/** `routes`: what each matches (sni, source) and the pools they name; sni routes need TLS on the listener. */
function normaliseRoutes(check: Check, path: string, value: unknown, hasTls: boolean, pools: ReadonlyMap<string, string> | null): RouteModel[] {
  if (!Array.isArray(value)) return [];
  if (!hasTls && value.some((r) => asObject(r)?.sni !== undefined)) check.add(path, 'SNI routes need tls (mode terminate or passthrough) on the listener');
  const out: RouteModel[] = [];
  for (const [i, item] of value.entries()) {
    const at = `${path}[${i}]`;
    const r = asObject(item);
    if (!r || typeof r.pool !== 'string') continue;
    if (r.sni === undefined && r.source === undefined && r.country === undefined) {
      check.add(at, 'a route needs sni, source or both: a route matching everyone would make the listener\'s pool unreachable');
    }
    if (r.country !== undefined) check.add(`${at}.country`, 'country routes need a GeoIP reader, not available in this build');
    if (typeof r.sni === 'string') {
      const bad = sniPatternProblem(r.sni);
      if (bad !== undefined) check.add(`${at}.sni`, bad);
    }
    if (pools !== null && !pools.has(r.pool)) check.add(`${at}.pool`, `no pool named "${r.pool}"${didYouMean(r.pool, pools.keys())}`);
    const source = Array.isArray(r.source) ? r.source.filter((x): x is string => typeof x === 'string') : undefined;
    out.push({
      ...(typeof r.sni === 'string' ? { sni: r.sni } : {}),
      ...(source !== undefined ? { source, sourceCidrs: sourceCidrs(check, `${at}.source`, r.source as unknown[]) } : {}),
      pool: r.pool,
    });
  }
  return out;
}

/** A CIDR list file is refused above this size (100k networks take about 2 MB). */
const MAX_SOURCE_FILE_BYTES = 64 * 1024 * 1024;
/** Bad lines reported per file; the rest are counted. */
const MAX_LINE_PROBLEMS = 5;

/**
 * `source`: the CIDRs to match, each `@FILE`'s lines in its place. The list
 * is filled once the files are read (before the model is complete).
 */
function sourceCidrs(check: Check, path: string, items: readonly unknown[]): string[] {
  const out: string[] = [];
  const parts: (string[] | Promise<string[]>)[] = [];
  for (const [i, item] of items.entries()) {
    if (typeof item !== 'string') continue; // the schema has reported it
    if (item.startsWith('@')) {
      parts.push(readCidrFile(check, path, item.slice(1)));
      continue;
    }
    const parsed = parseCidr(item);
    if (typeof parsed === 'string') check.add(`${path}[${i}]`, parsed);
    else parts.push([parsed.text]);
  }
  check.wait(
    Promise.all(parts).then((lists) => {
      // A loop, not push(...list): a 100k-line file would be 100k call arguments.
      for (const list of lists) for (const c of list) out.push(c);
    }),
  );
  return out;
}

/** Reads a CIDR list file: one CIDR a line, `#` to the end of a line is a comment, blank lines skipped. */
async function readCidrFile(check: Check, path: string, file: string): Promise<string[]> {
  if (file === '') {
    check.add(path, 'expected a file name after "@"');
    return [];
  }
  let text: string;
  try {
    const size = (await stat(file)).size;
    if (size > MAX_SOURCE_FILE_BYTES) {
      check.add(path, `${file}: larger than ${MAX_SOURCE_FILE_BYTES} bytes`);
      return [];
    }
    text = await readFile(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    check.add(path, `cannot read ${file}: ${e.code === 'ENOENT' ? 'no such file' : unreadableReason(e)}`);
    return [];
  }
  const cidrs: string[] = [];
  let bad = 0;
  let line = 0;
  for (const raw of text.split('\n')) {
    line++;
    const hash = raw.indexOf('#');
    const entry = (hash < 0 ? raw : raw.slice(0, hash)).trim();
    if (entry === '') continue;
    const parsed = parseCidr(entry);
    if (typeof parsed !== 'string') {
      cidrs.push(parsed.text);
      continue;
    }
    if (++bad <= MAX_LINE_PROBLEMS) check.add(path, `${file}:${line}: expected a CIDR, got ${show(entry)}`);
  }
  if (bad > MAX_LINE_PROBLEMS) check.add(path, `${file}: and ${bad - MAX_LINE_PROBLEMS} more bad lines`);
  return cidrs;
}
