/**
 * The configuration's word lists, each in the order error messages name
 * them. The schema's `enum`s, the loader's fallbacks and the model's types
 * are all read from here, so a new word is added in one place.
 */

/** `log.level`. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
/** `pools[].balance`. */
export const BALANCES = ['least_conn', 'source_hash', 'round_robin', 'random_two', 'least_time'] as const;
/** `pools[].least_time.measure`: what least_time averages. */
export const LEAST_TIME_MEASURES = ['connect', 'first_byte'] as const;
/** `pools[].on_server_down`. */
export const ON_SERVER_DOWN = ['keep', 'close'] as const;
/** `pools[].proxy_protocol`. */
export const PROXY_PROTOCOL_VERSIONS = ['off', 'v1', 'v2'] as const;
/** `pools[].health.kind`: how a server is probed (src/health/kinds/). */
export const HEALTH_KINDS = ['tcp', 'tls', 'http', 'postgres', 'mysql', 'redis', 'smtp'] as const;
/** `pools[].health.http.method`: requests without a body, that change nothing on the server. */
export const HEALTH_HTTP_METHODS = ['GET', 'HEAD', 'OPTIONS'] as const;
/** `listeners[].tls.mode`. */
export const TLS_MODES = ['terminate', 'passthrough'] as const;
/** `listeners[].protocol`: what the listener understands before it splices. */
export const LISTENER_PROTOCOLS = ['tcp', 'postgres'] as const;
/** `listeners[].tls.min_version`, in Node's spelling. */
export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
