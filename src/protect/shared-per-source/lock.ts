/**
 * The shared per-source table's lock, its take-over from a dead worker, and
 * the repair that follows.
 *
 * Concurrency: one lock for the whole table, held for tens of nanoseconds
 * per admit or release (a CAS takes it, an exchange gives it back; a short
 * spin, then Atomics.wait, so a waiter does not burn a core while the holder
 * is descheduled). Per-slot CAS would need lock-free insertion and deletion
 * in open addressing, a token bucket without float atomics and a check-and-
 * increment over two words: far more code for no gain at l4lb's rates, where
 * a connection costs tens of microseconds and the lock is held for well
 * under 1% of that. The CAS of the fast path is written out in admit() and
 * release(); TableLock is the slow path.
 *
 * A worker that is terminated can die inside the critical section, holding
 * the lock with an update half done. The lock word names its owner, and each
 * insert and removal commits with one store (an entry is live once its state
 * word says so): releaseWorker() of a dead holder takes the lock over and
 * rebuilds what derives from the live entries (index, free list, refilling
 * list, open counts as sums of the columns: repair). No thread waits for the
 * lock longer than LOCK_PATIENCE_MS, so none blocks for good behind a dead
 * holder: admit() then refuses and release() is done at the next chance.
 */
import { entries } from './entries.js';
import * as layout from './layout.js';

// Module-local copies (the spin and unlock() read them): V8 folds a module's
// own constants into optimized code, but loads an imported or exported
// binding from its module cell at every use (so what acquire() and unlock()
// read is not exported one by one).
const { E_INTS, E_LISTED, E_NEXT, E_OPEN, E_STATE, F_AT, F_STRIDE, F_TOKENS, H_FREE, H_HEAD, H_HWM, H_LOCK, H_REPAIRS, H_SIZE, H_TAIL, H_WAITS, LIVE } = layout;
const { idle, place } = entries;

/** Lock word: 0 free, else the owner (worker + 1, or MAIN_OWNER) with CONTENDED set once someone waits. */
const OWNER_MASK = 0xffff;
/** The lock owner of the main thread's handles. */
export const MAIN_OWNER = 0xfffe;
const CONTENDED = 0x10000;
/** Loads before a waiter sleeps: a few hundred nanoseconds, longer than a critical section. */
const SPIN = 200;

/**
 * The longest a thread waits for the lock before it gives up (admit refuses,
 * release is kept for later): a critical section takes well under a
 * microsecond, so only a holder that died (or a thread stalled far beyond
 * any scheduling delay) keeps it this long, and no thread, the main thread
 * least of all, may block for good behind a dead one.
 */
export const LOCK_PATIENCE_MS = 200;

/** What TableLock.acquire() got: NOT_HELD, HELD or TAKEN_FROM_DEAD. */
export type Held = 0 | 1 | 2;
const NOT_HELD = 0;
const HELD = 1;
/** Taken over from a dead worker: the table must be repaired before use. */
const TAKEN_FROM_DEAD = 2;
/** The answers of TableLock.acquire() by name (exported together so that acquire() reads its own consts). */
export const HELD_STATES = Object.freeze({ NOT_HELD, HELD, TAKEN_FROM_DEAD } as const);

/** Gives the lock in `i32` back, waking one sleeper if any. */
export function unlock(i32: Int32Array): void {
  if ((Atomics.exchange(i32, H_LOCK, 0) & CONTENDED) !== 0) Atomics.notify(i32, H_LOCK, 1);
}

/** One handle's way to the lock when the fast path's CAS fails. */
export class TableLock {
  readonly #i32: Int32Array;
  readonly #owner: number;
  /** The lock owner this handle last gave up waiting for (0: none). */
  #stuck = 0;

  /** For the table whose header `i32` covers, taking the lock as `owner`. */
  constructor(i32: Int32Array, owner: number) {
    this.#i32 = i32;
    this.#owner = owner;
  }

