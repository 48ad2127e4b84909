/**
 * Runtime changes (the admin API's `POST /pools/POOL/servers`, `DELETE
 * /pools/POOL/servers/SERVER`, `POST`/`DELETE /listeners/LISTENER/deny`):
 * servers added to and removed from pools, and client networks denied on
 * listeners, without a reload. Main thread only.
 *
 * Each change is a new Model built from the running one and applied through
 * the reload path a DNS change takes (App.applyRuntime: no file is read),
 * so it reaches every serving thread, keeps what it does not touch (health,
 * counters, open connections), and applies whole or not at all: the request
 * is checked completely, then the model is built and checked against the
 * running one inside the reload queue, then applied. A removed server is a
 * removed server as a reload removes it: no new connections, its open ones
 * finish, and it leaves `/status` with its last one. A denied network is
 * refused (`rejected_acl`) on new connections; open ones are left alone.
 *
 * This object remembers what was changed, for `GET /config` (so `l4lb check
 * --diff` names what a reload would undo), and runs the deny TTLs (an
 * expiry is one more such change). Runtime changes last until the next
 * reload from the file or restart: `reset()` forgets them all when a reload
 * commits. A DNS change keeps them: it rebuilds the running model, in which
 * they are.
 */
import { isIP } from 'node:net';
import { parseAddress } from '../config/address.js';
import { parseDuration } from '../config/duration.js';
import type { ListenerModel, Model, PoolModel, ServerModel } from '../config/model.js';
import { didYouMean } from '../config/suggest.js';
import { DEFAULTS } from '../defaults.js';
import { L4lbError, describe } from '../errors.js';
import type { Logger } from '../log.js';
import { parseCidr } from '../net/cidr.js';
import type { Pool } from '../pool.js';

/** Why a runtime change was refused: the name is unknown, it clashes with what runs, or l4lb is not running. */
export type RuntimeRefusal = 'not_found' | 'conflict' | 'unavailable';

/** A runtime change the running configuration does not allow; nothing was changed. */
export class RuntimeChangeError extends L4lbError {
  constructor(
    readonly reason: RuntimeRefusal,
    message: string,
  ) {
    super('L4LB_RUNTIME_CHANGE_REFUSED', message);
  }
}

/** What a change does to the running model: the next model (null: none, e.g. a TTL refreshed) and what to remember once it is applied. */
export interface RuntimeStep {
  readonly model: Model | null;
  /** Runs right after the model is applied, before anything else queued (cannot fail). */
  readonly commit: () => void;
}

/** What runs the changes: the App. */
export interface RuntimeHost {
  /**
   * Runs `build` on the running model in the reload queue and applies the
   * model it returns as a DNS change is applied (every thread, no file
   * read), then its commit. `build` throwing changes nothing.
   */
  applyRuntime(build: (running: Model) => RuntimeStep): Promise<void>;
  /** The main thread's pools (after a change: the new ones). */
  readonly pools: ReadonlyMap<string, Pool>;
}

// ---------------------------------------------------------------------------
// Request bodies

/** One thing wrong with a request body: the field's path and what is expected there. */
export interface BodyProblem {
  readonly path: string;
  readonly message: string;
}

/** `POST /pools/POOL/servers`, checked. */
export interface ServerRequest {
  readonly name: string;
  readonly address: { readonly host: string; readonly port: number; readonly text: string };
  readonly weight: number;
  readonly backup: boolean;
}

/** `POST /listeners/LISTENER/deny` (and `DELETE`, without ttl), checked. */
export interface DenyRequest {
  /** As written by the caller. */
  readonly cidr: string;
  /** null: until the next reload. */
  readonly ttlMs: number | null;
}

const SERVER_KEYS = ['name', 'address', 'weight', 'backup'] as const;
const MAX_NAME = 200;
const MAX_WEIGHT = 256;

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function objectOf(value: unknown, example: string): Record<string, unknown> | BodyProblem[] {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  return [{ path: '(body)', message: `expected a JSON object like ${example}` }];
}

function unknownKeys(body: Record<string, unknown>, known: readonly string[]): BodyProblem[] {
  return Object.keys(body)
    .filter((k) => !known.includes(k))
    .map((k) => ({ path: k, message: `unknown key${didYouMean(k, known)}; expected ${known.join(', ')}` }));
}

