/**
 * Per-client limits: concurrent connections and a connect rate (token
 * bucket, burst = one second's worth), exact across worker threads: the
 * whole table lives in one SharedArrayBuffer in which every thread admits
 * and releases. A client is an IPv4 address, or an IPv6 network of
 * `ipv6Prefix` bits (a /64 by default, as HAProxy users write
 * `ipmask(32,64)`): one IPv6 host usually holds a whole /64, so counting per
 * address would give it 2^64 budgets.
 *
 * The table is bounded, and an entry is forgotten only when it holds
 * nothing: no open connection and a full bucket (the state a new entry
 * would start with). Forgetting anything else would let a client erase its
 * own count by making the table churn (open connections from many other
 * addresses until its entry is pushed out, then connect again with a fresh
 * budget). So a full table with nothing to forget refuses new clients
 * (`rejected_limit`) instead. A bucket refills within a second, so an entry
 * with no open connection holds something for at most a second: the table
 * fills for good only with clients that keep connections open, and its cap
 * is at least the listener's `max_connections`.
 *
 * Layout (fixed at create, so attach() needs only the buffer; see LAYOUT):
 * - a header: the limits, the sizes, a hash seed, then on a cache line of
 *   their own the lock word and what the critical section changes (size,
 *   high-water mark, free list, the refilling list's head and tail);
 * - `maxSources` entries of 64 bytes, a cache line each: state, key (a tag
 *   and four 32-bit words: dotted-quad text packed 4 bits a character, or
 *   an IPv6 network masked to `ipv6Prefix` bits), hash, open connections of
 *   all workers, links of the refilling list (entries without connections
 *   whose bucket is not full yet, oldest first), then the token bucket as
 *   two float64 (tokens, last refill);
 * - the index: a power of two (at least 2 × maxSources, so at most half
 *   full) of int32 slots, linear probing with backward-shift deletion (no
 *   tombstones to pile up), a slot holding the entry number + 1 under 8 bits
 *   of its hash (most mismatches are rejected without reading the entry);
 * - one column of int32 per worker: how many connections of each entry that
 *   worker holds. An entry's open count is the sum of its columns, so when a
 *   worker dies its column is taken back (releaseWorker) and nothing it held
 *   counts any more.
 *
 * Concurrency: one lock for the whole table, held for tens of nanoseconds
 * per admit or release (a CAS takes it, an exchange gives it back; a short
 * spin, then Atomics.wait, so a waiter does not burn a core while the holder
 * is descheduled). Per-slot CAS would need lock-free insertion and deletion
 * in open addressing, a token bucket without float atomics and a check-and-
 * increment over two words: far more code for no gain at l4lb's rates, where
 * a connection costs tens of microseconds and the lock is held for well
 * under 1% of that.
 *
 * A worker that is terminated can die inside the critical section, holding
 * the lock with an update half done. The lock word names its owner, and each
 * insert and removal commits with one store (an entry is live once its state
 * word says so): releaseWorker() of a dead holder takes the lock over and
 * rebuilds what derives from the live entries (index, free list, refilling
 * list, open counts as sums of the columns). No thread waits for the lock
 * longer than LOCK_PATIENCE_MS, so none blocks for good behind a dead
 * holder: admit() then refuses and release() is done at the next chance.
 *
 * Time: the buckets of all threads run on one clock, a monotonic one
 * (performance.now() shifted once per thread onto the process-wide monotonic
 * clock): the wall clock can step back, and a bucket whose last refill lies
 * in the future would not refill until the clock caught up.
 */
import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatIpv4, isV4Mapped, mappedIpv4Start, parseIpInto, prefixKey } from '../net/ip.js';

export interface PerSourceLimits {
  /** Concurrent connections per client; 0 = unlimited. */
  readonly maxConnections: number;
  /** New connections per second per client (burst = one second's worth); 0 = unlimited. */
  readonly connectRate: number;
  /** IPv6 clients are counted per network of this many bits (0..128); default {@link DEFAULT_IPV6_PREFIX}. */
  readonly ipv6Prefix?: number;
}

/** Default cap on tracked clients (64 bytes each, plus 4 per worker and the index: about 8 MB with 2 workers, touched as used). */
export const DEFAULT_MAX_SOURCES = 100_000;

/** IPv6 clients are grouped per /64 unless configured: the smallest network a site or a SLAAC host gets. */
export const DEFAULT_IPV6_PREFIX = 64;

/** The most workers (columns) a table is made for. */
export const MAX_WORKERS = 256;
/** The most clients a table can track (entry numbers fit in the 24 low bits of an index slot). */
export const MAX_SOURCES_LIMIT = 0xffffff - 1;

// ---------------------------------------------------------------------------
// Layout

