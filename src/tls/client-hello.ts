/**
 * Incremental TLS ClientHello reader for passthrough mode: finds the SNI and
 * ALPN offer without terminating TLS, so the connection can be routed and the
 * untouched bytes forwarded to the chosen backend.
 *
 * This file is the framing: TLS records (RFC 8446 §5.1, RFC 5246 §6.2) and
 * the handshake message header, reassembled across records and chunks. The
 * ClientHello itself (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2) and its extensions
 * are read by ./client-hello-body.ts; session_ticket and pre_shared_key let
 * TLS termination see which ticket key a resumption attempt names
 * (src/tls/terminator.ts).
 *
 * The reader is strict: anything that is not a well-formed ClientHello is
 * rejected with a {@link ClientHelloError} carrying a stable `reason`, as early
 * as the bytes allow (the very first byte of an HTTP request or SSH banner is
 * enough). It copes with a ClientHello split across any number of TCP
 * segments and across several handshake records, and it never holds more
 * than `maxBytes` of ClientHello.
 */
import { ClientHelloError, MIN_CLIENT_HELLO_BODY, parseClientHelloBody, type ClientHelloInfo } from './client-hello-body.js';

export { ClientHelloError, type ClientHelloErrorReason, type ClientHelloInfo } from './client-hello-body.js';
// Name rules used to live here; kept importable from here for existing callers.
export { isValidDnsName, normaliseServerName } from './server-name.js';

/** Default bound on the bytes (record headers included) a ClientHello may take. */
export const DEFAULT_MAX_CLIENT_HELLO_BYTES = 16384;

const CONTENT_TYPE_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const RECORD_HEADER_BYTES = 5;
const HANDSHAKE_HEADER_BYTES = 4;
/** RFC 8446 §5.1: a plaintext fragment is at most 2^14 bytes. */
const MAX_FRAGMENT_BYTES = 16384;
/** Smallest sensible `maxBytes`: one record holding the smallest possible ClientHello. */
const MIN_MAX_BYTES = RECORD_HEADER_BYTES + HANDSHAKE_HEADER_BYTES + MIN_CLIENT_HELLO_BODY;
/** Received chunks kept by reference before they are copied into one buffer. */
const MAX_HELD_CHUNKS = 16;

/** Result of {@link ClientHelloReader.push}. */
export type ClientHelloResult =
  | { state: 'need_more' }
  | {
      state: 'done';
      hello: ClientHelloInfo;
      /** Every byte pushed so far, unchanged and in order: forward it to the backend. */
      buffered: Buffer;
    };

/** Options for {@link ClientHelloReader}. */
export interface ClientHelloReaderOptions {
  /** Most bytes (record headers included) the ClientHello may take; default 16384. */
  maxBytes?: number;
}

const NEED_MORE: { state: 'need_more' } = Object.freeze({ state: 'need_more' as const });

/**
 * Reads a ClientHello from a byte stream, one `push()` per received chunk.
 *
 * ```ts
 * const reader = new ClientHelloReader();
 * socket.on('data', (chunk) => {
 *   const r = reader.push(chunk);           // throws ClientHelloError
 *   if (r.state === 'done') route(r.hello.sni, r.buffered);
 * });
 * ```
 *
 * Once `push()` has returned `done` or thrown, the reader is finished: a
 * failed reader throws the same error again, a done one throws an `Error`.
 */
export class ClientHelloReader {
  private readonly maxBytes: number;
  /** Chunks as pushed; kept by reference, concatenated once at the end. */
  private chunks: Buffer[] = [];
  private received = 0;
  /** ClientHello bytes parsed so far, record headers included. */
  private consumed = 0;
  private records = 0;
  // Current record header, assembled byte by byte (it may straddle chunks).
  private hdrPos = 0;
  private recLen = 0;
  /** Payload bytes of the current record not yet consumed. */
  private recLeft = 0;
  // Handshake message header (it may straddle records).
  private hsPos = 0;
  private hsLen = 0;
  /** Reassembly buffer for the handshake body; only when it is fragmented. */
  private msg: Buffer | null = null;
  private msgPos = 0;
  private failure: ClientHelloError | null = null;
  private finished = false;

  constructor(opts: ClientHelloReaderOptions = {}) {
    const max = opts.maxBytes ?? DEFAULT_MAX_CLIENT_HELLO_BYTES;
    if (!Number.isSafeInteger(max) || max < MIN_MAX_BYTES) {
      throw new RangeError(`maxBytes must be an integer >= ${MIN_MAX_BYTES}, got ${String(max)}`);
    }
    this.maxBytes = max;
  }

  /** Bytes pushed so far. */
  get bytesReceived(): number {
    return this.received;
  }

  /**
   * Feeds the next chunk of the stream.
   * @returns `need_more` until the ClientHello is complete, then `done`.
   * @throws {ClientHelloError} as soon as the bytes cannot be a valid ClientHello.
   */
  push(chunk: Buffer): ClientHelloResult {
    if (this.failure) throw this.failure;
    if (this.finished) throw new Error('ClientHelloReader: push() after the ClientHello was complete');
    if (chunk.length === 0) return NEED_MORE;
    this.chunks.push(chunk);
    this.received += chunk.length;
    let hello: ClientHelloInfo | null;
    try {
      hello = this.consume(chunk);
    } catch (err) {
      if (err instanceof ClientHelloError) {
        this.failure = err;
        this.release();
      }
      throw err;
    }
    if (hello === null) {
      // A client that trickles its ClientHello a byte per packet would leave
      // thousands of 1-byte Buffers here (hundreds of bytes of overhead each:
      // megabytes per connection for 16 KiB): fold them into one copy now and
      // then, so what is held stays close to the bytes received.
      if (this.chunks.length >= MAX_HELD_CHUNKS) this.chunks = [Buffer.concat(this.chunks, this.received)];
      return NEED_MORE;
    }
    this.finished = true;
    const buffered = this.chunks.length === 1 ? chunk : Buffer.concat(this.chunks, this.received);
    this.release();
    return { state: 'done', hello, buffered };
  }

