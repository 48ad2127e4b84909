/**
 * A pool's stick table (HAProxy `stick on src`): which server each client
 * address was sent to, shared by every serving thread in one
 * SharedArrayBuffer, so a client keeps its server whichever thread accepts
 * it.
 *
 * A client is its address as the connection reports it (with accept_proxy,
 * the PROXY header's): IPv4 as a dotted quad (an IPv4-mapped IPv6 address
 * counts as its IPv4 one), IPv6 the whole 128 bits, as HAProxy's `type ipv6`
 * tables key it. (Per-source limits group IPv6 per /64 because one host can
 * hold a whole /64; here a client that changes address inside its /64 only
 * loses its server, which is what HAProxy does too.)
 *
 * An entry names its server by the server's shared-memory slot
 * (src/runtime/plan.ts): a slot belongs to one server identity (pool, name,
 * address) for the life of the process and is never handed to another, so
 * an entry can never send a client to a different server than it was given;
 * the pool only checks that the server is still one of its own and usable.
 *
 * Bounds: at most `size` entries. An entry with open connections is never
 * forgotten; one without lasts `expire` after its last connection closed,
 * and when the table is full the oldest idle entry makes room. A full table
 * of busy entries (or a lock that cannot be had in time) only means the new
 * client is balanced without sticking: never refused.
 *
 * The buffer has the shared per-source table's layout and uses its parts
 * (src/protect/shared-per-source/: the key of an address, the hash index,
 * the list of entries without connections, the lock and its take-over from
 * a dead worker, the audit): the same structure with other rules. Two words
 * that the per-source table leaves unused hold what is ours: the server
 * slot of each entry (entry word 11) and the table's expire (header word
 * 8). The token bucket's time field holds when the entry went idle; its
 * token field stays 0 (a table without a rate).
 */
import { auditLocked } from '../protect/shared-per-source/audit.js';
import { sharedClock } from '../protect/shared-per-source/clock.js';
import { entries } from '../protect/shared-per-source/entries.js';
import { KeyIndex } from '../protect/shared-per-source/key-index.js';
import * as layout from '../protect/shared-per-source/layout.js';
import * as lock from '../protect/shared-per-source/lock.js';

const { E_INTS, E_LISTED, E_OPEN, E_STATE, F_AT, F_STRIDE, H_HEAD, H_HWM, H_LOCK, H_SIZE, LIVE } = layout;
const { ENTRY_BYTES, HEADER_BYTES, MAGIC, H_CAPACITY, H_MAX_SOURCES, H_PREFIX, H_SEED, H_WORKERS } = layout;
const { append, remove, unlink } = entries;
const { MAIN_OWNER, TableLock, repair, unlock } = lock;
const { NOT_HELD, TAKEN_FROM_DEAD } = lock.HELD_STATES;

/** Entry word: the server slot (the first word the per-source layout leaves unused). */
const E_SLOT = E_LISTED + 1;
/** Header word (first cache line, unused by the per-source layout): expire in ms. */
const H_EXPIRE = 8;
/** Header word: STICK_MAGIC, so a per-source buffer is never taken for a stick table. */
const H_KIND = 9;
const STICK_MAGIC = 0x5354434b; // "STCK"

/** Most entries a table may hold (`stick.size`). */
export const MAX_STICK_SIZE = 10_000_000;

/** Entries looked at per hold of the lock by sweep() and releaseWorker(). */
const CHUNK = 1024;

/** What a table is made for (the pool's `stick`). */
export interface StickSettings {
  readonly expireMs: number;
  readonly size: number;
}

/** A zeroed table for `settings`, with a column for each of `threads` serving threads. */
export function newStickBuffer(settings: StickSettings, threads: number): SharedArrayBuffer {
  if (!Number.isInteger(settings.size) || settings.size < 1 || settings.size > MAX_STICK_SIZE) {
    throw new RangeError(`stick size must be an integer 1..${MAX_STICK_SIZE}, got ${settings.size}`);
  }
  if (!Number.isInteger(settings.expireMs) || settings.expireMs < 1 || settings.expireMs > 0x7fffffff) {
    throw new RangeError(`stick expire must be 1..${0x7fffffff} ms, got ${settings.expireMs}`);
  }
  const sab = layout.newPerSourceBuffer({ maxConnections: 0, connectRate: 0, ipv6Prefix: 128 }, { maxSources: settings.size, workers: threads });
  const head = new Int32Array(sab, 0, HEADER_BYTES / 4);
  head[H_EXPIRE] = settings.expireMs;
  Atomics.store(head, H_KIND, STICK_MAGIC);
  return sab;
}

