/**
 * IP addresses, with one set of rules for all of l4lb: PROXY headers, access
 * lists, per-source limits, source_hash, the access log and the admin server
 * all parse, fold and print addresses here, so a client has one identity
 * wherever it is matched, counted, hashed or logged.
 *
 * - Bytes: an address is 16 bytes, IPv4 held IPv4-mapped (`::ffff:a.b.c.d`),
 *   so `1.2.3.4` and `::ffff:1.2.3.4` (how a dual-stack socket reports an
 *   IPv4 client) are the same bytes.
 * - Text in: strict dotted quads (0..255, no leading zeros, as Node's
 *   `net.isIPv4`); IPv6 as RFC 4291 §2.2 allows (1-4 hex digits a group, any
 *   case, one `::`, a dotted quad as the last 32 bits). A zone id
 *   (`fe80::1%eth0`, which Node reports for link-local peers) is ignored or
 *   refused as the caller says: it names an interface of one machine, not
 *   part of the address.
 * - Text out: IPv4 and IPv4-mapped as a dotted quad, other IPv6 in RFC 5952
 *   form (lower case, no leading zeros, the first longest run of two or more
 *   zero groups as `::`, hex groups only), never with a zone.
 *
 * The parsers run on every accepted connection: one pass over the text, no
 * allocation, results written into the caller's bytes or a module scratch.
 */

/** What to do with a zone id after IPv6 text (`fe80::1%eth0`). */
export type ZonePolicy = 'ignore' | 'refuse';

/** The text's address family; 0: not an address. IPv4-mapped IPv6 text is 6. */
export type IpFamily = 0 | 4 | 6;

/** Longest IPv6 text without a zone: six groups and a dotted quad. */
const IPV6_TEXT_MAX = 45;
const COLON = 58;
const DOT = 46;

/** One parse at a time (the event loop never interleaves two), so shared scratch is safe. */
const SCRATCH = new Uint8Array(16);
/** RFC 5952 text is at most 39 characters. */
const TEXT = Buffer.allocUnsafe(40);
const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');

/**
 * Parses IPv4 or IPv6 text into 16 bytes at `out[at..at+16)`, IPv4 as
 * IPv4-mapped. Nothing is allocated.
 * @returns the family the text is written in (`::ffff:1.2.3.4` is 6), or 0
 *   when it is not an address (then those 16 bytes hold junk)
 */
export function parseIpInto(text: string, out: Uint8Array, at = 0, zone: ZonePolicy = 'ignore'): IpFamily {
  const v4 = dottedQuad(text, 0, text.length);
  if (v4 >= 0) {
    out.fill(0, at, at + 10);
    out[at + 10] = 0xff;
    out[at + 11] = 0xff;
    writeU32(out, at + 12, v4);
    return 4;
  }
  return parseIpv6(text, out, at, zone) ? 6 : 0;
}

/** The 16 bytes of an address (IPv4 as IPv4-mapped), or undefined for anything else. */
export function parseIp(text: string, zone: ZonePolicy = 'ignore'): Uint8Array | undefined {
  const out = new Uint8Array(16);
  return parseIpInto(text, out, 0, zone) === 0 ? undefined : out;
}

/** The family `text` is written in, or 0 when it is not an address. */
export function ipFamily(text: string, zone: ZonePolicy = 'ignore'): IpFamily {
  return parseIpInto(text, SCRATCH, 0, zone);
}

/** Whether the 16 bytes at `at` are IPv4-mapped (`::ffff:0:0/96`), i.e. an IPv4 address. */
export function isV4Mapped(b: Uint8Array, at = 0): boolean {
  for (let i = at; i < at + 10; i++) if (b[i] !== 0) return false;
  return b[at + 10] === 0xff && b[at + 11] === 0xff;
}

/** The 4 bytes at `at` as a dotted quad. */
export function formatIpv4(b: Uint8Array, at = 0): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

/**
 * The 16 bytes at `at` in RFC 5952 form, hex groups only (an IPv4-mapped
 * address is `::ffff:102:304`, as a PROXY v1 TCP6 line that mixes families
 * writes it).
 */
export function formatIpv6(b: Uint8Array, at = 0): string {
  return TEXT.toString('latin1', 0, writeIpv6Text(b, at));
}

/** The 16 bytes at `at` as l4lb prints an address: IPv4-mapped as a dotted quad, others in RFC 5952 form. */
export function formatIp(b: Uint8Array, at = 0): string {
  return isV4Mapped(b, at) ? formatIpv4(b, at + 12) : formatIpv6(b, at);
}

