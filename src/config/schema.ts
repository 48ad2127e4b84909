/**
 * The configuration file's JSON Schema — the single list of accepted keys,
 * their types and their documentation — and the TypeScript types of a file
 * that passes it. A key appears here only once l4lb acts on it.
 */

import { DEFAULTS } from '../defaults.js';
import { DEFAULT_IPV6_PREFIX } from '../protect/per-source.js';
import { DURATION_PATTERN, MAX_DURATION_MS, formatDuration } from './duration.js';
import type { Balance, LogLevel } from './model.js';

/** In the order error messages list them. */
export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error'];
/** In the order error messages list them. */
export const BALANCES: readonly Balance[] = ['least_conn', 'source_hash', 'round_robin', 'random_two'];

/** A duration as written: `"3s"`, `"1.5m"`, or integer milliseconds. */
export type RawDuration = string | number;

/** `log:` as written. */
export interface RawLog {
  level?: LogLevel;
  access?: boolean;
}

/** One entry of `listeners:` as written. */
export interface RawListener {
  name: string;
  bind: string;
  pool: string;
  timeouts?: { idle?: RawDuration };
}

/** One entry of a pool's `servers:` as written. */
export interface RawServer {
  name?: string;
  address: string;
  weight?: number;
  backup?: boolean;
}

/** One entry of `pools:` as written. */
export interface RawPool {
  name: string;
  balance?: Balance;
  retries?: number;
  timeouts?: { connect?: RawDuration; idle?: RawDuration };
  servers: RawServer[];
}

/** `admin:` as written. */
export interface RawAdmin {
  listen?: string;
  token_file?: string;
}

/** A configuration file that has passed {@link configSchema}. */
export interface RawConfig {
  admin?: RawAdmin;
  log?: RawLog;
  listeners: RawListener[];
  pools: RawPool[];
}

/** A JSON Schema node; loose on purpose, ajv checks the schema itself at compile time. */
export type JsonSchema = { [keyword: string]: unknown };

/**
 * Values whose form is checked by a parser of ours rather than by the schema
 * alone. The loader words every schema error on these nodes the way the
 * parser would, so `idle: true` and `idle: "3x"` read alike.
 */
export const VALUE_KINDS = new WeakMap<object, 'duration' | 'address' | 'bind'>();

function kind<T extends JsonSchema>(k: 'duration' | 'address' | 'bind', schema: T): T {
  VALUE_KINDS.set(schema, k);
  return schema;
}

function duration(description: string, defaultMs: number): JsonSchema {
  const text = formatDuration(defaultMs);
  return kind('duration', {
    description: `${description} A duration like "500ms", "3s", "5m", "1h", or integer milliseconds. Default: ${text}.`,
    type: ['string', 'integer'],
    pattern: DURATION_PATTERN,
    minimum: 0,
    maximum: MAX_DURATION_MS,
    default: text,
  });
}

function name(description: string): JsonSchema {
  return { description, type: 'string', minLength: 1, maxLength: 200 };
}

/** Object nodes reject unknown keys, so a misspelled key is an error, not a silent default. */
function object(description: string, properties: Record<string, JsonSchema>, required: string[] = [], title?: string): JsonSchema {
  const node: JsonSchema = title === undefined ? {} : { title };
  Object.assign(node, { description, type: 'object', additionalProperties: false, properties });
  if (required.length > 0) node.required = required;
  return node;
}

const server = object(
  'A backend server.',
  {
    name: name('Unique within the pool; used in logs, metrics and the admin API. Default: the address as written.'),
    address: kind('address', {
      description: 'Where to connect: "host:port" or "[IPv6]:port". Hostnames are resolved when the configuration is loaded.',
      type: 'string',
      maxLength: 300,
    }),
    weight: {
      description: `Relative share of new connections, 1 to 256. Default: ${DEFAULTS.weight}.`,
      type: 'integer',
      minimum: 1,
      maximum: 256,
      default: DEFAULTS.weight,
    },
    backup: {
      description: 'Used only when no primary (non-backup) server of the pool is up. Default: false.',
      type: 'boolean',
      default: false,
    },
  },
  ['address'],
  'server',
);

