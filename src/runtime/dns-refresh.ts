/**
 * The main thread's loop that asks again for every server host name: every
 * `dns.interval`, or sooner when the answer's TTL is shorter (never more
 * often than every second). An answer with other addresses is handed to
 * `apply` (the App rebuilds the pool's servers and reloads them, in every
 * thread); a failed or empty answer changes nothing, is counted per pool and
 * server, and logged at most once a minute per name.
 *
 * Lifecycle: `start()` schedules one timer per name; `close()` stops them
 * (a lookup in flight is then ignored). A reload from the file makes a new
 * loop from the new model; the failure counts outlive it (they are the
 * App's).
 */
import type { HostnameServerModel, Model } from '../config/model.js';
import { DEFAULTS } from '../defaults.js';
import { DnsResolver, type DnsAnswer } from '../dns/resolver.js';
import { hostnameServers } from '../dns/servers.js';
import { DnsError, describe } from '../errors.js';
import type { Logger } from '../log.js';

/** The shortest wait a short TTL can ask for: a TTL of 0 must not become a lookup loop. */
export const DNS_TTL_FLOOR_MS = 1_000;
/** A name that keeps failing is logged once per this long, with how many failures the silence hid. */
const FAILURE_LOG_EVERY_MS = 60_000;

/** Hands a changed answer to the App; resolves true once applied (false: nothing to apply, e.g. the server is gone). */
export type ApplyDnsChange = (pool: string, server: string, addresses: readonly string[]) => Promise<boolean>;

/** Failures per pool and configured server, for l4lb_dns_failures_total. */
export type DnsFailureCounts = Map<string, { readonly pool: string; readonly server: string; count: number }>;

/** When to ask again after an answer with `ttl` seconds (null: unknown). */
export function nextDelayMs(intervalMs: number, ttl: number | null): number {
  if (ttl === null) return intervalMs;
  return Math.min(intervalMs, Math.max(ttl * 1000, DNS_TTL_FLOOR_MS));
}

interface Entry {
  readonly pool: string;
  readonly server: HostnameServerModel;
  addresses: readonly string[];
  timer: NodeJS.Timeout | undefined;
  lastLoggedAt: number;
  suppressed: number;
}

export class DnsRefresh {
  readonly #entries: Entry[];
  readonly #resolver: DnsResolver;
  readonly #intervalMs: number;
  readonly #logger: Logger;
  readonly #apply: ApplyDnsChange;
  readonly #failures: DnsFailureCounts;
  #closed = false;

  constructor(model: Model, logger: Logger, apply: ApplyDnsChange, failures: DnsFailureCounts) {
    const dns = model.dns ?? { servers: [], intervalMs: DEFAULTS.dnsIntervalMs };
    this.#resolver = new DnsResolver({ servers: dns.servers });
    this.#intervalMs = dns.intervalMs;
    this.#logger = logger;
    this.#apply = apply;
    this.#failures = failures;
    this.#entries = hostnameServers(model).map(({ pool, server }) => ({
      pool,
      server,
      addresses: server.addresses,
      timer: undefined,
      lastLoggedAt: 0,
      suppressed: 0,
    }));
  }

  /** Names this loop asks for. */
  get size(): number {
    return this.#entries.length;
  }

  start(): void {
    for (const e of this.#entries) this.#schedule(e, this.#intervalMs);
  }

  /** Stop every timer; an answer still on its way is dropped. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const e of this.#entries) clearTimeout(e.timer);
  }

  #schedule(e: Entry, ms: number): void {
    if (this.#closed) return;
    e.timer = setTimeout(() => void this.#ask(e), ms);
  }

  async #ask(e: Entry): Promise<void> {
    let answer: DnsAnswer;
    try {
      answer = await this.#resolver.resolve(e.server.host);
    } catch (err) {
      if (this.#closed) return;
      this.#failed(e, err);
      return this.#schedule(e, this.#intervalMs);
    }
    if (this.#closed) return;
    const { addresses } = answer;
    if (addresses.length !== e.addresses.length || addresses.some((a, i) => a !== e.addresses[i])) {
      try {
        if (await this.#apply(e.pool, e.server.name, addresses)) e.addresses = addresses;
      } catch (err) {
        // Not applied (a reload failed, or l4lb is stopping): asked again next time.
        if (!this.#closed) this.#logger.warn({ pool: e.pool, server: e.server.name, host: e.server.host, err: describe(err) }, 'dns change not applied');
      }
    }
    this.#schedule(e, nextDelayMs(this.#intervalMs, answer.ttl));
  }

  #failed(e: Entry, err: unknown): void {
    const key = `${e.pool}\u0000${e.server.name}`;
    const counted = this.#failures.get(key);
    if (counted === undefined) this.#failures.set(key, { pool: e.pool, server: e.server.name, count: 1 });
    else counted.count++;
    const now = Date.now();
    if (now - e.lastLoggedAt < FAILURE_LOG_EVERY_MS) {
      e.suppressed++;
      return;
    }
    this.#logger.warn(
      {
        pool: e.pool,
        server: e.server.name,
        host: e.server.host,
        code: err instanceof DnsError ? err.code : undefined,
        reason: err instanceof DnsError ? err.reason : describe(err),
        addresses: e.addresses,
        ...(e.suppressed > 0 ? { suppressed: e.suppressed } : {}),
      },
      e.addresses.length > 0 ? 'dns lookup failed; keeping the last good addresses' : 'dns lookup failed; the server stays unresolved',
    );
    e.lastLoggedAt = now;
    e.suppressed = 0;
  }
}
