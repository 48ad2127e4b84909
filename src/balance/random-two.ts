/**
 * Power of two choices: draw two different servers at random, each with
 * probability proportional to its weight, and keep the less loaded one by the
 * least connections measure (`active / weight`).
 *
 * It gets most of least_conn's benefit while avoiding its herd behaviour when
 * counts are stale (several workers, bursts): the single least loaded server is
 * not chosen by everyone at once.
 */

import { checkedWeight, type Candidate, type Picker } from './picker.js';

/**
 * Power of two choices picker. Weights are read when the picker is built;
 * `active` is read live at every pick.
 */
export class RandomTwoPicker<S extends Candidate = Candidate> implements Picker<S> {
  readonly #servers: readonly S[];
  readonly #weights: Float64Array;
  /** `#ends[i]` is the sum of the weights of servers 0..i: server i owns [ends[i-1], ends[i]). */
  readonly #ends: Float64Array;
  readonly #total: number;
  readonly #random: () => number;

  /**
   * @param servers the usable servers; copied, so later changes to the array do not leak in
   * @param random source of uniform numbers in [0, 1) (injectable for tests)
   * @throws RangeError when a weight is not a finite number > 0
   */
  constructor(servers: readonly S[], random: () => number = Math.random) {
    this.#servers = servers.slice();
    const n = this.#servers.length;
    this.#weights = new Float64Array(n);
    this.#ends = new Float64Array(n);
    this.#random = random;
    let total = 0;
    this.#servers.forEach((s, i) => {
      this.#weights[i] = checkedWeight(s);
      total += s.weight;
      this.#ends[i] = total;
    });
    this.#total = total;
  }

  /** The less loaded of two weighted random draws, never from `exclude`; `key` is ignored. */
  pick(_key: string, exclude?: ReadonlySet<S>): S | undefined {
    const servers = this.#servers;
    const n = servers.length;
    if (exclude !== undefined && exclude.size > 0) return this.#pickExcluding(exclude);
    if (n <= 1) return servers[0];
    const weights = this.#weights;
    const ends = this.#ends;
    const first = this.#find(this.#random() * this.#total);
    // Draw the second from the weight left once `first` is taken out, then
    // shift past first's interval: a distinct server without rejection loops.
    const wFirst = weights[first]!;
    let r = this.#random() * (this.#total - wFirst);
    if (r >= ends[first]! - wFirst) r += wFirst;
    let second = this.#find(r);
    // Only float rounding at an interval edge can land back on `first`.
    if (second === first) second = first + 1 < n ? first + 1 : first - 1;
    return this.#lessLoaded(first, second);
  }

  /** Index of the server whose interval holds `r` (binary search over `#ends`). */
  #find(r: number): number {
    const ends = this.#ends;
    let lo = 0;
    let hi = ends.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (r < ends[mid]!) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** Slow path (a retry after a failed connect): linear scans that skip `exclude`. */
  #pickExcluding(exclude: ReadonlySet<S>): S | undefined {
    const servers = this.#servers;
    const weights = this.#weights;
    let total = 0;
    let last = -1;
    let count = 0;
    for (let i = 0; i < servers.length; i++) {
      if (exclude.has(servers[i]!)) continue;
      total += weights[i]!;
      last = i;
      count++;
    }
    if (count === 0) return undefined;
    if (count === 1) return servers[last];
    const first = this.#scan(this.#random() * total, exclude, -1);
    const second = this.#scan(this.#random() * (total - weights[first]!), exclude, first);
    return this.#lessLoaded(first, second);
  }

  /** Weighted scan over the servers not excluded and not `skip`; rounding overshoot falls to the last eligible one. */
  #scan(r: number, exclude: ReadonlySet<S>, skip: number): number {
    const servers = this.#servers;
    const weights = this.#weights;
    let last = -1;
    for (let i = 0; i < servers.length; i++) {
      if (i === skip || exclude.has(servers[i]!)) continue;
      last = i;
      r -= weights[i]!;
      if (r < 0) return i;
    }
    return last;
  }

  /** The one of two servers with the lower active/weight; `a` (a weighted draw itself) on a tie. */
  #lessLoaded(a: number, b: number): S {
    const sa = this.#servers[a]!;
    const sb = this.#servers[b]!;
    return sb.active * this.#weights[a]! < sa.active * this.#weights[b]! ? sb : sa;
  }
}
