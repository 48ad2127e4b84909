/**
 * The client being looked up in the shared per-source table: the key its
 * address is counted under, and that key's entry in the hash index (find,
 * insert). The table (SharedPerSourceTable) extends this class, so the key
 * lives in fields of the table handle itself as it did before the table was
 * cut into modules: admit() and release() read it with no object in
 * between, and call these methods as often as they called their private
 * forms.
 */
import { formatIpv4, isV4Mapped, mappedIpv4Start, parseIpInto } from '../../net/ip.js';
import { entries } from './entries.js';
import * as layout from './layout.js';

// Module-local copies: V8 folds a module's own constants and functions into
// optimized code, but loads an imported binding from its module cell at every use.
const { E_INTS, E_STATE, E_TAG, E_K0, E_K1, E_K2, E_K3, E_HASH, E_OPEN, E_NEXT, E_LISTED, F_STRIDE, F_TOKENS, F_AT } = layout;
const { H_FREE, H_HWM, H_SIZE, LIVE, TAG_DOTTED, TAG_OTHER, TAG_V6 } = layout;
const { place } = entries;

/** Scratch for parsing (one parse at a time per thread). */
const BYTES = new Uint8Array(16);

/** The key of one client at a time, and its entry: the lookup half of SharedPerSourceTable. */
export abstract class KeyIndex {
  readonly #i32: Int32Array;
  readonly #f64: Float64Array;
  readonly #index: Int32Array;
  readonly #mask: number;
  readonly #maxSources: number;
  readonly #rate: number;
  readonly #seed: number;
  /** IPv6 masks of the four key words. */
  readonly #m0: number;
  readonly #m1: number;
  readonly #m2: number;
  readonly #m3: number;
  // The key of the client being looked up (set by key(); one lookup at a time per thread).
  #tag = 0;
  #k0 = 0;
  #k1 = 0;
  #k2 = 0;
  #k3 = 0;
  #hash = 0;

  /** Over the table's views (the same arrays the table keeps), with the limits and seed read from its header. */
  protected constructor(i32: Int32Array, f64: Float64Array, index: Int32Array, maxSources: number, rate: number, seed: number, prefix: number) {
    this.#i32 = i32;
    this.#f64 = f64;
    this.#index = index;
    this.#mask = index.length - 1;
    this.#maxSources = maxSources;
    this.#rate = rate;
    this.#seed = seed;
    const mask = (word: number): number => {
      const bits = Math.min(32, Math.max(0, prefix - 32 * word));
      return bits === 0 ? 0 : bits === 32 ? -1 : (-1 << (32 - bits)) | 0;
    };
    this.#m0 = mask(0);
    this.#m1 = mask(1);
    this.#m2 = mask(2);
    this.#m3 = mask(3);
  }

  /**
   * Sets the key fields from `ip`, with prefixKey's grouping: text without
   * ':' (a dotted quad, or text that is no address) is its own key, an
   * IPv4-mapped address is its dotted quad, other IPv6 its network.
   *
   * The accept path sees mostly IPv4 text, so it is keyed as written, never
   * parsed: up to 15 digits and dots packed 4 bits a character, which is
   * exact (a normalised dotted quad has one spelling: no leading zeros).
   */
  protected key(ip: string, from = 0): void {
    const n = ip.length - from;
    if (n <= 15) {
      let lo = 0;
      let hi = 0;
      let i = 0;
      for (; i < n && i < 8; i++) {
        const c = ip.charCodeAt(from + i) - 46; // '.' 0, '/' 1, '0'..'9' 2..11
        if (c < 0 || c > 11) break;
        lo |= c << (i << 2);
      }
      for (; i < n; i++) {
        const c = ip.charCodeAt(from + i) - 46;
        if (c < 0 || c > 11) break;
        hi |= c << ((i - 8) << 2);
      }
      if (i === n) {
        this.#setKey(TAG_DOTTED, lo, hi, n, 0);
        return;
      }
    }
    this.#otherKey(ip);
  }

