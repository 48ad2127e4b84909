/**
 * Least response time: the server with the lowest
 * `(active + 1) × average response time ÷ weight` wins, so a fast server
 * takes more connections until its queue makes it as slow as the others
 * (NGINX Plus `least_time`). `active + 1` counts the connection being
 * placed, so an idle fast server still beats an idle slow one.
 *
 * The average is an exponentially weighted moving average per server, kept
 * in shared memory so every thread picks by the same figures: each sample
 * moves it {@link LEAST_TIME_ALPHA} of the way (0.3: about the last five
 * samples carry 80% of it, so a change in a server shows within a few
 * connections or health probes, while one slow connect does not flip the
 * choice). Samples come from client connections and from health probes
 * (so an idle server's figure stays fresh). A server with no figure yet (new,
 * or just recovered) counts at the median of the pool's figures, so it is
 * not stampeded for looking infinitely fast; its first sample is blended
 * from that median too.
 *
 * Ties (equal scores, e.g. before any figure exists) are broken by weighted
 * random choice, as least_conn does.
 */

import { weightsOf, type Candidate, type Picker } from './picker.js';

/** Share of the way each new sample moves the average. */
export const LEAST_TIME_ALPHA = 0.3;
/** The largest figure kept (µs): an Int32 in shared memory, about 35 minutes. */
const MAX_US = 2 ** 31 - 1;

/**
 * The average after one more sample, in whole µs (at least 1: 0 means "no figure").
 * @param previousUs the average so far; 0 when there is none yet
 * @param seedUs where a server with no average starts (the pool's median; 0: none known, take the sample)
 */
export function blendResponse(previousUs: number, sampleUs: number, seedUs: number): number {
  const from = previousUs > 0 ? previousUs : seedUs;
  const next = from > 0 ? from + LEAST_TIME_ALPHA * (sampleUs - from) : sampleUs;
  return Math.min(MAX_US, Math.max(1, Math.round(next)));
}

/** The median of the figures above 0 (0 when there is none), skipping `except`. */
export function medianResponse<S extends Candidate>(servers: readonly S[], except?: S): number {
  const known: number[] = [];
  for (const s of servers) {
    const r = s.responseUs ?? 0;
    if (s !== except && r > 0) known.push(r);
  }
  if (known.length === 0) return 0;
  known.sort((a, b) => a - b);
  const mid = known.length >> 1;
  return known.length % 2 === 1 ? known[mid]! : (known[mid - 1]! + known[mid]!) / 2;
}

/**
 * Least response time picker. Weights are read when the picker is built;
 * `active` and `responseUs` are read live at every pick.
 */
export class LeastTimePicker<S extends Candidate = Candidate> implements Picker<S> {
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

  /** The server with the lowest (active + 1) × average ÷ weight, not in `exclude`; `key` is ignored. */
  pick(_key: string, exclude?: ReadonlySet<S>): S | undefined {
    const servers = this.#servers;
    const weights = this.#weights;
    const ex = exclude !== undefined && exclude.size > 0 ? exclude : undefined;
    // Figures are read once per pick: another thread may write one meanwhile.
    let unknown = false;
    for (const s of servers) if (!((s.responseUs ?? 0) > 0)) unknown = true;
    // Without any figure every server counts 1 µs: least_conn's choice, by (active + 1) / weight.
    const fallback = unknown ? medianResponse(servers) || 1 : 1;
    let best = -1;
    let bestScore = Infinity;
    let tiedWeight = 0;
    for (let i = 0; i < servers.length; i++) {
      const s = servers[i]!;
      if (ex !== undefined && ex.has(s)) continue;
      const r = s.responseUs ?? 0;
      const w = weights[i]!;
      const score = ((s.active + 1) * (r > 0 ? r : fallback)) / w;
      if (best < 0 || score < bestScore) {
        best = i;
        bestScore = score;
        tiedWeight = w;
      } else if (score === bestScore) {
        // Weighted reservoir sampling over the tied servers (see least-conn.ts).
        tiedWeight += w;
        if (this.#random() * tiedWeight < w) best = i;
      }
    }
    return best < 0 ? undefined : servers[best];
  }
}
