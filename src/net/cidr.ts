/**
 * CIDR lists for trusted proxies and access lists. Addresses are compared as
 * numbers, never as text; IPv4-mapped IPv6 (`::ffff:10.1.2.3`) is matched as
 * the IPv4 address it carries, so dual-stack listeners behave like IPv4 ones.
 */
import net from 'node:net';

/** One parsed range: IPv4 as one 32-bit word, IPv6 as four. */
interface Range {
  readonly v6: boolean;
  readonly words: Uint32Array;
  readonly prefix: number;
}

/** Parse `10.0.0.0/8`, `2001:db8::/32`, or a single address (a /32 or /128). Returns a message on error. */
export function parseCidr(text: unknown): { range: Range; text: string } | string {
  if (typeof text !== 'string' || text.length > 64) return `expected an address or CIDR like "10.0.0.0/8" or "::1/128", got ${JSON.stringify(text)}`;
  const slash = text.indexOf('/');
  const ipText = slash < 0 ? text : text.slice(0, slash);
  const ip = parseIp(ipText);
  if (ip === undefined) return `expected an address or CIDR like "10.0.0.0/8" or "::1/128", got ${JSON.stringify(text)}`;
  const max = ip.v6 ? 128 : 32;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > max) return `expected a prefix length 0..${max} after "/", got ${JSON.stringify(text)}`;
    prefix = Number(p);
  }
  return { range: { v6: ip.v6, words: ip.words, prefix }, text };
}

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
        this.#v4.push({ net: (range.words[0]! & mask) >>> 0, mask });
      }
    }
    this.size = cidrs.length;
  }

  /** Whether `ip` (as Node reports it: v4, v6 or v4-mapped v6) falls in any range. */
  has(ip: string | undefined): boolean {
    if (ip === undefined) return false;
    const parsed = parseIp(ip);
    if (parsed === undefined) return false;
    if (!parsed.v6) {
      const a = parsed.words[0]!;
      for (const r of this.#v4) if (((a & r.mask) >>> 0) === r.net) return true;
      return false;
    }
    for (const r of this.#v6) if (inRange6(parsed.words, r)) return true;
    return false;
  }
}

function inRange6(words: Uint32Array, r: Range): boolean {
  let bits = r.prefix;
  for (let i = 0; i < 4 && bits > 0; i++) {
    const take = Math.min(32, bits);
    const mask = take === 32 ? 0xffffffff : (0xffffffff << (32 - take)) >>> 0;
    if (((words[i]! & mask) >>> 0) !== ((r.words[i]! & mask) >>> 0)) return false;
    bits -= take;
  }
  return true;
}

/** IPv4 → one word; IPv6 → four words; IPv4-mapped IPv6 → the IPv4 word. */
function parseIp(text: string): { v6: boolean; words: Uint32Array } | undefined {
  const family = net.isIP(text);
  if (family === 4) return { v6: false, words: Uint32Array.of(v4ToInt(text)) };
  if (family !== 6) return undefined;
  const words = v6ToWords(text);
  if (words[0] === 0 && words[1] === 0 && words[2] === 0xffff) return { v6: false, words: Uint32Array.of(words[3]!) };
  return { v6: true, words };
}

function v4ToInt(text: string): number {
  const p = text.split('.');
  return ((Number(p[0]) << 24) | (Number(p[1]) << 16) | (Number(p[2]) << 8) | Number(p[3])) >>> 0;
}

function v6ToWords(text: string): Uint32Array {
  // net.isIP has validated the text; expand "::" and an embedded IPv4 tail.
  let t = text;
  const pct = t.indexOf('%');
  if (pct >= 0) t = t.slice(0, pct);
  const groups: number[] = [];
  const [head = '', tail] = t.split('::');
  const parse = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const v4 = v4ToInt(g);
        out.push(v4 >>> 16, v4 & 0xffff);
      } else {
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const h = parse(head);
  const tl = tail === undefined ? [] : parse(tail);
  groups.push(...h);
  for (let i = h.length + tl.length; i < 8; i++) groups.push(0);
  groups.push(...tl);
  const words = new Uint32Array(4);
  for (let i = 0; i < 4; i++) words[i] = ((groups[2 * i]! << 16) | groups[2 * i + 1]!) >>> 0;
  return words;
}

/** Scratch for {@link ipv6NetworkKey}: one parse at a time, nothing allocated per call. */
const GROUPS = new Uint16Array(8);

/**
 * A map key for the IPv6 network of length `prefix` (0..128) that `ip`
 * belongs to: every spelling of every address in that network gives the
 * same key, other networks (of the same prefix length) other keys. An
 * IPv4-mapped address gives its IPv4 text. Returns undefined when `ip` is
 * not IPv6 text.
 *
 * The key is not for display: ':' and then one UTF-16 code unit per 16-bit
 * group of the network part (the last one masked), at most 9 characters. So
 * it never equals an IPv4 text, and it is a short flat string that a Map
 * hashes at once (hex text with separators measured ~3 times slower per
 * lookup: V8 builds it as a rope and flattens it to hash it). One pass over
 * the text into a shared scratch array: this runs on the accept path for
 * every IPv6 client of a listener with per-source limits.
 */
export function ipv6NetworkKey(ip: string, prefix: number): string | undefined {
  if (!parseIpv6Groups(ip, GROUPS)) return undefined;
  const g = GROUPS;
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `${g[6]! >>> 8}.${g[6]! & 255}.${g[7]! >>> 8}.${g[7]! & 255}`;
  }
  const whole = prefix >>> 4;
  const rest = prefix & 15;
  let key = ':';
  for (let i = 0; i < whole; i++) key += String.fromCharCode(g[i]!);
  if (rest > 0) key += String.fromCharCode(g[whole]! & (0xffff << (16 - rest)) & 0xffff);
  return key;
}