  /** IPv6 text (an IPv4-mapped address keyed as its dotted quad), or text that is no address. */
  #otherKey(ip: string): void {
    const b = BYTES;
    if (ip.indexOf(':') < 0 || parseIpInto(ip, b) === 0) {
      this.#hashKey(ip);
    } else if (isV4Mapped(b)) {
      const start = mappedIpv4Start(ip);
      // `::ffff:102:304` spells 1.2.3.4 too (rare: Node reports the dotted form).
      if (start > 0) this.key(ip, start);
      else this.key(formatIpv4(b, 12));
    } else {
      this.#setKey(
        TAG_V6,
        ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) & this.#m0,
        ((b[4]! << 24) | (b[5]! << 16) | (b[6]! << 8) | b[7]!) & this.#m1,
        ((b[8]! << 24) | (b[9]! << 16) | (b[10]! << 8) | b[11]!) & this.#m2,
        ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) & this.#m3,
      );
    }
  }

  /** Text that is no address ('' for a socket whose address was never known): its own client, by two 32-bit hashes and its length. */
  #hashKey(text: string): void {
    let h1 = 0x811c9dc5;
    let h2 = 0x2545f491;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995) ^ (h2 >>> 13);
    }
    this.#setKey(TAG_OTHER, h1, h2, text.length, 0);
  }

  /** Stores the key and its hash (murmur3-style mixing of the five words under the table's seed). */
  #setKey(tag: number, k0: number, k1: number, k2: number, k3: number): void {
    this.#tag = tag;
    this.#k0 = k0;
    this.#k1 = k1;
    this.#k2 = k2;
    this.#k3 = k3;
    let h = mix(mix(mix(mix(mix(this.#seed, tag), k0), k1), k2), k3);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    this.#hash = h ^ (h >>> 16);
  }

  /** The live entry with the current key, or -1 (under the lock). */
  protected find(): number {
    const index = this.#index;
    const i32 = this.#i32;
    const mask = this.#mask;
    const hash = this.#hash;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const s = index[i]!;
      if (s === 0) return -1;
      if (((s ^ hash) & 0xff000000) !== 0) continue;
      const e = (s & 0xffffff) - 1;
      const at = e * E_INTS;
      if (
        i32[at + E_K0] === this.#k0 &&
        i32[at + E_K1] === this.#k1 &&
        i32[at + E_K2] === this.#k2 &&
        i32[at + E_K3] === this.#k3 &&
        i32[at + E_TAG] === this.#tag
      ) {
        return e;
      }
    }
  }

  /** A new entry for the current key, full bucket and nothing open; -1 if there is no room (under the lock). */
  protected insert(now: number): number {
    const i32 = this.#i32;
    let e = i32[H_FREE]!;
    if (e >= 0) {
      i32[H_FREE] = i32[e * E_INTS + E_NEXT]!;
    } else {
      e = i32[H_HWM]!;
      if (e >= this.#maxSources) return -1;
      i32[H_HWM] = e + 1; // before the entry is written: a repair sees it as free until it is live
    }
    const at = e * E_INTS;
    i32[at + E_TAG] = this.#tag;
    i32[at + E_K0] = this.#k0;
    i32[at + E_K1] = this.#k1;
    i32[at + E_K2] = this.#k2;
    i32[at + E_K3] = this.#k3;
    i32[at + E_HASH] = this.#hash;
    i32[at + E_OPEN] = 0;
    i32[at + E_LISTED] = 0;
    this.#f64[e * F_STRIDE + F_TOKENS] = this.#rate;
    this.#f64[e * F_STRIDE + F_AT] = now;
    i32[at + E_STATE] = LIVE; // the commit: from here on a repair keeps it
    place(i32, this.#index, this.#mask, e);
    i32[H_SIZE]! += 1;
    return e;
  }
}

function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}
