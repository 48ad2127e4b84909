#!/usr/bin/env node
/**
 * Fuzzer for the PROXY protocol header parser (src/proxy-protocol/).
 *
 *   npx tsc && node scripts/fuzz-proxy-protocol.js [iterations=1000000] [seed=random]
 *
 * Each case is a random valid header (v1 or v2, built here byte by byte, not
 * with our encoder), a mutation of one, or random bytes, followed by random
 * trailing bytes, fed to the parser in random pieces. The outcome is compared
 * with `referenceParse`, a deliberately simple whole-buffer validator written
 * from the spec independently of the parser (regular expressions, WHATWG URL
 * for IPv6, a bit-by-bit CRC32C):
 *   - the parser throws nothing but its own ProxyHeaderError;
 *   - it accepts exactly what the reference accepts, with the same fields;
 *   - it consumes exactly the declared length and hands back the rest unchanged;
 *   - it never buffers more than the header it is reading.
 *
 * The same harness runs a bounded number of cases in
 * test/proxy-protocol-fuzz.test.ts (which passes in the TypeScript module);
 * this script is the long run against the built dist/ output.
 */
import { pathToFileURL } from 'node:url';

// ---------------------------------------------------------------------------
// Seeded PRNG (mulberry32): failures reproduce from the printed seed.
// ---------------------------------------------------------------------------

/** @param {number} seed 32-bit seed @returns {() => number} floats in [0, 1) */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------
// Reference validator (whole buffer, non-incremental)
// ---------------------------------------------------------------------------

const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])';
const IPV4_RE = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
const PORT_RE = /^(?:0|[1-9][0-9]{0,4})$/;
const V1_TCP_RE = /^PROXY (TCP4|TCP6) ([^ ]+) ([^ ]+) ([^ ]+) ([^ ]+)$/;
const V1_UNKNOWN_RE = /^PROXY UNKNOWN(?: .*)?$/s;
const FAMILIES = new Set([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]);
const BLOCK = { 0: 0, 1: 12, 2: 36, 3: 216 };

