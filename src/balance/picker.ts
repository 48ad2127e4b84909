/**
 * One interface for every balancing algorithm. A picker is built from the
 * servers usable at that moment and is immutable: when the usable set changes
 * the pool builds a new one and swaps it in, so the connection path only reads.
 */

/** What a picker needs to know about a server. `active` is live (read at pick time). */
export interface Candidate {
  /** Stable identity, used as the hash input so that independent instances agree. */
  readonly name: string;
  /** > 0. */
  readonly weight: number;
  /** Open connections right now. */
  readonly active: number;
  /** least_time: the server's average response time in µs, read live; 0 or absent: no figure yet. */
  readonly responseUs?: number;
}

export interface Picker<S extends Candidate = Candidate> {
  /**
   * Choose a server for a new connection.
   * @param key normalised client IP (used by source_hash, ignored by others)
   * @param exclude servers already tried for this connection; never returned
   * @returns undefined when every candidate is excluded (or there are none)
   */
  pick(key: string, exclude?: ReadonlySet<S>): S | undefined;
}

/** A server's weight, checked once for every picker. @throws RangeError when it is not a finite number > 0 */
export function checkedWeight(s: Candidate): number {
  if (!(s.weight > 0) || !Number.isFinite(s.weight)) throw new RangeError(`server ${s.name}: weight must be a finite number > 0, got ${s.weight}`);
  return s.weight;
}

/** The servers' weights, in order, each checked by {@link checkedWeight}. */
export function weightsOf(servers: readonly Candidate[]): Float64Array {
  const weights = new Float64Array(servers.length);
  servers.forEach((s, i) => (weights[i] = checkedWeight(s)));
  return weights;
}