/** `{"name","address","weight","backup"}`: address required (an IP address and port), the rest as in a configuration's server. */
export function parseServerBody(value: unknown): ServerRequest | BodyProblem[] {
  const body = objectOf(value, '{"address":"10.0.0.12:5432","name":"pg3","weight":1}');
  if (Array.isArray(body)) return body;
  const problems = unknownKeys(body, SERVER_KEYS);
  let address: ServerRequest['address'] | null = null;
  if (body.address === undefined) {
    problems.push({ path: 'address', message: 'required: expected host:port, like "10.0.0.12:5432"' });
  } else {
    const parsed = parseAddress(body.address);
    if (typeof parsed === 'string') problems.push({ path: 'address', message: parsed });
    else if (isIP(parsed.host) === 0) {
      // A name would need re-resolving; that is the configuration's job (dns:), not a runtime change's.
      problems.push({ path: 'address', message: `expected an IP address and port (host names only in the configuration file), got ${show(body.address)}` });
    } else address = Object.freeze({ host: parsed.host, port: parsed.port, text: parsed.text });
  }
  if (body.name !== undefined && (typeof body.name !== 'string' || body.name.length === 0 || body.name.length > MAX_NAME)) {
    problems.push({ path: 'name', message: `expected a non-empty string of at most ${MAX_NAME} characters, got ${show(body.name)}` });
  }
  if (body.weight !== undefined && !(Number.isInteger(body.weight) && (body.weight as number) >= 1 && (body.weight as number) <= MAX_WEIGHT)) {
    problems.push({ path: 'weight', message: `expected an integer from 1 to ${MAX_WEIGHT}, got ${show(body.weight)}` });
  }
  if (body.backup !== undefined && typeof body.backup !== 'boolean') {
    problems.push({ path: 'backup', message: `expected true or false, got ${show(body.backup)}` });
  }
  if (problems.length > 0 || address === null) return problems;
  return {
    name: (body.name as string | undefined) ?? address.text,
    address,
    weight: (body.weight as number | undefined) ?? DEFAULTS.weight,
    backup: (body.backup as boolean | undefined) ?? DEFAULTS.backup,
  };
}

/** `{"cidr","ttl"}` (`withTtl`: POST) or `{"cidr"}` (DELETE). */
export function parseDenyBody(value: unknown, withTtl: boolean): DenyRequest | BodyProblem[] {
  const body = objectOf(value, withTtl ? '{"cidr":"203.0.113.0/24","ttl":"1h"}' : '{"cidr":"203.0.113.0/24"}');
  if (Array.isArray(body)) return body;
  const problems = unknownKeys(body, withTtl ? ['cidr', 'ttl'] : ['cidr']);
  let cidr: string | null = null;
  if (body.cidr === undefined) problems.push({ path: 'cidr', message: 'required: expected an address or CIDR like "203.0.113.0/24"' });
  else {
    const parsed = parseCidr(body.cidr);
    if (typeof parsed === 'string') problems.push({ path: 'cidr', message: parsed });
    else cidr = parsed.text;
  }
  let ttlMs: number | null = null;
  if (withTtl && body.ttl !== undefined && body.ttl !== null) {
    const ms = parseDuration(body.ttl);
    if (typeof ms === 'string') problems.push({ path: 'ttl', message: ms });
    else if (ms === 0) problems.push({ path: 'ttl', message: 'expected a duration above 0 (leave ttl out to deny until the next reload)' });
    else ttlMs = ms;
  }
  if (problems.length > 0 || cidr === null) return problems;
  return { cidr, ttlMs };
}

/** One key per network however it is written (`10.0.0.1` and `10.0.0.1/32` are the same). */
function cidrKey(text: string): string | null {
  const parsed = parseCidr(text);
  if (typeof parsed === 'string') return null;
  return `${Buffer.from(parsed.range.bytes).toString('hex')}/${parsed.range.v6 ? parsed.range.prefix : parsed.range.prefix + 96}`;
}

// ---------------------------------------------------------------------------
// What is remembered

/** A runtime change as `GET /config` lists it (`runtime`): what a reload from the file would undo. */
export type RuntimeChange =
  | { readonly kind: 'server_added'; readonly pool: string; readonly server: string; readonly address: string; readonly weight: number; readonly backup: boolean; readonly at: string }
  | { readonly kind: 'server_removed'; readonly pool: string; readonly server: string; readonly address: string; readonly at: string }
  | { readonly kind: 'deny_added'; readonly listener: string; readonly cidr: string; readonly expires: string | null; readonly at: string };

