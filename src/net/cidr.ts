/**
 * CIDR lists for trusted proxies and access lists. Addresses are compared as
 * bytes, never as text (parsed by ./ip.ts); IPv4-mapped IPv6
 * (`::ffff:10.1.2.3`) is matched as the IPv4 address it carries, so
 * dual-stack listeners behave like IPv4 ones. A zone id is ignored, in a
 * list as in an address looked up.
 */
import { isV4Mapped, parseIp, parseIpInto } from './ip.js';

/** One parsed range: the 16-byte network and the prefix length in IPv6 bits (IPv4 /n is ::ffff:0:0/96+n). */
interface Range {
  readonly v6: boolean;
  readonly bytes: Uint8Array;
  /** Prefix length as written: 0..32 for IPv4, 0..128 for IPv6. */
  readonly prefix: number;
}

/** Parse `10.0.0.0/8`, `2001:db8::/32`, or a single address (a /32 or /128). Returns a message on error. */
export function parseCidr(text: unknown): { range: Range; text: string } | string {
  if (typeof text !== 'string' || text.length > 64) return `expected an address or CIDR like "10.0.0.0/8" or "::1/128", got ${JSON.stringify(text)}`;
  const slash = text.indexOf('/');
  const ipText = slash < 0 ? text : text.slice(0, slash);
  const bytes = parseIp(ipText);
  if (bytes === undefined) return `expected an address or CIDR like "10.0.0.0/8" or "::1/128", got ${JSON.stringify(text)}`;
  const v6 = !isV4Mapped(bytes);
  const max = v6 ? 128 : 32;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > max) return `expected a prefix length 0..${max} after "/", got ${JSON.stringify(text)}`;
    prefix = Number(p);
  }
  return { range: { v6, bytes, prefix }, text };
}

/** Scratch for {@link CidrList.has}: one lookup at a time, nothing allocated per call. */
const LOOKUP = new Uint8Array(16);

/** An immutable list of ranges with a fast `has(ip)`. */
export class CidrList {
  readonly #v4: Array<{ net: number; mask: number }> = [];
  readonly #v6: Range[] = [];
  readonly size: number;

  /** @param cidrs already validated by {@link parseCidr} (invalid entries throw). */
  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) {
      const parsed = parseCidr(c);
      if (typeof parsed === 'string') throw new RangeError(parsed);
      const { range } = parsed;
      if (range.v6) {
        this.#v6.push(range);
      } else {
        const mask = range.prefix === 0 ? 0 : (0xffffffff << (32 - range.prefix)) >>> 0;
        this.#v4.push({ net: (ipv4Word(range.bytes) & mask) >>> 0, mask });
      }
    }
    this.size = cidrs.length;
  }

  /** Whether `ip` (as Node reports it: v4, v6 or v4-mapped v6) falls in any range. */
  has(ip: string | undefined): boolean {
    if (ip === undefined || parseIpInto(ip, LOOKUP) === 0) return false;
    if (isV4Mapped(LOOKUP)) {
      const a = ipv4Word(LOOKUP);
      for (const r of this.#v4) if (((a & r.mask) >>> 0) === r.net) return true;
      return false;
    }
    for (const r of this.#v6) if (inRange6(LOOKUP, r)) return true;
    return false;
  }
}

/** The IPv4 address in the last 4 of 16 bytes, as one unsigned number. */
function ipv4Word(b: Uint8Array): number {
  return ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) >>> 0;
}

function inRange6(b: Uint8Array, r: Range): boolean {
  const whole = r.prefix >>> 3;
  for (let i = 0; i < whole; i++) if (b[i] !== r.bytes[i]) return false;
  const rest = r.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (b[whole]! & mask) === (r.bytes[whole]! & mask);
}