/**
 * The one text of the address `text` spells (zone dropped), or undefined
 * when it is not an address: `::FFFF:1.2.3.4` and `::ffff:102:304` give
 * `1.2.3.4`, `2001:0DB8:0:0:0:0:0:1` gives `2001:db8::1`. Text that is
 * already canonical comes back as the same string, nothing allocated.
 */
export function canonicalIp(text: string): string | undefined {
  const mapped = mappedIpv4Start(text);
  if (mapped > 0) return text.slice(mapped);
  const family = parseIpInto(text, SCRATCH);
  if (family === 0) return undefined;
  if (family === 4) return text; // a strict dotted quad is its own canonical form
  if (isV4Mapped(SCRATCH)) return formatIpv4(SCRATCH, 12);
  const n = writeIpv6Text(SCRATCH, 0);
  return sameText(text, n) ? text : TEXT.toString('latin1', 0, n);
}

/**
 * A client address as l4lb keeps it: {@link canonicalIp}, or the text as
 * given when it is not an address; `''` when unknown (a socket that closed
 * before its address was read). Runs on every accept: IPv4 text returns at
 * once, and what Node reports for IPv6 is already canonical (no allocation).
 */
export function normaliseIp(ip: string | undefined): string {
  if (ip === undefined) return '';
  if (ip.indexOf(':') < 0) return ip; // IPv4 text, or not an address: canonicalIp would give it back as is
  return canonicalIp(ip) ?? ip;
}

/**
 * Where the IPv4 part of `::ffff:a.b.c.d` (any case; how a dual-stack
 * socket reports an IPv4 client) starts: 7, or 0 for any other text. Lets a
 * caller use the IPv4 part in place, without a copy.
 */
export function mappedIpv4Start(text: string): number {
  if (text.length < 14 || text.charCodeAt(0) !== COLON || text.charCodeAt(1) !== COLON || text.charCodeAt(6) !== COLON) return 0;
  for (let i = 2; i < 6; i++) if ((text.charCodeAt(i) | 0x20) !== 102 /* f */) return 0;
  return dottedQuad(text, 7, text.length) >= 0 ? 7 : 0;
}

/**
 * A map key for the IPv6 network of length `prefix` (0..128) that `ip`
 * belongs to: every spelling of every address in that network gives the
 * same key, other networks of that length other keys. IPv4-mapped text gives
 * its IPv4 dotted quad. Undefined when `ip` is not IPv6 text.
 *
 * The key is not for display: ':' and then one UTF-16 code unit per 16-bit
 * group of the network part (the last one masked), at most 9 characters. So
 * it never equals an IPv4 text, and it is a short flat string that a Map
 * hashes at once (hex text with separators measured ~3 times slower per
 * lookup: V8 builds it as a rope and flattens it to hash it).
 */
export function ipv6NetworkKey(ip: string, prefix: number): string | undefined {
  if (parseIpInto(ip, SCRATCH) !== 6) return undefined;
  const b = SCRATCH;
  if (isV4Mapped(b)) return formatIpv4(b, 12);
  const whole = prefix >>> 4;
  const rest = prefix & 15;
  let key = ':';
  for (let i = 0; i < whole; i++) key += String.fromCharCode((b[2 * i]! << 8) | b[2 * i + 1]!);
  if (rest > 0) key += String.fromCharCode(((b[2 * whole]! << 8) | b[2 * whole + 1]!) & (0xffff << (16 - rest)) & 0xffff);
  return key;
}

/**
 * Who a client counts as, for limits: an IPv4 address is its own key, an
 * IPv6 address counts with its whole network of `ipv6Prefix` bits (one host
 * commonly holds a whole /64, so a per-address count would be no limit; see
 * {@link ipv6NetworkKey}), IPv4-mapped text as the IPv4 address. Text that is
 * not an address is its own key.
 */
export function prefixKey(ip: string, ipv6Prefix: number): string {
  if (ip.indexOf(':') < 0) return ip;
  return ipv6NetworkKey(ip, ipv6Prefix) ?? ip;
}

/** Whether `host` is a loopback address: 127.0.0.0/8 (IPv4-mapped too) or ::1. A host name is not. */
export function isLoopback(host: string): boolean {
  if (parseIpInto(host, SCRATCH) === 0) return false;
  if (isV4Mapped(SCRATCH)) return SCRATCH[12] === 127;
  for (let i = 0; i < 15; i++) if (SCRATCH[i] !== 0) return false;
  return SCRATCH[15] === 1;
}

// ---------------------------------------------------------------------------
// Parsing and printing, one pass each

