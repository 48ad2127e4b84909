/**
 * Least connections: the server with the fewest open connections per unit of
 * weight (`active / weight`) wins.
 *
 * Ties are broken by weighted random choice among the tied servers. Taking the
 * first would pile every idle-time connection onto server 0; a uniform choice
 * would ignore weights whenever connections are short and all counts sit at
 * zero. A weighted choice spreads ties and keeps weights meaningful then (NGINX
 * runs weighted round robin among the tied peers for the same reason).
 */

import { weightsOf, type Candidate, type Picker } from './picker.js';

/**
 * Least connections picker. Weights are read when the picker is built;
 * `active` is read live at every pick.
 */
export class LeastConnPicker<S extends Candidate = Candidate> implements Picker<S> {
  readonly #servers: readonly S[];
  readonly #weights: Float64Array;
  readonly #random: () => number;

  /**
   * @param servers the usable servers; copied, so later changes to the array do not leak in
   * @param random source of uniform numbers in [0, 1) used only to break ties (injectable for tests)
   * @throws RangeError when a weight is not a finite number > 0
   */
  constructor(servers: readonly S[], random: () => number = Math.random) {
    this.#servers = servers.slice();
    this.#weights = weightsOf(this.#servers);
    this.#random = random;
  }

  /** The least loaded server not in `exclude`; `key` is ignored. */
  pick(_key: string, exclude?: ReadonlySet<S>): S | undefined {
    const servers = this.#servers;
    const weights = this.#weights;
    const ex = exclude !== undefined && exclude.size > 0 ? exclude : undefined;
    let best = -1;
    let bestActive = 0;
    let bestWeight = 1;
    // Sum of the weights of the servers tied at the current minimum.
    let tiedWeight = 0;
    for (let i = 0; i < servers.length; i++) {
      const s = servers[i]!;
      if (ex !== undefined && ex.has(s)) continue;
      const a = s.active;
      const w = weights[i]!;
      // Compare a/w with bestActive/bestWeight by cross-multiplying: exact for
      // integer counts and weights, so equal loads really compare equal.
      const lhs = a * bestWeight;
      const rhs = bestActive * w;
      if (best < 0 || lhs < rhs) {
        best = i;
        bestActive = a;
        bestWeight = w;
        tiedWeight = w;
      } else if (lhs === rhs) {
        // Weighted reservoir sampling: after the scan each tied server has won
        // with probability weight / tiedWeight, without collecting the ties.
        tiedWeight += w;
        if (this.#random() * tiedWeight < w) {
          best = i;
          bestActive = a;
          bestWeight = w;
        }
      }
    }
    return best < 0 ? undefined : servers[best];
  }
}
