/** "Did you mean …?" for misspelled keys and names. */

/**
 * Edit distance counting insertions, deletions, substitutions and swaps of
 * two neighbouring characters (`balnace` is one edit from `balance`).
 * Stops early and returns `limit + 1` once the distance must exceed `limit`.
 */
export function editDistance(a: string, b: string, limit = Infinity): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let prev2: number[] = [];
  let prev: number[] = Array.from({ length: b.length + 1 }, (_, j) => j);
  let prevBest = 0;
  for (let i = 1; i <= a.length; i++) {
    const row: number[] = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, (prev2[j - 2] ?? 0) + 1);
      row[j] = d;
      best = Math.min(best, d);
    }
    // A swap jumps from row i-2 to row i, so only two rows over the limit prove it.
    if (best > limit && prevBest > limit) return limit + 1;
    prevBest = best;
    prev2 = prev;
    prev = row;
  }
  return prev[b.length] ?? 0;
}

/** How far off a word may be and still get a suggestion: more slack for longer words. */
function tolerance(word: string): number {
  if (word.length <= 4) return 1;
  return word.length <= 8 ? 2 : 3;
}

/**
 * The candidate closest to `word`, if one is close enough to be a likely
 * typo; case is ignored so `Balance` finds `balance`. Ties go to the
 * earlier candidate.
 */
export function suggest(word: string, candidates: Iterable<string>): string | undefined {
  const lower = word.toLowerCase();
  const limit = tolerance(word);
  let found: string | undefined;
  let foundDistance = limit + 1;
  for (const candidate of candidates) {
    if (candidate === word) continue;
    const d = editDistance(lower, candidate.toLowerCase(), Math.min(limit, foundDistance - 1));
    if (d < foundDistance) {
      found = candidate;
      foundDistance = d;
    }
  }
  return found;
}

/** `; did you mean "x"?` for the closest candidate, or an empty string. */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  const hit = suggest(word, candidates);
  return hit === undefined ? '' : `; did you mean "${hit}"?`;
}
