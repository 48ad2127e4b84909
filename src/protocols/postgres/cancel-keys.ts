/**
 * Which server issued each live PostgreSQL cancel key, for every serving
 * thread at once: a CancelRequest arrives on a new connection, which the
 * kernel may hand to any thread, so the table lives in shared memory.
 *
 * An open-addressing table of fixed size in a SharedArrayBuffer. Each entry
 * is four Int32 words: [tag, pid, secret hash, server slot]. A session adds
 * its key when the server's BackendKeyData passes by and removes it when the
 * session ends; a probe sequence is at most {@link MAX_PROBES} long, so a
 * full neighbourhood means "not recorded" (the cancel then goes to every up
 * server of the pool, which ignores keys it did not issue), never a stall.
 *
 * The tag says who owns an entry: EMPTY, REMOVED (a tombstone that lookups
 * walk past and inserts reuse), WRITING (claimed, fields being written), or
 * LIVE + thread (so a dead thread's entries can be cleared).
 */
import type { CancelKey } from './messages.js';

const WORDS = 4;
const MAX_PROBES = 64;

const EMPTY = 0;
const REMOVED = 1;
const WRITING = 2;
/** LIVE + thread index. */
const LIVE = 16;

/** A 32-bit digest of a secret: its 4 bytes as they are (protocol 3.0), FNV-1a of longer ones (3.2). */
export function secretHash(secret: Buffer): number {
  if (secret.length === 4) return secret.readInt32BE(0);
  let h = 0x811c9dc5;
  for (const b of secret) h = Math.imul(h ^ b, 0x01000193);
  return h | 0;
}

function home(pid: number, hash: number, mask: number): number {
  return ((Math.imul(pid ^ Math.imul(hash, 0x9e3779b1), 0x85ebca6b) >>> 16) ^ pid) & mask;
}

export class CancelKeyTable {
  readonly #words: Int32Array;
  readonly #thread: number;
  readonly #entries: number;
  readonly #mask: number;

  /** @param buffer a power of two entries of 16 bytes (shared memory's `cancelKeys`) */
  constructor(buffer: SharedArrayBuffer, thread: number) {
    this.#words = new Int32Array(buffer);
    this.#thread = thread;
    this.#entries = this.#words.length / WORDS;
    this.#mask = this.#entries - 1;
  }

  /** A buffer of `entries` entries (a power of two). */
  static newBuffer(entries: number): SharedArrayBuffer {
    return new SharedArrayBuffer(entries * WORDS * 4);
  }

  /**
   * Record that `serverSlot` issued `key`. Returns the entry's index (for
   * {@link remove}), or -1 when its neighbourhood is full.
   */
  add(key: CancelKey, serverSlot: number): number {
    const w = this.#words;
    const hash = secretHash(key.secret);
    let i = home(key.pid, hash, this.#mask);
    for (let n = 0; n < MAX_PROBES; n++, i = (i + 1) & this.#mask) {
      const at = i * WORDS;
      const tag = Atomics.load(w, at);
      if (tag !== EMPTY && tag !== REMOVED) continue;
      if (Atomics.compareExchange(w, at, tag, WRITING) !== tag) continue;
      Atomics.store(w, at + 1, key.pid);
      Atomics.store(w, at + 2, hash);
      Atomics.store(w, at + 3, serverSlot);
      Atomics.store(w, at, LIVE + this.#thread);
      return i;
    }
    return -1;
  }

  /** The slot of the server that issued `key`, or -1 when none recorded it. */
  find(key: CancelKey): number {
    const w = this.#words;
    const hash = secretHash(key.secret);
    let i = home(key.pid, hash, this.#mask);
    for (let n = 0; n < MAX_PROBES; n++, i = (i + 1) & this.#mask) {
      const at = i * WORDS;
      const tag = Atomics.load(w, at);
      // Inserts take the first free entry of the sequence, but one may have been freed since: walk to the end.
      if (tag < LIVE) continue;
      if (Atomics.load(w, at + 1) === key.pid && Atomics.load(w, at + 2) === hash) return Atomics.load(w, at + 3);
    }
    return -1;
  }

  /** The session that added entry `index` has ended. */
  remove(index: number): void {
    if (index < 0) return;
    const at = index * WORDS;
    if (Atomics.load(this.#words, at) === LIVE + this.#thread) Atomics.store(this.#words, at, REMOVED);
  }

  /** Entries held now (O(table): for tests and /status). */
  get size(): number {
    let n = 0;
    for (let i = 0; i < this.#entries; i++) if (Atomics.load(this.#words, i * WORDS) >= LIVE) n++;
    return n;
  }

  /** A serving thread died: its sessions, and their keys, are gone. */
  releaseThread(thread: number): void {
    const w = this.#words;
    for (let i = 0; i < this.#entries; i++) {
      const at = i * WORDS;
      if (Atomics.load(w, at) === LIVE + thread) Atomics.compareExchange(w, at, LIVE + thread, REMOVED);
    }
  }
}
