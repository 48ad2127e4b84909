/** Why a connection ended: the access log's `termination` field (see DESIGN.md). */
export type Termination =
  | 'client_close'
  | 'server_close'
  | 'idle_timeout'
  | 'connect_failed'
  | 'no_server'
  | 'rejected_acl'
  | 'rejected_limit'
  | 'tls_error'
  | 'proxy_header_error'
  | 'shutdown'
  | 'local_error';