const MAGIC = 0x50535431; // "PST1"
const HEADER_BYTES = 128;
const H_MAGIC = 0;
const H_MAX_SOURCES = 1;
const H_CAPACITY = 2;
const H_WORKERS = 3;
const H_MAX_CONNECTIONS = 4;
const H_RATE = 5;
const H_PREFIX = 6;
const H_SEED = 7;
/** Second cache line: what the critical section writes. */
const H_LOCK = 16;
const H_SIZE = 17;
const H_HWM = 18;
const H_FREE = 19;
const H_HEAD = 20;
const H_TAIL = 21;
const H_REPAIRS = 22;
const H_WAITS = 23;

const ENTRY_BYTES = 64;
const E_INTS = ENTRY_BYTES / 4;
/** Entry fields as int32 indexes from the start of the buffer: entry e's field F is at e * E_INTS + F. */
const E_BASE = HEADER_BYTES / 4;
const E_STATE = E_BASE + 0;
const E_TAG = E_BASE + 1;
const E_K0 = E_BASE + 2;
const E_K1 = E_BASE + 3;
const E_K2 = E_BASE + 4;
const E_K3 = E_BASE + 5;
const E_HASH = E_BASE + 6;
const E_OPEN = E_BASE + 7;
const E_NEXT = E_BASE + 8;
const E_PREV = E_BASE + 9;
const E_LISTED = E_BASE + 10;
/** The token bucket as float64 indexes (bytes 48 and 56 of an entry): entry e's at e * F_STRIDE + F. */
const F_TOKENS = HEADER_BYTES / 8 + 6;
const F_AT = HEADER_BYTES / 8 + 7;
const F_STRIDE = ENTRY_BYTES / 8;

const LIVE = 1;
const TAG_OTHER = 1;
const TAG_DOTTED = 4;
const TAG_V6 = 6;

/** Lock word: 0 free, else the owner (worker + 1, or MAIN_OWNER) with CONTENDED set once someone waits. */
const OWNER_MASK = 0xffff;
const MAIN_OWNER = 0xfffe;
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

type Held = 0 | 1 | 2;
const NOT_HELD = 0;
const HELD = 1;
/** Taken over from a dead worker: the table must be repaired before use. */
const TAKEN_FROM_DEAD = 2;

/** At most this many refilling entries are looked at to find one to forget: admit() stays O(1). */
const EVICT_SCAN = 16;
/** Entries handled per hold of the lock by sweep() and releaseWorker(), so no thread waits long. */
const CHUNK = 1024;

/**
 * Where things are in a table's buffer, for diagnostics and for tests that
 * play a thread dying halfway through an update. Int32 indexes from the
 * start of the buffer: header words, and entry e's field F at
 * `e * entryInts + F`; the index and the columns start at the byte offsets
 * the functions give.
 */
export const LAYOUT = Object.freeze({
  lock: H_LOCK,
  size: H_SIZE,
  highWater: H_HWM,
  freeHead: H_FREE,
  listHead: H_HEAD,
  listTail: H_TAIL,
  entryInts: E_INTS,
  entry: Object.freeze({ state: E_STATE, open: E_OPEN, next: E_NEXT, prev: E_PREV, listed: E_LISTED }),
  indexByteOffset: (maxSources: number): number => HEADER_BYTES + maxSources * ENTRY_BYTES,
  columnsByteOffset: (maxSources: number): number => HEADER_BYTES + maxSources * ENTRY_BYTES + indexCapacity(maxSources) * 4,
  /** Lock owner of worker w (the main thread's handles have their own). */
  ownerOf: (worker: number): number => worker + 1,
});

/** Bytes of a table for `maxSources` clients and `workers` columns. */
export function sharedPerSourceBytes(maxSources: number, workers: number): number {
  return HEADER_BYTES + maxSources * ENTRY_BYTES + indexCapacity(maxSources) * 4 + workers * maxSources * 4;
}

function indexCapacity(maxSources: number): number {
  let c = 16;
  while (c < 2 * maxSources) c *= 2;
  return c;
}

/**
 * A monotonic clock in milliseconds that every thread of the process reads
 * alike: performance.now() counts from each thread's own start, so it is
 * shifted once onto the process-wide monotonic clock (the best of a few
 * readings: the first hrtime call can be slow).
 */
const CLOCK_OFFSET = (() => {
  let best = Infinity;
  let offset = 0;
  for (let i = 0; i < 16; i++) {
    const a = performance.now();
    const h = Number(process.hrtime.bigint()) / 1e6;
    const b = performance.now();
    if (b - a < best) {
      best = b - a;
      offset = h - (a + b) / 2;
    }
  }
  return offset;
})();

/** Milliseconds on the clock all threads share (see CLOCK_OFFSET). */
export function sharedClock(): number {
  return performance.now() + CLOCK_OFFSET;
}

