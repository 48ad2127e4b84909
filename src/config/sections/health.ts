/** `pools[].health`: active probes of every server of a pool. */
import { DEFAULTS } from '../../defaults.js';
import { HEALTH_HTTP_METHODS, HEALTH_KINDS } from '../enums.js';
import type { HealthHttpModel, HealthKind, HealthModel, HealthMysqlModel, HealthPostgresModel, HealthRedisModel, ListenerModel, PoolModel } from '../model.js';
import { duration, filePath, integer, object, oneWordOf, text, type JsonSchema } from '../schema-nodes.js';
import { readSecret } from '../secret-file.js';
import { show } from '../show.js';
import { asObject, asString, intOr, oneOf, type Check } from './context.js';

/** PostgreSQL cuts names at NAMEDATALEN - 1 bytes; a longer one would name someone else. */
const MAX_PG_NAME = 63;
/** MariaDB's longest user name (MySQL 8 allows 32). */
const MAX_MYSQL_USER = 80;
/** A password file holds one line; anything larger is a mistake (a key, a certificate). */
const MAX_PASSWORD_FILE_BYTES = 4096;
/** A request target or Host header: printable ASCII, no spaces (they would split the request line). */
const PRINTABLE = /^[\x21-\x7e]+$/;

/** A probe payload: text as written, or `hex:` followed by hex digits for binary protocols. */
function payloadSchema(description: string): JsonSchema {
  return {
    description: `${description} Text as written (YAML escapes like "\\r\\n" apply), or "hex:" followed by hex digits for raw bytes.`,
    type: 'string',
    minLength: 1,
    maxLength: 1024,
  };
}

const httpSchema = object('kind http: the request sent and the statuses that mean up (Patroni: GET /primary on port 8008).', {
  method: oneWordOf(`Request method: ${HEALTH_HTTP_METHODS.join(', ')}. Default: ${DEFAULTS.healthHttpMethod}.`, HEALTH_HTTP_METHODS, DEFAULTS.healthHttpMethod),
  path: { ...text(`Request path, starting with "/", e.g. "/primary". Default: "${DEFAULTS.healthHttpPath}".`, 1024), default: DEFAULTS.healthHttpPath },
  expect_status: {
    description: `Statuses that mean up, each 100 to 599. Default: [${DEFAULTS.healthHttpExpectStatus.join(', ')}].`,
    type: 'array',
    minItems: 1,
    maxItems: 32,
    items: { ...integer('An HTTP status code.', 100, 599), title: 'status code' },
    default: [...DEFAULTS.healthHttpExpectStatus],
  },
  host: text("The Host header. Default: the server's host as written in its address.", 255),
});

const postgresSchema = object(
  'kind postgres: whom the StartupMessage names. Create the role (it needs no rights) or a failed login is logged by the server.',
  {
    user: { ...text(`Role named in the StartupMessage. Default: ${DEFAULTS.healthPostgresUser}.`, MAX_PG_NAME), default: DEFAULTS.healthPostgresUser },
    database: text('Database named in the StartupMessage. Default: the same as user.', MAX_PG_NAME),
  },
);

const mysqlSchema = object(
  'kind mysql: the login. Without user the probe reads the greeting and closes, which MariaDB and MySQL log as an aborted connection.',
  {
    user: text(
      "Log in as this user, without a password, then send COM_QUIT: nothing is logged. Create it with no rights: CREATE USER 'l4lb_probe'@'10.0.0.5'.",
      MAX_MYSQL_USER,
    ),
  },
);

const redisSchema = object('kind redis: AUTH before PING.', {
  password_file: filePath('File holding the password (one line) sent with AUTH; read when the configuration loads, never logged. Default: no AUTH.'),
});

/** The schema node of `pools[].health`. */
export const healthSchema = object(
  'Active health probes of every server of the pool. Absent: probes of the default kind (see kind) with the defaults.',
  {
    interval: duration('Time between probes of one server.', DEFAULTS.healthIntervalMs),
    timeout: duration('A probe whose conversation has not ended within this time fails.', DEFAULTS.healthTimeoutMs),
    rise: integer(
      `Consecutive successful probes that mark a down server up, 1 to 100. Default: ${DEFAULTS.healthRise}.`,
      1,
      100,
      DEFAULTS.healthRise,
    ),
    fall: integer(
      `Consecutive failed probes (or failed client connects) that mark an up server down, 1 to 100. Default: ${DEFAULTS.healthFall}.`,
      1,
      100,
      DEFAULTS.healthFall,
    ),
    kind: oneWordOf(
      'How a server is probed: tcp (a connect, then send/expect if given), tls (a full handshake, then close_notify), ' +
        'http (an HTTP/1.1 request; the status decides), postgres (a StartupMessage; an authentication request or any error but "starting up" means up), ' +
        'mysql (the server greeting; with mysql.user a login and COM_QUIT), redis (AUTH if configured, PING, QUIT), ' +
        'smtp (the greeting of a server that speaks first must start with expect, default "220"; then QUIT). Every kind ends its conversation ' +
        'as its protocol expects, and the timeout bounds it all, so a frozen server fails. ' +
        `Default: ${DEFAULTS.healthKindTls} for pools whose servers speak TLS from the first byte (the pool has tls, or a passthrough listener ` +
        `reaches it and no terminate listener does; never a pool a protocol postgres listener reaches), unless send or expect is given; ` +
        `else ${DEFAULTS.healthKind}. On such pools kinds http, redis and smtp talk TLS too (on the server's own port).`,
      HEALTH_KINDS,
    ),
    port: integer("Probe this port of each server instead of its own, e.g. 8008 for Patroni's REST API. Default: the server's port.", 1, 65535),
    send: payloadSchema('kind tcp: sent after connecting, e.g. "PING\\r\\n" for Redis.'),
    expect: payloadSchema(
      'kind tcp: the reply (or, without send, the greeting) must start with these bytes, e.g. "+PONG" for Redis. ' +
        `kind smtp: the greeting must start with these bytes; default "${DEFAULTS.healthSmtpExpect}".`,
    ),
    http: httpSchema,
    postgres: postgresSchema,
    mysql: mysqlSchema,
    redis: redisSchema,
  },
);

