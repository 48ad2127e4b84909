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
 * cost every client a full handshake. It is deliberately a small object with
 * the raw bytes and a generation counter: whoever applied an older generation
 * (a TlsTerminator, later a worker thread reading shared memory) re-applies.
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

export class TicketKeys {
  /** current (0..47) and previous (48..95); the previous half is zero when there is none. */
  readonly #bytes = Buffer.alloc(2 * TICKET_KEY_BYTES);
  #hasPrevious = false;
  #generation = 0;
  readonly #rotateEveryMs: number;
  readonly #keepPreviousMs: number;
  #rotateTimer: NodeJS.Timeout | undefined;
  #expireTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: TicketKeysOptions = {}) {
    this.#rotateEveryMs = options.rotateEveryMs ?? DEFAULTS.ticketKeyRotationMs;
    this.#keepPreviousMs = options.keepPreviousMs ?? DEFAULTS.tlsSessionLifetimeMs;
    for (const [what, ms] of [['rotateEveryMs', this.#rotateEveryMs], ['keepPreviousMs', this.#keepPreviousMs]] as const) {
      // Node runs a timer above 2^31-1 ms after 1 ms instead.
      if (!Number.isSafeInteger(ms) || ms <= 0 || ms > MAX_TIMER_MS) {
        throw new RangeError(`TicketKeys: ${what} must be an integer from 1 to ${MAX_TIMER_MS} ms, got ${String(ms)}`);
      }
    }
    randomBytes(TICKET_KEY_BYTES).copy(this.#bytes, 0);
  }

  /** Starts the rotation timer. Idempotent; stopped by close(). */
  start(): void {
    if (this.#closed || this.#rotateTimer !== undefined) return;
    this.#rotateTimer = setInterval(() => this.rotate(), this.#rotateEveryMs);
  }

  /** Bumped whenever a key changes (rotation, or the previous key expiring). */
  get generation(): number {
    return this.#generation;
  }

  /** The key that encrypts new tickets. A view: apply it at once, do not keep it. */
  get current(): Buffer {
    return this.#bytes.subarray(0, TICKET_KEY_BYTES);
  }

  /** The key that still decrypts tickets issued before the last rotation, or null. A view, as `current`. */
  get previous(): Buffer | null {
    return this.#hasPrevious ? this.#bytes.subarray(TICKET_KEY_BYTES) : null;
  }

  /** The current key becomes the previous one (for one session lifetime); a new random key is current. */
  rotate(): void {
    if (this.#closed) return;
    this.#bytes.copy(this.#bytes, TICKET_KEY_BYTES, 0, TICKET_KEY_BYTES);
    randomBytes(TICKET_KEY_BYTES).copy(this.#bytes, 0);
    this.#hasPrevious = true;
    this.#generation++;
    clearTimeout(this.#expireTimer);
    // A rotation due before the window ends replaces the previous key anyway.
    this.#expireTimer = this.#keepPreviousMs < this.#rotateEveryMs ? setTimeout(this.#expirePrevious, this.#keepPreviousMs) : undefined;
  }

  #expirePrevious = (): void => {
    this.#expireTimer = undefined;
    this.#bytes.fill(0, TICKET_KEY_BYTES);
    this.#hasPrevious = false;
    this.#generation++;
  };

  /** Stops the timers and zeroes the keys. Idempotent. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#rotateTimer);
    clearTimeout(this.#expireTimer);
    this.#rotateTimer = undefined;
    this.#expireTimer = undefined;
    this.#bytes.fill(0);
    this.#hasPrevious = false;
    this.#generation++;
  }

  /** No secrets in logs or inspection. */
  toJSON(): { generation: number; previous: boolean } {
    return { generation: this.#generation, previous: this.#hasPrevious };
  }
}

/** Whether `ticket` (a TLS 1.2 ticket or a TLS 1.3 PSK identity) names `key`. */
export function ticketNamesKey(ticket: Buffer, key: Buffer): boolean {
  return ticket.length >= TICKET_KEY_NAME_BYTES && ticket.compare(key, 0, TICKET_KEY_NAME_BYTES, 0, TICKET_KEY_NAME_BYTES) === 0;
}
