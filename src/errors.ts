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
  | 'L4LB_PROXY_HEADER_INVALID'
  | 'L4LB_CLIENT_HELLO_INVALID';

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
