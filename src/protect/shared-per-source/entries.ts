/**
 * The entries of the shared per-source table and what links them (layout.ts
 * has where each field is): the hash index, the free list, the refilling
 * list, and the token buckets. All of it runs under the table's lock.
 *
 * An entry is forgotten only when it holds nothing: no open connection and
 * a full bucket (the state a new entry would start with; the table's rules
 * are in shared-per-source.ts). An entry without connections whose bucket
 * is still refilling waits on the refilling list, oldest first, where
 * admit() (forgetOne) and sweep() find it.
 *
 * Plain functions over the table's views, passed by the caller from its own
 * fields: the same loads as when these were methods of the table, and no
 * object between the table and its arrays. They are exported together as
 * `entries` rather than one by one because they call each other, and V8
 * calls a module's own function directly in optimized code but an exported
 * one through its module cell.
 */
import * as layout from './layout.js';

// Module-local copies: V8 folds a module's own constants into optimized
// code, but loads an imported binding from its module cell at every use.
const { E_INTS, E_HASH, E_STATE, E_OPEN, E_NEXT, E_PREV, E_LISTED, F_STRIDE, F_TOKENS, F_AT, H_FREE, H_SIZE, H_HEAD, H_TAIL } = layout;

/** At most this many refilling entries are looked at to find one to forget: admit() stays O(1). */
const EVICT_SCAN = 16;

/** Put live entry `e` into the index. */
function place(i32: Int32Array, index: Int32Array, mask: number, e: number): void {
  const hash = i32[e * E_INTS + E_HASH]!;
  let i = hash & mask;
  while (index[i] !== 0) i = (i + 1) & mask;
  index[i] = (hash & 0xff000000) | (e + 1);
}

/** The index slot of live entry `e`, or -1. */
function slotOf(i32: Int32Array, index: Int32Array, mask: number, e: number): number {
  const want = e + 1;
  for (let i = i32[e * E_INTS + E_HASH]! & mask, n = 0; n <= mask; i = (i + 1) & mask, n++) {
    const s = index[i]!;
    if (s === 0) return -1;
    if ((s & 0xffffff) === want) return i;
  }
  return -1;
}

/** Forget live entry `e` (it holds no connection: every column is 0). */
function remove(i32: Int32Array, index: Int32Array, mask: number, e: number): void {
  const at = e * E_INTS;
  i32[at + E_STATE] = 0; // the commit
  const slot = slotOf(i32, index, mask, e);
  if (slot >= 0) unplace(i32, index, mask, slot);
  if (i32[at + E_LISTED] === 1) unlink(i32, e);
  i32[at + E_NEXT] = i32[H_FREE]!;
  i32[H_FREE] = e;
  i32[H_SIZE]! -= 1;
}

/** Empty index slot `i`, moving back later members of its run that would not be found past the hole. */
function unplace(i32: Int32Array, index: Int32Array, mask: number, i: number): void {
  for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
    const s = index[j]!;
    if (s === 0) break;
    const home = i32[((s & 0xffffff) - 1) * E_INTS + E_HASH]! & mask;
    // Whether `home` lies cyclically in (i, j]: then the entry at j is still reachable and stays.
    const stays = i <= j ? home > i && home <= j : home > i || home <= j;
    if (!stays) {
      index[i] = s;
      i = j;
    }
  }
  index[i] = 0;
}

/** Entry `e` has no open connection left: forget it if its bucket is full, else keep it on the refilling list. */
function idle(i32: Int32Array, f64: Float64Array, index: Int32Array, mask: number, rate: number, e: number, now: number): void {
  if (rate > 0) refill(f64, rate, e, now);
  if (holdsNothing(i32, f64, rate, e)) remove(i32, index, mask, e);
  else append(i32, e);
}

/** Tokens earned since entry `e`'s last refill, up to `rate` (a second's worth). */
function refill(f64: Float64Array, rate: number, e: number, now: number): void {
  const f = e * F_STRIDE;
  const last = f64[f + F_AT]!;
  // Never backwards: another thread may have refilled with a later reading.
  if (now > last) {
    f64[f + F_TOKENS] = Math.min(rate, f64[f + F_TOKENS]! + ((now - last) / 1000) * rate);
    f64[f + F_AT] = now;
  }
}

/** No open connection and a full bucket: exactly what a new entry would start with. */
function holdsNothing(i32: Int32Array, f64: Float64Array, rate: number, e: number): boolean {
  return i32[e * E_INTS + E_OPEN] === 0 && (rate <= 0 || f64[e * F_STRIDE + F_TOKENS]! >= rate);
}

/** Make room by forgetting one entry that holds nothing; false if none of the oldest does. */
function forgetOne(i32: Int32Array, f64: Float64Array, index: Int32Array, mask: number, rate: number, now: number): boolean {
  let e = i32[H_HEAD]!;
  for (let scanned = 0; e >= 0 && scanned < EVICT_SCAN; scanned++) {
    const next = i32[e * E_INTS + E_NEXT]!;
    if (rate > 0) refill(f64, rate, e, now);
    if (holdsNothing(i32, f64, rate, e)) {
      remove(i32, index, mask, e);
      return true;
    }
    e = next;
  }
  return false;
}

/** To the back of the refilling list (oldest first). */
function append(i32: Int32Array, e: number): void {
  const at = e * E_INTS;
  const tail = i32[H_TAIL]!;
  i32[at + E_NEXT] = -1;
  i32[at + E_PREV] = tail;
  if (tail >= 0) i32[tail * E_INTS + E_NEXT] = e;
  else i32[H_HEAD] = e;
  i32[H_TAIL] = e;
  i32[at + E_LISTED] = 1;
}

/** Off the refilling list. */
function unlink(i32: Int32Array, e: number): void {
  const at = e * E_INTS;
  const prev = i32[at + E_PREV]!;
  const next = i32[at + E_NEXT]!;
  if (prev >= 0) i32[prev * E_INTS + E_NEXT] = next;
  else i32[H_HEAD] = next;
  if (next >= 0) i32[next * E_INTS + E_PREV] = prev;
  else i32[H_TAIL] = prev;
  i32[at + E_LISTED] = 0;
}

/** The operations above, for the table and its repair and audit (each copies what it calls into a module-local const). */
export const entries = Object.freeze({ place, slotOf, remove, unplace, idle, refill, holdsNothing, forgetOne, append, unlink });
