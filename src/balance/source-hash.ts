/**
 * Source hash: consistent hashing of the client IP by weighted rendezvous
 * (highest random weight) hashing.
 *
 * For a key, every server gets a pseudo-random number u in (0, 1) from a hash
 * of (server name, key) and the score `weight / -ln(u)`; the highest score
 * wins. Then:
 * - each server wins a share of keys exactly proportional to its weight;
 * - removing a server moves only the keys it owned, adding one takes only the
 *   keys it now wins (the minimum possible, about 1/N of them);
 * - the scores rank all servers for a key, so when some are excluded (down,
 *   or already tried) the key goes to its next choice, and comes back when the
 *   server does;
 * - only names, weights and the key go in, so two processes or machines with
 *   the same configuration agree, whatever the order of the servers.
 *
 * A pick costs one hash per server (O(N)); for pools of tens of servers that
 * is cheaper than keeping a lookup table (Maglev) consistent with weights and
 * exclusions, and rendezvous moves fewer keys.
 *
 * Client keys: {@link SourceHashPicker.pick} itself folds the IPv4-mapped form
 * Node reports on dual-stack listeners (`::ffff:1.2.3.4` hashes as `1.2.3.4`),
 * without allocating. Addresses that arrive as free text (a PROXY v1 header,
 * configuration) may be spelt in other equivalent ways; pass them through
 * {@link normaliseClientKey} first.
 */

import { canonicalIp, mappedIpv4Start } from '../net/ip.js';
import { checkedWeight, type Candidate, type Picker } from './picker.js';

// 32-bit hashing with Math.imul: no BigInt, no allocation, and identical
// results on every platform (only 32-bit integer and IEEE double operations).

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const LANE2_SEED = 0x3c6ef372;
const LANE2_MULT = 0x5bd1e995;
/** 2^20: shifts 32 hash bits above the 20 low bits of a 52-bit integer. */
const SHIFT_20 = 1048576;
/** 2^-52: maps a 52-bit integer into [0, 1). */
const INV_2_52 = 1 / 4503599627370496;

/** MurmurHash3's 32-bit finaliser: every input bit affects every output bit. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** High 32 bits of the last {@link hash64} result (a second return value without allocating). */
let hashHigh = 0;

/**
 * 64-bit hash of `s` from index `start`, as two 32-bit lanes (FNV-1a and a
 * murmur-style multiply-xorshift) that are finalised together. Returns the low
 * half and leaves the high half in `hashHigh`.
 */
function hash64(s: string, start: number): number {
  let h1 = FNV_OFFSET;
  let h2 = LANE2_SEED;
  for (let i = start; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, FNV_PRIME);
    h2 = Math.imul(h2 ^ c, LANE2_MULT);
    h2 ^= h2 >>> 15;
  }
  const lo = fmix32(h1 ^ (s.length - start));
  hashHigh = fmix32(h2 ^ lo);
  return lo;
}

/**
 * Source hash picker. Weights and names are read when the picker is built.
 * Server names must be unique within the picker (they are within a pool).
 */
export class SourceHashPicker<S extends Candidate = Candidate> implements Picker<S> {
  readonly #servers: readonly S[];
  /** Per-server hash seeds, derived from the name. */
  readonly #seedLo: Uint32Array;
  readonly #seedHi: Uint32Array;
  readonly #invWeights: Float64Array;
  /** All weights equal: rank by the raw hash and skip the logarithm (same order). */
  readonly #uniform: boolean;

  /**
   * @param servers the usable servers, in any order; copied
   * @throws RangeError when a weight is not a finite number > 0
   */
  constructor(servers: readonly S[]) {
    // Sorted by name (code units, not locale) so that even an exact score tie
    // resolves the same way whatever order the configuration lists servers in.
    this.#servers = servers.slice().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const n = this.#servers.length;
    this.#seedLo = new Uint32Array(n);
    this.#seedHi = new Uint32Array(n);
    this.#invWeights = new Float64Array(n);
    let uniform = true;
    this.#servers.forEach((s, i) => {
      checkedWeight(s);
      this.#seedLo[i] = hash64(s.name, 0);
      this.#seedHi[i] = hashHigh;
      this.#invWeights[i] = 1 / s.weight;
      if (s.weight !== this.#servers[0]!.weight) uniform = false;
    });
    this.#uniform = uniform;
  }

  /**
   * The highest-scoring server for `key` that is not in `exclude`: the key's
   * usual server, or its next choice in a fixed per-key order.
   * @param key client IP as text; `::ffff:a.b.c.d` is treated as `a.b.c.d`
   */
  pick(key: string, exclude?: ReadonlySet<S>): S | undefined {
    const servers = this.#servers;
    const seedLo = this.#seedLo;
    const seedHi = this.#seedHi;
    const ex = exclude !== undefined && exclude.size > 0 ? exclude : undefined;
    const k1 = hash64(key, mappedIpv4Start(key));
    const k2 = hashHigh;
    let best = -1;
    if (this.#uniform) {
      let bestHash = -1;
      for (let i = 0; i < servers.length; i++) {
        if (ex !== undefined && ex.has(servers[i]!)) continue;
        const a = fmix32(k1 ^ seedLo[i]!);
        const b = fmix32(k2 ^ seedHi[i]! ^ a);
        // 52 bits, exact in a double.
        const h = b * SHIFT_20 + (a >>> 12);
        if (h > bestHash) {
          bestHash = h;
          best = i;
        }
      }
    } else {
      const invWeights = this.#invWeights;
      // Lowest -ln(u)/weight is the highest weight/-ln(u).
      let bestScore = Infinity;
      for (let i = 0; i < servers.length; i++) {
        if (ex !== undefined && ex.has(servers[i]!)) continue;
        const a = fmix32(k1 ^ seedLo[i]!);
        const b = fmix32(k2 ^ seedHi[i]! ^ a);
        // u in (0, 1), never 0 or 1: the half step keeps ln(u) finite and non-zero.
        const u = (b * SHIFT_20 + (a >>> 12) + 0.5) * INV_2_52;
        const score = -Math.log(u) * invWeights[i]!;
        if (score < bestScore) {
          bestScore = score;
          best = i;
        }
      }
    }
    return best < 0 ? undefined : servers[best];
  }
}

/**
 * Canonical text of a client IP address, so that one client always hashes the
 * same way however its address was spelt ({@link canonicalIp}: IPv4-mapped as
 * IPv4, other IPv6 in RFC 5952 form, zone dropped); brackets are dropped too.
 * Text that is not an address is returned as given (lower-cased and without a
 * zone when it contains ':').
 *
 * Addresses from Node sockets need no more than the mapped-IPv4 fold that
 * {@link SourceHashPicker.pick} already does; use this for addresses read as text.
 */
export function normaliseClientKey(ip: string): string {
  let s = ip;
  if (s.length > 1 && s.charCodeAt(0) === 91 /* [ */ && s.charCodeAt(s.length - 1) === 93 /* ] */) s = s.slice(1, -1);
  const canonical = canonicalIp(s);
  if (canonical !== undefined) return canonical;
  if (s.indexOf(':') < 0) return s;
  const zone = s.indexOf('%');
  return (zone >= 0 ? s.slice(0, zone) : s).toLowerCase();
}