interface ServerRecord {
  readonly kind: 'server_added' | 'server_removed';
  readonly pool: string;
  readonly server: ServerModel;
  readonly at: number;
}

interface DenyRecord {
  readonly listener: string;
  readonly cidr: string;
  readonly key: string;
  readonly at: number;
  expiresAt: number | null;
  timer: NodeJS.Timeout | undefined;
}

/** What `POST /pools/POOL/servers` answers. */
export interface ServerAdded {
  readonly pool: string;
  readonly server: string;
  readonly address: string;
  readonly weight: number;
  readonly backup: boolean;
  /** The pool ramps the server's weight up over this (0: slow start off). */
  readonly slow_start_ms: number;
}

/** What `DELETE /pools/POOL/servers/SERVER` answers. */
export interface ServerRemoved {
  readonly pool: string;
  readonly server: string;
  readonly address: string;
  /** Its open connections (every thread's), which finish; it leaves `/status` with the last one. */
  readonly open: number;
}

/** What `POST /listeners/LISTENER/deny` answers. */
export interface DenyAdded {
  readonly listener: string;
  readonly cidr: string;
  /** ISO time the deny ends; null: at the next reload. */
  readonly expires: string | null;
  /** The network was denied already at runtime: its TTL was replaced. */
  readonly refreshed: boolean;
}

function poolOf(running: Model, name: string): PoolModel {
  const p = running.pools.find((x) => x.name === name);
  if (p === undefined) throw new RuntimeChangeError('not_found', `no pool named "${name}"${didYouMean(name, running.pools.map((x) => x.name))}`);
  return p;
}

function listenerOf(running: Model, name: string): ListenerModel {
  const l = running.listeners.find((x) => x.name === name);
  if (l === undefined) throw new RuntimeChangeError('not_found', `no listener named "${name}"${didYouMean(name, running.listeners.map((x) => x.name))}`);
  return l;
}

function withPool(model: Model, pool: PoolModel): Model {
  return Object.freeze({ ...model, pools: Object.freeze(model.pools.map((p) => (p.name === pool.name ? pool : p))) });
}

