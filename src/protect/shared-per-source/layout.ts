/**
 * The shared per-source table's buffer: the limits a table is made with, the
 * layout of its SharedArrayBuffer, and a new zeroed one (newPerSourceBuffer).
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
 * The modules that read these constants on the accept path copy them into
 * module-local consts (see shared-per-source.ts), which V8 folds into
 * optimized code as it did when all of this was one file.
 */
import { randomInt } from 'node:crypto';

/** The limits a table enforces per client. */
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

/** First header word of every table buffer: "PST1". */
export const MAGIC = 0x50535431;
/** Bytes before the first entry: two cache lines. */
export const HEADER_BYTES = 128;

// Header words (int32 indexes). The first cache line is written once, at create.
/** MAGIC, stored last: a buffer without it is no table (yet). */
export const H_MAGIC = 0;
/** The cap on tracked clients (entries). */
export const H_MAX_SOURCES = 1;
/** Slots of the index (a power of two). */
export const H_CAPACITY = 2;
/** Columns: how many threads count in the table. */
export const H_WORKERS = 3;
/** The limit of concurrent connections per client (0: none). */
export const H_MAX_CONNECTIONS = 4;
/** The limit of new connections per second per client (0: none). */
export const H_RATE = 5;
/** IPv6 clients are counted per network of this many bits. */
export const H_PREFIX = 6;
/** The hash seed. */
export const H_SEED = 7;
/** Second cache line: what the critical section writes. The lock word (lock.ts). */
export const H_LOCK = 16;
/** Live entries. */
export const H_SIZE = 17;
/** High-water mark: entries ever used (those past it were never written). */
export const H_HWM = 18;
/** First entry of the free list (-1: empty). */
export const H_FREE = 19;
/** Oldest entry of the refilling list (-1: empty). */
export const H_HEAD = 20;
/** Newest entry of the refilling list (-1: empty). */
export const H_TAIL = 21;
/** Repairs after a dead worker or an exception in a critical section. */
export const H_REPAIRS = 22;
/** Times a thread slept waiting for the lock. */
export const H_WAITS = 23;

/** Bytes of one entry: a cache line. */
export const ENTRY_BYTES = 64;
/** Int32 words of one entry. */
export const E_INTS = ENTRY_BYTES / 4;
// Entry fields as int32 indexes from the start of the buffer: entry e's field F is at e * E_INTS + F.
const E_BASE = HEADER_BYTES / 4;
/** LIVE or 0 (free): the store that commits an insert or a removal. */
export const E_STATE = E_BASE + 0;
/** What the key words hold (TAG_*). */
export const E_TAG = E_BASE + 1;
/** Key word 0 of 4 (an IPv6 network's first 32 bits; dotted text's first 8 characters). */
export const E_K0 = E_BASE + 2;
/** Key word 1 of 4. */
export const E_K1 = E_BASE + 3;
/** Key word 2 of 4 (the text's length, for dotted and other text). */
export const E_K2 = E_BASE + 4;
/** Key word 3 of 4. */
export const E_K3 = E_BASE + 5;
/** The key's hash (its slot in the index and the 8 bits stored there). */
export const E_HASH = E_BASE + 6;
/** Open connections of all workers: the sum of the entry's columns. */
export const E_OPEN = E_BASE + 7;
/** Next entry on the refilling list or the free list (-1: none). */
export const E_NEXT = E_BASE + 8;
/** Previous entry on the refilling list (-1: none). */
export const E_PREV = E_BASE + 9;
/** 1 while the entry is on the refilling list. */
export const E_LISTED = E_BASE + 10;
// The token bucket as float64 indexes (bytes 48 and 56 of an entry): entry e's field F is at e * F_STRIDE + F.
/** The bucket's tokens (at most the rate: a second's worth). */
export const F_TOKENS = HEADER_BYTES / 8 + 6;
/** The bucket's last refill, on the shared clock. */
export const F_AT = HEADER_BYTES / 8 + 7;
/** Float64 words of one entry. */
export const F_STRIDE = ENTRY_BYTES / 8;

/** E_STATE of an entry in use (0: free). */
export const LIVE = 1;
/** E_TAG of text that is no address: two hashes of it and its length. */
export const TAG_OTHER = 1;
/** E_TAG of dotted-quad text, packed 4 bits a character. */
export const TAG_DOTTED = 4;
/** E_TAG of an IPv6 network, masked to the table's prefix. */
export const TAG_V6 = 6;

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

/** Slots of the index for `maxSources` clients: a power of two, at least 16 and 2 × maxSources. */
export function indexCapacity(maxSources: number): number {
  let c = 16;
  while (c < 2 * maxSources) c *= 2;
  return c;
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
