// The soak's wire protocol and its byte streams.
//
// A stream starts with a 32-byte header from the client; then the client
// sends `up` bytes and the backend sends `down` bytes, both generated from the
// stream's seed, both checked with SHA-256 against a fresh copy of the same
// generator. The generator is AES-128-CTR over zeros keyed from (seed,
// direction): fast (AES-NI), and any dropped, duplicated, reordered or changed
// byte changes the digest.
import { createCipheriv, createHash } from 'node:crypto';

export const HEADER_BYTES = 32;
const MAGIC = 0x534f414b; // "SOAK"

/** What the backend does to this stream on purpose (a planned fault). */
export const MODES = { normal: 0, reset: 1, stall: 2 };
/**
 * Who sends FIN first. client_first: the backend ends only after the client's
 * FIN; backend_first: the client ends only after the backend's FIN; either:
 * each ends when it has sent everything.
 */
export const ORDERS = { client_first: 0, backend_first: 1, either: 2 };

export function encodeHeader({ id, seed, up, down, mode, order, pauses, faultAt }) {
  const b = Buffer.alloc(HEADER_BYTES);
  b.writeUInt32BE(MAGIC, 0);
  b.writeUInt32BE(id, 4);
  b.writeUInt32BE(seed, 8);
  b.writeUInt32BE(up, 12);
  b.writeUInt32BE(down, 16);
  b.writeUInt8(mode, 20);
  b.writeUInt8(order, 21);
  b.writeUInt8(pauses ? 1 : 0, 22);
  b.writeUInt32BE(faultAt, 24);
  return b;
}

/** The header in `b` (≥ 32 bytes), or null when it is not one (garbage). */
export function decodeHeader(b) {
  if (b.readUInt32BE(0) !== MAGIC) return null;
  return {
    id: b.readUInt32BE(4),
    seed: b.readUInt32BE(8),
    up: b.readUInt32BE(12),
    down: b.readUInt32BE(16),
    mode: b.readUInt8(20),
    order: b.readUInt8(21),
    pauses: b.readUInt8(22) === 1,
    faultAt: b.readUInt32BE(24),
  };
}

const ZEROS = Buffer.alloc(256 * 1024);

/** The byte stream of (seed, direction), read in pieces of any size. */
export class Generator {
  #cipher;
  constructor(seed, direction) {
    const key = createHash('sha256').update(`soak:${seed}:${direction}`).digest();
    this.#cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  }
  next(n) {
    if (n <= ZEROS.length) return this.#cipher.update(ZEROS.subarray(0, n));
    return this.#cipher.update(Buffer.alloc(n));
  }
}

/** Checks a received stream: the SHA-256 of what came against that of what should have. */
export class Verifier {
  #expected;
  #got = createHash('sha256');
  #want = createHash('sha256');
  bytes = 0;
  constructor(seed, direction, length) {
    this.#expected = new Generator(seed, direction);
    this.length = length;
  }
  push(chunk) {
    this.#got.update(chunk);
    // Past the announced length there is nothing to expect: overlong shows in `bytes`.
    const room = Math.max(0, Math.min(chunk.length, this.length - this.bytes));
    if (room > 0) this.#want.update(this.#expected.next(room));
    this.bytes += chunk.length;
  }
  /** 'ok', 'short', 'long' or 'corrupt'. */
  verdict() {
    if (this.bytes < this.length) return 'short';
    if (this.bytes > this.length) return 'long';
    return this.#got.digest('hex') === this.#want.digest('hex') ? 'ok' : 'corrupt';
  }
}

/** A small seeded PRNG (mulberry32) for the harness's own choices: a run is repeatable from its seed. */
export function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (list) => list[Math.floor(next() * list.length)],
    chance: (p) => next() < p,
  };
}
