/**
 * Reading, validating and normalising a configuration into the frozen
 * {@link Model}. Every problem is collected, so one `l4lb check` run shows
 * them all; nothing but ConfigError or ConfigReadError ever escapes.
 */

import { readFile, stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { isIP } from 'node:net';
import { Ajv, type ErrorObject } from 'ajv';
import { parseDocument } from 'yaml';
import { DEFAULTS } from '../defaults.js';
import { parseCidr } from '../net/cidr.js';
import { DEFAULT_IPV6_PREFIX } from '../protect/per-source.js';
import { ConfigError, ConfigReadError, describe, type ConfigProblem } from '../errors.js';
import { createResolver, parseAddress } from './address.js';
import { parseDuration } from './duration.js';
import type {
  AdminModel,
  Balance,
  Endpoint,
  ListenerModel,
  ListenerTlsModel,
  LogLevel,
  Model,
  PoolModel,
  PoolTlsModel,
  RouteModel,
  ServerModel,
} from './model.js';
import { sniPatternProblem } from '../tls/sni-routes.js';
import { loadCertificates } from '../tls/cert-store.js';
import { certStoreOptions } from '../tls/terminator.js';
import { prepareBackendTls } from '../tls/backend.js';
import { BALANCES, LOG_LEVELS, VALUE_KINDS, configSchema, type JsonSchema } from './schema.js';
import { show } from './show.js';
import { didYouMean } from './suggest.js';
import { readTokenFile } from './token-file.js';
import { checkSecretReadable } from './secret-file.js';
import { userName } from '../runtime/privileges.js';

/** Larger files are refused unread: a real configuration is a few kilobytes. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;
/** More problems than this are summarised; nobody reads the ten-thousandth. */
const MAX_PROBLEMS = 100;

const ajv = new Ajv({ allErrors: true, verbose: true, strict: true, allowUnionTypes: true });
const validate = ajv.compile(configSchema);

/**
 * Reads, validates and normalises a configuration file: YAML for `.yaml` and
 * `.yml`, JSON for `.json`. Hostnames are resolved.
 *
 * @throws ConfigReadError when the file cannot be read or parsed.
 * @throws ConfigError listing every problem when the content is invalid.
 */
export async function loadConfig(file: string): Promise<Model> {
  return buildModel(await readConfig(file), file);
}

/**
 * Reads and parses a configuration file without validating it.
 *
 * @throws ConfigReadError when the file cannot be read or parsed.
 */
export async function readConfig(file: string): Promise<unknown> {
  const ext = extname(file).toLowerCase();
  if (ext !== '.yaml' && ext !== '.yml' && ext !== '.json') {
    const what = ext === '' ? 'no file extension' : `unsupported file extension "${ext}"`;
    throw new ConfigReadError(file, new Error(`${what}; use .yaml, .yml or .json`));
  }
  let text: string;
  try {
    const info = await stat(file);
    if (info.size > MAX_FILE_BYTES) throw new Error(`file is larger than ${MAX_FILE_BYTES} bytes`);
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigReadError(file, err);
  }
  return ext === '.json' ? parseJson(file, text) : parseYaml(file, text);
}

function parseJson(file: string, text: string): unknown {
  // Editors on Windows like to write a byte-order mark, which JSON.parse rejects.
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  try {
    return JSON.parse(body);
  } catch (err) {
    // Node 20 reports a character offset only; a line and column are what editors jump to.
    const message = describe(err);
    const at = /at position (\d+)/.exec(message);
    if (!at || /line/.test(message)) throw new ConfigReadError(file, err);
    const before = body.slice(0, Number(at[1])).split('\n');
    const column = (before.at(-1)?.length ?? 0) + 1;
    throw new ConfigReadError(file, new Error(`${message} (line ${before.length}, column ${column})`, { cause: err }));
  }
}

function parseYaml(file: string, text: string): unknown {
  // Duplicate keys are errors (the yaml default): the later value silently winning hides mistakes.
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigReadError(file, new Error(doc.errors.slice(0, 5).map((e) => e.message.trim()).join('\n'), { cause: doc.errors[0] }));
  }
  try {
    // The alias cap stops "billion laughs" documents from expanding without bound.
    return doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigReadError(file, err);
  }
}

