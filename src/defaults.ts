/** Every default in one place, each with the reason for its value. */
export const DEFAULTS = Object.freeze({
  /** HAProxy's `timeout connect` in most shipped configs; long enough for a busy server, short enough to fail over. */
  connectTimeoutMs: 5_000,
  /** Long-lived database and broker connections are normal at L4; an hour matches common NGINX stream setups. */
  idleTimeoutMs: 3_600_000,
  /** Every phase before the splice (PROXY header, TLS handshake, ClientHello) must finish within this; HAProxy's common `timeout client` for handshakes. */
  handshakeTimeoutMs: 5_000,
  /** Two further servers after a failed connect, like the design's example; HAProxy's `retries` default is 3 on the same server. */
  retries: 2,
  /** Least connections is the safe general choice for long-lived L4 sessions. */
  balance: 'least_conn' as const,
  /** least_time's measure: connect is known for every server, whatever it speaks. */
  leastTimeMeasure: 'connect' as const,
  /** HAProxy examples' `expire 30m` for `stick on src`: outlives a user's pause, not their day. */
  stickExpireMs: 1_800_000,
  /** 100k clients: about 7 MB of shared memory, touched as used. */
  stickSize: 100_000,
  weight: 1,
  logLevel: 'info' as const,
  accessLog: true,
  /** How long SIGTERM waits for open connections before closing them. */
  drainTimeoutMs: 30_000,
  /** After SIGTERM, keep accepting this long while /ready says 503: off unless a VRRP/BGP health check needs time to withdraw the address. */
  graceMs: 0,
  /** Server host names are asked again this often (shorter when the answer's TTL is): cloud endpoints and Kubernetes services change within minutes. */
  dnsIntervalMs: 30_000,
  /** HAProxy's `inter` default: a dead server is noticed within seconds without flooding it with probes. */
  healthIntervalMs: 2_000,
  /** Half the interval, so a slow probe ends before the next one is due. */
  healthTimeoutMs: 1_000,
  /** HAProxy's `rise` default: two good probes before a recovered server takes traffic again. */
  healthRise: 2,
  /** HAProxy's `fall` default: one lost probe on a busy network does not take a server out. */
  healthFall: 3,
  /** A TCP connect (with send/expect if given): works for any server. */
  healthKind: 'tcp' as const,
  /**
   * For servers that speak TLS from the first byte: a full handshake and a
   * close_notify. A bare connect to them makes the server log a failed
   * handshake (`unexpected eof`) for every probe.
   */
  healthKindTls: 'tls' as const,
  /** GET, as Patroni's and most health endpoints expect. */
  healthHttpMethod: 'GET' as const,
  healthHttpPath: '/',
  /** Only 200 means up: Patroni answers 503 on /primary of a replica, and a 3xx or 4xx is rarely a healthy endpoint. */
  healthHttpExpectStatus: Object.freeze([200]) as readonly number[],
  /** A role of its own, so the probes are easy to tell apart (and to grant nothing) in pg_hba.conf and the server's views. */
  healthPostgresUser: 'l4lb_probe',
  /** What a greeting-first (smtp) server's first line must start with: SMTP's "service ready". */
  healthSmtpExpect: '220',
  /** Off, as in HAProxy: ramping up is a choice for servers with cold caches. */
  slowStartMs: 0,
  /** Keep: a server marked down by probes may still be serving its open connections fine. */
  onServerDown: 'keep' as const,
  /** A server that does not expect a PROXY header would read one as garbage: sent only when asked for. */
  proxyProtocol: 'off' as const,
  /** Primaries unless marked: a backup takes traffic only when no primary is up. */
  backup: false,
  /** A PROXY header is expected only when asked for: otherwise any client could name its own address. */
  acceptProxy: false,
  /**
   * The lowest TLS version accepted from clients and spoken to servers:
   * TLS 1.0 and 1.1 are deprecated (RFC 8996).
   */
  tlsMinVersion: 'TLSv1.2' as const,
  /** Serve the default certificate to an unknown SNI, as HAProxy and NGINX do unless told otherwise. */
  strictSni: false,
  /** Resumption saves a full handshake per reconnect; keys rotate (see ticketKeyRotationMs). */
  sessionTickets: true,
  /** Server certificates are verified unless `verify: false` is written (and warned about). */
  backendTlsVerify: true,
  /** Loopback: status and metrics need no token, so they are not offered to the network unless asked for. */
  adminListen: '127.0.0.1:9900',
  /**
   * How often a listener's session-ticket key is replaced (the one before is
   * kept for decryption): 12 h, as the usual NGINX / HAProxy key-rotation
   * setups do. A stolen key then opens at most a day of recorded sessions.
   */
  ticketKeyRotationMs: 12 * 3_600_000,
  /**
   * How long a terminated TLS session can be resumed (ticket lifetime):
   * OpenSSL's own default, what clients got before it was named. The previous
   * ticket key is kept this long after a rotation: no ticket it encrypted at
   * the time of the rotation can be older.
   */
  tlsSessionLifetimeMs: 7_200_000,
});
