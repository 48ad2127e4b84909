/**
 * Per-client limits: concurrent connections and a connect rate (token
 * bucket, burst = one second's worth). A client is an IPv4 address, or an
 * IPv6 network of `ipv6Prefix` bits (a /64 by default, as HAProxy users
 * write `ipmask(32,64)`): one IPv6 host usually holds a whole /64, so
 * counting per address would give it 2^64 budgets.
 *
 * The table is bounded, and an entry is forgotten only when it holds
 * nothing: no open connection and a full bucket (the state a new entry
 * would start with). Forgetting anything else would let a client erase its
 * own count by making the table churn (open connections from many other
 * addresses until its entry is pushed out, then connect again with a fresh
 * budget). So a full table with nothing to forget refuses new clients
 * (`rejected_limit`) instead. A bucket refills within a second, so an entry
 * with no open connection holds something for at most a second: the table
 * fills for good only with clients that keep connections open, and its cap
 * is at least the listener's `max_connections`.
 *
 * admit() and release() are O(1): a Map of entries, and a second Map of the
 * entries without open connections whose bucket is still refilling, in the
 * order they became so (the oldest is the first to be full again).
 */
import { prefixKey } from '../net/ip.js';

export interface PerSourceLimits {
  /** Concurrent connections per client; 0 = unlimited. */
  readonly maxConnections: number;
  /** New connections per second per client (burst = one second's worth); 0 = unlimited. */
  readonly connectRate: number;
  /** IPv6 clients are counted per network of this many bits (1..128); default {@link DEFAULT_IPV6_PREFIX}. */
  readonly ipv6Prefix?: number;
}

interface Entry {
  active: number;
  tokens: number;
  /** Last refill (ms, monotonic). */
  at: number;
}

/** Default cap on tracked clients: ~150 bytes each, so about 15 MB at most. */
export const DEFAULT_MAX_SOURCES = 100_000;

/** IPv6 clients are grouped per /64 unless configured: the smallest network a site or a SLAAC host gets. */
export const DEFAULT_IPV6_PREFIX = 64;

/** At most this many refilling entries are looked at to find one to forget: admit() stays O(1). */
const EVICT_SCAN = 16;

export class PerSourceTable {
  readonly #maxConnections: number;
  readonly #rate: number;
  readonly #prefix: number;
  readonly #maxSources: number;
  readonly #entries = new Map<string, Entry>();
  /** Entries with no open connection whose bucket is not full yet, oldest first. */
  readonly #refilling = new Map<string, Entry>();
  readonly #now: () => number;

  constructor(limits: PerSourceLimits, options: { maxSources?: number; now?: () => number } = {}) {
    this.#maxConnections = limits.maxConnections;
    this.#rate = limits.connectRate;
    this.#prefix = limits.ipv6Prefix ?? DEFAULT_IPV6_PREFIX;
    if (!Number.isInteger(this.#prefix) || this.#prefix < 0 || this.#prefix > 128) throw new RangeError(`ipv6Prefix must be 0..128, got ${this.#prefix}`);
    this.#maxSources = options.maxSources ?? DEFAULT_MAX_SOURCES;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Clients tracked now. */
  get size(): number {
    return this.#entries.size;
  }

  /** The cap on tracked clients. */
  get maxSources(): number {
    return this.#maxSources;
  }

  /** The key `ip` is counted under: the IPv4 address, or its IPv6 network. */
  keyOf(ip: string): string {
    return prefixKey(ip, this.#prefix);
  }

  /**
   * A new connection from `ip`: true if allowed (then `release(ip)` must be
   * called once when it closes), false if over a limit or if the table is
   * full of clients it may not forget.
   */
  admit(ip: string): boolean {
    const key = this.keyOf(ip);
    const now = this.#now();
    let e = this.#entries.get(key);
    if (e === undefined) {
      if (this.#entries.size >= this.#maxSources && !this.#forgetOne(now)) return false;
      // A new entry starts full: it is always admitted (limits are at least 1).
      e = { active: 0, tokens: this.#rate, at: now };
      this.#entries.set(key, e);
    } else {
      if (this.#rate > 0) {
        this.#refill(e, now);
        if (e.tokens < 1) return false;
      }
      if (this.#maxConnections > 0 && e.active >= this.#maxConnections) return false;
    }
    if (this.#rate > 0) e.tokens -= 1;
    if (e.active++ === 0) this.#refilling.delete(key);
    return true;
  }

  /** A connection admitted for `ip` closed. */
  release(ip: string): void {
    const key = this.keyOf(ip);
    const e = this.#entries.get(key);
    if (e === undefined || e.active === 0) return;
    if (--e.active > 0) return;
    if (this.#rate > 0) this.#refill(e, this.#now());
    if (this.#holdsNothing(e)) this.#entries.delete(key);
    else this.#refilling.set(key, e);
  }

  /** Forget every entry that holds nothing any more (a timer calls this; O(refilling entries)). */
  sweep(): void {
    const now = this.#now();
    for (const [key, e] of this.#refilling) {
      if (this.#rate > 0) this.#refill(e, now);
      if (this.#holdsNothing(e)) this.#forget(key);
    }
  }

  #refill(e: Entry, now: number): void {
    e.tokens = Math.min(this.#rate, e.tokens + ((now - e.at) / 1000) * this.#rate);
    e.at = now;
  }

  /** No open connection and a full bucket: exactly what a new entry would start with. */
  #holdsNothing(e: Entry): boolean {
    return e.active === 0 && (this.#rate <= 0 || e.tokens >= this.#rate);
  }

  #forget(key: string): void {
    this.#entries.delete(key);
    this.#refilling.delete(key);
  }

  /** Make room by forgetting one entry that holds nothing; false if none of the oldest does. */
  #forgetOne(now: number): boolean {
    let scanned = 0;
    for (const [key, e] of this.#refilling) {
      this.#refill(e, now);
      if (this.#holdsNothing(e)) {
        this.#forget(key);
        return true;
      }
      if (++scanned >= EVICT_SCAN) break;
    }
    return false;
  }
}