/**
 * Health models whose kind was left to the default (no kind, no send or
 * expect): {@link settleServersTls} makes them tls where the servers speak
 * TLS. Kept beside the models, so the model itself carries only the outcome.
 */
const kindDefaulted = new WeakSet<HealthModel>();

/**
 * Reads `value` (the pool's `health`, at `path`) with its defaults. The
 * default kind and `serversTls` depend on the listeners: {@link
 * settleServersTls} completes them once those are read.
 */
export function normaliseHealth(check: Check, path: string, value: unknown): HealthModel {
  const h = asObject(value) ?? {};
  const kind: HealthKind = oneOf(h.kind, HEALTH_KINDS, DEFAULTS.healthKind);
  // Settings of another kind would be ignored without a word: refuse them instead
  // (unless the kind itself is wrong: the schema has said so, and that is enough).
  if (kind === h.kind || h.kind === undefined) checkKindSettings(check, path, h, kind);
  const health: HealthModel = {
    intervalMs: check.timeout(`${path}.interval`, h.interval, DEFAULTS.healthIntervalMs),
    timeoutMs: check.timeout(`${path}.timeout`, h.timeout, DEFAULTS.healthTimeoutMs),
    rise: intOr(h.rise, DEFAULTS.healthRise),
    fall: intOr(h.fall, DEFAULTS.healthFall),
    kind,
    port: Number.isSafeInteger(h.port) ? (h.port as number) : null,
    send: kind === 'tcp' ? readPayload(check, `${path}.send`, h.send) : null,
    expect: kind === 'tcp' || kind === 'smtp' ? readPayload(check, `${path}.expect`, h.expect) : null,
    http: kind === 'http' ? readHttp(check, `${path}.http`, asObject(h.http) ?? {}) : null,
    postgres: kind === 'postgres' ? readPostgres(check, `${path}.postgres`, asObject(h.postgres) ?? {}) : null,
    mysql: kind === 'mysql' ? readMysql(check, `${path}.mysql`, asObject(h.mysql) ?? {}) : null,
    redis: kind === 'redis' ? readRedis(check, `${path}.redis`, asObject(h.redis) ?? {}) : null,
    serversTls: false,
  };
  // send/expect describe a tcp conversation: written without a kind, they keep it tcp.
  if (h.kind === undefined && h.send === undefined && h.expect === undefined) kindDefaulted.add(health);
  return health;
}

/**
 * Once listeners and pools are both read: marks the pools whose servers
 * speak TLS from the first byte (the pool has `tls`, or a passthrough
 * listener reaches it by default or by a route) and gives those whose kind
 * was left to the default the tls kind, so probes end with a close_notify
 * instead of a bare connect the server logs as a failed handshake. Left
 * out: a pool that a `protocol: postgres` listener reaches (its servers'
 * TLS begins after an SSLRequest, which a plain handshake does not send),
 * and a pool without `tls` that a terminate listener also reaches (that
 * listener sends its servers plaintext).
 */
export function settleServersTls(pools: PoolModel[], listeners: readonly ListenerModel[]): void {
  const passthrough = new Set<string>();
  const terminate = new Set<string>();
  const sslRequest = new Set<string>();
  for (const l of listeners) {
    for (const name of [l.pool, ...l.routes.map((r) => r.pool)]) {
      if (l.protocol === 'postgres') sslRequest.add(name);
      else if (l.tls?.mode === 'passthrough') passthrough.add(name);
      else if (l.tls?.mode === 'terminate') terminate.add(name);
    }
  }
  for (const [i, pool] of pools.entries()) {
    const reencrypts = pool.tls !== null;
    const passedThrough = passthrough.has(pool.name) && !terminate.has(pool.name);
    const serversTls = (reencrypts || passedThrough) && !sslRequest.has(pool.name);
    const kind = serversTls && kindDefaulted.has(pool.health) ? DEFAULTS.healthKindTls : pool.health.kind;
    // Same servers array and tls model: what was resolved or checked on the old object stays.
    pools[i] = { ...pool, health: { ...pool.health, kind, serversTls } };
  }
}

