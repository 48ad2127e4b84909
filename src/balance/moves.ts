/**
 * How many source_hash clients a change of servers or weights sends to
 * another server: measured with the real pickers over a fixed sample of
 * client addresses, and computed exactly for an ideal hash.
 *
 * The sample (the same on every run and machine):
 * - IPv4: `count` addresses spread evenly over the whole IPv4 space, the
 *   i-th being floor((i + 0.5) · 2^32 / count), written as Node reports a
 *   client (`a.b.c.d`);
 * - IPv6: `count` addresses in 2000::/3 (global unicast) from a fixed-seed
 *   generator (splitmix32, seed {@link IPV6_SEED}), in RFC 5952 form.
 * Both are reported separately; per-server shares and flows are from the
 * IPv4 sample.
 *
 * What is compared is what a pool picks with every server up and ready: the
 * primaries (backups only when a pool has no primary), at their configured
 * weights. Slow start, health and drain change that only for a while.
 */
import { formatIpv6 } from '../net/ip.js';
import { normaliseClientKey } from './source-hash.js';
import { createPicker, type Picker } from './index.js';

export const DEFAULT_IPV4_SAMPLES = 1_000_000;
export const DEFAULT_IPV6_SAMPLES = 100_000;
export const IPV6_SEED = 0x6c34_6c62; // "l4lb"

/** A server as far as source_hash is concerned. */
export interface HashServer {
  readonly name: string;
  readonly weight: number;
  readonly backup: boolean;
}

export interface MoveCount {
  /** Addresses sampled. */
  readonly sampled: number;
  /** Of those, how many pick another server after the change. */
  readonly moved: number;
}

export interface ServerShift {
  readonly name: string;
  /** Share of the IPv4 sample this server gets before and after (0..1). */
  readonly before: number;
  readonly after: number;
  /** Share that comes to it from other servers. */
  readonly gained: number;
  /** Share that leaves it for other servers. */
  readonly lost: number;
}

export interface Flow {
  readonly from: string;
  readonly to: string;
  /** IPv4 sample addresses that move from `from` to `to`. */
  readonly count: number;
  /** count / sampled. */
  readonly share: number;
}

export interface SourceHashMoves {
  readonly ipv4: MoveCount;
  readonly ipv6: MoveCount;
  /** The exact share an ideal hash would move for these names and weights (see {@link expectedMovedShare}). */
  readonly expected: number;
  /** Every server on either side: in the new order, then those that leave. */
  readonly servers: readonly ServerShift[];
  /** Every non-empty flow, largest first. */
  readonly flows: readonly Flow[];
}

export interface SampleOptions {
  readonly ipv4?: number;
  readonly ipv6?: number;
  /**
   * Compare these client addresses (as Node reports them) instead of the
   * even IPv4 spread: to ask where known clients would go. Counted, with
   * per-server shares and flows, as the IPv4 sample.
   */
  readonly clients?: readonly string[];
}

/** The servers a pool's source_hash picks from when all are up: its primaries, or its backups if it has none. */
export function hashCandidates(servers: readonly HashServer[]): HashServer[] {
  const primaries = servers.filter((s) => !s.backup);
  return primaries.length > 0 ? primaries : servers.slice();
}

/** Same names with the same weights (order aside): no client can move. */
export function sameCandidates(a: readonly HashServer[], b: readonly HashServer[]): boolean {
  if (a.length !== b.length) return false;
  const weights = new Map(a.map((s) => [s.name, s.weight]));
  return b.every((s) => weights.get(s.name) === s.weight);
}

/**
 * The exact share of keys that weighted rendezvous hashing with an ideal
 * hash moves when the candidates change from `before` to `after`.
 *
 * Each server has one exponential variate E per key and wins with the lowest
 * E / weight. A key stays iff one server j, on both sides, beats every other
 * server on its own side; integrating over E_j gives
 * P(j keeps its keys) = 1 / Σ_i max(w_i / w_j, w'_i / w'_j) over the union
 * (w = 0 on a side where i is absent), and the moved share is 1 − Σ_j of that.
 */
export function expectedMovedShare(before: readonly HashServer[], after: readonly HashServer[]): number {
  const wBefore = new Map(before.map((s) => [s.name, s.weight]));
  const wAfter = new Map(after.map((s) => [s.name, s.weight]));
  if (wBefore.size === 0 || wAfter.size === 0) return wBefore.size === 0 && wAfter.size === 0 ? 0 : 1;
  const names = new Set([...wBefore.keys(), ...wAfter.keys()]);
  let stays = 0;
  for (const j of names) {
    const bj = wBefore.get(j);
    const aj = wAfter.get(j);
    if (bj === undefined || aj === undefined) continue;
    let sum = 0;
    for (const i of names) sum += Math.max((wBefore.get(i) ?? 0) / bj, (wAfter.get(i) ?? 0) / aj);
    stays += 1 / sum;
  }
  const moved = 1 - stays;
  // Rounding leaves crumbs like 1e-16 where the exact answer is 0.
  return moved < 1e-9 ? 0 : moved;
}

const OCTETS = Array.from({ length: 256 }, (_, i) => String(i));