  /** Who holds the lock now, in words. */
  holder(): string {
    const owner = Atomics.load(this.#i32, H_LOCK) & OWNER_MASK;
    return owner === MAIN_OWNER ? 'the main thread' : `worker ${owner - 1}`;
  }

  /**
   * The slow path of taking the lock: spin a little, then sleep until it is
   * given back, at most LOCK_PATIENCE_MS. If it is held by `deadOwner` (a
   * worker known to be dead), take it over instead: the caller repairs.
   */
  acquire(deadOwner: number): Held {
    const i32 = this.#i32;
    const me = this.#owner;
    if (this.#stuck !== 0) {
      // The holder that made this handle give up last time still holds it: give up at once (no stall per connection).
      const owner = Atomics.load(i32, H_LOCK) & OWNER_MASK;
      if (owner === this.#stuck && owner !== deadOwner) return NOT_HELD;
      this.#stuck = 0;
    }
    for (let n = 0; n < SPIN; n++) {
      const c = Atomics.load(i32, H_LOCK);
      if (c === 0) {
        if (Atomics.compareExchange(i32, H_LOCK, 0, me) === 0) return HELD;
      } else if ((c & OWNER_MASK) === deadOwner) {
        // Keep CONTENDED: those asleep are woken when the repaired table is unlocked.
        if (Atomics.compareExchange(i32, H_LOCK, c, me | (c & CONTENDED)) === c) return TAKEN_FROM_DEAD;
      }
    }
    // Once a thread has slept it takes the lock marked contended: it cannot know whether others still sleep.
    const mine = me | CONTENDED;
    const deadline = performance.now() + LOCK_PATIENCE_MS;
    for (;;) {
      const c = Atomics.load(i32, H_LOCK);
      if (c === 0) {
        if (Atomics.compareExchange(i32, H_LOCK, 0, mine) === 0) return HELD;
        continue;
      }
      if ((c & OWNER_MASK) === deadOwner) {
        if (Atomics.compareExchange(i32, H_LOCK, c, mine) === c) return TAKEN_FROM_DEAD;
        continue;
      }
      if ((c & CONTENDED) === 0 && Atomics.compareExchange(i32, H_LOCK, c, c | CONTENDED) !== c) continue;
      const left = deadline - performance.now();
      if (left <= 0) {
        this.#stuck = c & OWNER_MASK;
        return NOT_HELD;
      }
      Atomics.add(i32, H_WAITS, 1);
      Atomics.wait(i32, H_LOCK, c | CONTENDED, left);
    }
  }
}

/**
 * Worker `dead` died holding the lock, maybe halfway through an update
 * (or `dead` is -1: an exception escaped this thread's own critical
 * section): rebuild everything that can be derived from the live entries
 * (whose state word is the commit of each insert and removal) and the
 * columns, the dead worker's column cleared. Under the lock.
 */
export function repair(
  i32: Int32Array,
  f64: Float64Array,
  index: Int32Array,
  cols: Int32Array,
  maxSources: number,
  workers: number,
  rate: number,
  dead: number,
  now: number,
): void {
  const S = maxSources;
  const mask = index.length - 1;
  const hwm = Math.min(Math.max(i32[H_HWM]!, 0), S);
  i32[H_HWM] = hwm;
  if (dead >= 0) cols.fill(0, dead * S, (dead + 1) * S);
  index.fill(0);
  i32[H_FREE] = -1;
  i32[H_HEAD] = -1;
  i32[H_TAIL] = -1;
  i32[H_SIZE] = 0;
  const idled: number[] = [];
  for (let e = hwm - 1; e >= 0; e--) {
    const at = e * E_INTS;
    i32[at + E_LISTED] = 0;
    if (i32[at + E_STATE] !== LIVE) {
      for (let w = 0; w < workers; w++) cols[w * S + e] = 0;
      i32[at + E_NEXT] = i32[H_FREE]!;
      i32[H_FREE] = e;
      continue;
    }
    let open = 0;
    for (let w = 0; w < workers; w++) open += cols[w * S + e]!;
    i32[at + E_OPEN] = open;
    // A bucket caught between its two stores: keep it within what a bucket can hold.
    const f = e * F_STRIDE;
    const tokens = f64[f + F_TOKENS]!;
    f64[f + F_TOKENS] = tokens >= 0 && tokens <= rate ? tokens : rate;
    if (!(f64[f + F_AT]! <= now)) f64[f + F_AT] = now;
    place(i32, index, mask, e);
    i32[H_SIZE]! += 1;
    if (open === 0) idled.push(e);
  }
  for (let k = idled.length - 1; k >= 0; k--) idle(i32, f64, index, mask, rate, idled[k]!, now);
  i32[H_REPAIRS]! += 1;
}