export interface SharedPerSourceOptions {
  /** Cap on tracked clients; default {@link DEFAULT_MAX_SOURCES}. */
  readonly maxSources?: number;
  /** Columns: how many threads will admit (1..256); default 1. */
  readonly workers?: number;
  /** The column this handle counts in; default 0. */
  readonly worker?: number;
  /** Clock in ms; every thread must use the same one. Default {@link sharedClock}. */
  readonly now?: () => number;
}

export interface AttachOptions {
  /** The column this thread counts in (0..workers-1). */
  readonly worker: number;
  readonly now?: () => number;
}

/** A zeroed table for `limits` in a new buffer. Throws RangeError for limits out of range. */
export function newPerSourceBuffer(limits: PerSourceLimits, options: { maxSources?: number; workers?: number } = {}): SharedArrayBuffer {
  const prefix = limits.ipv6Prefix ?? DEFAULT_IPV6_PREFIX;
  const count = (name: string, v: number, min: number, max: number): number => {
    if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer ${min}..${max}, got ${v}`);
    return v;
  };
  count('ipv6Prefix', prefix, 0, 128);
  const maxConnections = count('maxConnections', limits.maxConnections, 0, 0x7fffffff);
  const rate = count('connectRate', limits.connectRate, 0, 0x7fffffff);
  const maxSources = count('maxSources', options.maxSources ?? DEFAULT_MAX_SOURCES, 1, MAX_SOURCES_LIMIT);
  const workers = count('workers', options.workers ?? 1, 1, MAX_WORKERS);
  const sab = new SharedArrayBuffer(sharedPerSourceBytes(maxSources, workers));
  const head = new Int32Array(sab, 0, HEADER_BYTES / 4);
  head[H_MAX_SOURCES] = maxSources;
  head[H_CAPACITY] = indexCapacity(maxSources);
  head[H_WORKERS] = workers;
  head[H_MAX_CONNECTIONS] = maxConnections;
  head[H_RATE] = rate;
  head[H_PREFIX] = prefix;
  // A seed no client can know, so no one can choose addresses that pile up in one probe run.
  head[H_SEED] = randomInt(0x7fffffff);
  head[H_FREE] = -1;
  head[H_HEAD] = -1;
  head[H_TAIL] = -1;
  Atomics.store(head, H_MAGIC, MAGIC);
  return sab;
}

/** Scratch for parsing (one parse at a time per thread). */
const BYTES = new Uint8Array(16);

export class SharedPerSourceTable {
  readonly #sab: SharedArrayBuffer;
  readonly #i32: Int32Array;
  readonly #f64: Float64Array;
  readonly #index: Int32Array;
  readonly #cols: Int32Array;
  readonly #maxSources: number;
  readonly #mask: number;
  readonly #workers: number;
  readonly #maxConnections: number;
  readonly #rate: number;
  readonly #prefix: number;
  readonly #seed: number;
  /** IPv6 masks of the four key words. */
  readonly #m0: number;
  readonly #m1: number;
  readonly #m2: number;
  readonly #m3: number;
  /** This handle's column offset (worker × maxSources). */
  readonly #col: number;
  readonly #worker: number;
  readonly #owner: number;
  readonly #now: () => number;
  // The key of the client being looked up (set by #key; one lookup at a time per thread).
  #tag = 0;
  #k0 = 0;
  #k1 = 0;
  #k2 = 0;
  #k3 = 0;
  #hash = 0;
  /** Releases that could not get the lock in time, done at the next chance. */
  #pending: string[] = [];
  /** The lock owner this handle last gave up waiting for (0: none). */
  #stuck = 0;

  /**
   * A handle on the table in `sab` counting in column `worker`; `main`
   * handles (the thread that made the table) have a lock owner of their own,
   * so releaseWorker() never mistakes them for a dead worker.
   */
  protected constructor(sab: SharedArrayBuffer, worker: number, now: () => number, main: boolean) {
    if (!(sab instanceof SharedArrayBuffer) || sab.byteLength < HEADER_BYTES || new Int32Array(sab, 0, 1)[0] !== MAGIC) {
      throw new RangeError('not a per-source table buffer');
    }
    const head = new Int32Array(sab, 0, HEADER_BYTES / 4);
    const maxSources = head[H_MAX_SOURCES]!;
    const capacity = head[H_CAPACITY]!;
    const workers = head[H_WORKERS]!;
    if (sab.byteLength < sharedPerSourceBytes(maxSources, workers)) throw new RangeError('not a per-source table buffer (too short)');
    if (!Number.isInteger(worker) || worker < 0 || worker >= workers) throw new RangeError(`worker must be 0..${workers - 1}, got ${worker}`);
    this.#sab = sab;
    this.#i32 = new Int32Array(sab, 0, (HEADER_BYTES + maxSources * ENTRY_BYTES) / 4);
    this.#f64 = new Float64Array(sab, 0, (HEADER_BYTES + maxSources * ENTRY_BYTES) / 8);
    const indexAt = HEADER_BYTES + maxSources * ENTRY_BYTES;
    this.#index = new Int32Array(sab, indexAt, capacity);
    this.#cols = new Int32Array(sab, indexAt + capacity * 4, workers * maxSources);
    this.#maxSources = maxSources;
    this.#mask = capacity - 1;
    this.#workers = workers;
    this.#maxConnections = head[H_MAX_CONNECTIONS]!;
    this.#rate = head[H_RATE]!;
    this.#prefix = head[H_PREFIX]!;
    this.#seed = head[H_SEED]!;
    const mask = (word: number): number => {
      const bits = Math.min(32, Math.max(0, this.#prefix - 32 * word));
      return bits === 0 ? 0 : bits === 32 ? -1 : (-1 << (32 - bits)) | 0;
    };
    this.#m0 = mask(0);
    this.#m1 = mask(1);
    this.#m2 = mask(2);
    this.#m3 = mask(3);
    this.#worker = worker;
    this.#col = worker * maxSources;
    this.#owner = main ? MAIN_OWNER : LAYOUT.ownerOf(worker);
    this.#now = now;
  }

  /**
   * A new table (main thread); this handle counts in column
   * `options.worker` (default 0). Hand `buffer` to the workers, which
   * attach().
   */
  static create(limits: PerSourceLimits, options: SharedPerSourceOptions = {}): SharedPerSourceTable {
    return new SharedPerSourceTable(newPerSourceBuffer(limits, options), options.worker ?? 0, options.now ?? sharedClock, true);
  }

  /** A worker thread's handle on a table made by create() (the buffer comes by postMessage or workerData). */
  static attach(sab: SharedArrayBuffer, options: AttachOptions): SharedPerSourceTable {
    return new SharedPerSourceTable(sab, options.worker, options.now ?? sharedClock, false);
  }

  /** The buffer to hand to other threads. */
  get buffer(): SharedArrayBuffer {
    return this.#sab;
  }

  /** The limits the table was made with (read from the buffer). */
  get limits(): Required<PerSourceLimits> {
    return { maxConnections: this.#maxConnections, connectRate: this.#rate, ipv6Prefix: this.#prefix };
  }

  /** Clients tracked now. */
  get size(): number {
    return Atomics.load(this.#i32, H_SIZE);
  }

  /** The cap on tracked clients. */
  get maxSources(): number {
    return this.#maxSources;
  }

  get workers(): number {
    return this.#workers;
  }

  /** The column this handle counts in. */
  get worker(): number {
    return this.#worker;
  }

  /** Times a dead worker's half-done update was repaired; and times a thread had to sleep for the lock. */
  get stats(): { repairs: number; waits: number } {
    return { repairs: Atomics.load(this.#i32, H_REPAIRS), waits: Atomics.load(this.#i32, H_WAITS) };
  }

  /** The key `ip` is counted under, as text: the table groups clients exactly as prefixKey does. */
  keyOf(ip: string): string {
    return prefixKey(ip, this.#prefix);
  }

  /**
   * A new connection from `ip` on this handle's worker: true if allowed
   * (then `release(ip)` must be called once, by the same worker, when it
   * closes), false if over a limit, if the table is full of clients it may
   * not forget, or if the lock could not be had in {@link LOCK_PATIENCE_MS}.
   */
  admit(ip: string): boolean {
    this.#key(ip);
    const now = this.#rate > 0 ? this.#now() : 0;
    if (Atomics.compareExchange(this.#i32, H_LOCK, 0, this.#owner) !== 0 && this.#acquire(0) === NOT_HELD) return false;
    try {
      if (this.#pending.length > 0) {
        this.#flush(now);
        this.#key(ip);
      }
      return this.#admitLocked(now);
    } catch (err) {
      this.#repair(-1, now);
      throw err;
    } finally {
      this.#unlock();
    }
  }

  /**
   * A connection this worker admitted for `ip` closed. A release for a
   * client this worker holds nothing of changes nothing. If the lock cannot
   * be had in {@link LOCK_PATIENCE_MS}, the release is kept and done at this
   * handle's next admit, release or sweep.
   */
  release(ip: string): void {
    this.#key(ip);
    const now = this.#rate > 0 ? this.#now() : 0;
    if (Atomics.compareExchange(this.#i32, H_LOCK, 0, this.#owner) !== 0 && this.#acquire(0) === NOT_HELD) {
      this.#pending.push(ip);
      return;
    }
    try {
      if (this.#pending.length > 0) {
        this.#flush(now);
        this.#key(ip);
      }
      this.#releaseLocked(now);
    } catch (err) {
      this.#repair(-1, now);
      throw err;
    } finally {
      this.#unlock();
    }
  }

  /** Releases that waited for the lock. */
  get pendingReleases(): number {
    return this.#pending.length;
  }

  /**
   * Forget every entry that holds nothing any more (a timer calls this).
   * Looks at each refilling entry once, a chunk per hold of the lock; gives
   * up for this time if the lock cannot be had.
   */
  sweep(): void {
    const now = this.#now();
    const i32 = this.#i32;
    let budget = Atomics.load(i32, H_SIZE) + 1;
    while (budget > 0) {
      if (this.#acquire(0) === NOT_HELD) return;
      try {
        if (this.#pending.length > 0) this.#flush(now);
        for (let n = 0; n < CHUNK && budget > 0; n++, budget--) {
          const e = i32[H_HEAD]!;
          if (e < 0) {
            budget = 0;
            break;
          }
          if (this.#rate > 0) this.#refill(e, now);
          this.#unlink(e);
          if (this.#holdsNothing(e)) this.#remove(e);
          else this.#append(e); // still refilling: to the back, so the next one is looked at
        }
      } catch (err) {
        this.#repair(-1, now);
        throw err;
      } finally {
        this.#unlock();
      }
    }
  }

  /**
   * Worker `w` is gone: take back every connection it held. Call it from the
   * main thread once the worker has exited (its 'exit' event), and let the
   * returned promise settle before a replacement attaches as `w`. If the
   * worker died holding the lock, its half-done update is repaired first.
   * Waits (without blocking the thread) while another thread holds the lock
   * too long, e.g. another dead worker whose own releaseWorker is yet to come.
   */
  async releaseWorker(w: number): Promise<void> {
    if (!Number.isInteger(w) || w < 0 || w >= this.#workers) throw new RangeError(`worker must be 0..${this.#workers - 1}, got ${w}`);
    const i32 = this.#i32;
    const cols = this.#cols;
    const base = w * this.#maxSources;
    let e = 0;
    for (;;) {
      const now = this.#now();
      const held = this.#acquire(w + 1);
      if (held === NOT_HELD) {
        await sleep(LOCK_PATIENCE_MS);
        continue;
      }
      try {
        if (held === TAKEN_FROM_DEAD) {
          this.#repair(w, now);
          if (this.#pending.length > 0) this.#flush(now);
          return;
        }
        if (this.#pending.length > 0) this.#flush(now);
        const hwm = i32[H_HWM]!;
        for (const end = Math.min(hwm, e + CHUNK); e < end; e++) {
          const n = cols[base + e]!;
          if (n === 0) continue;
          cols[base + e] = 0;
          if (i32[e * E_INTS + E_STATE] !== LIVE) continue;
          if ((i32[e * E_INTS + E_OPEN]! -= n) <= 0) {
            i32[e * E_INTS + E_OPEN] = 0;
            this.#idle(e, now);
          }
        }
        if (e >= hwm) return;
      } catch (err) {
        this.#repair(-1, now);
        throw err;
      } finally {
        this.#unlock();
      }
    }
  }

  /**
   * Every invariant of the table, checked (O(table); for tests and
   * diagnostics): an empty list means the table is consistent.
   */
  audit(): string[] {
    const problems: string[] = [];
    const i32 = this.#i32;
    const cols = this.#cols;
    const S = this.#maxSources;
    if (this.#acquire(0) === NOT_HELD) {
      const owner = Atomics.load(i32, H_LOCK) & OWNER_MASK;
      return [`the lock is held by ${owner === MAIN_OWNER ? 'the main thread' : `worker ${owner - 1}`} and not given back`];
    }
    try {
      const hwm = i32[H_HWM]!;
      let live = 0;
      let listed = 0;
      for (let e = 0; e < hwm; e++) {
        const at = e * E_INTS;
        let sum = 0;
        for (let w = 0; w < this.#workers; w++) {
          const c = cols[w * S + e]!;
          if (c < 0) problems.push(`entry ${e}: worker ${w} holds ${c}`);
          sum += c;
        }
        if (i32[at + E_STATE] !== LIVE) {
          if (sum !== 0) problems.push(`free entry ${e} has ${sum} in the columns`);
          continue;
        }
        live++;
        if (i32[at + E_OPEN] !== sum) problems.push(`entry ${e}: open ${i32[at + E_OPEN]} but columns sum to ${sum}`);
        if (i32[at + E_LISTED] === 1) listed++;
        if (sum === 0 && i32[at + E_LISTED] !== 1) problems.push(`entry ${e} holds no connection and is not on the refilling list`);
        if (sum > 0 && i32[at + E_LISTED] === 1) problems.push(`entry ${e} holds connections and is on the refilling list`);
        if (this.#slotOf(e) < 0) problems.push(`entry ${e} is not in the index`);
      }
      if (live !== i32[H_SIZE]) problems.push(`size ${i32[H_SIZE]} but ${live} live entries`);
      let slots = 0;
      for (let i = 0; i <= this.#mask; i++) {
        const s = this.#index[i]!;
        if (s === 0) continue;
        slots++;
        const e = (s & 0xffffff) - 1;
        if (e >= hwm || i32[e * E_INTS + E_STATE] !== LIVE) problems.push(`index slot ${i} names free entry ${e}`);
      }
      if (slots !== live) problems.push(`${slots} index slots for ${live} live entries`);
      let free = 0;
      for (let e = i32[H_FREE]!; e >= 0 && free <= hwm; e = i32[e * E_INTS + E_NEXT]!) {
        if (i32[e * E_INTS + E_STATE] === LIVE) problems.push(`live entry ${e} is on the free list`);
        free++;
      }
      if (free + live !== hwm) problems.push(`${free} free + ${live} live entries, but ${hwm} were ever used`);
      let walked = 0;
      let prev = -1;
      for (let e = i32[H_HEAD]!; e >= 0 && walked <= hwm; e = i32[e * E_INTS + E_NEXT]!) {
        if (i32[e * E_INTS + E_PREV] !== prev) problems.push(`refilling list: entry ${e} does not point back to ${prev}`);
        prev = e;
        walked++;
      }
      if (prev !== i32[H_TAIL]) problems.push(`refilling list ends at ${prev}, tail says ${i32[H_TAIL]}`);
      if (walked !== listed) problems.push(`refilling list has ${walked} entries, ${listed} are marked`);
    } finally {
      this.#unlock();
    }
    return problems;
  }

  // -------------------------------------------------------------------------
  // Keys

  /**
   * Sets the key fields from `ip`, with prefixKey's grouping: text without
   * ':' (a dotted quad, or text that is no address) is its own key, an
   * IPv4-mapped address is its dotted quad, other IPv6 its network.
   *
   * The accept path sees mostly IPv4 text, so it is keyed as written, never
   * parsed: up to 15 digits and dots packed 4 bits a character, which is
   * exact (a normalised dotted quad has one spelling: no leading zeros).
   */
  #key(ip: string, from = 0): void {
    const n = ip.length - from;
    if (n <= 15) {
      let lo = 0;
      let hi = 0;
      let i = 0;
      for (; i < n && i < 8; i++) {
        const c = ip.charCodeAt(from + i) - 46; // '.' 0, '/' 1, '0'..'9' 2..11
        if (c < 0 || c > 11) break;
        lo |= c << (i << 2);
      }
      for (; i < n; i++) {
        const c = ip.charCodeAt(from + i) - 46;
        if (c < 0 || c > 11) break;
        hi |= c << ((i - 8) << 2);
      }
      if (i === n) {
        this.#setKey(TAG_DOTTED, lo, hi, n, 0);
        return;
      }
    }
    this.#otherKey(ip);
  }

  /** IPv6 text (an IPv4-mapped address keyed as its dotted quad), or text that is no address. */
  #otherKey(ip: string): void {
    const b = BYTES;
    if (ip.indexOf(':') < 0 || parseIpInto(ip, b) === 0) {
      this.#hashKey(ip);
    } else if (isV4Mapped(b)) {
      const start = mappedIpv4Start(ip);
      // `::ffff:102:304` spells 1.2.3.4 too (rare: Node reports the dotted form).
      if (start > 0) this.#key(ip, start);
      else this.#key(formatIpv4(b, 12));
    } else {
      this.#setKey(
        TAG_V6,
        ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) & this.#m0,
        ((b[4]! << 24) | (b[5]! << 16) | (b[6]! << 8) | b[7]!) & this.#m1,
        ((b[8]! << 24) | (b[9]! << 16) | (b[10]! << 8) | b[11]!) & this.#m2,
        ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) & this.#m3,
      );
    }
  }

  /** Text that is no address ('' for a socket whose address was never known): its own client, by two 32-bit hashes and its length. */
  #hashKey(text: string): void {
    let h1 = 0x811c9dc5;
    let h2 = 0x2545f491;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995) ^ (h2 >>> 13);
    }
    this.#setKey(TAG_OTHER, h1, h2, text.length, 0);
  }

  /** Stores the key and its hash (murmur3-style mixing of the five words under the table's seed). */
  #setKey(tag: number, k0: number, k1: number, k2: number, k3: number): void {
    this.#tag = tag;
    this.#k0 = k0;
    this.#k1 = k1;
    this.#k2 = k2;
    this.#k3 = k3;
    let h = mix(mix(mix(mix(mix(this.#seed, tag), k0), k1), k2), k3);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    this.#hash = h ^ (h >>> 16);
  }

  /** The live entry with the current key, or -1. */
  #find(): number {
    const index = this.#index;
    const i32 = this.#i32;
    const mask = this.#mask;
    const hash = this.#hash;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const s = index[i]!;
      if (s === 0) return -1;
      if (((s ^ hash) & 0xff000000) !== 0) continue;
      const e = (s & 0xffffff) - 1;
      const at = e * E_INTS;
      if (
        i32[at + E_K0] === this.#k0 &&
        i32[at + E_K1] === this.#k1 &&
        i32[at + E_K2] === this.#k2 &&
        i32[at + E_K3] === this.#k3 &&
        i32[at + E_TAG] === this.#tag
      ) {
        return e;
      }
    }
  }

  /** The index slot of live entry `e`, or -1. */
  #slotOf(e: number): number {
    const mask = this.#mask;
    const want = e + 1;
    for (let i = this.#i32[e * E_INTS + E_HASH]! & mask, n = 0; n <= mask; i = (i + 1) & mask, n++) {
      const s = this.#index[i]!;
      if (s === 0) return -1;
      if ((s & 0xffffff) === want) return i;
    }
    return -1;
  }

  // -------------------------------------------------------------------------
  // Entries (all under the lock)

  #admitLocked(now: number): boolean {
    const i32 = this.#i32;
    const f64 = this.#f64;
    const rate = this.#rate;
    let e = this.#find();
    if (e < 0) {
      if (i32[H_SIZE]! >= this.#maxSources && !this.#forgetOne(now)) return false;
      // A new entry starts full: it is always admitted (limits are at least 1).
      e = this.#insert(now);
      if (e < 0) return false;
    } else {
      if (rate > 0) {
        this.#refill(e, now);
        if (f64[e * F_STRIDE + F_TOKENS]! < 1) return false;
      }
      if (this.#maxConnections > 0 && i32[e * E_INTS + E_OPEN]! >= this.#maxConnections) return false;
    }
    const at = e * E_INTS;
    if (rate > 0) f64[e * F_STRIDE + F_TOKENS]! -= 1;
    if (i32[at + E_LISTED] === 1) this.#unlink(e);
    this.#cols[this.#col + e]! += 1;
    i32[at + E_OPEN]! += 1;
    return true;
  }

  #releaseLocked(now: number): void {
    const e = this.#find();
    if (e < 0 || this.#cols[this.#col + e] === 0) return;
    this.#cols[this.#col + e]! -= 1;
    if (--this.#i32[e * E_INTS + E_OPEN]! === 0) this.#idle(e, now);
  }

  /** The releases that waited for the lock (which this thread now holds). */
  #flush(now: number): void {
    const pending = this.#pending;
    this.#pending = [];
    for (const ip of pending) {
      this.#key(ip);
      this.#releaseLocked(now);
    }
  }

  /** A new entry for the current key, full bucket and nothing open; -1 if there is no room. */
  #insert(now: number): number {
    const i32 = this.#i32;
    let e = i32[H_FREE]!;
    if (e >= 0) {
      i32[H_FREE] = i32[e * E_INTS + E_NEXT]!;
    } else {
      e = i32[H_HWM]!;
      if (e >= this.#maxSources) return -1;
      i32[H_HWM] = e + 1; // before the entry is written: a repair sees it as free until it is live
    }
    const at = e * E_INTS;
    i32[at + E_TAG] = this.#tag;
    i32[at + E_K0] = this.#k0;
    i32[at + E_K1] = this.#k1;
    i32[at + E_K2] = this.#k2;
    i32[at + E_K3] = this.#k3;
    i32[at + E_HASH] = this.#hash;
    i32[at + E_OPEN] = 0;
    i32[at + E_LISTED] = 0;
    this.#f64[e * F_STRIDE + F_TOKENS] = this.#rate;
    this.#f64[e * F_STRIDE + F_AT] = now;
    i32[at + E_STATE] = LIVE; // the commit: from here on a repair keeps it
    this.#place(e);
    i32[H_SIZE]! += 1;
    return e;
  }

  /** Put live entry `e` into the index. */
  #place(e: number): void {
    const index = this.#index;
    const mask = this.#mask;
    const hash = this.#i32[e * E_INTS + E_HASH]!;
    let i = hash & mask;
    while (index[i] !== 0) i = (i + 1) & mask;
    index[i] = (hash & 0xff000000) | (e + 1);
  }

  /** Forget live entry `e` (it holds no connection: every column is 0). */
  #remove(e: number): void {
    const i32 = this.#i32;
    const at = e * E_INTS;
    i32[at + E_STATE] = 0; // the commit
    const slot = this.#slotOf(e);
    if (slot >= 0) this.#unplace(slot);
    if (i32[at + E_LISTED] === 1) this.#unlink(e);
    i32[at + E_NEXT] = i32[H_FREE]!;
    i32[H_FREE] = e;
    i32[H_SIZE]! -= 1;
  }

  /** Empty index slot `i`, moving back later members of its run that would not be found past the hole. */
  #unplace(i: number): void {
    const index = this.#index;
    const i32 = this.#i32;
    const mask = this.#mask;
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
  #idle(e: number, now: number): void {
    if (this.#rate > 0) this.#refill(e, now);
    if (this.#holdsNothing(e)) this.#remove(e);
    else this.#append(e);
  }

  #refill(e: number, now: number): void {
    const f64 = this.#f64;
    const f = e * F_STRIDE;
    const last = f64[f + F_AT]!;
    // Never backwards: another thread may have refilled with a later reading.
    if (now > last) {
      f64[f + F_TOKENS] = Math.min(this.#rate, f64[f + F_TOKENS]! + ((now - last) / 1000) * this.#rate);
      f64[f + F_AT] = now;
    }
  }

  /** No open connection and a full bucket: exactly what a new entry would start with. */
  #holdsNothing(e: number): boolean {
    return this.#i32[e * E_INTS + E_OPEN] === 0 && (this.#rate <= 0 || this.#f64[e * F_STRIDE + F_TOKENS]! >= this.#rate);
  }

  /** Make room by forgetting one entry that holds nothing; false if none of the oldest does. */
  #forgetOne(now: number): boolean {
    const i32 = this.#i32;
    let e = i32[H_HEAD]!;
    for (let scanned = 0; e >= 0 && scanned < EVICT_SCAN; scanned++) {
      const next = i32[e * E_INTS + E_NEXT]!;
      if (this.#rate > 0) this.#refill(e, now);
      if (this.#holdsNothing(e)) {
        this.#remove(e);
        return true;
      }
      e = next;
    }
    return false;
  }

  /** To the back of the refilling list (oldest first). */
  #append(e: number): void {
    const i32 = this.#i32;
    const at = e * E_INTS;
    const tail = i32[H_TAIL]!;
    i32[at + E_NEXT] = -1;
    i32[at + E_PREV] = tail;
    if (tail >= 0) i32[tail * E_INTS + E_NEXT] = e;
    else i32[H_HEAD] = e;
    i32[H_TAIL] = e;
    i32[at + E_LISTED] = 1;
  }

  #unlink(e: number): void {
    const i32 = this.#i32;
    const at = e * E_INTS;
    const prev = i32[at + E_PREV]!;
    const next = i32[at + E_NEXT]!;
    if (prev >= 0) i32[prev * E_INTS + E_NEXT] = next;
    else i32[H_HEAD] = next;
    if (next >= 0) i32[next * E_INTS + E_PREV] = prev;
    else i32[H_TAIL] = prev;
    i32[at + E_LISTED] = 0;
  }

  /**
   * Worker `dead` died holding the lock, maybe halfway through an update
   * (or `dead` is -1: an exception escaped this thread's own critical
   * section): rebuild everything that can be derived from the live entries
   * (whose state word is the commit of each insert and removal) and the
   * columns, the dead worker's column cleared.
   */
  #repair(dead: number, now: number): void {
    const i32 = this.#i32;
    const f64 = this.#f64;
    const cols = this.#cols;
    const S = this.#maxSources;
    const rate = this.#rate;
    const hwm = Math.min(Math.max(i32[H_HWM]!, 0), S);
    i32[H_HWM] = hwm;
    if (dead >= 0) cols.fill(0, dead * S, (dead + 1) * S);
    this.#index.fill(0);
    i32[H_FREE] = -1;
    i32[H_HEAD] = -1;
    i32[H_TAIL] = -1;
    i32[H_SIZE] = 0;
    const idle: number[] = [];
    for (let e = hwm - 1; e >= 0; e--) {
      const at = e * E_INTS;
      i32[at + E_LISTED] = 0;
      if (i32[at + E_STATE] !== LIVE) {
        for (let w = 0; w < this.#workers; w++) cols[w * S + e] = 0;
        i32[at + E_NEXT] = i32[H_FREE]!;
        i32[H_FREE] = e;
        continue;
      }
      let open = 0;
      for (let w = 0; w < this.#workers; w++) open += cols[w * S + e]!;
      i32[at + E_OPEN] = open;
      // A bucket caught between its two stores: keep it within what a bucket can hold.
      const f = e * F_STRIDE;
      const tokens = f64[f + F_TOKENS]!;
      f64[f + F_TOKENS] = tokens >= 0 && tokens <= rate ? tokens : rate;
      if (!(f64[f + F_AT]! <= now)) f64[f + F_AT] = now;
      this.#place(e);
      i32[H_SIZE]! += 1;
      if (open === 0) idle.push(e);
    }
    for (let k = idle.length - 1; k >= 0; k--) this.#idle(idle[k]!, now);
    i32[H_REPAIRS]! += 1;
  }

  // -------------------------------------------------------------------------
  // The lock

  /**
   * The slow path of taking the lock: spin a little, then sleep until it is
   * given back, at most LOCK_PATIENCE_MS. If it is held by `deadOwner` (a
   * worker known to be dead), take it over instead: the caller repairs.
   */
  #acquire(deadOwner: number): Held {
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

  /** Gives the lock back, waking one sleeper if any. */
  #unlock(): void {
    if ((Atomics.exchange(this.#i32, H_LOCK, 0) & CONTENDED) !== 0) Atomics.notify(this.#i32, H_LOCK, 1);
  }
}

function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}