/** Bit-at-a-time CRC32C, independent of the parser's table-driven one. */
export function crc32cBitwise(bytes) {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** IPv6 text → canonical text via WHATWG URL; IPv4-mapped → dotted. undefined if invalid. */
function refV6(text) {
  if (!/^[0-9A-Fa-f:.]+$/.test(text)) return undefined;
  let host;
  try {
    host = new URL(`http://[${text}]/`).hostname;
  } catch {
    return undefined;
  }
  const inner = host.slice(1, -1);
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(inner);
  if (m) {
    const hi = parseInt(m[1], 16);
    const lo = parseInt(m[2], 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return inner;
}

function refPort(text) {
  return PORT_RE.test(text) && Number(text) <= 65535 ? Number(text) : undefined;
}

function strictUtf8(buf) {
  const s = buf.toString('utf8');
  return Buffer.from(s, 'utf8').equals(buf) ? s : undefined;
}

function refV1(input) {
  const window = input.subarray(0, 107);
  const crlf = window.indexOf('\r\n');
  const upto = crlf >= 0 ? crlf : window.length;
  for (let i = 0; i < upto; i++) {
    if (window[i] === 0x0a) return { kind: 'invalid' };
    if (window[i] === 0x0d && i + 1 < window.length) return { kind: 'invalid' };
  }
  if (crlf < 0) return { kind: input.length >= 107 ? 'invalid' : 'incomplete' };
  const line = input.toString('latin1', 0, crlf);
  const length = crlf + 2;
  if (V1_UNKNOWN_RE.test(line)) return { kind: 'valid', length, summary: { version: 1, command: 'PROXY', tlvs: [] } };
  const m = V1_TCP_RE.exec(line);
  if (!m) return { kind: 'invalid' };
  const [, proto, sa, da, sp, dp] = m;
  const addr = (a) => (proto === 'TCP4' ? (IPV4_RE.test(a) ? a : undefined) : a.includes(':') ? refV6(a) : undefined);
  const s = addr(sa);
  const d = addr(da);
  const sport = refPort(sp);
  const dport = refPort(dp);
  if (s === undefined || d === undefined || sport === undefined || dport === undefined) return { kind: 'invalid' };
  return {
    kind: 'valid',
    length,
    summary: { version: 1, command: 'PROXY', src: `${s} ${sport}`, dst: `${d} ${dport}`, tlvs: [] },
  };
}

/** Walks TLVs in buf[start, end); returns the list or undefined when they do not tile. */
function walkTlvs(buf, start, end) {
  const list = [];
  let p = start;
  while (p < end) {
    if (end - p < 3) return undefined;
    const len = buf.readUInt16BE(p + 1);
    if (p + 3 + len > end) return undefined;
    list.push({ type: buf[p], at: p + 3, value: buf.subarray(p + 3, p + 3 + len) });
    p += 3 + len;
  }
  return list;
}

function v6Text(buf, at) {
  const groups = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(at + 2 * i).toString(16));
  return refV6(groups.join(':'));
}

function refV2(input, max) {
  if (input.length < 16) return { kind: 'incomplete' };
  if (!input.subarray(0, 12).equals(SIG)) return { kind: 'invalid' };
  const ver = input[12] >> 4;
  const cmd = input[12] & 15;
  const fam = input[13];
  if (ver !== 2 || cmd > 1 || !FAMILIES.has(fam)) return { kind: 'invalid' };
  if (cmd === 1 && (fam & 15) === 2) return { kind: 'invalid' };
  const bodyLen = input.readUInt16BE(14);
  const total = 16 + bodyLen;
  if (total > max || bodyLen < BLOCK[fam >> 4]) return { kind: 'invalid' };
  if (input.length < total) return { kind: 'incomplete' };
  const header = input.subarray(0, total);
  const tlvs = walkTlvs(header, 16 + BLOCK[fam >> 4], total);
  if (!tlvs) return { kind: 'invalid' };

  const summary = { version: 2, command: cmd === 1 ? 'PROXY' : 'LOCAL' };
  if (cmd === 1 && fam === 0x11) {
    summary.src = `${[...header.subarray(16, 20)].join('.')} ${header.readUInt16BE(24)}`;
    summary.dst = `${[...header.subarray(20, 24)].join('.')} ${header.readUInt16BE(26)}`;
  } else if (cmd === 1 && fam === 0x21) {
    summary.src = `${v6Text(header, 16)} ${header.readUInt16BE(48)}`;
    summary.dst = `${v6Text(header, 32)} ${header.readUInt16BE(50)}`;
  }
  const seen = new Set();
  for (const t of tlvs) {
    if ([0x01, 0x02, 0x03, 0x05, 0x20].includes(t.type)) {
      if (seen.has(t.type)) return { kind: 'invalid' };
      seen.add(t.type);
    }
    if (t.type === 0x01) summary.alpn = t.value.toString('latin1');
    if (t.type === 0x02) {
      summary.authority = strictUtf8(t.value);
      if (summary.authority === undefined) return { kind: 'invalid' };
    }
    if (t.type === 0x05) {
      if (t.value.length > 128) return { kind: 'invalid' };
      summary.uniqueId = t.value.toString('hex');
    }
    if (t.type === 0x03) {
      if (t.value.length !== 4) return { kind: 'invalid' };
      const copy = Buffer.from(header);
      copy.fill(0, t.at, t.at + 4);
      if (crc32cBitwise(copy) !== t.value.readUInt32BE(0)) return { kind: 'invalid' };
      summary.crc32c = t.value.readUInt32BE(0);
    }
    if (t.type === 0x20) {
      if (t.value.length < 5) return { kind: 'invalid' };
      const subs = walkTlvs(t.value, 5, t.value.length);
      if (!subs) return { kind: 'invalid' };
      const ssl = { client: t.value[0], verify: t.value.readUInt32BE(1) };
      const names = { 0x21: 'version', 0x22: 'cn', 0x23: 'cipher', 0x24: 'sigAlg', 0x25: 'keyAlg' };
      for (const s of subs) {
        const name = names[s.type];
        if (!name) continue;
        if (ssl[name] !== undefined) return { kind: 'invalid' };
        ssl[name] = s.type === 0x22 ? strictUtf8(s.value) : s.value.toString('latin1');
        if (ssl[name] === undefined) return { kind: 'invalid' };
      }
      ssl.subs = subs.map((s) => `${s.type}:${s.value.toString('hex')}`);
      summary.ssl = ssl;
    }
  }
  summary.tlvs = tlvs.map((t) => `${t.type}:${t.value.toString('hex')}`);
  return { kind: 'valid', length: total, summary };
}

/**
 * What a strict parser must do with `input` (the header plus whatever follows).
 * @returns {{kind:'valid', length:number, summary:object} | {kind:'invalid'} | {kind:'incomplete'}}
 */
export function referenceParse(input, maxHeaderBytes = 4096) {
  if (input.length === 0) return { kind: 'incomplete' };
  if (input[0] === 0x50) {
    const prefix = Buffer.from('PROXY ');
    const n = Math.min(6, input.length);
    if (!input.subarray(0, n).equals(prefix.subarray(0, n))) return { kind: 'invalid' };
    return refV1(input);
  }
  if (input[0] === 0x0d) {
    const n = Math.min(12, input.length);
    if (!input.subarray(0, n).equals(SIG.subarray(0, n))) return { kind: 'invalid' };
    return refV2(input, maxHeaderBytes);
  }
  return { kind: 'invalid' };
}

/** The parser's header in the reference's summary shape (same key order). */
export function summarize(h) {
  const s = { version: h.version, command: h.command };
  if (h.source) s.src = `${h.source.address} ${h.source.port}`;
  if (h.destination) s.dst = `${h.destination.address} ${h.destination.port}`;
  const t = h.tlvs;
  if (h.version === 2) {
    // Keys in the order the reference may set them depends on wire order; compare sorted.
    if (t.alpn !== undefined) s.alpn = t.alpn;
    if (t.authority !== undefined) s.authority = t.authority;
    if (t.uniqueId !== undefined) s.uniqueId = t.uniqueId.toString('hex');
    if (t.crc32c !== undefined) s.crc32c = t.crc32c;
    if (t.ssl) {
      const ssl = { client: t.ssl.client, verify: t.ssl.verify };
      for (const k of ['version', 'cn', 'cipher', 'sigAlg', 'keyAlg']) if (t.ssl[k] !== undefined) ssl[k] = t.ssl[k];
      ssl.subs = t.ssl.subTlvs.map((x) => `${x.type}:${x.value.toString('hex')}`);
      s.ssl = ssl;
    }
  }
  s.tlvs = t.raw.map((x) => `${x.type}:${x.value.toString('hex')}`);
  return s;
}

/** JSON with sorted keys, so summaries compare regardless of insertion order. */
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

// ---------------------------------------------------------------------------
// Case generation
// ---------------------------------------------------------------------------

function makeGen(rng) {
  const int = (n) => Math.floor(rng() * n);
  const pick = (arr) => arr[int(arr.length)];
  const chance = (p) => rng() < p;
  const bytes = (n) => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  const port = () => (chance(0.1) ? pick([0, 1, 65535, 65534, 80, 443]) : int(65536));
  const v4 = () => Array.from({ length: 4 }, () => (chance(0.2) ? pick([0, 255, 1, 10, 100]) : int(256))).join('.');

  function v6() {
    const r = rng();
    if (r < 0.15) return `${chance(0.5) ? '::ffff:' : '::FFFF:'}${v4()}`;
    if (r < 0.2) return `64:ff9b::${v4()}`;
    const groups = Array.from({ length: 8 }, () => (chance(0.3) ? 0 : chance(0.5) ? int(16) : int(65536)));
    if (chance(0.1)) {
      // IPv4-mapped written in hex groups
      groups.fill(0, 0, 5);
      groups[5] = 0xffff;
    }
    let parts = groups.map((g) => {
      let h = g.toString(16);
      if (chance(0.2)) h = h.padStart(4, '0');
      return chance(0.2) ? h.toUpperCase() : h;
    });
    if (chance(0.6)) {
      // compress one random run of zero groups
      const i = int(8);
      let j = i;
      while (j < 8 && groups[j] === 0) j++;
      if (j > i) return `${parts.slice(0, i).join(':')}::${parts.slice(j).join(':')}`;
    }
    if (chance(0.05)) parts = ['0', '0', '0', '0', '0', '0', '0', '0'];
    return parts.join(':');
  }

  function validV1() {
    const r = rng();
    if (r < 0.15) {
      // "PROXY UNKNOWN" + " " + up to 90 bytes + CRLF stays within 107
      const tail = chance(0.5) ? '' : ` ${bytes(int(91)).toString('latin1').replace(/[\r\n]/g, 'x')}`;
      return Buffer.from(`PROXY UNKNOWN${tail}\r\n`, 'latin1');
    }
    if (r < 0.55) return Buffer.from(`PROXY TCP4 ${v4()} ${v4()} ${port()} ${port()}\r\n`, 'latin1');
    return Buffer.from(`PROXY TCP6 ${v6()} ${v6()} ${port()} ${port()}\r\n`, 'latin1');
  }

  const tlv = (type, value) => {
    const h = Buffer.alloc(3);
    h[0] = type;
    h.writeUInt16BE(value.length, 1);
    return Buffer.concat([h, value]);
  };
  const ascii = (n) => Buffer.from(Array.from({ length: n }, () => 0x21 + int(94)));
  const hostname = () => Buffer.from(`${ascii(1 + int(12)).toString().replace(/[^a-z0-9]/gi, 'a')}.example.com`);
  const shuffle = (arr) => {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = int(i + 1);
      [arr[i], arr[j]] = [arr[j], arr[i]];
    }
    return arr;
  };

  function brokenTlv() {
    switch (int(7)) {
      case 0: return tlv(0x20, bytes(int(5))); // SSL shorter than its head
      case 1: return tlv(0x03, bytes(pick([0, 1, 3, 5, 8]))); // CRC32C not 4 bytes
      case 2: return tlv(0x20, Buffer.concat([bytes(5), bytes(1 + int(6))])); // SSL sub-TLVs that do not tile
      case 3: return Buffer.concat([tlv(0x02, hostname()), tlv(0x02, hostname())]); // duplicate AUTHORITY
      case 4: return Buffer.concat([tlv(0x01, ascii(2)), tlv(0x01, ascii(2))]); // duplicate ALPN
      case 5: { // duplicate SSL sub-TLV
        const sub = tlv(pick([0x21, 0x22, 0x23, 0x24, 0x25]), ascii(3));
        return tlv(0x20, Buffer.concat([bytes(5), sub, sub]));
      }
      default: return tlv(0x20, Buffer.concat([bytes(5), tlv(0x22, Buffer.from([0xc3, 0x28]))])); // CN not UTF-8
    }
  }

  function validV2() {
    const cmd = chance(0.8) ? 1 : 0;
    const fam = cmd === 1 ? pick([0x11, 0x11, 0x21, 0x21, 0x00, 0x31]) : pick([0x00, 0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]);
    let addr;
    if (fam >> 4 === 1) addr = bytes(12);
    else if (fam >> 4 === 2) {
      addr = bytes(36);
      if (chance(0.2)) addr.fill(0, 0, 10), addr.fill(0xff, 10, 12);
      if (chance(0.2)) addr.fill(0, 16, 32);
    } else if (fam >> 4 === 3) addr = bytes(216);
    else addr = Buffer.alloc(0);

    const list = [];
    if (chance(0.5)) list.push(tlv(0x02, chance(0.9) ? hostname() : bytes(int(20))));
    if (chance(0.4)) list.push(tlv(0x01, ascii(1 + int(10))));
    if (chance(0.3)) {
      const subs = [];
      if (chance(0.8)) subs.push(tlv(0x21, Buffer.from(pick(['TLSv1.2', 'TLSv1.3']))));
      if (chance(0.5)) subs.push(tlv(0x22, chance(0.9) ? hostname() : bytes(int(10))));
      if (chance(0.8)) subs.push(tlv(0x23, ascii(5 + int(20))));
      if (chance(0.2)) subs.push(tlv(0x24, ascii(8)));
      if (chance(0.2)) subs.push(tlv(0x25, ascii(7)));
      if (chance(0.2)) subs.push(tlv(0xe0 + int(16), bytes(int(10))));
      const head = Buffer.alloc(5);
      head[0] = int(8);
      head.writeUInt32BE(chance(0.7) ? 0 : int(2 ** 32), 1);
      list.push(tlv(0x20, Buffer.concat([head, ...shuffle(subs)])));
    }
    if (chance(0.15)) list.push(tlv(0x05, bytes(int(140))));
    while (chance(0.2)) list.push(tlv(0x04, bytes(int(8))));
    while (chance(0.2)) list.push(tlv(pick([0x00, 0x21, 0x30, 0xe0 + int(16), 0xf0 + int(16)]), bytes(int(30))));
    // Well-framed but invalid known TLVs, which byte mutations rarely produce.
    if (chance(0.08)) list.push(brokenTlv());
    let crcIndex = -1;
    if (chance(0.3)) {
      list.push(tlv(0x03, Buffer.alloc(4)));
      crcIndex = list.length - 1;
    }
    shuffle(list);
    const body = Buffer.concat([addr, ...list]);
    const head = Buffer.concat([SIG, Buffer.from([0x20 | cmd, fam, body.length >> 8, body.length & 255])]);
    const out = Buffer.concat([head, body]);
    if (crcIndex >= 0) {
      // find the CRC TLV again after shuffling and fill it in
      const tlvs = walkTlvs(out, 16 + addr.length, out.length);
      const crc = tlvs.find((t) => t.type === 0x03);
      out.writeUInt32BE(crc32cBitwise(out), crc.at);
    }
    return out;
  }

  function mutate(buf) {
    let b = Buffer.from(buf);
    const rounds = 1 + int(3);
    for (let k = 0; k < rounds && b.length > 0; k++) {
      const i = int(b.length);
      switch (int(12)) {
        case 0: b[i] = int(256); break;
        case 1: b[i] ^= 1 << int(8); break;
        case 2: b = Buffer.concat([b.subarray(0, i), Buffer.from([int(256)]), b.subarray(i)]); break;
        case 3: b = Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]); break;
        case 4: b = b.subarray(0, i); break;
        case 5: if (b.length >= 16 && b[0] === 0x0d) b.writeUInt16BE(chance(0.5) ? int(65536) : Math.max(0, b.readUInt16BE(14) + int(9) - 4), 14); break;
        case 6: if (b.length >= 14 && b[0] === 0x0d) b[12 + int(2)] = int(256); break;
        case 7: b[i] = pick([0x20, 0x0d, 0x0a, 0x30, 0x3a, 0x2e, 0x39]); break;
        case 8: b = Buffer.concat([b.subarray(0, i), Buffer.from(pick(['0', ' ', '9', ':', '.', '\r', '\n', '::', '256'])), b.subarray(i)]); break;
        case 9: if (b.length > 19 && b[0] === 0x0d) b[16 + int(b.length - 16)] = int(256); break;
        case 10: b = Buffer.concat([b, bytes(int(200))]); break;
        default: { const j = int(b.length); b = Buffer.concat([b.subarray(0, Math.min(i, j)), b.subarray(Math.max(i, j))]); }
      }
    }
    return b;
  }

  function randomCase() {
    const r = rng();
    if (r < 0.3) return Buffer.concat([Buffer.from('PROXY '), bytes(int(120))]);
    if (r < 0.6) return Buffer.concat([SIG, bytes(int(80))]);
    if (r < 0.8) return Buffer.concat([SIG, Buffer.from([0x20 | int(2), pick([0x00, 0x11, 0x21, 0x31]), 0, int(60)]), bytes(int(80))]);
    return bytes(int(40));
  }

  /** One fuzz input: header (or not), then trailing bytes. */
  function nextCase() {
    const r = rng();
    let head;
    if (r < 0.25) head = validV1();
    else if (r < 0.5) head = validV2();
    else if (r < 0.65) head = mutate(validV1());
    else if (r < 0.9) head = mutate(validV2());
    else head = randomCase();
    const rest = chance(0.2) ? Buffer.alloc(0) : chance(0.1) ? validV1() : bytes(int(24));
    return { input: Buffer.concat([head, rest]), maxHeaderBytes: chance(0.9) ? 4096 : 52 + int(300) };
  }

  /** Random cut points (whole, byte-by-byte, or a few pieces). */
  function split(input) {
    const r = rng();
    if (r < 0.3 || input.length < 2) return [input];
    if (r < 0.35) return [...input].map((x) => Buffer.from([x]));
    const cuts = new Set();
    const n = 1 + int(4);
    for (let i = 0; i < n; i++) cuts.add(1 + int(input.length - 1));
    const points = [0, ...[...cuts].sort((a, b) => a - b), input.length];
    const out = [];
    for (let i = 1; i < points.length; i++) out.push(input.subarray(points[i - 1], points[i]));
    return out;
  }

  return { nextCase, split };
}