  private release(): void {
    this.chunks = [];
    this.msg = null;
  }

  /** Walks one chunk through the record/handshake state machine. */
  private consume(chunk: Buffer): ClientHelloInfo | null {
    const n = chunk.length;
    let pos = 0;
    while (pos < n) {
      if (this.hdrPos < RECORD_HEADER_BYTES) {
        this.consumed++;
        this.recordHeaderByte(chunk[pos++] as number);
        continue;
      }
      if (this.hsPos < HANDSHAKE_HEADER_BYTES) {
        this.consumed++;
        this.recLeft--;
        this.handshakeHeaderByte(chunk[pos++] as number);
        if (this.hsPos === HANDSHAKE_HEADER_BYTES) {
          // Common case: the whole body sits in this record and this chunk;
          // parse it in place instead of copying.
          if (this.recLeft === this.hsLen && n - pos >= this.hsLen) {
            this.consumed += this.hsLen;
            return parseClientHelloBody(chunk.subarray(pos, pos + this.hsLen));
          }
          this.msg = Buffer.allocUnsafe(this.hsLen);
        }
        if (this.recLeft === 0) this.hdrPos = 0;
        continue;
      }
      // recordHeaderByte/handshakeHeaderByte ensure recLeft <= what the body still needs.
      const msg = this.msg as Buffer;
      const take = Math.min(this.recLeft, n - pos);
      chunk.copy(msg, this.msgPos, pos, pos + take);
      pos += take;
      this.msgPos += take;
      this.recLeft -= take;
      this.consumed += take;
      if (this.msgPos === this.hsLen) return parseClientHelloBody(msg);
      if (this.recLeft === 0) this.hdrPos = 0;
    }
    return null;
  }

  private recordHeaderByte(b: number): void {
    const first = this.records === 0;
    switch (this.hdrPos) {
      case 0:
        if (b !== CONTENT_TYPE_HANDSHAKE) {
          throw first
            ? new ClientHelloError('not_tls', `first byte 0x${hex2(b)} is not a TLS handshake record`)
            : new ClientHelloError('bad_record', `record of content type ${b} before the ClientHello was complete`);
        }
        // A further record needs its header and at least one payload byte.
        if (this.consumed - 1 + RECORD_HEADER_BYTES + 1 > this.maxBytes) throw tooLarge(this.maxBytes);
        break;
      case 1:
        if (b !== 3) {
          throw first
            ? new ClientHelloError('not_tls', `record version major ${b} is not TLS`)
            : new ClientHelloError('bad_record', `record version major ${b} is not TLS`);
        }
        break;
      case 2:
        // 3.0 (SSL 3) .. 3.4; anything above is no TLS record layer.
        if (b > 4) {
          throw first
            ? new ClientHelloError('not_tls', `record version 3.${b} is not TLS`)
            : new ClientHelloError('bad_record', `record version 3.${b} is not TLS`);
        }
        break;
      case 3:
        this.recLen = b << 8;
        break;
      default: {
        const len = this.recLen | b;
        this.recLen = len;
        if (len === 0) throw new ClientHelloError('bad_record', 'zero-length handshake record');
        if (len > MAX_FRAGMENT_BYTES) {
          throw new ClientHelloError('bad_record', `record length ${len} exceeds ${MAX_FRAGMENT_BYTES}`);
        }
        if (this.consumed + len > this.maxBytes) throw tooLarge(this.maxBytes);
        if (this.hsPos === HANDSHAKE_HEADER_BYTES && len > this.hsLen - this.msgPos) {
          throw new ClientHelloError('bad_length', 'record carries bytes past the end of the ClientHello');
        }
        this.recLeft = len;
        this.records++;
      }
    }
    this.hdrPos++;
  }

  private handshakeHeaderByte(b: number): void {
    switch (this.hsPos) {
      case 0:
        if (b !== HANDSHAKE_CLIENT_HELLO) {
          throw new ClientHelloError('not_client_hello', `handshake message type ${b} is not ClientHello (1)`);
        }
        break;
      case 1:
        this.hsLen = b << 16;
        break;
      case 2:
        this.hsLen |= b << 8;
        break;
      default: {
        const len = this.hsLen | b;
        this.hsLen = len;
        if (len < MIN_CLIENT_HELLO_BODY) {
          throw new ClientHelloError('bad_length', `ClientHello length ${len} is below the minimum ${MIN_CLIENT_HELLO_BODY}`);
        }
        // Lower bound of the total: the body, plus one more record header if
        // the body does not fit in the rest of this record.
        const more = this.recLeft < len ? RECORD_HEADER_BYTES : 0;
        if (this.consumed + len + more > this.maxBytes) throw tooLarge(this.maxBytes);
        if (this.recLeft > len) {
          throw new ClientHelloError('bad_length', 'record carries bytes past the end of the ClientHello');
        }
      }
    }
    this.hsPos++;
  }
}

function tooLarge(max: number): ClientHelloError {
  return new ClientHelloError('too_large', `ClientHello exceeds ${max} bytes`);
}

function hex2(b: number): string {
  return b.toString(16).padStart(2, '0');
}
