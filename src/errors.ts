/**
 * Coded errors. Callers branch on `code`, never on message text; the access
 * log's `termination` and metric labels derive from these codes.
 */

export type ErrorCode =
  | 'L4LB_CONFIG_INVALID'
  | 'L4LB_CONFIG_READ'
  | 'L4LB_CONNECT_TIMEOUT'
  | 'L4LB_CONNECT_FAILED'
  | 'L4LB_NO_SERVER'
  | 'L4LB_LISTEN_FAILED'
  | 'L4LB_PRIVILEGE_DROP'
  | 'L4LB_SECRET_NOT_FILE'
  | 'L4LB_SECRET_TOO_LARGE'
  | 'L4LB_PROXY_HEADER_INVALID'
  | 'L4LB_CLIENT_HELLO_INVALID'
  | 'L4LB_LOCAL_RESOURCE';

export class L4lbError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
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

export class ConnectTimeoutError extends L4lbError {
  constructor(address: string, timeoutMs: number) {
    super('L4LB_CONNECT_TIMEOUT', `connect to ${address} timed out after ${timeoutMs}ms`);
  }
}

export class ConnectFailedError extends L4lbError {
  constructor(address: string, cause: unknown) {
    super('L4LB_CONNECT_FAILED', `connect to ${address} failed: ${describe(cause)}`, { cause });
  }
}

export class NoServerError extends L4lbError {
  constructor(pool: string) {
    super('L4LB_NO_SERVER', `no server available in pool ${pool}`);
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
  constructor(errno: string, what: string) {
    super('L4LB_LOCAL_RESOURCE', `${what}: ${errno} (the balancer's own shortage, not the server's)`);
    this.errno = errno;
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

/** A short, safe description of anything thrown (errno code first when there is one). */
export function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${code} ${err.message}` : err.message;
  }
  return String(err);
}