/** A probe payload: text as written, or `hex:` followed by hex digits for binary protocols. */
function payload(description: string): JsonSchema {
  return {
    description: `${description} Text as written (YAML escapes like "\\r\\n" apply), or "hex:" followed by hex digits for raw bytes.`,
    type: 'string',
    minLength: 1,
    maxLength: 1024,
  };
}

const health = object(
  'Active health probes of every server of the pool. Absent: a TCP connect probe with the defaults.',
  {
    interval: duration('Time between probes of one server.', DEFAULTS.healthIntervalMs),
    timeout: duration('A probe that has not succeeded within this time fails.', DEFAULTS.healthTimeoutMs),
    rise: {
      description: `Consecutive successful probes that mark a down server up, 1 to 100. Default: ${DEFAULTS.healthRise}.`,
      type: 'integer',
      minimum: 1,
      maximum: 100,
      default: DEFAULTS.healthRise,
    },
    fall: {
      description: `Consecutive failed probes (or failed client connects) that mark an up server down, 1 to 100. Default: ${DEFAULTS.healthFall}.`,
      type: 'integer',
      minimum: 1,
      maximum: 100,
      default: DEFAULTS.healthFall,
    },
    send: payload('Sent after connecting, e.g. "PING\\r\\n" for Redis.'),
    expect: payload('The reply must start with these bytes, e.g. "+PONG" for Redis or "220" for SMTP.'),
  },
);

const pool = object(
  'A group of servers that share one balancing algorithm.',
  {
    name: name('Unique pool name, referred to by listeners.'),
    balance: {
      description:
        'How a server is picked: least_conn (fewest active connections per weight), source_hash (consistent hash of the client IP), ' +
        `round_robin (in turn, by weight), random_two (the less loaded of two random servers). Default: ${DEFAULTS.balance}.`,
      enum: [...BALANCES],
      default: DEFAULTS.balance,
    },
    retries: {
      description: `How many further servers to try after a failed connect, 0 to 10. Default: ${DEFAULTS.retries}.`,
      type: 'integer',
      minimum: 0,
      maximum: 10,
      default: DEFAULTS.retries,
    },
    timeouts: object('Timeouts for connections to this pool\'s servers.', {
      connect: duration('How long a connect to a server may take before it counts as failed.', DEFAULTS.connectTimeoutMs),
      idle: duration('A connection with no traffic in either direction for this long is closed.', DEFAULTS.idleTimeoutMs),
    }),
    health,
    slow_start: kind('duration', {
      description:
        'A server that comes back up ramps its share of new connections from about 10% to 100% over this time ' +
        '(least_conn, round_robin, random_two; source_hash keeps its mapping stable instead). 0 = off. Default: 0.',
      type: ['string', 'integer'],
      pattern: DURATION_PATTERN,
      minimum: 0,
      maximum: MAX_DURATION_MS,
      default: 0,
    }),
    on_server_down: {
      description:
        'What happens to the open connections of a server marked down: keep (they continue) or close ' +
        `(clients reconnect elsewhere, e.g. to a new database primary). Default: ${DEFAULTS.onServerDown}.`,
      enum: ['keep', 'close'],
      default: DEFAULTS.onServerDown,
    },
    tls: object('Encrypt connections to this pool\'s servers (re-encryption). Absent: plain TCP.', {
      servername: {
        description:
          'Server name sent (SNI) and verified in the server\'s certificate. Default: each server\'s host name as written in its address; ' +
          'for an IP address no SNI is sent and the IP is verified.',
        type: 'string',
        minLength: 1,
        maxLength: 253,
      },
      ca: { description: 'PEM file of the CA(s) that sign the servers\' certificates. Default: the system\'s trusted CAs.', type: 'string', minLength: 1, maxLength: 4096 },
      verify: {
        description: 'Verify the server certificate. false must be explicit and logs a warning at start. Default: true.',
        type: 'boolean',
        default: true,
      },
      cert: { description: 'PEM client certificate for servers that require one (with key).', type: 'string', minLength: 1, maxLength: 4096 },
      key: { description: 'PEM private key of the client certificate (with cert).', type: 'string', minLength: 1, maxLength: 4096 },
    }),
    proxy_protocol: {
      description:
        'Send a PROXY protocol header to each server so it sees the real client address: off, v1 (text) or v2 (binary, ' +
        'with the TLS server name and details). Health probes send one too (v2 LOCAL, or v1 with the probe\'s own addresses). Default: off.',
      enum: ['off', 'v1', 'v2'],
      default: 'off',
    },
    servers: {
      description: 'The servers of this pool; at least one.',
      type: 'array',
      minItems: 1,
      items: server,
    },
  },
  ['name', 'servers'],
  'pool',
);

