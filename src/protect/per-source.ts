/**
 * Per-client-IP limits: concurrent connections and a connect rate (token
 * bucket). The table is bounded: idle entries expire, and at the cap the
 * least recently seen entry is evicted (a Map keeps insertion order, and an
 * entry is re-inserted when touched), so a flood from many addresses cannot
 * grow memory without bound.
 */

export interface PerSourceLimits {
  /** Concurrent connections per client IP; 0 = unlimited. */
  readonly maxConnections: number;
  /** New connections per second per client IP (burst = one second's worth); 0 = unlimited. */
  readonly connectRate: number;
}

interface Entry {
  active: number;
  tokens: number;
  /** Last refill (ms, monotonic). */
  at: number;
}

/** Default cap on tracked addresses: ~100 bytes each, so about 10 MB at most. */
export const DEFAULT_MAX_SOURCES = 100_000;

export class PerSourceTable {
  readonly #limits: PerSourceLimits;
  readonly #maxSources: number;
  readonly #entries = new Map<string, Entry>();
  readonly #now: () => number;

  constructor(limits: PerSourceLimits, options: { maxSources?: number; now?: () => number } = {}) {
    this.#limits = limits;
    this.#maxSources = options.maxSources ?? DEFAULT_MAX_SOURCES;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Addresses tracked now. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * A new connection from `ip`: true if allowed (then `release(ip)` must be
   * called once when it closes), false if over a limit.
   */
  admit(ip: string): boolean {
    const now = this.#now();
    let e = this.#entries.get(ip);
    if (e === undefined) {
      this.#evictIfFull();
      e = { active: 0, tokens: this.#limits.connectRate, at: now };
    } else {
      // Re-insert: the Map's order is then least recently seen first.
      this.#entries.delete(ip);
    }
    this.#entries.set(ip, e);
    const { maxConnections, connectRate } = this.#limits;
    if (connectRate > 0) {
      e.tokens = Math.min(connectRate, e.tokens + ((now - e.at) / 1000) * connectRate);
      e.at = now;
      if (e.tokens < 1) return false;
    }
    if (maxConnections > 0 && e.active >= maxConnections) return false;
    if (connectRate > 0) e.tokens -= 1;
    e.active++;
    return true;
  }

  /** A connection admitted for `ip` closed. */
  release(ip: string): void {
    const e = this.#entries.get(ip);
    if (e !== undefined && e.active > 0) e.active--;
  }

  /** Drop entries with no open connection whose bucket is full again (nothing left to remember). */
  sweep(): void {
    const now = this.#now();
    const rate = this.#limits.connectRate;
    for (const [ip, e] of this.#entries) {
      if (e.active > 0) continue;
      const full = rate <= 0 || e.tokens + ((now - e.at) / 1000) * rate >= rate;
      if (full) this.#entries.delete(ip);
    }
  }

  #evictIfFull(): void {
    if (this.#entries.size < this.#maxSources) return;
    // Prefer the oldest entry without open connections; its memory is all history.
    let scanned = 0;
    for (const [ip, e] of this.#entries) {
      if (e.active === 0) {
        this.#entries.delete(ip);
        return;
      }
      if (++scanned >= 64) break;
    }
    // Everything scanned holds connections: evict the oldest anyway (its
    // counts are forgotten; release() on it then does nothing).
    const oldest = this.#entries.keys().next();
    if (!oldest.done) this.#entries.delete(oldest.value);
  }
}