/** IPv6 text (with `::`, an IPv4 tail, a zone id) into 8 groups; false if it is not IPv6 text. */
function parseIpv6Groups(text: string, out: Uint16Array): boolean {
  let end = text.indexOf('%');
  if (end < 0) end = text.length;
  let n = 0;
  let gap = -1;
  let i = 0;
  if (end >= 2 && text.charCodeAt(0) === 58 && text.charCodeAt(1) === 58) {
    gap = 0;
    i = 2;
  }
  while (i < end) {
    const start = i;
    let v = 0;
    while (i < end) {
      const h = hexValue(text.charCodeAt(i));
      if (h < 0) break;
      v = v * 16 + h;
      i++;
    }
    if (i < end && text.charCodeAt(i) === 46) {
      // An IPv4 tail ("::ffff:10.1.2.3"): the last two groups.
      if (n > 6) return false;
      const v4 = dottedQuad(text, start, end);
      if (v4 < 0) return false;
      out[n++] = v4 >>> 16;
      out[n++] = v4 & 0xffff;
      i = end;
      break;
    }
    const digits = i - start;
    if (digits === 0 || digits > 4 || n >= 8) return false;
    out[n++] = v;
    if (i === end) break;
    if (text.charCodeAt(i) !== 58) return false;
    i++;
    if (i < end && text.charCodeAt(i) === 58) {
      if (gap >= 0) return false;
      gap = n;
      i++;
    } else if (i === end) {
      return false;
    }
  }
  if (gap < 0) return n === 8;
  if (n > 7) return false;
  // Move the groups after "::" to the end and zero the gap.
  const tail = n - gap;
  for (let k = 0; k < tail; k++) out[7 - k] = out[n - 1 - k]!;
  for (let k = gap; k < 8 - tail; k++) out[k] = 0;
  return true;
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** `a.b.c.d` between `start` and `end` as one unsigned 32-bit number; -1 if malformed. */
function dottedQuad(text: string, start: number, end: number): number {
  let value = 0;
  let parts = 0;
  let i = start;
  while (parts < 4) {
    let octet = 0;
    const from = i;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) break;
      octet = octet * 10 + (c - 48);
      i++;
    }
    if (i === from || i - from > 3 || octet > 255) return -1;
    value = value * 256 + octet;
    parts++;
    if (parts < 4) {
      if (i >= end || text.charCodeAt(i) !== 46) return -1;
      i++;
    }
  }
  return i === end ? value : -1;
}
