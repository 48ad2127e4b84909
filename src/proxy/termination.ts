/**
 * Why a connection ended: the access log's `termination` field (DESIGN.md).
 * A failure is a coded error (src/errors.ts) and its code alone picks the
 * termination; the ends that are no failure (a side closed, idle, shutdown)
 * are named directly.
 */
import type { ErrorCode, L4lbError } from '../errors.js';

/** Every termination, in the order the contract lists them. */
export const TERMINATIONS = [
  'client_close',
  'server_close',
  'idle_timeout',
  'connect_failed',
  'no_server',
  'rejected_acl',
  'rejected_limit',
  'tls_error',
  'proxy_header_error',
  'shutdown',
  'local_error',
  'tls_required',
  'cancel_forwarded',
] as const;

export type Termination = (typeof TERMINATIONS)[number];

/** The termination of each data-path failure code. */
const TERMINATION_OF_CODE: Partial<Readonly<Record<ErrorCode, Termination>>> = {
  L4LB_REJECTED_ACL: 'rejected_acl',
  L4LB_REJECTED_LIMIT: 'rejected_limit',
  L4LB_UNTRUSTED_PROXY: 'proxy_header_error',
  L4LB_PROXY_HEADER_INVALID: 'proxy_header_error',
  L4LB_CLIENT_HELLO_INVALID: 'tls_error',
  L4LB_TLS_HANDSHAKE: 'tls_error',
  L4LB_NO_SERVER: 'no_server',
  L4LB_CONNECT_FAILED: 'connect_failed',
  L4LB_CONNECT_TIMEOUT: 'connect_failed',
  L4LB_BACKEND_TLS: 'connect_failed',
  L4LB_LOCAL_RESOURCE: 'local_error',
  L4LB_TLS_REQUIRED: 'tls_required',
  // A TLS listener expected SSLRequest or a ClientHello: a failed TLS opening.
  L4LB_POSTGRES_PROTOCOL: 'tls_error',
  L4LB_CLIENT_SILENT: 'idle_timeout',
};

/** The codes that end a connection, each with its termination (for documentation and tests). */
export const DATA_PATH_CODES: ReadonlyMap<ErrorCode, Termination> = new Map(Object.entries(TERMINATION_OF_CODE) as Array<[ErrorCode, Termination]>);

/** The termination a failure gives; `internal` errors (a bug) count as the server side closing. */
export function terminationOf(err: L4lbError): Termination {
  return TERMINATION_OF_CODE[err.code] ?? 'server_close';
}