/**
 * One thread's handle on a stick table: lookup() at pick time, hold() once
 * the connection has its server, release() when it closes (by the same
 * thread), sweep() from the main thread's timer.
 */
export class StickTable extends KeyIndex {
  readonly #sab: SharedArrayBuffer;
  readonly #i32: Int32Array;
  readonly #f64: Float64Array;
  readonly #index: Int32Array;
  readonly #cols: Int32Array;
  readonly #mask: number;
  readonly #size: number;
  readonly #workers: number;
  readonly #expireMs: number;
  readonly #col: number;
  /** This handle's lock owner word. */
  readonly #owner: number;
  readonly #lock: lock.TableLock;
  readonly #now: () => number;
  /** Releases that could not get the lock in time, done at the next chance. */
  #pending: string[] = [];

  /**
   * A handle counting in column `thread` (0: the main thread, which has a
   * lock owner of its own so releaseWorker() never takes it for a dead one).
   */
  constructor(sab: SharedArrayBuffer, thread: number, now: () => number = sharedClock) {
    const head = new Int32Array(sab, 0, HEADER_BYTES / 4);
    if (head[0] !== MAGIC || head[H_KIND] !== STICK_MAGIC) throw new RangeError('not a stick table buffer');
    const size = head[H_MAX_SOURCES]!;
    const capacity = head[H_CAPACITY]!;
    const workers = head[H_WORKERS]!;
    if (!Number.isInteger(thread) || thread < 0 || thread >= workers) throw new RangeError(`thread must be 0..${workers - 1}, got ${thread}`);
    const i32 = new Int32Array(sab, 0, (HEADER_BYTES + size * ENTRY_BYTES) / 4);
    const f64 = new Float64Array(sab, 0, (HEADER_BYTES + size * ENTRY_BYTES) / 8);
    const indexAt = HEADER_BYTES + size * ENTRY_BYTES;
    const index = new Int32Array(sab, indexAt, capacity);
    super(i32, f64, index, size, 0, head[H_SEED]!, head[H_PREFIX]!);
    this.#sab = sab;
    this.#i32 = i32;
    this.#f64 = f64;
    this.#index = index;
    this.#cols = new Int32Array(sab, indexAt + capacity * 4, workers * size);
    this.#mask = capacity - 1;
    this.#size = size;
    this.#workers = workers;
    this.#expireMs = head[H_EXPIRE]!;
    this.#col = thread * size;
    this.#owner = thread === 0 ? MAIN_OWNER : layout.LAYOUT.ownerOf(thread);
    this.#lock = new TableLock(i32, this.#owner);
    this.#now = now;
  }

  /** The buffer, for the other threads. */
  get buffer(): SharedArrayBuffer {
    return this.#sab;
  }