function withListener(model: Model, listener: ListenerModel): Model {
  return Object.freeze({ ...model, listeners: Object.freeze(model.listeners.map((l) => (l.name === listener.name ? listener : l))) });
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

export class RuntimeChanges {
  readonly #host: RuntimeHost;
  readonly #logger: Logger;
  /** Servers added and removed since the last reload from the file, in order. */
  #servers: ServerRecord[] = [];
  /** Networks denied since the last reload from the file, by listener and network key. */
  readonly #denies = new Map<string, Map<string, DenyRecord>>();
  #closed = false;

  constructor(host: RuntimeHost, logger: Logger) {
    this.#host = host;
    this.#logger = logger;
  }

  /**
   * Adds a server to a pool as a reload adds one: probed, up until probes
   * say otherwise, with slow start when the pool has it.
   * @throws RuntimeChangeError: no such pool (not_found), the name is taken (conflict)
   */
  async addServer(poolName: string, req: ServerRequest): Promise<ServerAdded> {
    let slowStartMs = 0;
    await this.#host.applyRuntime((running) => {
      const p = poolOf(running, poolName);
      const taken = p.servers.some((s) => s.name === req.name) || (p.hostnames ?? []).some((h) => h.name === req.name);
      if (taken) throw new RuntimeChangeError('conflict', `pool "${poolName}" already has a server named "${req.name}"; remove it first, or give this one another name`);
      const server: ServerModel = Object.freeze({ name: req.name, address: req.address, weight: req.weight, backup: req.backup });
      // Appended: host-name servers keep their places (`hostnames[].at`), so DNS changes keep this one.
      const next = withPool(running, Object.freeze({ ...p, servers: Object.freeze([...p.servers, server]) }));
      return {
        model: next,
        commit: () => {
          this.#servers.push({ kind: 'server_added', pool: poolName, server, at: Date.now() });
          const pool = this.#host.pools.get(poolName);
          const s = pool?.server(req.name);
          // A fresh server ramps up as a recovered one does (and least_time starts it at the pool's median).
          if (pool !== undefined && s !== undefined && pool.model.slowStartMs > 0) {
            pool.setHealth(s, true);
            slowStartMs = pool.model.slowStartMs;
          }
        },
      };
    });
    this.#logger.info({ pool: poolName, server: req.name, address: req.address.text, weight: req.weight, backup: req.backup }, 'runtime change: server added');
    return { pool: poolName, server: req.name, address: req.address.text, weight: req.weight, backup: req.backup, slow_start_ms: slowStartMs };
  }

  /**
   * Removes a server as a reload removes one: no new connections, its open
   * ones finish. A server a host name stands for is refused (DNS would
   * bring it back; drain it instead).
   * @throws RuntimeChangeError: no such pool or server (not_found), a host name's server (conflict)
   */
  async removeServer(poolName: string, serverName: string): Promise<ServerRemoved> {
    let address = '';
    await this.#host.applyRuntime((running) => {
      const p = poolOf(running, poolName);
      const i = p.servers.findIndex((s) => s.name === serverName);
      if (i < 0) {
        throw new RuntimeChangeError('not_found', `no server named "${serverName}" in pool "${poolName}"${didYouMean(serverName, p.servers.map((s) => s.name))}`);
      }
      const hostnames = p.hostnames ?? [];
      const owner = hostnames.find((h) => i >= h.at && i < h.at + h.addresses.length);
      if (owner !== undefined) {
        throw new RuntimeChangeError(
          'conflict',
          `server "${serverName}" is an address of the host name ${owner.host} (server "${owner.name}"), which is re-resolved every dns.interval; drain it (POST .../state {"state":"drain"}) or change the configuration`,
        );
      }
      const server = p.servers[i]!;
      address = server.address.text;
      const pool: PoolModel = Object.freeze({
        ...p,
        servers: Object.freeze(p.servers.filter((_, j) => j !== i)),
        ...(p.hostnames !== undefined ? { hostnames: Object.freeze(hostnames.map((h) => (h.at > i ? Object.freeze({ ...h, at: h.at - 1 }) : h))) } : {}),
      });
      return {
        model: withPool(running, pool),
        commit: () => {
          // Taking back a runtime addition leaves nothing for a reload to undo.
          const added = this.#servers.findIndex((r) => r.kind === 'server_added' && r.pool === poolName && r.server === server);
          if (added >= 0) this.#servers.splice(added, 1);
          else this.#servers.push({ kind: 'server_removed', pool: poolName, server, at: Date.now() });
        },
      };
    });
    const removed = this.#host.pools.get(poolName)?.removedServers().find((s) => s.name === serverName);
    const open = removed?.active ?? 0;
    this.#logger.info({ pool: poolName, server: serverName, address, open }, 'runtime change: server removed');
    return { pool: poolName, server: serverName, address, open };
  }

  /**
   * Refuses new connections from `req.cidr` on a listener, until the TTL
   * passes or the next reload. Denying a network already denied at runtime
   * replaces its TTL.
   * @throws RuntimeChangeError: no such listener (not_found), the configuration denies it already (conflict)
   */
  async addDeny(listenerName: string, req: DenyRequest): Promise<DenyAdded> {
    const key = cidrKey(req.cidr)!;
    let refreshed = false;
    let expiresAt: number | null = null;
    await this.#host.applyRuntime((running) => {
      const l = listenerOf(running, listenerName);
      const now = Date.now();
      expiresAt = req.ttlMs === null ? null : now + req.ttlMs;
      const record = this.#denies.get(listenerName)?.get(key);
      if (record !== undefined) {
        refreshed = true;
        return { model: null, commit: () => this.#arm(record, expiresAt) };
      }
      if (l.deny.some((c) => cidrKey(c) === key)) {
        throw new RuntimeChangeError('conflict', `listener "${listenerName}" denies ${req.cidr} in its configuration already`);
      }
      const next = withListener(running, Object.freeze({ ...l, deny: Object.freeze([...l.deny, req.cidr]) }));
      return {
        model: next,
        commit: () => {
          const fresh: DenyRecord = { listener: listenerName, cidr: req.cidr, key, at: now, expiresAt: null, timer: undefined };
          let byKey = this.#denies.get(listenerName);
          if (byKey === undefined) this.#denies.set(listenerName, (byKey = new Map()));
          byKey.set(key, fresh);
          this.#arm(fresh, expiresAt);
        },
      };
    });
    const expires = expiresAt === null ? null : iso(expiresAt);
    this.#logger.info({ listener: listenerName, cidr: req.cidr, ttl_ms: req.ttlMs, expires, refreshed }, 'runtime change: deny added');
    return { listener: listenerName, cidr: req.cidr, expires, refreshed };
  }

  /**
   * Lifts a runtime deny. One from the configuration is refused (a reload
   * would bring it back).
   * @throws RuntimeChangeError: no such listener or runtime deny (not_found), a configured deny (conflict)
   */
  async removeDeny(listenerName: string, cidr: string): Promise<{ listener: string; cidr: string }> {
    const key = cidrKey(cidr)!;
    let text = cidr;
    await this.#host.applyRuntime((running) => {
      const l = listenerOf(running, listenerName);
      const record = this.#denies.get(listenerName)?.get(key);
      if (record === undefined) {
        if (l.deny.some((c) => cidrKey(c) === key)) {
          throw new RuntimeChangeError('conflict', `listener "${listenerName}" denies ${cidr} in its configuration, not at runtime; change the file and reload`);
        }
        throw new RuntimeChangeError('not_found', `listener "${listenerName}" has no runtime deny for ${cidr}`);
      }
      text = record.cidr;
      return this.#lift(running, l, record);
    });
    this.#logger.info({ listener: listenerName, cidr: text }, 'runtime change: deny removed');
    return { listener: listenerName, cidr: text };
  }

  /** The model without `record`'s network in the listener's deny list, and forgetting it once applied. */
  #lift(running: Model, l: ListenerModel, record: DenyRecord): RuntimeStep {
    const next = withListener(running, Object.freeze({ ...l, deny: Object.freeze(l.deny.filter((c) => c !== record.cidr)) }));
    return {
      model: next,
      commit: () => {
        clearTimeout(record.timer);
        this.#denies.get(record.listener)?.delete(record.key);
      },
    };
  }

  /** (Re)starts the TTL of a runtime deny; null: none. */
  #arm(record: DenyRecord, expiresAt: number | null): void {
    clearTimeout(record.timer);
    record.timer = undefined;
    record.expiresAt = expiresAt;
    if (expiresAt === null || this.#closed) return;
    // parseDuration caps a TTL below setTimeout's limit (about 24.8 days).
    record.timer = setTimeout(() => void this.#expire(record), Math.max(0, expiresAt - Date.now()));
  }

  async #expire(record: DenyRecord): Promise<void> {
    record.timer = undefined;
    let lifted = false;
    try {
      await this.#host.applyRuntime((running) => {
        // A reload, a DELETE or a new TTL came first: nothing to do.
        const current = this.#denies.get(record.listener)?.get(record.key);
        const l = running.listeners.find((x) => x.name === record.listener);
        if (current !== record || l === undefined || record.expiresAt === null) return { model: null, commit: () => {} };
        // Timers may fire a little early by the wall clock: wait the rest.
        if (record.expiresAt > Date.now()) return { model: null, commit: () => this.#arm(record, record.expiresAt) };
        const step = this.#lift(running, l, record);
        return { model: step.model, commit: () => ((lifted = true), step.commit()) };
      });
      if (lifted) this.#logger.info({ listener: record.listener, cidr: record.cidr }, 'runtime change: deny expired');
    } catch (err) {
      // l4lb is stopping: nothing to lift any more.
      if (!this.#closed) this.#logger.warn({ listener: record.listener, cidr: record.cidr, err: describe(err) }, 'runtime deny expiry not applied');
    }
  }

  /** Every runtime change in force, oldest first: what a reload from the file would undo. */
  list(): RuntimeChange[] {
    const servers = this.#servers.map((r): RuntimeChange => {
      const base = { pool: r.pool, server: r.server.name, address: r.server.address.text, at: iso(r.at) };
      return r.kind === 'server_added' ? { kind: r.kind, ...base, weight: r.server.weight, backup: r.server.backup } : { kind: r.kind, ...base };
    });
    const denies = [...this.#denies.values()]
      .flatMap((m) => [...m.values()])
      .sort((a, b) => a.at - b.at)
      .map((r): RuntimeChange => ({ kind: 'deny_added', listener: r.listener, cidr: r.cidr, expires: r.expiresAt === null ? null : iso(r.expiresAt), at: iso(r.at) }));
    return [...servers, ...denies];
  }

  /** A reload from the file committed: its model is the truth again, so every runtime change is forgotten. Returns how many there were. */
  reset(): number {
    const n = this.list().length;
    for (const m of this.#denies.values()) for (const r of m.values()) clearTimeout(r.timer);
    this.#denies.clear();
    this.#servers = [];
    if (n > 0) this.#logger.info({ runtime_changes: n }, 'reload undid the runtime changes');
    return n;
  }

  /** l4lb stops: no more TTL timers. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const m of this.#denies.values()) for (const r of m.values()) clearTimeout(r.timer);
  }
}
