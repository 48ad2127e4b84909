/** The incremental PROXY v1/v2 header parser a connection feeds its first bytes to. */
import {
  DEFAULT_MAX_HEADER_BYTES,
  LF,
  MAX_MAX_HEADER_BYTES,
  MIN_MAX_HEADER_BYTES,
  V1_MAX_LENGTH,
  V1_PREFIX,
  V2_ADDRESS_BYTES,
  V2_FIXED_LENGTH,
  V2_SIGNATURE,
} from './constants.js';
import { fail, ProxyHeaderError, type ParseResult, type ProxyHeader } from './header.js';
import { scanV1 } from './v1.js';
import { checkV2Fixed, decodeV2 } from './v2.js';

/** Options of {@link ProxyHeaderParser}. */
export interface ProxyHeaderParserOptions {
  /**
   * Largest v2 header accepted, in bytes, including the 16-byte fixed part
   * (default {@link DEFAULT_MAX_HEADER_BYTES}; range 52..65551). Bounds the
   * memory one connection can pin before it is validated. v1 lines are
   * always capped at 107 bytes.
   */
  maxHeaderBytes?: number;
}

const NEED_MORE: ParseResult = Object.freeze({ state: 'need_more' }) as ParseResult;

/**
 * Strict, incremental PROXY v1/v2 header parser for one connection.
 *
 * Feed each chunk read from the socket to {@link push} until it returns
 * `done`; `rest` holds the bytes that followed the header, unchanged, and
 * must be forwarded as the first client bytes. The parser copies only header
 * bytes (never more than 107 for v1, or the declared v2 length, capped by
 * `maxHeaderBytes`), never reads past the declared length, and throws a
 * {@link ProxyHeaderError} as soon as the bytes seen cannot begin a valid
 * header. After an error every further push rethrows it.
 */
export class ProxyHeaderParser {
  /** The effective v2 size cap. */
  readonly maxHeaderBytes: number;
  #buf: Buffer = Buffer.allocUnsafe(V1_MAX_LENGTH);
  #len = 0;
  #version: 0 | 1 | 2 = 0;
  /** Total v2 header length, once bytes 14..15 are in. */
  #total = 0;
  #done = false;
  #error: ProxyHeaderError | undefined;

  constructor(options: ProxyHeaderParserOptions = {}) {
    const max = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
    if (!Number.isInteger(max) || max < MIN_MAX_HEADER_BYTES || max > MAX_MAX_HEADER_BYTES) {
      throw new RangeError(`maxHeaderBytes must be an integer in ${MIN_MAX_HEADER_BYTES}..${MAX_MAX_HEADER_BYTES}`);
    }
    this.maxHeaderBytes = max;
  }

  /** Header bytes held so far (for metrics and tests). */
  get bufferedBytes(): number {
    return this.#len;
  }

  /**
   * Consumes the next chunk of the connection.
   * @returns `need_more`, or `done` with the header and the bytes after it.
   * @throws ProxyHeaderError when the input cannot be a valid header.
   * @throws Error when called again after `done` (a caller bug, not bad input).
   */
  push(chunk: Uint8Array): ParseResult {
    if (this.#error) throw this.#error;
    if (this.#done) throw new Error('ProxyHeaderParser.push() called after the header was complete');
    const data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    try {
      let off = 0;
      while (off < data.length) {
        const take = this.#wanted(data, off);
        data.copy(this.#buf, this.#len, off, off + take);
        this.#len += take;
        off += take;
        const header = this.#step();
        if (header) {
          this.#done = true;
          this.#buf = Buffer.alloc(0); // release the header bytes
          return { state: 'done', header, rest: data.subarray(off) };
        }
      }
      return NEED_MORE;
    } catch (err) {
      if (err instanceof ProxyHeaderError) this.#error = err;
      throw err;
    }
  }

  /** How many bytes of `data` from `off` belong to the header as far as we know now. */
  #wanted(data: Buffer, off: number): number {
    const avail = data.length - off;
    if (this.#version === 0) return 1; // the first byte picks the version
    if (this.#version === 1) {
      // Stop right after the first LF so `rest` is a plain subarray of the chunk.
      const window = Math.min(avail, V1_MAX_LENGTH - this.#len);
      const lf = data.subarray(off, off + window).indexOf(LF);
      return lf >= 0 ? lf + 1 : window;
    }
    if (this.#total === 0) return Math.min(avail, V2_FIXED_LENGTH - this.#len);
    return Math.min(avail, this.#total - this.#len);
  }

  #step(): ProxyHeader | undefined {
    const buf = this.#buf;
    const len = this.#len;
    if (this.#version === 0) {
      if (buf[0] === V1_PREFIX[0]) this.#version = 1;
      else if (buf[0] === V2_SIGNATURE[0]) this.#version = 2;
      else fail('bad_signature', 'neither "PROXY " nor the v2 signature');
    }
    if (this.#version === 1) return scanV1(buf, len);

    if (this.#total === 0) {
      for (let i = 0; i < Math.min(len, 12); i++) {
        if (buf[i] !== V2_SIGNATURE[i]) fail('bad_signature', 'v2 signature mismatch');
      }
      checkV2Fixed(buf, len);
      if (len < V2_FIXED_LENGTH) return undefined;
      const bodyLength = buf.readUInt16BE(14);
      const total = V2_FIXED_LENGTH + bodyLength;
      if (total > this.maxHeaderBytes) fail('v2_too_long', `${total} bytes > maximum ${this.maxHeaderBytes}`);
      const need = V2_ADDRESS_BYTES[(buf[13]! >> 4) as 0 | 1 | 2 | 3];
      if (bodyLength < need) fail('v2_bad_length', `length ${bodyLength} < address block ${need}`);
      this.#total = total;
      // Exactly the declared size, so nothing past the header is ever copied.
      this.#buf = Buffer.allocUnsafe(total);
      buf.copy(this.#buf, 0, 0, V2_FIXED_LENGTH);
    }
    if (this.#len < this.#total) return undefined;
    return decodeV2(this.#buf);
  }
}

/**
 * Parses one complete header at the start of `data` (a convenience over
 * {@link ProxyHeaderParser} for tests and tools).
 * @returns the header and the bytes after it, or undefined if `data` ends inside a header.
 * @throws ProxyHeaderError for an invalid header.
 */
export function parseProxyHeader(
  data: Uint8Array,
  options?: ProxyHeaderParserOptions,
): { header: ProxyHeader; rest: Buffer } | undefined {
  const r = new ProxyHeaderParser(options).push(data);
  return r.state === 'done' ? { header: r.header, rest: r.rest } : undefined;
}
