/**
 * Smooth weighted round robin, the algorithm of NGINX's upstream module.
 *
 * Every pick adds each server's weight to its running "current" value, takes
 * the server with the highest current value and subtracts the total weight
 * from it. Over one cycle of `sum(weights)` picks each server is chosen exactly
 * `weight` times, and the picks of a heavy server are interleaved with the
 * others instead of coming in one burst (weights 5,1,1 give a a b a c a a, not
 * a a a a a b c).
 */

import type { Candidate, Picker } from './picker.js';

/**
 * Round robin picker. Weights are read once, when the picker is built; the
 * running state is the only thing that changes between picks.
 */
export class RoundRobinPicker<S extends Candidate = Candidate> implements Picker<S> {
  readonly #servers: readonly S[];
  readonly #weights: Float64Array;
  readonly #current: Float64Array;

  /**
   * @param servers the usable servers; copied, so later changes to the array do not leak in
   * @throws RangeError when a weight is not a finite number > 0
   */
  constructor(servers: readonly S[]) {
    this.#servers = servers.slice();
    this.#weights = new Float64Array(this.#servers.length);
    this.#current = new Float64Array(this.#servers.length);
    this.#servers.forEach((s, i) => {
      if (!(s.weight > 0) || !Number.isFinite(s.weight)) {
        throw new RangeError(`server ${s.name}: weight must be a finite number > 0, got ${s.weight}`);
      }
      this.#weights[i] = s.weight;
    });
  }

  /** Next server in the smooth weighted order; `key` is ignored. Excluded servers neither win nor gain credit. */
  pick(_key: string, exclude?: ReadonlySet<S>): S | undefined {
    const servers = this.#servers;
    const weights = this.#weights;
    const current = this.#current;
    const ex = exclude !== undefined && exclude.size > 0 ? exclude : undefined;
    let best = -1;
    let bestCurrent = 0;
    let total = 0;
    for (let i = 0; i < servers.length; i++) {
      if (ex !== undefined && ex.has(servers[i]!)) continue;
      const w = weights[i]!;
      const c = current[i]! + w;
      current[i] = c;
      total += w;
      // Strictly greater: on equal credit the earlier server wins, which keeps
      // the sequence deterministic for a given configuration.
      if (best < 0 || c > bestCurrent) {
        best = i;
        bestCurrent = c;
      }
    }
    if (best < 0) return undefined;
    current[best] = bestCurrent - total;
    return servers[best];
  }
}