/**
 * Validates an already parsed configuration and builds the frozen model,
 * applying defaults and resolving hostnames. Used by {@link loadConfig},
 * by reloads and by tests.
 *
 * @param file - named in the error message only.
 * @throws ConfigError listing every problem found; never anything else.
 */
export async function buildModel(raw: unknown, file?: string): Promise<Model> {
  let result: { problems: ConfigProblem[]; model: Model };
  try {
    result = await check(raw);
  } catch (err) {
    // A bug here must still look like a rejected configuration, so a reload keeps running on the old one.
    throw new ConfigError([{ path: '', message: `internal error while checking the configuration: ${describe(err)}` }], file);
  }
  const { problems, model } = result;
  if (problems.length === 0) return model;
  const shown = problems.slice(0, MAX_PROBLEMS);
  if (problems.length > MAX_PROBLEMS) shown.push({ path: '', message: `and ${problems.length - MAX_PROBLEMS} more problems` });
  throw new ConfigError(shown, file);
}

// ---------------------------------------------------------------------------
// Problems

/**
 * Collects problems. Values the schema already rejected are not checked
 * again, so one mistake gives one message.
 */
class Problems {
  readonly list: ConfigProblem[] = [];
  private readonly seen = new Set<string>();
  private readonly rejected = new Set<string>();

  add(path: string, message: string): void {
    for (let p: string | undefined = path; p !== undefined; p = parentPath(p)) {
      if (this.rejected.has(p)) return;
    }
    this.push(path, message);
  }

  /** A schema problem; `rejectedPath` is the value it concerns (for a missing key, the key's own path). */
  addSchema(path: string, message: string, rejectedPath: string): void {
    this.rejected.add(rejectedPath);
    this.push(path, message);
  }

