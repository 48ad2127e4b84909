/**
 * A large set of CIDR ranges (`routes[].source`, lists of 100k networks for
 * GeoIP-style routing) with a lookup that costs a binary search, not a scan.
 *
 * Each range becomes an interval [first, last] of addresses; the intervals of
 * each family are sorted and overlapping ones merged, so a lookup finds the
 * last interval starting at or below the address and checks its end. IPv4
 * addresses are single uint32 numbers; IPv6 ones four uint32 words compared
 * in order (no BigInt on the connection path). Parsing and IPv4-mapped
 * folding are those of ./cidr.ts: `::ffff:10.0.0.0/104` is `10.0.0.0/8`, and
 * a client reported as `::ffff:10.1.2.3` is the IPv4 client 10.1.2.3.
 */
import { parseCidr } from './cidr.js';
import { isV4Mapped, parseIpInto } from './ip.js';

/** Scratch for one lookup at a time: nothing allocated per call. */
const LOOKUP = new Uint8Array(16);
const WORDS = new Uint32Array(4);

/** An immutable set of IPv4 and IPv6 ranges with a fast {@link CidrSet.has}. */
export class CidrSet {
  /** Merged IPv4 intervals: starts and ends, ascending, disjoint. */
  readonly #v4Start: Uint32Array;
  readonly #v4End: Uint32Array;
  /** Merged IPv6 intervals, four words each (start i at [4i, 4i+4)). */
  readonly #v6Start: Uint32Array;
  readonly #v6End: Uint32Array;
  /** Ranges given (before merging). */
  readonly size: number;

  /** @param cidrs already validated by parseCidr (an invalid entry throws RangeError). */
  constructor(cidrs: readonly string[]) {
    // IPv4: start × 64 + prefix is exact in a double (< 2^38), so a plain numeric typed-array sort orders them.
    const v4Keys = new Float64Array(cidrs.length);
    let n4 = 0;
    const v6: { start: Uint32Array; end: Uint32Array }[] = [];
    for (const c of cidrs) {
      const parsed = parseCidr(c);
      if (typeof parsed === 'string') throw new RangeError(parsed);
      const { v6: isV6, bytes, prefix } = parsed.range;
      if (isV6) {
        const start = new Uint32Array(4);
        const end = new Uint32Array(4);
        for (let w = 0; w < 4; w++) {
          const word = ((bytes[4 * w]! << 24) | (bytes[4 * w + 1]! << 16) | (bytes[4 * w + 2]! << 8) | bytes[4 * w + 3]!) >>> 0;
          const bits = Math.min(32, Math.max(0, prefix - 32 * w));
          const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
          start[w] = (word & mask) >>> 0;
          end[w] = (start[w]! | ~mask) >>> 0;
        }
        v6.push({ start, end });
      } else {
        const word = ((bytes[12]! << 24) | (bytes[13]! << 16) | (bytes[14]! << 8) | bytes[15]!) >>> 0;
        const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
        v4Keys[n4++] = ((word & mask) >>> 0) * 64 + prefix;
      }
    }
    const keys = v4Keys.subarray(0, n4).sort();
    const starts: number[] = [];
    const ends: number[] = [];
    for (const key of keys) {
      const prefix = key % 64;
      const start = (key - prefix) / 64;
      const end = start + (prefix === 0 ? 0x100000000 : 2 ** (32 - prefix)) - 1;
      const last = ends.length - 1;
      if (last >= 0 && start <= ends[last]!) {
        if (end > ends[last]!) ends[last] = end;
      } else {
        starts.push(start);
        ends.push(end);
      }
    }
    this.#v4Start = Uint32Array.from(starts);
    this.#v4End = Uint32Array.from(ends);

    v6.sort((a, b) => compare(a.start, 0, b.start, 0));
    const s6: Uint32Array[] = [];
    const e6: Uint32Array[] = [];
    for (const r of v6) {
      const last = e6.length - 1;
      if (last >= 0 && compare(r.start, 0, e6[last]!, 0) <= 0) {
        if (compare(r.end, 0, e6[last]!, 0) > 0) e6[last] = r.end;
      } else {
        s6.push(r.start);
        e6.push(r.end);
      }
    }
    this.#v6Start = new Uint32Array(4 * s6.length);
    this.#v6End = new Uint32Array(4 * e6.length);
    s6.forEach((w, i) => this.#v6Start.set(w, 4 * i));
    e6.forEach((w, i) => this.#v6End.set(w, 4 * i));
    this.size = cidrs.length;
  }

  /** Disjoint intervals kept after merging (both families). */
  get intervals(): number {
    return this.#v4Start.length + this.#v6Start.length / 4;
  }

  /** Whether `ip` (as Node or a PROXY header reports it: v4, v6 or v4-mapped v6) falls in any range. */
  has(ip: string | undefined): boolean {
    if (ip === undefined || parseIpInto(ip, LOOKUP) === 0) return false;
    return this.hasBytes(LOOKUP);
  }

  /** {@link has} for an address already parsed into 16 bytes (IPv4 as IPv4-mapped). */
  hasBytes(b: Uint8Array): boolean {
    if (isV4Mapped(b)) {
      const a = ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) >>> 0;
      const starts = this.#v4Start;
      // The last interval whose start is <= a.
      let lo = 0;
      let hi = starts.length - 1;
      let at = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        if (starts[mid]! <= a) {
          at = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      return at >= 0 && a <= this.#v4End[at]!;
    }
    for (let w = 0; w < 4; w++) WORDS[w] = ((b[4 * w]! << 24) | (b[4 * w + 1]! << 16) | (b[4 * w + 2]! << 8) | b[4 * w + 3]!) >>> 0;
    let lo = 0;
    let hi = this.#v6Start.length / 4 - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (compare(this.#v6Start, 4 * mid, WORDS, 0) <= 0) {
        at = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return at >= 0 && compare(WORDS, 0, this.#v6End, 4 * at) <= 0;
  }
}

/** Compares the four words of `a` at `i` with those of `b` at `j`: <0, 0, >0. */
function compare(a: Uint32Array, i: number, b: Uint32Array, j: number): number {
  for (let w = 0; w < 4; w++) {
    const d = a[i + w]! - b[j + w]!;
    if (d !== 0) return d;
  }
  return 0;
}