/** Settings of another kind than `kind`, each a problem at its own path. */
function checkKindSettings(check: Check, path: string, h: Record<string, unknown>, kind: HealthKind): void {
  if (kind !== 'tcp' && h.send !== undefined) check.add(`${path}.send`, `only used with kind: tcp; kind ${kind} sends its own request`);
  if (kind !== 'tcp' && kind !== 'smtp' && h.expect !== undefined) {
    check.add(`${path}.expect`, `only used with kinds tcp and smtp; kind ${kind} judges its own reply`);
  }
  for (const key of ['http', 'postgres', 'mysql', 'redis'] as const) {
    if (h[key] !== undefined && kind !== key) check.add(`${path}.${key}`, `only used with kind: ${key}, but kind is ${kind}`);
  }
}

/** A probe payload: text, or `hex:` and an even number of hex digits. */
function readPayload(check: Check, path: string, value: unknown): Buffer | null {
  if (typeof value !== 'string' || value === '') return null;
  if (!value.startsWith('hex:')) return Buffer.from(value, 'utf8');
  const digits = value.slice(4).replace(/\s+/g, '');
  if (digits.length === 0 || digits.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(digits)) {
    check.add(path, `expected "hex:" followed by pairs of hex digits, got ${show(value)}`);
    return null;
  }
  return Buffer.from(digits, 'hex');
}

function readHttp(check: Check, path: string, o: Record<string, unknown>): HealthHttpModel {
  const target = asString(o.path) ?? DEFAULTS.healthHttpPath;
  if (!target.startsWith('/') || !PRINTABLE.test(target)) {
    check.add(`${path}.path`, `expected a path starting with "/", in printable ASCII without spaces (percent-encode the rest), got ${show(target)}`);
  }
  const host = asString(o.host) ?? null;
  if (host !== null && !PRINTABLE.test(host)) {
    check.add(`${path}.host`, `expected a host name (and optional :port) in printable ASCII without spaces, got ${show(host)}`);
  }
  const statuses = Array.isArray(o.expect_status) ? o.expect_status.filter((s): s is number => Number.isSafeInteger(s)) : [];
  return {
    method: oneOf(o.method, HEALTH_HTTP_METHODS, DEFAULTS.healthHttpMethod),
    path: target,
    expectStatus: statuses.length > 0 ? statuses : [...DEFAULTS.healthHttpExpectStatus],
    host,
  };
}

function readPostgres(check: Check, path: string, o: Record<string, unknown>): HealthPostgresModel {
  const user = asString(o.user) ?? DEFAULTS.healthPostgresUser;
  const database = asString(o.database);
  // The StartupMessage ends each value with a NUL: one inside would cut the name short.
  if (user.includes('\0')) check.add(`${path}.user`, 'must not contain a NUL character');
  if (database?.includes('\0') === true) check.add(`${path}.database`, 'must not contain a NUL character');
  return { user, database: database ?? user };
}

function readMysql(check: Check, path: string, o: Record<string, unknown>): HealthMysqlModel {
  const user = asString(o.user) ?? null;
  // The HandshakeResponse ends the name with a NUL: one inside would cut it short.
  if (user?.includes('\0') === true) check.add(`${path}.user`, 'must not contain a NUL character');
  return { user };
}

/**
 * The password is read now, through the secret-file reader (a root-only file
 * stays usable after the privilege drop), and kept as a Buffer: the model's
 * Buffers are redacted wherever the model is shown. Messages name the file,
 * never its content.
 */
function readRedis(check: Check, path: string, o: Record<string, unknown>): HealthRedisModel {
  const file = asString(o.password_file);
  const model: { passwordFile: string | null; password: Buffer | null } = { passwordFile: file ?? null, password: null };
  if (file === undefined || file === '') return model;
  const at = `${path}.password_file`;
  check.wait(
    readSecret(file, { maxBytes: MAX_PASSWORD_FILE_BYTES }).then(
      ({ data, stats }) => {
        // One line; the newline an editor or `echo` adds is not part of it.
        const end = data.length - (data.at(-1) === 0x0a ? (data.at(-2) === 0x0d ? 2 : 1) : 0);
        const password = data.subarray(0, end);
        if (password.length === 0) check.add(at, `password file ${file} is empty`);
        else if (password.includes(0x0a) || password.includes(0x0d)) check.add(at, `password file ${file} must hold the password on one line`);
        else model.password = Buffer.from(password);
        data.fill(0);
        if (stats !== null && (stats.mode & 0o004) !== 0) check.warnings.push(`${at}: ${file} is readable by every user`);
      },
      (err: NodeJS.ErrnoException) => {
        const why =
          err.code === 'ENOENT'
            ? 'no such file'
            : err.code === 'L4LB_SECRET_NOT_FILE'
              ? 'not a regular file'
              : err.code === 'L4LB_SECRET_TOO_LARGE'
                ? `larger than ${MAX_PASSWORD_FILE_BYTES} bytes; it should hold only the password`
                : (err.code ?? 'unreadable');
        check.add(at, `cannot read ${file}: ${why}`);
      },
    ),
  );
  return model;
}
