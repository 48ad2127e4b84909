/**
 * Smooth weighted round robin, the order of NGINX's upstream module, taken
 * in turns by every serving thread.
 *
 * NGINX's algorithm adds each server's weight to its running "current"
 * value at every pick, takes the server with the highest value and
 * subtracts the total weight from it: over one cycle of `sum(weights)` picks
 * each server is chosen exactly `weight` times, a heavy server's picks
 * interleaved with the others (weights 5,1,1 give a a b a c a a, not
 * a a a a a b c). That state changes at every pick, so several threads
 * cannot share it without a lock. Instead the cycle is computed once, when
 * the picker is built, and a position counter is what the threads share:
 * each pick takes the next position (one atomic add) and reads the cycle
 * there, so N threads together follow the one sequence.
 *
 * Weights are counted in sixteenths (slow start ramps them fractionally),
 * reduced by their common divisor, and scaled down to keep the cycle at
 * most {@link MAX_CYCLE} long.
 *
 * A pick that lands on an excluded server (one already tried for this
 * connection) gives that turn to the others in rotation, so the server
 * after a failing one does not take twice its share.
 */

import { checkedWeight, type Candidate, type Picker } from './picker.js';

/** Longest cycle computed: 16 KiB of indices, built in about a millisecond. */
export const MAX_CYCLE = 4096;
/** Weights are counted in sixteenths. */
const WEIGHT_STEPS = 16;

/** Where the picks' positions come from: this picker's own count, or one every thread shares. */
export interface PositionCounter {
  /** The next position (any integer; used modulo the cycle length). */
  next(): number;
}

/** A position count of this thread's own. */
export class OwnCounter implements PositionCounter {
  #n = 0;

  next(): number {
    return this.#n++;
  }
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** The smooth weighted order of one cycle, as indices into the weights. */
function smoothCycle(weights: readonly number[]): Uint16Array {
  let q = weights.map((w) => Math.max(1, Math.round(w * WEIGHT_STEPS)));
  const d = q.reduce(gcd);
  q = q.map((w) => w / d);
  let total = q.reduce((a, b) => a + b, 0);
  if (total > MAX_CYCLE) {
    const scale = MAX_CYCLE / total;
    q = q.map((w) => Math.max(1, Math.floor(w * scale)));
    total = q.reduce((a, b) => a + b, 0);
  }
  const cycle = new Uint16Array(total);
  const current = new Float64Array(q.length);
  for (let n = 0; n < total; n++) {
    let best = 0;
    for (let i = 0; i < q.length; i++) {
      current[i]! += q[i]!;
      // Strictly greater: on equal credit the earlier server wins (a deterministic order).
      if (current[i]! > current[best]!) best = i;
    }
    current[best]! -= total;
    cycle[n] = best;
  }
  return cycle;
}

/** Round robin picker. Weights are read once, when the picker is built. */
export class RoundRobinPicker<S extends Candidate = Candidate> implements Picker<S> {
  readonly #servers: readonly S[];
  readonly #cycle: Uint16Array;
  readonly #position: PositionCounter;

  /**
   * @param servers the usable servers; copied, so later changes to the array do not leak in
   * @param position where positions come from (default: this picker's own count)
   * @throws RangeError when a weight is not a finite number > 0, or there are more than 65,535 servers
   */
  constructor(servers: readonly S[], position: PositionCounter = new OwnCounter()) {
    this.#servers = servers.slice();
    this.#position = position;
    for (const s of this.#servers) checkedWeight(s);
    if (this.#servers.length > 0xffff) throw new RangeError('round_robin holds at most 65,535 servers');
    this.#cycle = this.#servers.length === 0 ? new Uint16Array(0) : smoothCycle(this.#servers.map((s) => s.weight));
  }

  /** The server at the next position; `key` is ignored. */
  pick(_key: string, exclude?: ReadonlySet<S>): S | undefined {
    const cycle = this.#cycle;
    const len = cycle.length;
    if (len === 0) return undefined;
    // Unsigned: a shared 32-bit position wraps past 2^31.
    const p = this.#position.next() >>> 0;
    const s = this.#servers[cycle[p % len]!]!;
    if (exclude === undefined || exclude.size === 0 || !exclude.has(s)) return s;
    // Its turn goes to the others in rotation: the distinct servers after it in the cycle.
    const others: S[] = [];
    for (let i = 1; i < len && others.length < this.#servers.length; i++) {
      const c = this.#servers[cycle[(p + i) % len]!]!;
      if (!exclude.has(c) && !others.includes(c)) others.push(c);
    }
    return others.length === 0 ? undefined : others[Math.floor(p / len) % others.length];
  }
}
