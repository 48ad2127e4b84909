/**
 * Coded errors. Callers branch on `code`, never on message text; the access
 * log's `termination` and metric labels derive from these codes.
 */

/** Every error code, each documented in the README's "Error codes" (a test holds them together). */
export const ERROR_CODES = [
  'L4LB_CONFIG_INVALID',
  'L4LB_CONFIG_READ',
  'L4LB_CONNECT_TIMEOUT',
  'L4LB_CONNECT_FAILED',
  'L4LB_NO_SERVER',
  'L4LB_LISTEN_FAILED',
  'L4LB_PRIVILEGE_DROP',
  'L4LB_SECRET_NOT_FILE',
  'L4LB_SECRET_TOO_LARGE',
  'L4LB_PROXY_HEADER_INVALID',
  'L4LB_CLIENT_HELLO_INVALID',
  'L4LB_LOCAL_RESOURCE',
  'L4LB_ADMIN_URL_INVALID',
  'L4LB_ADMIN_UNREACHABLE',
  'L4LB_ADMIN_REFUSED',
  'L4LB_ADMIN_BAD_ANSWER',
  'L4LB_ADMIN_NO_TOKEN',
  'L4LB_REJECTED_ACL',
  'L4LB_REJECTED_LIMIT',
  'L4LB_UNTRUSTED_PROXY',
  'L4LB_TLS_HANDSHAKE',
  'L4LB_BACKEND_TLS',
  'L4LB_TLS_REQUIRED',
  'L4LB_POSTGRES_PROTOCOL',
  'L4LB_CLIENT_SILENT',
  'L4LB_DNS_FAILED',
  'L4LB_RUNTIME_CHANGE_REFUSED',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class L4lbError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A server's host name did not resolve (an error, or an answer without addresses); the last good addresses stay. */
export class DnsError extends L4lbError {
  /** The resolver's own code (ENOTFOUND, ESERVFAIL, ETIMEOUT...), or EMPTY for an answer without addresses. */
  readonly reason: string;
  constructor(host: string, reason: string, cause?: unknown) {
    super('L4LB_DNS_FAILED', `cannot resolve host "${host}" (${reason})`, cause === undefined ? undefined : { cause });
    this.reason = reason;
  }
}

/** One problem in a configuration file, named by its path (`pools[0].servers[2].address`). */
export interface ConfigProblem {
  readonly path: string;
  readonly message: string;
}

/** A configuration that cannot be used; carries every problem found, not just the first. */
export class ConfigError extends L4lbError {
  readonly problems: readonly ConfigProblem[];
  constructor(problems: readonly ConfigProblem[], file?: string) {
    const head = file ? `invalid configuration in ${file}` : 'invalid configuration';
    super('L4LB_CONFIG_INVALID', `${head}:\n${problems.map(formatProblem).join('\n')}`);
    this.problems = Object.freeze([...problems]);
  }
}

/** The configuration file could not be read or parsed at all. */
export class ConfigReadError extends L4lbError {
  constructor(file: string, cause: unknown) {
    super('L4LB_CONFIG_READ', `cannot read ${file}: ${describe(cause)}`, { cause });
  }
}

// ---------------------------------------------------------------------------
// The data path. Each failure of a connection is one of these; its code picks
// the access log's termination (src/proxy/termination.ts) and `reason` is the
// access line's short why.

/** Refused by an access list (`L4LB_REJECTED_ACL`) or a limit (`L4LB_REJECTED_LIMIT`); `reason` names the rule. */
export class RejectedError extends L4lbError {
  readonly reason: string;
  constructor(code: 'L4LB_REJECTED_ACL' | 'L4LB_REJECTED_LIMIT', rule: string) {
    super(code, `refused by ${rule}`);
    this.reason = rule;
  }
}

/** A PROXY header from a peer that is not in `trusted_proxies`: refused before a byte is read. */
export class UntrustedProxyError extends L4lbError {
  readonly reason = 'untrusted proxy';
  constructor(peer: string) {
    super('L4LB_UNTRUSTED_PROXY', `${peer} is not in trusted_proxies`);
  }
}

/** A TLS handshake with the client that failed (OpenSSL's reason, a refused certificate, a deadline). */
export class TlsHandshakeError extends L4lbError {
  readonly reason: string;
  constructor(reason: string, cause?: unknown) {
    super('L4LB_TLS_HANDSHAKE', `TLS handshake failed: ${reason}`, { cause });
    this.reason = reason;
  }
}

/**
 * The handshake deadline (`timeouts.handshake`) passed while a front stage
 * waited: a PROXY header (`L4LB_PROXY_HEADER_INVALID`) or a TLS handshake or
 * ClientHello (`L4LB_TLS_HANDSHAKE`).
 */
export class HandshakeTimeoutError extends L4lbError {
  readonly reason: string;
  constructor(code: 'L4LB_PROXY_HEADER_INVALID' | 'L4LB_TLS_HANDSHAKE', timeout: string) {
    super(code, `handshake deadline passed after ${timeout}`);
    this.reason = `timeout after ${timeout}`;
  }
}

/** The client closed (FIN) in the middle of a PROXY header or a TLS handshake: it never will be complete. */
export class IncompleteHandshakeError extends L4lbError {
  readonly reason: string;
  constructor(code: 'L4LB_PROXY_HEADER_INVALID' | 'L4LB_TLS_HANDSHAKE') {
    const what = code === 'L4LB_TLS_HANDSHAKE' ? 'the handshake' : 'the PROXY header';
    super(code, `the client closed the connection during ${what}`);
    this.reason = `client closed the connection during ${what}`;
  }
}

/** One connect attempt to a server did not complete in time (counted against the server). */
export class ConnectTimeoutError extends L4lbError {
  readonly reason: string;
  constructor(address: string, timeout: string) {
    super('L4LB_CONNECT_TIMEOUT', `connect to ${address} timed out after ${timeout}`);
    this.reason = `connect timeout after ${timeout}`;
  }
}

/** One connect attempt to a server failed (refused, reset, unreachable; counted against the server). */
export class ConnectFailedError extends L4lbError {
  readonly reason: string;
  constructor(address: string, cause: unknown) {
    super('L4LB_CONNECT_FAILED', `connect to ${address} failed: ${describe(cause)}`, { cause });
    this.reason = `connect ${errnoOrMessage(cause)}`;
  }
}

/** The TLS handshake with a server failed (or it closed during it; counted against the server). */
export class BackendTlsError extends L4lbError {
  readonly reason: string;
  constructor(address: string, cause: unknown) {
    super('L4LB_BACKEND_TLS', `TLS to ${address} failed: ${describe(cause)}`, { cause });
    this.reason = `tls ${errnoOrMessage(cause)}`;
  }
}

/**
 * A PostgreSQL client began in plaintext (a StartupMessage) on a listener
 * that terminates or passes TLS: it was told so in an ErrorResponse.
 */
export class TlsRequiredError extends L4lbError {
  readonly reason: string;
  constructor() {
    super('L4LB_TLS_REQUIRED', 'the client sent a StartupMessage without TLS; the listener requires TLS');
    this.reason = 'StartupMessage without SSLRequest (sslmode=disable?)';
  }
}

/**
 * A PostgreSQL client's opening was not one a server accepts (length out
 * of bounds, bytes after an SSLRequest before its answer, a cancel of the
 * wrong size): `what` says which.
 */
export class PostgresProtocolError extends L4lbError {
  readonly reason: string;
  constructor(what: string) {
    super('L4LB_POSTGRES_PROTOCOL', `PostgreSQL opening refused: ${what}`);
    this.reason = `postgres ${what}`;
  }
}

/** A client that must speak first (PostgreSQL) sent nothing within the handshake timeout. */
export class ClientSilentError extends L4lbError {
  readonly reason: string;
  constructor(timeout: string) {
    super('L4LB_CLIENT_SILENT', `the client sent nothing within ${timeout}`);
    this.reason = `nothing received within ${timeout}`;
  }
}

/** No server of the pool could be picked (none up and ready, or every one already tried). */
export class NoServerError extends L4lbError {
  readonly reason: string;
  constructor(pool: string) {
    super('L4LB_NO_SERVER', `no server available in pool ${pool}`);
    this.reason = `no server available in pool ${pool}`;
  }
}

/**
 * Errno codes that mean the balancer itself ran short (descriptors, ports,
 * buffers, memory), not that the server failed: they never count against a
 * server's health, and the client's connection ends as `local_error`.
 */
export const LOCAL_RESOURCE_CODES: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE', 'EADDRNOTAVAIL', 'ENOBUFS', 'ENOMEM']);

/** The errno code of `err` when it is one of {@link LOCAL_RESOURCE_CODES}, else undefined. */
export function localResourceCode(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' && LOCAL_RESOURCE_CODES.has(code) ? code : undefined;
}

/** The balancer could not open what a connection needs (its own shortage, not the server's). */
export class LocalResourceError extends L4lbError {
  readonly errno: string;
  readonly reason: string;
  constructor(errno: string, what: string) {
    super('L4LB_LOCAL_RESOURCE', `${what}: ${errno} (the balancer's own shortage, not the server's)`);
    this.errno = errno;
    this.reason = `${what}: ${errno}`;
  }
}

export class ListenError extends L4lbError {
  constructor(listener: string, address: string, cause: unknown) {
    super('L4LB_LISTEN_FAILED', `listener ${listener} cannot bind ${address}: ${describe(cause)}`, { cause });
  }
}

export function formatProblem(p: ConfigProblem): string {
  return p.path ? `${p.path}: ${p.message}` : p.message;
}

/** The errno code of anything thrown (`ECONNREFUSED`), else its message: a short reason for a log field. */
function errnoOrMessage(cause: unknown): string {
  const code = (cause as NodeJS.ErrnoException | null)?.code;
  return code ?? (cause instanceof Error ? cause.message : String(cause));
}

/** A short, safe description of anything thrown (errno code first when there is one). */
export function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${code} ${err.message}` : err.message;
  }
  return String(err);
}

/** The short why of a failure (the access line's `reason`, a health check's): its `reason` when it has one, else its message. */
export function reasonOf(err: L4lbError): string {
  const reason = (err as L4lbError & { reason?: unknown }).reason;
  return typeof reason === 'string' ? reason : err.message;
}
