/**
 * Seeded randomness for tests, so that a failing case can be replayed: the
 * same seed gives the same sequence on every machine.
 */

/**
 * A PRNG (mulberry32: small, fast, good enough to pick test cases) giving
 * numbers in [0, 1) like Math.random.
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The seed of a randomised test: `$variable` when set (to replay a run),
 * else a fresh one. Prints it on `t` with how to rerun.
 */
export function seedFrom(t: { comment(...args: unknown[]): void }, variable: string, what: string): number {
  const seed = Number(process.env[variable] ?? Date.now() % 2 ** 31);
  t.comment(`${what} seed ${seed} (rerun with ${variable}=${seed})`);
  return seed;
}