/** IPv6 text (no lone IPv4: the caller tried that) into 16 bytes at `at`. */
function parseIpv6(text: string, out: Uint8Array, at: number, zone: ZonePolicy): boolean {
  let end = text.indexOf('%');
  if (end < 0) end = text.length;
  else if (zone === 'refuse' || end === text.length - 1) return false; // an empty zone is no zone id either
  if (end > IPV6_TEXT_MAX) return false;
  let n = 0; // groups written
  let gap = -1; // group index where "::" stands
  let i = 0;
  if (end >= 2 && text.charCodeAt(0) === COLON && text.charCodeAt(1) === COLON) {
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
    if (i < end && text.charCodeAt(i) === DOT) {
      // A dotted quad: the last 32 bits, and the end of the text.
      if (n > 6) return false;
      const v4 = dottedQuad(text, start, end);
      if (v4 < 0) return false;
      writeU32(out, at + 2 * n, v4);
      n += 2;
      break;
    }
    const digits = i - start;
    if (digits === 0 || digits > 4 || n >= 8) return false;
    out[at + 2 * n] = v >>> 8;
    out[at + 2 * n + 1] = v & 0xff;
    n++;
    if (i === end) break;
    if (text.charCodeAt(i) !== COLON) return false;
    i++;
    if (i < end && text.charCodeAt(i) === COLON) {
      if (gap >= 0) return false;
      gap = n;
      i++;
    } else if (i === end) {
      return false; // a trailing single ':'
    }
  }
  if (gap < 0) return n === 8;
  if (n > 7) return false; // "::" stands for at least one group
  // Move the groups after "::" to the end, then zero the gap.
  const tailBytes = 2 * (n - gap);
  out.copyWithin(at + 16 - tailBytes, at + 2 * gap, at + 2 * n);
  out.fill(0, at + 2 * gap, at + 16 - tailBytes);
  return true;
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const lower = c | 0x20;
  return lower >= 97 && lower <= 102 ? lower - 87 : -1;
}

/** `a.b.c.d` exactly filling text[start, end) as one unsigned 32-bit number; -1 if it is not a strict dotted quad. */
function dottedQuad(text: string, start: number, end: number): number {
  if (end - start > 15) return -1;
  let value = 0;
  let i = start;
  for (let part = 0; part < 4; part++) {
    if (part > 0) {
      if (i >= end || text.charCodeAt(i) !== DOT) return -1;
      i++;
    }
    const from = i;
    let octet = 0;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) break;
      octet = octet * 10 + (c - 48);
      i++;
    }
    const digits = i - from;
    if (digits === 0 || digits > 3 || octet > 255) return -1;
    if (digits > 1 && text.charCodeAt(from) === 48) return -1; // a leading zero (octal to some parsers)
    value = value * 256 + octet;
  }
  return i === end ? value : -1;
}

function writeU32(out: Uint8Array, at: number, v: number): void {
  out[at] = v >>> 24;
  out[at + 1] = (v >>> 16) & 0xff;
  out[at + 2] = (v >>> 8) & 0xff;
  out[at + 3] = v & 0xff;
}

/** RFC 5952 text of the 16 bytes at `at` into TEXT; returns its length. */
function writeIpv6Text(b: Uint8Array, at: number): number {
  // The first longest run of two or more zero groups becomes "::" (§4.2.1-4.2.3).
  let runStart = -1;
  let runLength = 1;
  for (let i = 0; i < 8; ) {
    if (b[at + 2 * i] !== 0 || b[at + 2 * i + 1] !== 0) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < 8 && b[at + 2 * j] === 0 && b[at + 2 * j + 1] === 0) j++;
    if (j - i > runLength) {
      runStart = i;
      runLength = j - i;
    }
    i = j;
  }
  let n = 0;
  for (let i = 0; i < 8; i++) {
    if (i === runStart) {
      TEXT[n++] = COLON;
      TEXT[n++] = COLON;
      i += runLength - 1;
      continue;
    }
    if (n > 0 && TEXT[n - 1] !== COLON) TEXT[n++] = COLON;
    // Lower case, no leading zeros (§4.1, §4.3).
    const g = (b[at + 2 * i]! << 8) | b[at + 2 * i + 1]!;
    if (g >= 0x1000) TEXT[n++] = HEX_DIGITS[g >>> 12]!;
    if (g >= 0x100) TEXT[n++] = HEX_DIGITS[(g >>> 8) & 15]!;
    if (g >= 0x10) TEXT[n++] = HEX_DIGITS[(g >>> 4) & 15]!;
    TEXT[n++] = HEX_DIGITS[g & 15]!;
  }
  return n;
}

/** Whether `text` equals the first `n` characters of TEXT. */
function sameText(text: string, n: number): boolean {
  if (text.length !== n) return false;
  for (let i = 0; i < n; i++) if (text.charCodeAt(i) !== TEXT[i]) return false;
  return true;
}
