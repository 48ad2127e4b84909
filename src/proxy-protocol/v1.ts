/**
 * PROXY v1 scanner: validates the text line as its bytes arrive, so a bad
 * header is refused at its first wrong byte rather than after 107.
 *
 * Receiver policy where the spec leaves a choice: exactly one space between
 * fields; no lone CR or LF anywhere, even in the ignored tail of `UNKNOWN`.
 * IPv6 may use `::` and a trailing dotted quad (HAProxy's inet_ntop writes
 * `::ffff:1.2.3.4`), but no zone id. Addresses come out in l4lb's one text
 * form (src/net/ip.ts canonicalIp).
 */
import { canonicalIp, ipFamily } from '../net/ip.js';
import { CR, LF, V1_MAX_LENGTH, V1_PREFIX } from './constants.js';
import { fail, type ProxyHeader } from './header.js';

const V1_PROTOCOLS = ['TCP4', 'TCP6', 'UNKNOWN'] as const;

/** Could `s` still grow into a strict dotted quad? */
function isIPv4Prefix(s: string): boolean {
  const parts = s.split('.');
  if (parts.length > 4) return false;
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (p === '') {
      if (i < parts.length - 1) return false; // empty part before a dot
      continue;
    }
    if (!/^[0-9]{1,3}$/.test(p)) return false;
    if (p.length > 1 && p[0] === '0') return false;
    if (Number(p) > 255) return false;
  }
  return true;
}

/** Longest IPv6 text we accept: eight groups, or six groups plus a dotted quad. */
const V6_TEXT_MAX = 45;
const V6_CHARS = /^[0-9A-Fa-f:.]*$/;

/** Cheap viability check for a partial IPv6 token; the full check runs once the token ends. */
function isIPv6Prefix(s: string): boolean {
  return s.length <= V6_TEXT_MAX && V6_CHARS.test(s) && !s.includes(':::');
}

function isPortPrefix(s: string): boolean {
  if (!/^[0-9]{0,5}$/.test(s)) return false;
  if (s.length > 1 && s[0] === '0') return false;
  return s.length < 5 || Number(s) <= 0xffff;
}

function isPortFull(s: string): boolean {
  return s.length > 0 && isPortPrefix(s);
}

/** Whether a whole address field is valid for its protocol (a header carries no zone id). */
function isAddressFull(s: string, v4: boolean): boolean {
  return ipFamily(s, 'refuse') === (v4 ? 4 : 6);
}

/**
 * Validates the v1 bytes received so far. Returns the header once the CRLF
 * is in, undefined while the prefix can still become valid, and throws as
 * soon as it cannot. `len` never exceeds 107 and the LF, when present, is the
 * last byte (the caller stops buffering there).
 */
export function scanV1(buf: Buffer, len: number): ProxyHeader | undefined {
  const n = Math.min(len, V1_PREFIX.length);
  for (let i = 0; i < n; i++) {
    if (buf[i] !== V1_PREFIX[i]) fail('bad_signature', 'expected "PROXY "');
  }
  if (len <= V1_PREFIX.length) return undefined;

  let crAt = -1; // index of the CR of the final CRLF
  for (let i = V1_PREFIX.length; i < len; i++) {
    const b = buf[i];
    if (b === LF) {
      if (buf[i - 1] !== CR) fail('v1_no_crlf', 'LF without CR');
      crAt = i - 1;
      break;
    }
    if (b === CR && i + 1 < len && buf[i + 1] !== LF) fail('v1_no_crlf', 'CR not followed by LF');
  }
  if (crAt < 0 && len >= V1_MAX_LENGTH) fail('v1_too_long', `no CRLF within ${V1_MAX_LENGTH} bytes`);

  const complete = crAt >= 0;
  // A trailing CR ends the fields even before its LF arrives.
  const fieldsEnd = complete ? crAt : buf[len - 1] === CR ? len - 1 : len;
  const terminated = complete || fieldsEnd < len;
  const line = buf.toString('latin1', V1_PREFIX.length, fieldsEnd);

  const sp = line.indexOf(' ');
  const proto = sp < 0 ? line : line.slice(0, sp);
  if (sp >= 0 || terminated) {
    if (proto === 'UNKNOWN') {
      // Anything may follow UNKNOWN up to the CRLF; the receiver ignores it.
      return complete ? { version: 1, command: 'PROXY', tlvs: { raw: [] }, length: len } : undefined;
    }
    if (proto !== 'TCP4' && proto !== 'TCP6') fail('v1_bad_protocol', `unknown protocol ${JSON.stringify(proto)}`);
  } else {
    if (!V1_PROTOCOLS.some((p) => p.startsWith(proto))) fail('v1_bad_protocol', `unknown protocol ${JSON.stringify(proto)}`);
    return undefined;
  }

  const v4 = proto === 'TCP4';
  const fields = sp < 0 ? [] : line.slice(sp + 1).split(' ');
  if (fields.length > 4) fail('v1_bad_format', 'too many fields or spaces');
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    const whole = i < fields.length - 1 || terminated;
    if (whole && f === '') fail('v1_bad_format', 'empty field (not exactly one space)');
    if (i < 2) {
      const ok = whole ? isAddressFull(f, v4) : v4 ? isIPv4Prefix(f) : isIPv6Prefix(f);
      if (!ok) fail('v1_bad_address', `bad ${v4 ? 'IPv4' : 'IPv6'} address ${JSON.stringify(f)}`);
    } else if (!(whole ? isPortFull(f) : isPortPrefix(f))) {
      fail('v1_bad_port', `bad port ${JSON.stringify(f)}`);
    }
  }
  if (terminated && fields.length < 4) fail('v1_bad_format', 'missing fields');
  if (!complete) return undefined;

  const [sa, da, spt, dpt] = fields as [string, string, string, string];
  // Both addresses passed isAddressFull, so canonicalIp has a text for them.
  return {
    version: 1,
    command: 'PROXY',
    source: { address: canonicalIp(sa)!, port: Number(spt) },
    destination: { address: canonicalIp(da)!, port: Number(dpt) },
    tlvs: { raw: [] },
    length: len,
  };
}
