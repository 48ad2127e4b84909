/**
 * A listener's routes (`listeners[].routes`): the first route whose every
 * given key matches picks the target; none matching leaves the listener's
 * pool. Keys: `sni` (the TLS server name, see ../tls/sni-routes.ts) and
 * `source` (the client's network, the PROXY header's address under
 * accept_proxy, see ../net/cidr-set.ts). `country` is refused by the loader
 * before it gets here.
 *
 * Routes that give only `sni` keep the SNI router's one-probe-per-label
 * lookup; any other mix is tried in order, each route costing at most a
 * name probe and a binary search, so a 100k-network list is no slower than
 * a short one.
 */
import type { RouteModel } from '../config/model.js';
import { CidrSet } from '../net/cidr-set.js';
import { parseIpInto } from '../net/ip.js';
import { SniRouter } from '../tls/sni-routes.js';

interface CompiledRoute<T> {
  /** One-route SNI router; null: the route gives no sni. */
  readonly sni: SniRouter<true> | null;
  /** null: the route gives no source. */
  readonly source: CidrSet | null;
  readonly target: T;
}

/** Scratch for the client address: one match at a time. */
const CLIENT = new Uint8Array(16);

/** First-match router over sni and source routes. */
export class RouteTable<T> {
  /** Every route gives only sni: the SNI router alone decides. */
  readonly #sniOnly: SniRouter<T> | null;
  readonly #routes: readonly CompiledRoute<T>[];

  /** @param routes as the loader built them (patterns and CIDRs already checked). */
  constructor(routes: readonly RouteModel[], target: (route: RouteModel) => T) {
    if (routes.every((r) => r.sni !== undefined && r.source === undefined)) {
      this.#sniOnly = new SniRouter(routes.map((r) => ({ sni: r.sni!, target: target(r) })));
      this.#routes = [];
      return;
    }
    this.#sniOnly = null;
    this.#routes = routes.map((r) => ({
      sni: r.sni !== undefined ? new SniRouter([{ sni: r.sni, target: true as const }]) : null,
      source: r.source !== undefined ? new CidrSet(r.sourceCidrs ?? []) : null,
      target: target(r),
    }));
  }

  /**
   * The target of the first route matching the connection, or undefined.
   * @param clientIp the client's address as the front learned it ('' when unknown: no source route matches)
   * @param sni the server name, or null (no TLS or no SNI: no sni route matches)
   */
  match(clientIp: string, sni: string | null): T | undefined {
    if (this.#sniOnly !== null) return this.#sniOnly.match(sni);
    let parsed: boolean | undefined;
    for (const r of this.#routes) {
      if (r.sni !== null && r.sni.match(sni) === undefined) continue;
      if (r.source !== null) {
        parsed ??= clientIp !== '' && parseIpInto(clientIp, CLIENT) !== 0;
        if (!parsed || !r.source.hasBytes(CLIENT)) continue;
      }
      return r.target;
    }
    return undefined;
  }
}
