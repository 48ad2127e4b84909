/**
 * Reads a PostgreSQL server's first messages as they pass to the client,
 * for the one l4lb needs: BackendKeyData (the session's process id and
 * secret key, which a CancelRequest repeats). Nothing is changed or held
 * back; the reader only looks, and stops at the key, at ReadyForQuery, at
 * an error, or after {@link MAX_SCANNED_BYTES}, whichever comes first.
 *
 * When the client's opening asked for encryption (plain listeners pass
 * SSLRequest and GSSENCRequest on), the server first answers with one
 * unframed byte: `N` (the client goes on in plaintext, perhaps asking
 * again), or `S`/`G`: encrypted from here, so the key cannot be seen.
 */
import {
  ANSWER_NO,
  ANSWER_YES_GSS,
  ANSWER_YES_SSL,
  MAX_CANCEL_KEY_BYTES,
  MSG_BACKEND_KEY_DATA,
  MSG_ERROR_RESPONSE,
  MSG_READY_FOR_QUERY,
  type CancelKey,
} from './messages.js';

/** The key comes within the first few hundred bytes (authentication, parameters); a bound in case it never does. */
const MAX_SCANNED_BYTES = 64 * 1024;

export type KeyScan = { readonly state: 'more' } | { readonly state: 'done'; readonly key: CancelKey | null };

const MORE: KeyScan = { state: 'more' };
const NO_KEY: KeyScan = { state: 'done', key: null };

export class BackendKeyReader {
  /** Answers to encryption requests may come before the first message. */
  #answers: boolean;
  /** The 5-byte header (type, Int32 length) of the message being read. */
  readonly #header = Buffer.alloc(5);
  #headerBytes = 0;
  /** Bytes of the current message's body still to pass. */
  #skip = 0;
  /** BackendKeyData's body, gathered (it may straddle chunks). */
  #key: Buffer | null = null;
  #keyBytes = 0;
  #scanned = 0;

  /** @param answersFirst the client's opening was SSLRequest or GSSENCRequest, passed to the server */
  constructor(answersFirst: boolean) {
    this.#answers = answersFirst;
  }

  push(chunk: Buffer): KeyScan {
    this.#scanned += chunk.length;
    let i = 0;
    while (i < chunk.length) {
      if (this.#key !== null) {
        const n = Math.min(chunk.length - i, this.#key.length - this.#keyBytes);
        chunk.copy(this.#key, this.#keyBytes, i, i + n);
        this.#keyBytes += n;
        i += n;
        if (this.#keyBytes === this.#key.length) return { state: 'done', key: { pid: this.#key.readInt32BE(0), secret: this.#key.subarray(4) } };
        continue;
      }
      if (this.#skip > 0) {
        const n = Math.min(chunk.length - i, this.#skip);
        this.#skip -= n;
        i += n;
        continue;
      }
      const byte = chunk[i]!;
      if (this.#answers && this.#headerBytes === 0) {
        if (byte === ANSWER_YES_SSL || byte === ANSWER_YES_GSS) return NO_KEY;
        i++;
        if (byte === ANSWER_NO) continue;
        // A message, not an answer: read it as one.
        this.#answers = false;
        this.#header[this.#headerBytes++] = byte;
        continue;
      }
      this.#header[this.#headerBytes++] = byte;
      i++;
      if (this.#headerBytes < 5) continue;
      this.#headerBytes = 0;
      const type = this.#header[0]!;
      const body = this.#header.readInt32BE(1) - 4;
      if (body < 0 || type === MSG_ERROR_RESPONSE || type === MSG_READY_FOR_QUERY) return NO_KEY;
      if (type === MSG_BACKEND_KEY_DATA) {
        if (body < 8 || body > 4 + MAX_CANCEL_KEY_BYTES) return NO_KEY;
        this.#key = Buffer.alloc(body);
        this.#keyBytes = 0;
      } else {
        this.#skip = body;
      }
    }
    return this.#scanned >= MAX_SCANNED_BYTES ? NO_KEY : MORE;
  }
}