// ---------------------------------------------------------------------------
// Runner
// ---------------------------------------------------------------------------

/**
 * Runs `iterations` cases against `api` ({ ProxyHeaderParser, ProxyHeaderError }).
 * @returns {{ iterations:number, seed:number, elapsedMs:number, counts:object, failures:Array<object> }}
 */
export function runFuzz(api, { iterations, seed, maxFailures = 20 }) {
  const { ProxyHeaderParser, ProxyHeaderError } = api;
  const rng = mulberry32(seed);
  const { nextCase, split } = makeGen(rng);
  const counts = { valid: 0, invalid: 0, incomplete: 0 };
  const failures = [];
  const started = performance.now();
  for (let n = 0; n < iterations && failures.length < maxFailures; n++) {
    const { input, maxHeaderBytes } = nextCase();
    const ref = referenceParse(input, maxHeaderBytes);
    counts[ref.kind]++;
    const problem = check(input, maxHeaderBytes, ref, split(input));
    if (problem) failures.push({ case: n, problem, ref: ref.kind, maxHeaderBytes, input: input.toString('hex') });
  }
  return { iterations, seed, elapsedMs: performance.now() - started, counts, failures };

  function check(input, max, ref, chunks) {
    const parser = new ProxyHeaderParser({ maxHeaderBytes: max });
    const bound = Math.max(107, max);
    let outcome = 'need_more';
    let done;
    let fed = 0;
    try {
      for (let i = 0; i < chunks.length; i++) {
        const r = parser.push(chunks[i]);
        fed += chunks[i].length;
        if (r.state === 'done') {
          outcome = 'done';
          done = { header: r.header, rest: Buffer.concat([r.rest, ...chunks.slice(i + 1)]), tail: r.rest, fed };
          break;
        }
        if (parser.bufferedBytes > bound) return `buffered ${parser.bufferedBytes} bytes > bound ${bound}`;
        if (parser.bufferedBytes !== fed) return `buffered ${parser.bufferedBytes} of ${fed} fed bytes before the header ended`;
      }
    } catch (err) {
      if (!(err instanceof ProxyHeaderError)) return `foreign exception: ${err && err.stack}`;
      if (err.code !== 'L4LB_PROXY_HEADER_INVALID' || typeof err.reason !== 'string') return 'error without code/reason';
      outcome = 'error';
    }
    if (ref.kind === 'invalid') return outcome === 'error' ? undefined : `accepted or waiting on invalid input (${outcome})`;
    if (ref.kind === 'incomplete') return outcome === 'done' ? 'accepted an incomplete header' : undefined;
    if (outcome !== 'done') return `rejected a valid header (${outcome})`;
    if (done.header.length !== ref.length) return `consumed ${done.header.length}, declared ${ref.length}`;
    // rest must be exactly the bytes after the declared length, and a plain tail of the last chunk.
    if (!done.rest.equals(input.subarray(ref.length))) return 'rest differs from the bytes after the header';
    if (done.fed - done.tail.length !== ref.length) return 'rest does not start right after the header';
    const got = canonical(summarize(done.header));
    const want = canonical(ref.summary);
    return got === want ? undefined : `fields differ:\n  parser    ${got}\n  reference ${want}`;
  }
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

async function main() {
  const iterations = Number(process.argv[2] ?? 1_000_000);
  const seed = process.argv[3] !== undefined ? Number(process.argv[3]) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  if (!Number.isInteger(iterations) || iterations <= 0) {
    console.error('usage: node scripts/fuzz-proxy-protocol.js [iterations] [seed]');
    process.exit(2);
  }
  let api;
  try {
    api = await import('../dist/proxy-protocol/index.js');
  } catch (err) {
    console.error(`cannot load dist/proxy-protocol/index.js (run \`npx tsc\` first): ${err.message}`);
    process.exit(2);
  }
  console.log(`fuzzing PROXY header parser: ${iterations} cases, seed ${seed}`);
  const batch = 100_000;
  const totals = { valid: 0, invalid: 0, incomplete: 0 };
  let elapsed = 0;
  let done = 0;
  // Batches share one PRNG stream via derived seeds so progress can be printed; rerun with the same seed to reproduce.
  const rng = mulberry32(seed);
  while (done < iterations) {
    const n = Math.min(batch, iterations - done);
    const batchSeed = (rng() * 2 ** 32) >>> 0;
    const r = runFuzz(api, { iterations: n, seed: batchSeed });
    elapsed += r.elapsedMs;
    done += n;
    for (const k of Object.keys(totals)) totals[k] += r.counts[k];
    if (r.failures.length) {
      console.error(`FAIL in batch seed ${batchSeed} (run seed ${seed}):`);
      for (const f of r.failures) console.error(JSON.stringify(f, null, 2));
      process.exit(1);
    }
    console.log(`${done} cases ok (${Math.round((done / elapsed) * 1000)} cases/s)`);
  }
  console.log(`done: ${done} cases in ${(elapsed / 1000).toFixed(1)} s, ${Math.round((done / elapsed) * 1000)} cases/s; ` +
    `reference verdicts ${JSON.stringify(totals)}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
