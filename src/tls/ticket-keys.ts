/**
 * Session-ticket keys of one TLS-terminating listener: the current key
 * encrypts new tickets and decrypts, the previous one only decrypts, and
 * only for one session lifetime after a rotation (no ticket it encrypted
 * can be older than that; see DEFAULTS.tlsSessionLifetimeMs). Keys are
 * replaced every `rotateEveryMs` (default 12 h), as NGINX and HAProxy setups
 * rotate `ssl_session_ticket_key` / `tls-ticket-keys`: a key stolen from
 * memory then opens only the sessions of about one rotation period.
 *
 * The holder outlives reloads (the listener keeps it), so a reload does not
 * cost every client a full handshake. The keys live in a small block of
 * memory shared by every serving thread (so a session resumes on whichever
 * thread the kernel hands the connection to): the main thread's holder
 * rotates them; the other threads' holders only read. A generation counter
 * says when to re-apply; it is odd while the owner writes (a seqlock), so a
 * reader never applies half a key.
 *
 * Key format: 48 bytes, as Node's `ticketKeys` takes them (16 bytes key
 * name, 16 HMAC secret, 16 AES key). OpenSSL puts the key name at the start
 * of every ticket it encrypts, which is how a ticket names its key.
 */
import { randomBytes } from 'node:crypto';
import { DEFAULTS } from '../defaults.js';

/** Bytes of one key: name (16), HMAC secret (16), AES key (16). */
export const TICKET_KEY_BYTES = 48;
/** Bytes of the key name that starts every ticket. */
export const TICKET_KEY_NAME_BYTES = 16;
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface TicketKeysOptions {
  /** Time between rotations; default {@link DEFAULTS.ticketKeyRotationMs}. */
  readonly rotateEveryMs?: number;
  /** How long the previous key still decrypts after a rotation; default {@link DEFAULTS.tlsSessionLifetimeMs}. */
  readonly keepPreviousMs?: number;
}

/** Where a holder keeps its keys: a block of TICKET_BLOCK_BYTES, shared or not. */
export interface TicketKeyBlock {
  readonly buffer: ArrayBufferLike;
  readonly offset: number;
}

/** [generation (int32), has previous (int32), current (48), previous (48)]. */
export const TICKET_BLOCK_BYTES = 8 + 2 * TICKET_KEY_BYTES;

/** A consistent copy of the keys, as read at one generation. */
export interface TicketKeySnapshot {
  readonly generation: number;
  readonly current: Buffer;
  readonly previous: Buffer | null;
}

export class TicketKeys {
  /** [generation, has previous]. */
  readonly #words: Int32Array;
  /** current (0..47) and previous (48..95); the previous half is zero when there is none. */
  readonly #bytes: Buffer;
  /** The main thread's holder rotates; the others read what it wrote. */
  readonly #owner: boolean;
  readonly #rotateEveryMs: number;
  readonly #keepPreviousMs: number;
  #rotateTimer: NodeJS.Timeout | undefined;
  #expireTimer: NodeJS.Timeout | undefined;
  #closed = false;