const listener = object(
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
    accept_proxy: {
      description:
        'Every connection must begin with a PROXY protocol v1 or v2 header from an upstream balancer (cloud NLB, HAProxy); ' +
        'its client address is then used everywhere. Connections without a valid header are closed. Needs trusted_proxies. Default: false.',
      type: 'boolean',
      default: false,
    },
    allow: {
      description: 'Client addresses (CIDR, IPv4 or IPv6) allowed to connect; others are closed before any byte is read. Default: everyone.',
      type: 'array',
      maxItems: 10000,
      items: { type: 'string', maxLength: 64 },
    },
    deny: {
      description: 'Client addresses (CIDR) refused at once; deny wins over allow. With accept_proxy, the address from the PROXY header is checked.',
      type: 'array',
      maxItems: 10000,
      items: { type: 'string', maxLength: 64 },
    },
    max_connections: {
      description: 'Open connections on this listener; the excess is closed at once. Default: unlimited.',
      type: 'integer',
      minimum: 1,
      maximum: 10000000,
    },
    per_source: object('Limits per client IP address; the excess is closed at once.', {
      max_connections: {
        description: 'Concurrent connections from one client IP. Default: unlimited.',
        type: 'integer',
        minimum: 1,
        maximum: 10000000,
      },
      connect_rate: {
        description: 'New connections per second from one client IP (a token bucket, bursts up to one second\'s worth). Default: unlimited.',
        type: 'integer',
        minimum: 1,
        maximum: 10000000,
      },
      ipv6_prefix: {
        description: `IPv6 clients are counted per network of this prefix length (a host often holds a whole /64); 128 = per address. IPv4 clients are counted per address. Default: ${DEFAULT_IPV6_PREFIX}.`,
        type: 'integer',
        minimum: 1,
        maximum: 128,
        default: DEFAULT_IPV6_PREFIX,
      },
    }),
    tls: object(
      'TLS on this listener. Absent: plain TCP.',
      {
        mode: {
          description: 'terminate: decrypt here (certs required); passthrough: read the ClientHello\'s server name to route, forward the encrypted bytes untouched.',
          enum: ['terminate', 'passthrough'],
        },
        certs: {
          description: 'terminate: certificate and key files (PEM). The one whose names match the client\'s SNI is served; the first is the default.',
          type: 'array',
          minItems: 1,
          maxItems: 1000,
          items: object('A certificate (chain) and its private key.', {
            cert: { description: 'PEM certificate file, leaf first.', type: 'string', minLength: 1, maxLength: 4096 },
            key: { description: 'PEM private key file (unencrypted).', type: 'string', minLength: 1, maxLength: 4096 },
          }, ['cert', 'key']),
        },
        min_version: { description: 'Lowest TLS version accepted. Default: TLSv1.2.', enum: ['TLSv1.2', 'TLSv1.3'], default: 'TLSv1.2' },
        ciphers: { description: 'OpenSSL cipher list for TLS 1.2. Default: Node\'s.', type: 'string', minLength: 1, maxLength: 4096 },
        alpn: {
          description: 'terminate: protocols offered in ALPN, in order of preference, e.g. [postgresql].',
          type: 'array',
          maxItems: 32,
          items: { type: 'string', minLength: 1, maxLength: 255 },
        },
        client_ca: {
          description: 'terminate: PEM file of the CA(s) for mutual TLS; a client certificate signed by them is then required.',
          type: 'string',
          minLength: 1,
          maxLength: 4096,
        },
        strict_sni: {
          description:
            'terminate: refuse a ClientHello whose server name (SNI) matches no certificate, or that has none, instead of serving ' +
            'the default certificate (HAProxy strict-sni). Refused connections end as tls_error. Default: false.',
          type: 'boolean',
          default: false,
        },
        session_tickets: {
          description:
            'terminate: resume TLS sessions with tickets. The key is per listener, kept across reloads, replaced every ' +
            `${formatDuration(DEFAULTS.ticketKeyRotationMs)} (the previous one still decrypts for ${formatDuration(DEFAULTS.tlsSessionLifetimeMs)}, ` +
            'the session lifetime). false: no tickets and no resumption (TLS 1.2 and 1.3). Default: true.',
          type: 'boolean',
          default: true,
        },
      },
      ['mode'],
    ),
    routes: {
      description: 'SNI routing (needs tls): the first route whose sni matches sends the connection to its pool; no match uses the listener\'s pool.',
      type: 'array',
      maxItems: 10000,
      items: object('One route.', {
        sni: { description: 'An exact server name, or "*.suffix" for any name ending in ".suffix". Case-insensitive.', type: 'string', minLength: 1, maxLength: 255 },
        pool: name('The pool that serves matching connections.'),
      }, ['sni', 'pool']),
    },
    trusted_proxies: {
      description:
        'Required (non-empty) with accept_proxy: the addresses (CIDR) allowed to send a PROXY header; others are closed before any byte is read. ' +
        '["0.0.0.0/0", "::/0"] trusts every peer.',
      type: 'array',
      maxItems: 1000,
      items: { type: 'string', maxLength: 64 },
    },
    timeouts: object('Timeouts for client connections on this listener.', {
      idle: duration('A client connection with no traffic in either direction for this long is closed.', DEFAULTS.idleTimeoutMs),
      handshake: duration('Everything before the data flows (PROXY header, TLS handshake) must finish within this.', DEFAULTS.handshakeTimeoutMs),
    }),
  },
  ['name', 'bind', 'pool'],
  'listener',
);