  private push(path: string, message: string): void {
    const key = `${path}\n${message}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.list.push({ path, message });
  }

  /** Grouped by item (indices compared as numbers), otherwise in the order found. */
  sorted(): ConfigProblem[] {
    const key = (p: ConfigProblem) => p.path.replace(/\d+/g, (d) => d.padStart(12, '0'));
    return this.list
      .map((p, i) => ({ p, i, k: key(p) }))
      .sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : a.i - b.i))
      .map((x) => x.p);
  }
}

function parentPath(path: string): string | undefined {
  if (path === '') return undefined;
  const cut = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['));
  return cut <= 0 ? '' : path.slice(0, cut);
}

/** Appends a key to a path, quoting keys that would not read as one word. */
function joinPath(path: string, key: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(key)) return `${path}[${show(key)}]`;
  return path === '' ? key : `${path}.${key}`;
}

/** `/pools/0/servers/2/address` → `pools[0].servers[2].address`. */
function pointerToPath(pointer: string): string {
  let path = '';
  for (const raw of pointer.split('/').slice(1)) {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    // Object keys in instance paths are schema keys, never numbers, so digits are list indices.
    path = /^\d+$/.test(segment) ? `${path}[${segment}]` : joinPath(path, segment);
  }
  return path;
}

// ---------------------------------------------------------------------------
// Schema errors in plain words

const TYPE_WORDS: Record<string, string> = {
  object: 'an object',
  array: 'a list',
  string: 'a string',
  integer: 'an integer',
  number: 'a number',
  boolean: 'true or false',
  null: 'null',
};

function schemaProblem(problems: Problems, e: ErrorObject): void {
  const path = pointerToPath(e.instancePath);
  const node = (e.parentSchema ?? {}) as JsonSchema;
  const got = show(e.data);
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String((e.params as { additionalProperty: unknown }).additionalProperty);
      const data = e.data as Record<string, unknown>;
      const known = Object.keys((node.properties ?? {}) as object).filter((k) => !Object.hasOwn(data, k));
      const keyPath = joinPath(path, key);
      problems.addSchema(keyPath, `unknown key${didYouMean(key, known)}`, keyPath);
      return;
    }
    case 'required': {
      const key = String((e.params as { missingProperty: unknown }).missingProperty);
      problems.addSchema(path, `missing required key "${key}"`, joinPath(path, key));
      return;
    }
    case 'minItems': {
      const title = ((node.items ?? {}) as JsonSchema).title ?? 'item';
      problems.addSchema(path, `expected at least one ${String(title)}, got an empty list`, path);
      return;
    }
  }
  if (path === '' && e.keyword === 'type') {
    const message =
      e.data === null || e.data === undefined
        ? 'the configuration is empty; expected an object with "listeners" and "pools"'
        : `expected an object with "listeners" and "pools" at the top level, got ${got}`;
    problems.addSchema(path, message, path);
    return;
  }
  problems.addSchema(path, `${expected(node, e) ?? e.message ?? 'invalid value'}, got ${got}`, path);
}

/**
 * What a leaf value should look like, worded from its schema node rather
 * than the failed keyword, so `weight: "x"` and `weight: 0` read alike.
 */
function expected(node: JsonSchema, e: ErrorObject): string | undefined {
  const kind = VALUE_KINDS.get(node);
  if (kind !== undefined) {
    const verdict = kind === 'duration' ? parseDuration(e.data) : parseAddress(e.data, { allowPortZero: kind === 'bind' });
    // The parsers say "…, got X" themselves; strip it so the caller adds it once.
    if (typeof verdict === 'string') return verdict.replace(/, got [\s\S]*$/, '');
  }
  if (Array.isArray(node.enum)) return `expected one of ${node.enum.join(', ')}`;
  if (node.type === 'integer' && typeof node.minimum === 'number' && typeof node.maximum === 'number') {
    return `expected an integer between ${node.minimum} and ${node.maximum}`;
  }
  if (node.type === 'string' && node.minLength === 1 && typeof node.maxLength === 'number') {
    return `expected a non-empty string of at most ${node.maxLength} characters`;
  }
  if (e.keyword === 'type') {
    const types = ([] as unknown[]).concat((e.params as { type: unknown }).type);
    return `expected ${types.map((t) => TYPE_WORDS[String(t)] ?? String(t)).join(' or ')}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Meaning: what the schema cannot express

type Obj = Record<string, unknown>;

function asObject(v: unknown): Obj | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined;
}

function asString(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function oneOf<T extends string>(v: unknown, allowed: readonly T[], fallback: T): T {
  return allowed.includes(v as T) ? (v as T) : fallback;
}

function intOr(v: unknown, fallback: number): number {
  return Number.isSafeInteger(v) ? (v as number) : fallback;
}

/** EACCES/EPERM name the user l4lb reads as (after a privilege drop, files first named in a reload must be readable by it). */
function unreadableReason(err: NodeJS.ErrnoException): string {
  const euid = process.geteuid?.();
  if ((err.code === 'EACCES' || err.code === 'EPERM') && euid !== undefined && euid !== 0) {
    return `${err.code} (not readable by user ${userName(euid)}, which l4lb runs as)`;
  }
  return err.code ?? err.message;
}

/** A mutable draft: addresses are filled in once resolved. */
interface Draft<T> {
  value: T;
  path: string;
}

async function check(raw: unknown): Promise<{ problems: ConfigProblem[]; model: Model }> {
  const problems = new Problems();
  // validate() is synchronous and keeps its errors on itself: read them before any await.
  if (!validate(raw)) for (const e of validate.errors ?? []) schemaProblem(problems, e);

  const resolve = createResolver();
  const waits: Promise<void>[] = [];
  /** Operator-visible doubts that do not stop the configuration (expired certificates, verify: false). */
  const warnings: string[] = [];
  /** Terminating listeners whose certificates are checked once their files are known readable. */
  const certChecks: { path: string; model: ListenerTlsModel }[] = [];
  /** Pools with TLS to their servers: contexts built (so files checked) once the files are known readable. */
  const backendChecks: { path: string; model: PoolTlsModel }[] = [];
  /** Parses an address and resolves it in the background; `set` receives the endpoint. */
  const address = (path: string, value: unknown, bind: boolean, set: (ep: Endpoint) => void): void => {
    if (value === undefined) return;
    const parsed = parseAddress(value, { allowPortZero: bind });
    if (typeof parsed === 'string') return problems.add(path, parsed);
    waits.push(
      resolve(parsed).then((ep) => (typeof ep === 'string' ? problems.add(path, ep) : set(ep))),
    );
  };
  const timeout = (path: string, value: unknown, fallback: number): number => {
    if (value === undefined) return fallback;
    const ms = parseDuration(value);
    if (typeof ms === 'string') problems.add(path, ms);
    else if (ms === 0) problems.add(path, `expected a timeout longer than 0ms, got ${show(value)}`);
    return typeof ms === 'number' ? ms : fallback;
  };

  /** A duration where 0 is allowed (it means "off"). */
  const durationOr = (path: string, value: unknown, fallback: number): number => {
    if (value === undefined) return fallback;
    const ms = parseDuration(value);
    if (typeof ms === 'string') problems.add(path, ms);
    return typeof ms === 'number' ? ms : fallback;
  };
  /** A probe payload: text, or `hex:` and an even number of hex digits. */
  const payload = (path: string, value: unknown): Buffer | null => {
    if (typeof value !== 'string' || value === '') return null;
    if (!value.startsWith('hex:')) return Buffer.from(value, 'utf8');
    const digits = value.slice(4).replace(/\s+/g, '');
    if (digits.length === 0 || digits.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(digits)) {
      problems.add(path, `expected "hex:" followed by pairs of hex digits, got ${show(value)}`);
      return null;
    }
    return Buffer.from(digits, 'hex');
  };

  /** A CIDR list; each bad entry is a problem at its own index. */
  const cidrs = (path: string, value: unknown): string[] => {
    if (!Array.isArray(value)) return [];
    const out: string[] = [];
    for (const [i, item] of value.entries()) {
      if (typeof item !== 'string') continue; // the schema has reported it
      const parsed = parseCidr(item);
      if (typeof parsed === 'string') problems.add(`${path}[${i}]`, parsed);
      else out.push(parsed.text);
    }
    return out;
  };

  /** A file the process must be able to read (certificates, keys, CAs), or hold the copy read before a privilege drop. */
  const readable = (path: string, value: unknown): string | null => {
    if (typeof value !== 'string' || value === '') return null;
    waits.push(
      checkSecretReadable(value).catch((err: NodeJS.ErrnoException) =>
        problems.add(path, `cannot read ${value}: ${err.code === 'ENOENT' ? 'no such file' : unreadableReason(err)}`),
      ),
    );
    return value;
  };

  const listenerTls = (path: string, value: unknown): ListenerTlsModel | null => {
    const o = asObject(value);
    if (!o) return null;
    const mode = oneOf(o.mode, ['terminate', 'passthrough'] as const, 'terminate');
    const certs = (Array.isArray(o.certs) ? o.certs : []).flatMap((c, i) => {
      const e = asObject(c);
      if (!e || typeof e.cert !== 'string' || typeof e.key !== 'string') return [];
      readable(`${path}.certs[${i}].cert`, e.cert);
      readable(`${path}.certs[${i}].key`, e.key);
      return [{ cert: e.cert, key: e.key }];
    });
    if (mode === 'terminate' && o.certs === undefined) problems.add(`${path}.certs`, 'terminate needs at least one certificate (certs)');
    if (mode === 'passthrough') {
      for (const k of ['certs', 'alpn', 'client_ca', 'ciphers', 'strict_sni', 'session_tickets'] as const) {
        if (o[k] !== undefined) problems.add(`${path}.${k}`, 'has no effect with mode: passthrough (l4lb does not decrypt)');
      }
    }
    const model: ListenerTlsModel = {
      mode,
      certs,
      minVersion: oneOf(o.min_version, ['TLSv1.2', 'TLSv1.3'] as const, 'TLSv1.2'),
      ciphers: typeof o.ciphers === 'string' ? o.ciphers : null,
      alpn: Array.isArray(o.alpn) ? o.alpn.filter((a): a is string => typeof a === 'string') : [],
      clientCa: readable(`${path}.client_ca`, o.client_ca),
      strictSni: o.strict_sni === true,
      sessionTickets: o.session_tickets !== false,
    };
    if (mode === 'terminate') certChecks.push({ path, model });
    return model;
  };

  const poolTls = (path: string, value: unknown): PoolTlsModel | null => {
    const o = asObject(value);
    if (!o) return null;
    if ((o.cert === undefined) !== (o.key === undefined)) problems.add(`${path}.${o.cert === undefined ? 'cert' : 'key'}`, 'cert and key go together');
    if (o.verify === false) warnings.push(`${path}.verify: false — server certificates are not verified`);
    const model: PoolTlsModel = {
      servername: typeof o.servername === 'string' ? o.servername : null,
      ca: readable(`${path}.ca`, o.ca),
      verify: o.verify !== false,
      cert: readable(`${path}.cert`, o.cert),
      key: readable(`${path}.key`, o.key),
    };
    backendChecks.push({ path, model });
    return model;
  };

  const routes = (path: string, value: unknown, hasTls: boolean, pools: Map<string, string> | null): RouteModel[] => {
    if (!Array.isArray(value)) return [];
    if (!hasTls) problems.add(path, 'SNI routes need tls (mode terminate or passthrough) on the listener');
    const out: RouteModel[] = [];
    for (const [i, item] of value.entries()) {
      const r = asObject(item);
      if (!r || typeof r.sni !== 'string' || typeof r.pool !== 'string') continue;
      const bad = sniPatternProblem(r.sni);
      if (bad !== undefined) problems.add(`${path}[${i}].sni`, bad);
      if (pools !== null && !pools.has(r.pool)) problems.add(`${path}[${i}].pool`, `no pool named "${r.pool}"${didYouMean(r.pool, pools.keys())}`);
      out.push({ sni: r.sni, pool: r.pool });
    }
    return out;
  };

  const root = asObject(raw) ?? {};
  const unresolved: Endpoint = Object.freeze({ host: '', port: 0, text: '' });

  // Pools first: listeners refer to them by name.
  const pools: Draft<PoolModel & { servers: ServerModel[] }>[] = [];
  const poolNames = new Map<string, string>();
  let poolNamesComplete = Array.isArray(root.pools);
  for (const [i, item] of (Array.isArray(root.pools) ? root.pools : []).entries()) {
    const path = `pools[${i}]`;
    const o = asObject(item);
    const name = asString(o?.name);
    if (name === undefined) poolNamesComplete = false;
    if (!o) continue;
    if (name !== undefined) {
      const earlier = poolNames.get(name);
      if (earlier !== undefined) problems.add(`${path}.name`, `duplicate pool name "${name}" (also ${earlier})`);
      else poolNames.set(name, path);
    }
    const t = asObject(o.timeouts) ?? {};
    const h = asObject(o.health) ?? {};
    const pool = {
      name: name ?? '',
      balance: oneOf<Balance>(o.balance, BALANCES, DEFAULTS.balance),
      retries: intOr(o.retries, DEFAULTS.retries),
      timeouts: {
        connectMs: timeout(`${path}.timeouts.connect`, t.connect, DEFAULTS.connectTimeoutMs),
        idleMs: timeout(`${path}.timeouts.idle`, t.idle, DEFAULTS.idleTimeoutMs),
      },
      servers: [] as ServerModel[],
      health: {
        intervalMs: timeout(`${path}.health.interval`, h.interval, DEFAULTS.healthIntervalMs),
        timeoutMs: timeout(`${path}.health.timeout`, h.timeout, DEFAULTS.healthTimeoutMs),
        rise: intOr(h.rise, DEFAULTS.healthRise),
        fall: intOr(h.fall, DEFAULTS.healthFall),
        send: payload(`${path}.health.send`, h.send),
        expect: payload(`${path}.health.expect`, h.expect),
      },
      slowStartMs: durationOr(`${path}.slow_start`, o.slow_start, DEFAULTS.slowStartMs),
      onServerDown: oneOf(o.on_server_down, ['keep', 'close'] as const, DEFAULTS.onServerDown),
      proxyProtocol: oneOf(o.proxy_protocol, ['off', 'v1', 'v2'] as const, 'off'),
      tls: poolTls(`${path}.tls`, o.tls),
    };
    pools.push({ value: pool, path });
    const serverNames = new Map<string, number>();
    for (const [j, sItem] of (Array.isArray(o.servers) ? o.servers : []).entries()) {
      const sPath = `${path}.servers[${j}]`;
      const s = asObject(sItem);
      if (!s) continue;
      const server = {
        name: asString(s.name) ?? asString(s.address) ?? '',
        address: unresolved,
        weight: intOr(s.weight, DEFAULTS.weight),
        backup: s.backup === true,
      };
      pool.servers.push(server);
      address(`${sPath}.address`, s.address, false, (ep) => (server.address = ep));
      if (server.name === '') continue;
      const earlier = serverNames.get(server.name);
      if (earlier === undefined) serverNames.set(server.name, j);
      else if (s.name !== undefined) {
        problems.add(`${sPath}.name`, `duplicate server name "${server.name}" in pool "${pool.name}" (also servers[${earlier}])`);
      } else {
        problems.add(
          `${sPath}.address`,
          `duplicate server "${server.name}" in pool "${pool.name}" (also servers[${earlier}]); give each a distinct name to list an address twice`,
        );
      }
    }
  }

  const listeners: Draft<ListenerModel>[] = [];
  const listenerNames = new Map<string, string>();
  for (const [i, item] of (Array.isArray(root.listeners) ? root.listeners : []).entries()) {
    const path = `listeners[${i}]`;
    const o = asObject(item);
    if (!o) continue;
    const name = asString(o.name);
    if (name !== undefined) {
      const earlier = listenerNames.get(name);
      if (earlier !== undefined) problems.add(`${path}.name`, `duplicate listener name "${name}" (also ${earlier})`);
      else listenerNames.set(name, path);
    }
    const pool = asString(o.pool);
    // With a pool whose own name is broken, "no pool named" would be a guess; its own problem is reported.
    if (pool !== undefined && poolNamesComplete && !poolNames.has(pool)) {
      problems.add(`${path}.pool`, `no pool named "${pool}"${didYouMean(pool, poolNames.keys())}`);
    }
    const t = asObject(o.timeouts) ?? {};
    const draft: Draft<ListenerModel> = {
      path,
      value: {
        name: name ?? '',
        bind: unresolved,
        pool: pool ?? '',
        timeouts: {
          idleMs: timeout(`${path}.timeouts.idle`, t.idle, DEFAULTS.idleTimeoutMs),
          handshakeMs: timeout(`${path}.timeouts.handshake`, t.handshake, DEFAULTS.handshakeTimeoutMs),
        },
        acceptProxy: o.accept_proxy === true,
        trustedProxies: cidrs(`${path}.trusted_proxies`, o.trusted_proxies),
        allow: cidrs(`${path}.allow`, o.allow),
        deny: cidrs(`${path}.deny`, o.deny),
        maxConnections: intOr(o.max_connections, 0),
        perSource: {
          maxConnections: intOr(asObject(o.per_source)?.max_connections, 0),
          connectRate: intOr(asObject(o.per_source)?.connect_rate, 0),
          ipv6Prefix: intOr(asObject(o.per_source)?.ipv6_prefix, DEFAULT_IPV6_PREFIX),
        },
        tls: listenerTls(`${path}.tls`, o.tls),
        routes: routes(`${path}.routes`, o.routes, o.tls !== undefined, poolNamesComplete ? poolNames : null),
        systemdSocket: null,
      },
    };
    if (o.trusted_proxies !== undefined && o.accept_proxy !== true) {
      problems.add(`${path}.trusted_proxies`, 'has no effect without accept_proxy: true');
    }
    // Without it any client could write its own PROXY header and choose the address ACLs, limits and hashing see.
    if (o.accept_proxy === true && (o.trusted_proxies === undefined || (Array.isArray(o.trusted_proxies) && o.trusted_proxies.length === 0))) {
      problems.add(
        `${path}.trusted_proxies`,
        'required with accept_proxy: true: list the addresses of the balancers that send PROXY headers, e.g. [10.0.0.0/8]; ' +
          'any other peer could name its own client address. To accept headers from anyone, write ["0.0.0.0/0", "::/0"]',
      );
    }
    listeners.push(draft);
    if (typeof o.bind === 'string' && o.bind.startsWith('systemd:')) {
      // Socket activation: the socket comes from systemd (LISTEN_FDNAMES), nothing to resolve.
      const fdName = o.bind.slice('systemd:'.length);
      if (!/^[A-Za-z0-9_.:-]{1,255}$/.test(fdName)) {
        problems.add(`${path}.bind`, `expected "systemd:NAME" with the FileDescriptorName of a .socket unit, got ${show(o.bind)}`);
      }
      draft.value = { ...draft.value, bind: { host: '', port: 0, text: o.bind }, systemdSocket: fdName };
    } else {
      address(`${path}.bind`, o.bind, true, (ep) => (draft.value = { ...draft.value, bind: ep }));
    }
  }

  // The admin server: its address may not clash with a listener's; its token file must be readable now.
  let admin: Draft<AdminModel> | null = null;
  const rawAdmin = asObject(root.admin);
  if (rawAdmin) {
    const tokenFile = asString(rawAdmin.token_file) ?? null;
    const draft: Draft<AdminModel> = (admin = { path: 'admin', value: { listen: unresolved, tokenFile } });
    address('admin.listen', rawAdmin.listen ?? DEFAULTS.adminListen, true, (ep) => (draft.value = { ...draft.value, listen: ep }));
    if (tokenFile !== null && tokenFile !== '') {
      waits.push(
        // The owner may also be the user l4lb drops to (`user:`).
        readTokenFile(tokenFile, { user: asString(root.user) ?? null, group: asString(root.group) ?? null }).then((r) => {
          if (typeof r === 'string') problems.add('admin.token_file', r);
        }),
      );
    }
  }

  if (root.group !== undefined && root.user === undefined) problems.add('group', 'needs user: privileges are dropped to a user (and this group)');
  await Promise.all(waits);
  // Certificates: keys must match, files must parse; expiry is only a warning.
  // Skipped where a file was already reported unreadable.
  for (const { path, model: t } of certChecks) {
    if (problems.list.some((p) => p.path.startsWith(`${path}.`))) continue;
    const result = await loadCertificates(t.certs, certStoreOptions(t));
    for (const w of result.warnings) warnings.push(`${path}.${w}`);
    if (!result.ok) for (const p of result.problems) problems.add(p.path === '' ? path : `${path}.${p.path}`, p.message);
  }
  // TLS to servers: the context the pool will use is built here, so a file
  // that is no CA, certificate or matching key is a problem on its path.
  await Promise.all(
    backendChecks.map(async ({ path, model: t }) => {
      if (problems.list.some((p) => p.path === path || p.path.startsWith(`${path}.`))) return;
      const result = await prepareBackendTls(t);
      for (const w of result.warnings) warnings.push(`${path}.${w}`);
      if (!result.ok) for (const p of result.problems) problems.add(p.field === '' ? path : `${path}.${p.field}`, p.message);
    }),
  );
  checkBinds(problems, [
    ...listeners.map((d) => ({ path: `${d.path}.bind`, owner: d.path, bind: d.value.bind })),
    ...(admin ? [{ path: 'admin.listen', owner: 'admin', bind: admin.value.listen }] : []),
  ]);

  const log = asObject(root.log) ?? {};
  const model: Model = {
    admin: admin?.value ?? null,
    log: {
      level: oneOf<LogLevel>(log.level, LOG_LEVELS, DEFAULTS.logLevel),
      access: typeof log.access === 'boolean' ? log.access : DEFAULTS.accessLog,
    },
    listeners: listeners.map((d) => d.value),
    pools: pools.map((d) => d.value),
    warnings,
    user: typeof root.user === 'string' ? root.user : null,
    group: typeof root.group === 'string' ? root.group : null,
  };
  return { problems: problems.sorted(), model: deepFreeze(model) };
}

/** A bound address in the configuration: a listener's `bind` or the admin `listen`. */
interface Bind {
  /** Path of the address itself, e.g. `listeners[1].bind`. */
  readonly path: string;
  /** Path of what binds it, e.g. `listeners[0]`, named in the other's message. */
  readonly owner: string;
  readonly bind: Endpoint;
}

/**
 * Two listeners (or a listener and the admin server) may not bind the same
 * port on the same address, nor on a wildcard address that covers the other
 * (`0.0.0.0` covers IPv4, `::` is dual-stack in Node and covers both); the
 * second would fail at start with EADDRINUSE. Port 0 never clashes: each
 * bind gets its own ephemeral port.
 */
function checkBinds(problems: Problems, binds: readonly Bind[]): void {
  interface Seen {
    byHost: Map<string, Bind>;
    first?: Bind;
    firstV4?: Bind;
    anyV4?: Bind;
    anyV6?: Bind;
  }
  const ports = new Map<number, Seen>();
  for (const d of binds) {
    const { host, port, text } = d.bind;
    if (host === '' || port === 0) continue;
    let seen = ports.get(port);
    if (!seen) ports.set(port, (seen = { byHost: new Map() }));
    const v4 = isIP(host) === 4;
    const same = seen.byHost.get(host);
    const clash =
      same ??
      seen.anyV6 ??
      (host === '::' ? seen.first : undefined) ??
      (v4 ? seen.anyV4 : undefined) ??
      (host === '0.0.0.0' ? seen.firstV4 : undefined);
    if (clash) {
      const other = clash.bind.text;
      problems.add(
        d.path,
        same && other === text
          ? `duplicate bind address "${text}" (also ${clash.owner})`
          : `"${text}" overlaps "${other}" of ${clash.owner}`,
      );
      continue;
    }
    seen.byHost.set(host, d);
    seen.first ??= d;
    if (v4) seen.firstV4 ??= d;
    if (host === '0.0.0.0') seen.anyV4 ??= d;
    if (host === '::') seen.anyV6 ??= d;
  }
}

function deepFreeze<T>(value: T): T {
  // Buffers (probe payloads) cannot be frozen; the engine throws on typed arrays with elements.
  if (typeof value === 'object' && value !== null && !ArrayBuffer.isView(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