  /** The settings the table was made with. */
  get settings(): StickSettings {
    return { expireMs: this.#expireMs, size: this.#size };
  }

  /** Clients remembered now (idle ones past expire count until the next sweep or lookup forgets them). */
  get entries(): number {
    return Atomics.load(this.#i32, H_SIZE);
  }

  /** The server slot `ip` sticks to, or -1 (none, expired, or the lock could not be had). */
  lookup(ip: string): number {
    this.key(ip);
    if (!this.#take()) return -1;
    try {
      const now = this.#now();
      if (this.#pending.length > 0) this.#flush(now, ip);
      const e = this.find();
      if (e < 0) return -1;
      if (this.#expired(e, now)) {
        remove(this.#i32, this.#index, this.#mask, e);
        return -1;
      }
      return this.#i32[e * E_INTS + E_SLOT]!;
    } catch (err) {
      this.#repair(-1);
      throw err;
    } finally {
      unlock(this.#i32);
    }
  }

  /**
   * A connection of `ip` goes to the server in `slot`: the client sticks to
   * it from now on (a different server before is replaced), and its entry
   * is held until release(ip). false: not remembered (the table is full of
   * clients with open connections, or the lock could not be had); then
   * release() must not be called.
   */
  hold(ip: string, slot: number): boolean {
    this.key(ip);
    if (!this.#take()) return false;
    try {
      const i32 = this.#i32;
      const now = this.#now();
      if (this.#pending.length > 0) this.#flush(now, ip);
      let e = this.find();
      if (e < 0) {
        if (i32[H_SIZE]! >= this.#size) {
          // The oldest idle client makes room; none idle: this one is balanced without sticking.
          const oldest = i32[H_HEAD]!;
          if (oldest < 0) return false;
          remove(i32, this.#index, this.#mask, oldest);
        }
        e = this.insert(now);
        if (e < 0) return false;
      }
      const at = e * E_INTS;
      if (i32[at + E_LISTED] === 1) unlink(i32, e);
      i32[at + E_SLOT] = slot;
      this.#cols[this.#col + e]! += 1;
      i32[at + E_OPEN]! += 1;
      return true;
    } catch (err) {
      this.#repair(-1);
      throw err;
    } finally {
      unlock(this.#i32);
    }
  }

  /** A connection hold() counted for `ip` on this thread closed; its expire starts when it was the client's last. */
  release(ip: string): void {
    this.key(ip);
    if (!this.#take()) {
      this.#pending.push(ip);
      return;
    }
    try {
      const now = this.#now();
      if (this.#pending.length > 0) this.#flush(now, ip);
      this.#releaseLocked(now);
    } catch (err) {
      this.#repair(-1);
      throw err;
    } finally {
      unlock(this.#i32);
    }
  }

  /** Forget the entries idle for `expire` (oldest first: the idle list is in the order they went idle). */
  sweep(): void {
    const i32 = this.#i32;
    for (;;) {
      if (!this.#take()) return;
      try {
        const now = this.#now();
        if (this.#pending.length > 0) this.#flush(now, null);
        for (let n = 0; n < CHUNK; n++) {
          const e = i32[H_HEAD]!;
          if (e < 0 || !this.#expired(e, now)) return;
          remove(i32, this.#index, this.#mask, e);
        }
      } catch (err) {
        this.#repair(-1);
        throw err;
      } finally {
        unlock(i32);
      }
    }
  }

  /**
   * Serving thread `w` is gone (main thread, after its exit): what it held
   * no longer counts, so its clients' entries start to expire. If it died
   * holding the lock, the table is rebuilt from its entries (clients
   * without connections are then forgotten: they are balanced afresh).
   */
  releaseWorker(w: number): void {
    if (!Number.isInteger(w) || w < 1 || w >= this.#workers) return;
    const i32 = this.#i32;
    const base = w * this.#size;
    for (let e = 0; ; ) {
      const held = this.#lock.acquire(layout.LAYOUT.ownerOf(w));
      if (held === NOT_HELD) return;
      try {
        const now = this.#now();
        if (held === TAKEN_FROM_DEAD) {
          this.#repair(w);
          return;
        }
        const hwm = i32[H_HWM]!;
        for (const end = Math.min(hwm, e + CHUNK); e < end; e++) {
          const n = this.#cols[base + e]!;
          if (n === 0) continue;
          this.#cols[base + e] = 0;
          if (i32[e * E_INTS + E_STATE] !== LIVE) continue;
          if ((i32[e * E_INTS + E_OPEN]! -= n) <= 0) this.#idle(e, now);
        }
        if (e >= hwm) return;
      } catch (err) {
        this.#repair(-1);
        throw err;
      } finally {
        unlock(i32);
      }
    }
  }

  /** Every invariant of the table checked (O(table), for tests): empty means consistent. */
  audit(): string[] {
    if (this.#lock.acquire(0) === NOT_HELD) return ['the lock is held and not given back'];
    try {
      return auditLocked(this.#i32, this.#index, this.#cols, this.#size, this.#workers);
    } finally {
      unlock(this.#i32);
    }
  }

  /** The fast path: one CAS; else the lock's patient path (false: not had in time). */
  #take(): boolean {
    return Atomics.compareExchange(this.#i32, H_LOCK, 0, this.#owner) === 0 || this.#lock.acquire(0) !== NOT_HELD;
  }

  /** Idle (no open connection) for expire. */
  #expired(e: number, now: number): boolean {
    return this.#i32[e * E_INTS + E_OPEN] === 0 && now - this.#f64[e * F_STRIDE + F_AT]! >= this.#expireMs;
  }

  /** Entry `e` has no open connection left: it expires from now, and is the newest idle one. */
  #idle(e: number, now: number): void {
    this.#i32[e * E_INTS + E_OPEN] = 0;
    this.#f64[e * F_STRIDE + F_AT] = now;
    append(this.#i32, e);
  }

  /** Under the lock, with the key set. */
  #releaseLocked(now: number): void {
    const e = this.find();
    if (e < 0 || this.#cols[this.#col + e] === 0) return;
    this.#cols[this.#col + e]! -= 1;
    if (--this.#i32[e * E_INTS + E_OPEN]! === 0) this.#idle(e, now);
  }

  /** The releases that waited for the lock; then the key is `ip`'s again. */
  #flush(now: number, ip: string | null): void {
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) {
      this.key(p);
      this.#releaseLocked(now);
    }
    if (ip !== null) this.key(ip);
  }

  #repair(dead: number): void {
    repair(this.#i32, this.#f64, this.#index, this.#cols, this.#size, this.#workers, 0, dead, this.#now());
  }
}
