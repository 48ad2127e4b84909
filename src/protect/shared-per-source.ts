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
 * The parts are in shared-per-source/: layout.ts (the buffer), clock.ts,
 * key-index.ts (a client's key and its entry: the class this one extends),
 * entries.ts (index, free list, refilling list, buckets), lock.ts (the lock,
 * its take-over from a dead worker, the repair) and audit.ts. Here: the
 * table, with admit, release, sweep, releaseWorker and audit.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { prefixKey } from '../net/ip.js';
import { auditLocked } from './shared-per-source/audit.js';
import { sharedClock } from './shared-per-source/clock.js';
import { entries } from './shared-per-source/entries.js';
import { KeyIndex } from './shared-per-source/key-index.js';
import * as layout from './shared-per-source/layout.js';
import type { PerSourceLimits } from './shared-per-source/layout.js';
import * as lock from './shared-per-source/lock.js';

export { sharedClock } from './shared-per-source/clock.js';
export { DEFAULT_IPV6_PREFIX, DEFAULT_MAX_SOURCES, MAX_SOURCES_LIMIT, MAX_WORKERS, type PerSourceLimits } from './shared-per-source/layout.js';
export { LAYOUT, newPerSourceBuffer, sharedPerSourceBytes } from './shared-per-source/layout.js';
export { LOCK_PATIENCE_MS } from './shared-per-source/lock.js';

// Module-local copies: V8 folds a module's own constants and functions into
// optimized code, but loads an imported binding from its module cell at every
// use (so admit and release run the same code as when this was one file).
const { E_INTS, E_LISTED, E_OPEN, E_STATE, F_STRIDE, F_TOKENS, H_HEAD, H_HWM, H_LOCK, H_SIZE, LIVE } = layout;
const { ENTRY_BYTES, HEADER_BYTES, MAGIC, H_CAPACITY, H_MAX_CONNECTIONS, H_MAX_SOURCES, H_PREFIX, H_RATE, H_REPAIRS, H_SEED, H_WAITS, H_WORKERS } = layout;
const { LAYOUT, newPerSourceBuffer, sharedPerSourceBytes } = layout;
const { append, forgetOne, holdsNothing, idle, refill, remove, unlink } = entries;
const { LOCK_PATIENCE_MS, MAIN_OWNER, TableLock, repair, unlock } = lock;
const { NOT_HELD, TAKEN_FROM_DEAD } = lock.HELD_STATES;

/** Entries handled per hold of the lock by sweep() and releaseWorker(), so no thread waits long. */
const CHUNK = 1024;

/** How create() makes a table. */
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

/** How a worker thread attaches to a table. */
export interface AttachOptions {
  /** The column this thread counts in (0..workers-1). */
  readonly worker: number;
  /** Clock in ms, the one the other threads use; default {@link sharedClock}. */
  readonly now?: () => number;
}

/**
 * The per-source table over one SharedArrayBuffer: create() in the main
 * thread, attach() in each worker, then admit() and release() per
 * connection on any thread.
 */
export class SharedPerSourceTable extends KeyIndex {
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
  /** This handle's column offset (worker × maxSources). */
  readonly #col: number;
  readonly #worker: number;
  readonly #owner: number;
  readonly #now: () => number;
  /** The slow path of the lock (the fast path's CAS is written out in admit and release). */
  readonly #lock: lock.TableLock;
  /** Releases that could not get the lock in time, done at the next chance. */
  #pending: string[] = [];

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
    const i32 = new Int32Array(sab, 0, (HEADER_BYTES + maxSources * ENTRY_BYTES) / 4);
    const f64 = new Float64Array(sab, 0, (HEADER_BYTES + maxSources * ENTRY_BYTES) / 8);
    const indexAt = HEADER_BYTES + maxSources * ENTRY_BYTES;
    const index = new Int32Array(sab, indexAt, capacity);
    super(i32, f64, index, maxSources, head[H_RATE]!, head[H_SEED]!, head[H_PREFIX]!);
    this.#sab = sab;
    this.#i32 = i32;
    this.#f64 = f64;
    this.#index = index;
    this.#cols = new Int32Array(sab, indexAt + capacity * 4, workers * maxSources);
    this.#maxSources = maxSources;
    this.#mask = capacity - 1;
    this.#workers = workers;
    this.#maxConnections = head[H_MAX_CONNECTIONS]!;
    this.#rate = head[H_RATE]!;
    this.#prefix = head[H_PREFIX]!;
    this.#worker = worker;
    this.#col = worker * maxSources;
    this.#owner = main ? MAIN_OWNER : LAYOUT.ownerOf(worker);
    this.#lock = new TableLock(i32, this.#owner);
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

  /** Columns: how many threads the table was made for. */
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
    this.key(ip);
    const now = this.#rate > 0 ? this.#now() : 0;
    if (Atomics.compareExchange(this.#i32, H_LOCK, 0, this.#owner) !== 0 && this.#lock.acquire(0) === NOT_HELD) return false;
    try {
      if (this.#pending.length > 0) {
        this.#flush(now);
        this.key(ip);
      }
      return this.#admitLocked(now);
    } catch (err) {
      this.#repair(-1, now);
      throw err;
    } finally {
      unlock(this.#i32);
    }
  }

  /**
   * A connection this worker admitted for `ip` closed. A release for a
   * client this worker holds nothing of changes nothing. If the lock cannot
   * be had in {@link LOCK_PATIENCE_MS}, the release is kept and done at this
   * handle's next admit, release or sweep.
   */
  release(ip: string): void {
    this.key(ip);
    const now = this.#rate > 0 ? this.#now() : 0;
    if (Atomics.compareExchange(this.#i32, H_LOCK, 0, this.#owner) !== 0 && this.#lock.acquire(0) === NOT_HELD) {
      this.#pending.push(ip);
      return;
    }
    try {
      if (this.#pending.length > 0) {
        this.#flush(now);
        this.key(ip);
      }
      this.#releaseLocked(now);
    } catch (err) {
      this.#repair(-1, now);
      throw err;
    } finally {
      unlock(this.#i32);
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
    const f64 = this.#f64;
    const rate = this.#rate;
    let budget = Atomics.load(i32, H_SIZE) + 1;
    while (budget > 0) {
      if (this.#lock.acquire(0) === NOT_HELD) return;
      try {
        if (this.#pending.length > 0) this.#flush(now);
        for (let n = 0; n < CHUNK && budget > 0; n++, budget--) {
          const e = i32[H_HEAD]!;
          if (e < 0) {
            budget = 0;
            break;
          }
          if (rate > 0) refill(f64, rate, e, now);
          unlink(i32, e);
          if (holdsNothing(i32, f64, rate, e)) remove(i32, this.#index, this.#mask, e);
          else append(i32, e); // still refilling: to the back, so the next one is looked at
        }
      } catch (err) {
        this.#repair(-1, now);
        throw err;
      } finally {
        unlock(i32);
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
      const held = this.#lock.acquire(w + 1);
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
            idle(i32, this.#f64, this.#index, this.#mask, this.#rate, e, now);
          }
        }
        if (e >= hwm) return;
      } catch (err) {
        this.#repair(-1, now);
        throw err;
      } finally {
        unlock(i32);
      }
    }
  }

  /**
   * Every invariant of the table, checked (O(table); for tests and
   * diagnostics): an empty list means the table is consistent.
   */
  audit(): string[] {
    if (this.#lock.acquire(0) === NOT_HELD) return [`the lock is held by ${this.#lock.holder()} and not given back`];
    try {
      return auditLocked(this.#i32, this.#index, this.#cols, this.#maxSources, this.#workers);
    } finally {
      unlock(this.#i32);
    }
  }

  // -------------------------------------------------------------------------
  // Under the lock

  #admitLocked(now: number): boolean {
    const i32 = this.#i32;
    const f64 = this.#f64;
    const rate = this.#rate;
    let e = this.find();
    if (e < 0) {
      if (i32[H_SIZE]! >= this.#maxSources && !forgetOne(i32, f64, this.#index, this.#mask, rate, now)) return false;
      // A new entry starts full: it is always admitted (limits are at least 1).
      e = this.insert(now);
      if (e < 0) return false;
    } else {
      if (rate > 0) {
        refill(f64, rate, e, now);
        if (f64[e * F_STRIDE + F_TOKENS]! < 1) return false;
      }
      if (this.#maxConnections > 0 && i32[e * E_INTS + E_OPEN]! >= this.#maxConnections) return false;
    }
    const at = e * E_INTS;
    if (rate > 0) f64[e * F_STRIDE + F_TOKENS]! -= 1;
    if (i32[at + E_LISTED] === 1) unlink(i32, e);
    this.#cols[this.#col + e]! += 1;
    i32[at + E_OPEN]! += 1;
    return true;
  }

  #releaseLocked(now: number): void {
    const e = this.find();
    if (e < 0 || this.#cols[this.#col + e] === 0) return;
    this.#cols[this.#col + e]! -= 1;
    if (--this.#i32[e * E_INTS + E_OPEN]! === 0) idle(this.#i32, this.#f64, this.#index, this.#mask, this.#rate, e, now);
  }

  /** The releases that waited for the lock (which this thread now holds). */
  #flush(now: number): void {
    const pending = this.#pending;
    this.#pending = [];
    for (const ip of pending) {
      this.key(ip);
      this.#releaseLocked(now);
    }
  }

  /** After an exception in a critical section (`dead` -1) or the take-over from dead worker `dead`: see repair(). */
  #repair(dead: number, now: number): void {
    repair(this.#i32, this.#f64, this.#index, this.#cols, this.#maxSources, this.#workers, this.#rate, dead, now);
  }
}
