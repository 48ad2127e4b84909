/** `pools[].health`: active probes of every server of a pool. */
import { DEFAULTS } from '../../defaults.js';
import { HEALTH_HTTP_METHODS, HEALTH_KINDS } from '../enums.js';
import type { HealthHttpModel, HealthKind, HealthModel, HealthPostgresModel } from '../model.js';
import { duration, integer, object, oneWordOf, text, type JsonSchema } from '../schema-nodes.js';
import { show } from '../show.js';
import { asObject, asString, intOr, oneOf, type Check } from './context.js';

/** PostgreSQL cuts names at NAMEDATALEN - 1 bytes; a longer one would name someone else. */
const MAX_PG_NAME = 63;
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

/** The schema node of `pools[].health`. */
export const healthSchema = object(
  'Active health probes of every server of the pool. Absent: a TCP connect probe with the defaults.',
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
      'How a server is probed: tcp (a connect, then send/expect if given), http (an HTTP/1.1 request; the status decides), ' +
        'postgres (a StartupMessage; an authentication request or any error but "starting up" means up). ' +
        `Default: ${DEFAULTS.healthKind}. (tls, mysql and redis probes are not available yet.)`,
      HEALTH_KINDS,
      DEFAULTS.healthKind,
    ),
    port: integer("Probe this port of each server instead of its own, e.g. 8008 for Patroni's REST API. Default: the server's port.", 1, 65535),
    send: payloadSchema('kind tcp: sent after connecting, e.g. "PING\\r\\n" for Redis.'),
    expect: payloadSchema('kind tcp: the reply must start with these bytes, e.g. "+PONG" for Redis or "220" for SMTP.'),
    http: httpSchema,
    postgres: postgresSchema,
  },
);

/** Reads `value` (the pool's `health`, at `path`) with its defaults. */
export function normaliseHealth(check: Check, path: string, value: unknown): HealthModel {
  const h = asObject(value) ?? {};
  const kind: HealthKind = oneOf(h.kind, HEALTH_KINDS, DEFAULTS.healthKind);
  // Settings of another kind would be ignored without a word: refuse them instead
  // (unless the kind itself is wrong: the schema has said so, and that is enough).
  if (kind === h.kind || h.kind === undefined) checkKindSettings(check, path, h, kind);
  return {
    intervalMs: check.timeout(`${path}.interval`, h.interval, DEFAULTS.healthIntervalMs),
    timeoutMs: check.timeout(`${path}.timeout`, h.timeout, DEFAULTS.healthTimeoutMs),
    rise: intOr(h.rise, DEFAULTS.healthRise),
    fall: intOr(h.fall, DEFAULTS.healthFall),
    kind,
    port: Number.isSafeInteger(h.port) ? (h.port as number) : null,
    send: kind === 'tcp' ? readPayload(check, `${path}.send`, h.send) : null,
    expect: kind === 'tcp' ? readPayload(check, `${path}.expect`, h.expect) : null,
    http: kind === 'http' ? readHttp(check, `${path}.http`, asObject(h.http) ?? {}) : null,
    postgres: kind === 'postgres' ? readPostgres(check, `${path}.postgres`, asObject(h.postgres) ?? {}) : null,
  };
}

/** Settings of another kind than `kind`, each a problem at its own path. */
function checkKindSettings(check: Check, path: string, h: Record<string, unknown>, kind: HealthKind): void {
  if (kind !== 'tcp') {
    for (const key of ['send', 'expect'] as const) {
      if (h[key] !== undefined) check.add(`${path}.${key}`, `only used with kind: tcp; kind ${kind} sends its own request`);
    }
  }
  for (const key of ['http', 'postgres'] as const) {
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