/** The i-th of `count` IPv4 sample addresses. */
export function ipv4SampleKey(i: number, count: number): string {
  const a = Math.floor(((i + 0.5) * 4294967296) / count);
  return `${OCTETS[a >>> 24]}.${OCTETS[(a >>> 16) & 255]}.${OCTETS[(a >>> 8) & 255]}.${OCTETS[a & 255]}`;
}

/** splitmix32: small, fast, and the same everywhere. */
function splitmix32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

let ipv6Cache: { count: number; keys: readonly string[] } | undefined;

/** The `count` IPv6 sample addresses, in order (kept for the next call). */
export function ipv6SampleKeys(count: number): readonly string[] {
  if (ipv6Cache?.count === count) return ipv6Cache.keys;
  const next = splitmix32(IPV6_SEED);
  const keys: string[] = new Array<string>(count);
  const bytes = new Uint8Array(16);
  for (let i = 0; i < count; i++) {
    for (let at = 0; at < 16; at += 4) {
      const r = next();
      bytes[at] = at === 0 ? 0x20 | ((r >>> 24) & 0x1f) : r >>> 24; // 2000::/3
      bytes[at + 1] = (r >>> 16) & 0xff;
      bytes[at + 2] = (r >>> 8) & 0xff;
      bytes[at + 3] = r & 0xff;
    }
    keys[i] = formatIpv6(bytes);
  }
  ipv6Cache = { count, keys };
  return keys;
}

interface Indexed {
  readonly name: string;
  readonly weight: number;
  readonly active: number;
  readonly index: number;
}

/** One pool's comparison while the sample is walked. */
class Tally {
  readonly names: string[];
  readonly before: Picker<Indexed>;
  readonly after: Picker<Indexed>;
  /** counts[from * n + to], IPv4 sample. */
  readonly counts: Float64Array;
  ipv4Moved = 0;
  ipv6Moved = 0;

  constructor(
    readonly from: readonly HashServer[],
    readonly to: readonly HashServer[],
  ) {
    // Reported in the new order, then the servers that leave.
    this.names = [...new Set([...to.map((s) => s.name), ...from.map((s) => s.name)])];
    const index = new Map(this.names.map((n, i) => [n, i]));
    const indexed = (list: readonly HashServer[]): Indexed[] => list.map((s) => ({ name: s.name, weight: s.weight, active: 0, index: index.get(s.name)! }));
    this.before = createPicker('source_hash', indexed(from));
    this.after = createPicker('source_hash', indexed(to));
    this.counts = new Float64Array(this.names.length * this.names.length);
  }

  ipv4(key: string): void {
    const a = this.before.pick(key);
    const b = this.after.pick(key);
    if (a === undefined || b === undefined) return;
    this.counts[a.index * this.names.length + b.index]!++;
    if (a.index !== b.index) this.ipv4Moved++;
  }

  ipv6(key: string): void {
    if (this.before.pick(key)?.index !== this.after.pick(key)?.index) this.ipv6Moved++;
  }

  result(ipv4: number, ipv6: number): SourceHashMoves {
    const n = this.names.length;
    const total = Math.max(1, ipv4);
    const servers: ServerShift[] = [];
    const flows: Flow[] = [];
    for (let i = 0; i < n; i++) {
      let before = 0;
      let after = 0;
      let gained = 0;
      let lost = 0;
      for (let j = 0; j < n; j++) {
        const out = this.counts[i * n + j]!;
        const inn = this.counts[j * n + i]!;
        before += out;
        after += inn;
        if (j !== i) {
          lost += out;
          gained += inn;
          if (out > 0) flows.push({ from: this.names[i]!, to: this.names[j]!, count: out, share: out / total });
        }
      }
      servers.push({ name: this.names[i]!, before: before / total, after: after / total, gained: gained / total, lost: lost / total });
    }
    flows.sort((x, y) => y.count - x.count || (x.from < y.from ? -1 : x.from > y.from ? 1 : x.to < y.to ? -1 : 1));
    return {
      ipv4: { sampled: ipv4, moved: this.ipv4Moved },
      ipv6: { sampled: ipv6, moved: this.ipv6Moved },
      expected: expectedMovedShare(this.from, this.to),
      servers,
      flows,
    };
  }
}

/**
 * Compares source_hash picks before and after a change, for several pools in
 * one walk over the sample. Each item's servers are the candidates (see
 * {@link hashCandidates}); weights must be > 0.
 */
export function compareSourceHash(
  changes: readonly { readonly before: readonly HashServer[]; readonly after: readonly HashServer[] }[],
  options: SampleOptions = {},
): SourceHashMoves[] {
  const clients = options.clients;
  const ipv4 = clients?.length ?? options.ipv4 ?? DEFAULT_IPV4_SAMPLES;
  const ipv6 = options.ipv6 ?? DEFAULT_IPV6_SAMPLES;
  const tallies = changes.map((c) => new Tally(c.before, c.after));
  if (tallies.length === 0) return [];
  for (let i = 0; i < ipv4; i++) {
    const key = clients !== undefined ? normaliseClientKey(clients[i]!) : ipv4SampleKey(i, ipv4);
    for (const t of tallies) t.ipv4(key);
  }
  for (const key of ipv6SampleKeys(ipv6)) {
    for (const t of tallies) t.ipv6(key);
  }
  return tallies.map((t) => t.result(ipv4, ipv6));
}