  /**
   * @param block where the keys live (shared memory, so every thread sees
   *   them); default a block of its own. `owner: false` attaches a reader to
   *   a block another holder writes (it never rotates or clears it).
   */
  constructor(options: TicketKeysOptions & { block?: TicketKeyBlock; owner?: boolean } = {}) {
    const block = options.block ?? { buffer: new ArrayBuffer(TICKET_BLOCK_BYTES), offset: 0 };
    this.#words = new Int32Array(block.buffer, block.offset, 2);
    this.#bytes = Buffer.from(block.buffer, block.offset + 8, 2 * TICKET_KEY_BYTES);
    this.#owner = options.owner ?? true;
    this.#rotateEveryMs = options.rotateEveryMs ?? DEFAULTS.ticketKeyRotationMs;
    this.#keepPreviousMs = options.keepPreviousMs ?? DEFAULTS.tlsSessionLifetimeMs;
    for (const [what, ms] of [['rotateEveryMs', this.#rotateEveryMs], ['keepPreviousMs', this.#keepPreviousMs]] as const) {
      // Node runs a timer above 2^31-1 ms after 1 ms instead.
      if (!Number.isSafeInteger(ms) || ms <= 0 || ms > MAX_TIMER_MS) {
        throw new RangeError(`TicketKeys: ${what} must be an integer from 1 to ${MAX_TIMER_MS} ms, got ${String(ms)}`);
      }
    }
    if (this.#owner) this.#write(() => randomBytes(TICKET_KEY_BYTES).copy(this.#bytes, 0));
  }

  /** Starts the rotation timer (the owner's). Idempotent; stopped by close(). */
  start(): void {
    if (!this.#owner || this.#closed || this.#rotateTimer !== undefined) return;
    this.#rotateTimer = setInterval(() => this.rotate(), this.#rotateEveryMs);
  }

  /** Changes whenever a key changes (rotation, or the previous key expiring); cheap to poll. */
  get generation(): number {
    return Atomics.load(this.#words, 0);
  }

  /** The keys as of one generation (copies, consistent even while the owner rotates in another thread). */
  read(): TicketKeySnapshot {
    for (;;) {
      const before = Atomics.load(this.#words, 0);
      if ((before & 1) === 0) {
        const current = Buffer.from(this.#bytes.subarray(0, TICKET_KEY_BYTES));
        const previous = Atomics.load(this.#words, 1) === 1 ? Buffer.from(this.#bytes.subarray(TICKET_KEY_BYTES)) : null;
        if (Atomics.load(this.#words, 0) === before) return { generation: before, current, previous };
      }
    }
  }

  /** The key that encrypts new tickets (a copy). */
  get current(): Buffer {
    return this.read().current;
  }

  /** The key that still decrypts tickets issued before the last rotation (a copy), or null. */
  get previous(): Buffer | null {
    return this.read().previous;
  }

  /** Write under the seqlock: odd generation while the bytes change, the next even one after. */
  #write(change: () => void): void {
    Atomics.add(this.#words, 0, 1);
    change();
    Atomics.add(this.#words, 0, 1);
  }

  /** The current key becomes the previous one (for one session lifetime); a new random key is current. */
  rotate(): void {
    if (!this.#owner || this.#closed) return;
    this.#write(() => {
      this.#bytes.copy(this.#bytes, TICKET_KEY_BYTES, 0, TICKET_KEY_BYTES);
      randomBytes(TICKET_KEY_BYTES).copy(this.#bytes, 0);
      Atomics.store(this.#words, 1, 1);
    });
    clearTimeout(this.#expireTimer);
    // A rotation due before the window ends replaces the previous key anyway.
    this.#expireTimer = this.#keepPreviousMs < this.#rotateEveryMs ? setTimeout(this.#expirePrevious, this.#keepPreviousMs) : undefined;
  }

  #expirePrevious = (): void => {
    this.#expireTimer = undefined;
    this.#write(() => {
      this.#bytes.fill(0, TICKET_KEY_BYTES);
      Atomics.store(this.#words, 1, 0);
    });
  };

  /** Stops the timers; the owner zeroes the keys. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#rotateTimer);
    clearTimeout(this.#expireTimer);
    this.#rotateTimer = undefined;
    this.#expireTimer = undefined;
    if (this.#owner) {
      this.#write(() => {
        this.#bytes.fill(0);
        Atomics.store(this.#words, 1, 0);
      });
    }
  }

  /** No secrets in logs or inspection. */
  toJSON(): { generation: number; previous: boolean } {
    return { generation: this.generation, previous: Atomics.load(this.#words, 1) === 1 };
  }
}

/** Whether `ticket` (a TLS 1.2 ticket or a TLS 1.3 PSK identity) names `key`. */
export function ticketNamesKey(ticket: Buffer, key: Buffer): boolean {
  return ticket.length >= TICKET_KEY_NAME_BYTES && ticket.compare(key, 0, TICKET_KEY_NAME_BYTES, 0, TICKET_KEY_NAME_BYTES) === 0;
}
