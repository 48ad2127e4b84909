/**
 * Name lookups for servers whose address is a host name: what one answer
 * says (the addresses, and how long they may be trusted), or a DnsError.
 *
 * With `dns.servers`, a node:dns Resolver asks those servers for A and AAAA
 * records with their TTLs. Without, the system decides as it does for any
 * program (dns.lookup: /etc/hosts, then resolv.conf), and the same question
 * is asked of the system's DNS servers alongside, only to learn the TTL when
 * both agree; a name from /etc/hosts has none (the interval applies).
 *
 * One family per name: its IPv4 addresses when it has any, else its IPv6
 * ones. A dual-stack host (`localhost`: 127.0.0.1 and ::1) is one server,
 * not two that would double its share; a name with several addresses of the
 * chosen family is one server per address.
 */
import { promises as dnsPromises } from 'node:dns';
import { isIP } from 'node:net';
import { DnsError, describe } from '../errors.js';

/** One good answer. */
export interface DnsAnswer {
  /** Sorted, at least one, all of one family. */
  readonly addresses: readonly string[];
  /** Seconds the answer may be trusted (the smallest record TTL); null when unknown (/etc/hosts). */
  readonly ttl: number | null;
}

export interface DnsResolverOptions {
  /** `ip`, `ip:port` or `[v6]:port`; empty or absent: the system resolver. */
  readonly servers?: readonly string[];
  /** A lookup that takes longer fails with reason ETIMEOUT, so a dead DNS server never holds a load or a refresh. */
  readonly timeoutMs?: number;
}

/** How long one lookup may take in all; a load of the configuration waits for it. */
export const DNS_TIMEOUT_MS = 5_000;

/** Resolves host names; one per configuration load, and one for the refresh loop. */
export class DnsResolver {
  readonly #resolver: dnsPromises.Resolver;
  readonly #custom: boolean;
  readonly #timeoutMs: number;

  constructor(options: DnsResolverOptions = {}) {
    this.#timeoutMs = options.timeoutMs ?? DNS_TIMEOUT_MS;
    // Per-try timeout: two tries fit in the whole budget.
    this.#resolver = new dnsPromises.Resolver({ timeout: Math.max(100, Math.floor(this.#timeoutMs / 2)), tries: 2 });
    const servers = options.servers ?? [];
    this.#custom = servers.length > 0;
    if (this.#custom) this.#resolver.setServers([...servers]);
  }

  /**
   * The addresses `host` stands for now.
   *
   * @throws DnsError (reason: the resolver's code, ETIMEOUT, or EMPTY).
   */
  async resolve(host: string): Promise<DnsAnswer> {
    if (isIP(host)) return { addresses: [host], ttl: null };
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DnsError(host, `ETIMEOUT: no answer within ${this.#timeoutMs}ms`)), this.#timeoutMs);
    });
    const answer = this.#custom ? this.#fromServers(host) : this.#fromSystem(host);
    answer.catch(() => undefined); // settled late, after the timeout won
    try {
      return await Promise.race([answer, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #fromServers(host: string): Promise<DnsAnswer> {
    const [v4, v6] = await Promise.allSettled([this.#resolver.resolve4(host, { ttl: true }), this.#resolver.resolve6(host, { ttl: true })]);
    const pick = choose(v4.status === 'fulfilled' ? v4.value : [], v6.status === 'fulfilled' ? v6.value : []);
    if (pick.length > 0) return { addresses: sorted(pick.map((r) => r.address)), ttl: Math.min(...pick.map((r) => r.ttl)) };
    throw failure(host, [v4, v6]);
  }

  async #fromSystem(host: string): Promise<DnsAnswer> {
    const withTtl = Promise.allSettled([this.#resolver.resolve4(host, { ttl: true }), this.#resolver.resolve6(host, { ttl: true })]);
    let found: Array<{ address: string; family: number }>;
    try {
      found = await dnsPromises.lookup(host, { all: true });
    } catch (err) {
      throw new DnsError(host, (err as NodeJS.ErrnoException).code ?? describe(err), err);
    }
    const addresses = sorted(chooseLookup(found));
    if (addresses.length === 0) throw new DnsError(host, 'EMPTY: an answer without addresses');
    // The TTL is taken only when the DNS servers give the very addresses the system uses (not a name from /etc/hosts).
    // Only waited for briefly: on a machine whose DNS servers do not answer, /etc/hosts names must not be slow.
    const ttlAnswer = await Promise.race([withTtl, delay(TTL_WAIT_MS)]);
    if (ttlAnswer === undefined) return { addresses, ttl: null };
    const [v4, v6] = ttlAnswer;
    const records = choose(v4.status === 'fulfilled' ? v4.value : [], v6.status === 'fulfilled' ? v6.value : []);
    const same = records.length === addresses.length && sorted(records.map((r) => r.address)).every((a, i) => a === addresses[i]);
    return { addresses, ttl: same ? Math.min(...records.map((r) => r.ttl)) : null };
  }
}

/** How long the system mode waits for the TTL once the system has answered. */
const TTL_WAIT_MS = 1_000;

function delay(ms: number): Promise<undefined> {
  return new Promise((resolve) => setTimeout(() => resolve(undefined), ms).unref());
}

type Rec = { address: string; ttl: number };

/** IPv4 when there is any, else IPv6. */
function choose(v4: readonly Rec[], v6: readonly Rec[]): readonly Rec[] {
  return v4.length > 0 ? v4 : v6;
}

function chooseLookup(found: ReadonlyArray<{ address: string; family: number }>): string[] {
  const v4 = found.filter((a) => a.family === 4).map((a) => a.address);
  return [...new Set(v4.length > 0 ? v4 : found.map((a) => a.address))];
}

/** Addresses in one order whatever order the server answers in (an unchanged set is not a change). */
export function sorted(addresses: Iterable<string>): string[] {
  return [...new Set(addresses)].sort();
}

/** The more telling of the two families' errors: SERVFAIL or NXDOMAIN over "no AAAA records". */
function failure(host: string, results: ReadonlyArray<PromiseSettledResult<unknown>>): DnsError {
  const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as NodeJS.ErrnoException);
  const telling = errors.find((e) => e.code !== 'ENODATA') ?? errors[0];
  if (telling === undefined) return new DnsError(host, 'EMPTY: an answer without addresses');
  return new DnsError(host, telling.code ?? describe(telling), telling);
}