const admin = object(
  'The HTTP admin server: GET /healthz, /metrics (Prometheus), /status (JSON) and / (an HTML status page), ' +
    'and POST /pools/POOL/servers/SERVER/state to drain, ready or maint a server. Absent: no admin server.',
  {
    listen: kind('bind', {
      description:
        'Address of the admin server: "host:port" or "[IPv6]:port". Status and metrics need no token, so keep it on loopback ' +
        `or a private network (a warning is logged otherwise when there is no token_file). Default: ${DEFAULTS.adminListen}.`,
      type: 'string',
      maxLength: 300,
      default: DEFAULTS.adminListen,
    }),
    token_file: {
      description:
        'File holding the bearer token that state changes need (Authorization: Bearer TOKEN); surrounding whitespace is ignored. ' +
        'Read when the configuration is loaded and when the admin server starts; a relative path is relative to the working directory. ' +
        'Absent: state changes are refused.',
      type: 'string',
      minLength: 1,
      maxLength: 4096,
    },
  },
);

/** The JSON Schema of the configuration file (draft-07). */
export const configSchema: JsonSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'l4lb configuration',
  ...object(
    'Configuration of l4lb, a Layer 4 TCP load balancer. Written in YAML (.yaml, .yml) or JSON (.json).',
    {
      admin,
      log: object('Logging (JSON lines on stdout).', {
        level: {
          description: `Least severe level written: trace, debug, info, warn or error. Default: ${DEFAULTS.logLevel}.`,
          enum: [...LOG_LEVELS],
          default: DEFAULTS.logLevel,
        },
        access: {
          description: `Write one JSON line per finished connection. Default: ${DEFAULTS.accessLog}.`,
          type: 'boolean',
          default: DEFAULTS.accessLog,
        },
      }),
      user: {
        description:
          'Drop privileges to this user once every listener and the admin server are bound (for runs without systemd; ' +
          'under systemd use User= instead). Certificate files must stay readable by it for reloads. Default: keep the starting user.',
        type: 'string',
        minLength: 1,
        maxLength: 64,
      },
      group: {
        description: 'With user: the group to drop to. Default: the user\'s primary group.',
        type: 'string',
        minLength: 1,
        maxLength: 64,
      },
      listeners: {
        description: 'Where l4lb accepts connections; at least one.',
        type: 'array',
        minItems: 1,
        items: listener,
      },
      pools: {
        description: 'Groups of backend servers; at least one.',
        type: 'array',
        minItems: 1,
        items: pool,
      },
    },
    ['listeners', 'pools'],
  ),
};
