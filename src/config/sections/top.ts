/** The top-level settings besides listeners, pools and admin: `log`, `workers`, `grace`, `dns`, `user`, `group`. */
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { DEFAULTS } from '../../defaults.js';
import { parseAddress } from '../address.js';
import { LOG_LEVELS } from '../enums.js';
import type { Model } from '../model.js';
import { duration, flag, object, oneWordOf, text } from '../schema-nodes.js';
import { asObject, boolOr, oneOf, type Check, type Obj } from './context.js';

/** The schema node of `log`. */
export const logSchema = object('Logging (JSON lines on stdout).', {
  level: oneWordOf(`Least severe level written: trace, debug, info, warn or error. Default: ${DEFAULTS.logLevel}.`, LOG_LEVELS, DEFAULTS.logLevel),
  access: flag('Write one JSON line per finished connection.', DEFAULTS.accessLog),
});

/** Most worker threads: far more than any machine's cores that l4lb would use well. */
export const MAX_WORKERS = 256;

/** The schema node of `workers`. */
export const workersSchema = {
  description:
    `Threads that serve traffic, each accepting on every listener (the kernel spreads new connections): a number from 1 to ${MAX_WORKERS}, ` +
    'or "auto" for the available cores (HAProxy nbthread, NGINX worker_processes). Default: auto.',
  type: ['integer', 'string'],
  minimum: 1,
  maximum: MAX_WORKERS,
  pattern: '^auto$',
  default: 'auto',
};

/** Reads `workers:`; `auto` (the default) is the cores this process may use. */
export function normaliseWorkers(value: unknown): number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 && value <= MAX_WORKERS ? value : Math.min(MAX_WORKERS, availableParallelism());
}

/** The schema node of `grace`. */
export const graceSchema = duration(
  'After SIGTERM/SIGINT: keep accepting new connections this long while GET /ready answers 503, so that a VRRP or BGP health check ' +
    '(keepalived, ExaBGP) withdraws the address before l4lb stops accepting; then the drain (--drain-timeout). A second signal cuts it short (HAProxy grace).',
  DEFAULTS.graceMs,
);

/** Reads `grace:` (0: the drain starts at once). */
export function normaliseGrace(check: Check, value: unknown): number {
  return check.duration('grace', value, DEFAULTS.graceMs);
}

/** The schema node of `dns`. */
export const dnsSchema = object('How server host names are re-resolved (a name with several addresses is one server per address).', {
  servers: {
    description: 'DNS servers to ask ("ip" or "ip:port", "[v6]:port") instead of the system\'s resolver (/etc/hosts, resolv.conf). Default: the system\'s.',
    type: 'array',
    maxItems: 8,
    items: { type: 'string', minLength: 1, maxLength: 64 },
  },
  interval: duration(
    'Each host name is asked again this often (sooner when the answer\'s TTL is shorter, but not more often than every second). ' +
      'A failed or empty answer keeps the last good addresses.',
    DEFAULTS.dnsIntervalMs,
  ),
});

/** Reads `dns:`; each server must be an IP address, with an optional port. */
export function normaliseDns(check: Check, value: unknown): NonNullable<Model['dns']> {
  const o = asObject(value) ?? {};
  const servers: string[] = [];
  for (const [i, item] of (Array.isArray(o.servers) ? o.servers : []).entries()) {
    if (typeof item !== 'string') continue; // the schema has reported it
    const ok = isIP(item) !== 0 ? item : parseAddress(item);
    if (typeof ok !== 'string') {
      if (isIP(ok.host) === 0) check.add(`dns.servers[${i}]`, `expected an IP address (a DNS server is not looked up by name), got ${JSON.stringify(item)}`);
      else servers.push(item);
    } else if (ok === item) servers.push(item);
    else check.add(`dns.servers[${i}]`, `expected "ip", "ip:port" or "[v6]:port": ${ok}`);
  }
  return { servers, intervalMs: check.timeout('dns.interval', o.interval, DEFAULTS.dnsIntervalMs) };
}

/** The schema node of `user`. */
export const userSchema = text(
  'Drop privileges to this user once every listener and the admin server are bound (for runs without systemd; ' +
    'under systemd use User= instead). Certificate files must stay readable by it for reloads. Default: keep the starting user.',
  64,
);

/** The schema node of `group`. */
export const groupSchema = text('With user: the group to drop to. Default: the user\'s primary group.', 64);

/** Reads `log:` with its defaults. */
export function normaliseLog(value: unknown): Model['log'] {
  const log = asObject(value) ?? {};
  return {
    level: oneOf(log.level, LOG_LEVELS, DEFAULTS.logLevel),
    access: boolOr(log.access, DEFAULTS.accessLog),
  };
}

/** Reads `user:` and `group:` (null: stay as started); a group alone is a problem. */
export function normalisePrivilegeDrop(check: Check, root: Obj): Pick<Model, 'user' | 'group'> {
  if (root.group !== undefined && root.user === undefined) check.add('group', 'needs user: privileges are dropped to a user (and this group)');
  return {
    user: typeof root.user === 'string' ? root.user : null,
    group: typeof root.group === 'string' ? root.group : null,
  };
}
