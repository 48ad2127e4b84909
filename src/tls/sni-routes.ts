/**
 * SNI routing (`listeners[].routes`): picks a target by TLS server name.
 *
 * Semantics, as in the NGINX `server_name`/`map hostnames` family:
 * - Routes are tried in order and the first match wins.
 * - A pattern is an exact host name (`db.example.com`) or a wildcard
 *   `*.suffix`. `*.example.com` matches any name that ends in `.example.com`
 *   with at least one label in front: `a.example.com` and `a.b.example.com`,
 *   but not `example.com` itself (add an exact route for that).
 *   Certificate wildcards are narrower (one label, RFC 6125); see cert-store.ts.
 * - Comparison is case-insensitive and ignores one trailing dot on either side.
 * - No server name (client sent no SNI) and malformed names never match a route.
 */
import { ConfigError } from '../errors.js';
import { isValidDnsName, normaliseServerName } from './client-hello.js';

/** One route as configured. */
export interface SniRoute<T> {
  /** Exact host name or `*.suffix`. */
  sni: string;
  target: T;
}

/**
 * Why `pattern` is not a usable route pattern, or undefined when it is.
 * Config validation can call this to report the problem by path.
 */
export function sniPatternProblem(pattern: string): string | undefined {
  const p = normaliseServerName(pattern);
  if (p.startsWith('*.')) {
    const suffix = p.slice(2);
    if (!isValidDnsName(suffix)) return `"${pattern}": the part after "*." is not a valid DNS name`;
    return undefined;
  }
  if (p.includes('*')) return `"${pattern}": a wildcard is only allowed as the whole first label ("*.example.com")`;
  if (!isValidDnsName(p)) return `"${pattern}": not a valid DNS name`;
  return undefined;
}

/**
 * First-match SNI router. Lookups cost one map probe per label of the name
 * rather than one comparison per route, while keeping first-match order:
 * each table remembers the lowest route index for its key.
 */
export class SniRouter<T> {
  private readonly targets: T[];
  /** Exact name → index of the first route with that name. */
  private readonly exact = new Map<string, number>();
  /** Wildcard suffix (without `*.`) → index of the first such route. */
  private readonly wildcard = new Map<string, number>();

  /**
   * @throws {ConfigError} listing every invalid pattern, by path `routes[i].sni`.
   */
  constructor(routes: ReadonlyArray<SniRoute<T>>) {
    const problems: { path: string; message: string }[] = [];
    this.targets = routes.map((r) => r.target);
    routes.forEach((route, i) => {
      const problem = sniPatternProblem(route.sni);
      if (problem !== undefined) {
        problems.push({ path: `routes[${i}].sni`, message: problem });
        return;
      }
      const p = normaliseServerName(route.sni);
      const [table, key] = p.startsWith('*.') ? [this.wildcard, p.slice(2)] : [this.exact, p];
      if (!table.has(key)) table.set(key, i);
    });
    if (problems.length > 0) throw new ConfigError(problems);
  }

  /** Number of routes. */
  get size(): number {
    return this.targets.length;
  }

  /**
   * The target of the first route matching `serverName`, or undefined (use
   * the listener's default pool). `null` (no SNI) matches nothing.
   */
  match(serverName: string | null): T | undefined {
    if (serverName === null || serverName === '') return undefined;
    const name = normaliseServerName(serverName);
    // Malformed names (possible in terminate mode, where OpenSSL only rejects NULs) route nowhere.
    if (!isValidDnsName(name)) return undefined;
    let best = this.exact.get(name) ?? Infinity;
    // Each proper suffix after a dot is a wildcard candidate: for a.b.c try b.c, then c.
    if (this.wildcard.size > 0) {
      for (let dot = name.indexOf('.'); dot !== -1; dot = name.indexOf('.', dot + 1)) {
        const i = this.wildcard.get(name.slice(dot + 1));
        if (i !== undefined && i < best) best = i;
      }
    }
    return best === Infinity ? undefined : this.targets[best];
  }
}
