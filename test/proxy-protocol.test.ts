/**
 * PROXY protocol codec: byte vectors from HAProxy's doc/proxy-protocol.txt,
 * every rejection rule, split delivery, and a cross-check against
 * proxy-protocol-js where that library is right.
 */
import t, { type Test } from 'tap';
import {
  IPv4Address,
  IPv4ProxyAddress,
  IPv6Address,
  IPv6ProxyAddress,
  Command,
  Peer,
  INETProtocol,
  TransportProtocol,
  UnspecProxyAddress,
  V1ProxyProtocol,
  V2ProxyProtocol,
} from 'proxy-protocol-js';
import {
  crc32c,
  DEFAULT_MAX_HEADER_BYTES,
  encodeV1,
  encodeV1Local,
  encodeV1Unknown,
  encodeV2,
  parseProxyHeader,
  PP2_CLIENT_CERT_CONN,
  PP2_CLIENT_SSL,
  ProxyHeaderError,
  ProxyHeaderParser,
  type ProxyHeader,
  type ProxyHeaderErrorReason,
  V2_SIGNATURE,
} from '../src/proxy-protocol/index.js';
import { canonicalIp } from '../src/net/ip.js';
import { L4lbError } from '../src/errors.js';

const SIG = '0d0a0d0a000d0a515549540a';
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ascii = (s: string): Buffer => Buffer.from(s, 'latin1');

/** Bit-at-a-time CRC32C: an independent check on the table-driven one. */
function crc32cSlow(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of data) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** Parses `input` in one push; the header must be complete. */
function parse(input: Buffer, options?: { maxHeaderBytes?: number }): { header: ProxyHeader; rest: Buffer } {
  const r = new ProxyHeaderParser(options).push(input);
  if (r.state !== 'done') throw new Error(`incomplete: ${input.toString('latin1')}`);
  return r;
}

/** Feeds `input` one byte at a time; returns the index of the byte that made the parser throw, and the error. */
function rejectAt(input: Buffer, options?: { maxHeaderBytes?: number }): { at: number; err: ProxyHeaderError } {
  const p = new ProxyHeaderParser(options);
  for (let i = 0; i < input.length; i++) {
    try {
      const r = p.push(input.subarray(i, i + 1));
      if (r.state === 'done') throw new Error('accepted');
    } catch (err) {
      if (err instanceof ProxyHeaderError) return { at: i, err };
      throw err;
    }
  }
  throw new Error(`not rejected (need_more): ${JSON.stringify(input.toString('latin1'))}`);
}

function rejects(t: Test, input: Buffer | string, reason: ProxyHeaderErrorReason, options?: { maxHeaderBytes?: number }): void {
  const buf = typeof input === 'string' ? ascii(input) : input;
  const name = JSON.stringify(buf.length < 60 ? buf.toString('latin1') : `${buf.toString('hex').slice(0, 80)}…`);
  let err: unknown;
  try {
    new ProxyHeaderParser(options).push(buf);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof ProxyHeaderError && err instanceof L4lbError, `${name} throws ProxyHeaderError`);
  t.equal((err as ProxyHeaderError | undefined)?.reason, reason, `${name} → ${reason}`);
  t.equal((err as ProxyHeaderError | undefined)?.code, 'L4LB_PROXY_HEADER_INVALID');
  // Byte-at-a-time delivery must reach the same verdict.
  t.equal(rejectAt(buf, options).err.reason, reason, `${name} byte by byte → ${reason}`);
}

/** A v2 header from hex pieces, with the length field computed. */
function v2(verCmd: number, fam: number, bodyHex: string): Buffer {
  const body = hex(bodyHex);
  const head = hex(SIG + '00000000');
  head[12] = verCmd;
  head[13] = fam;
  head.writeUInt16BE(body.length, 14);
  return Buffer.concat([head, body]);
}

const V4_BODY = '01020304 05060708 0005 0050'; // 1.2.3.4:5 → 5.6.7.8:80

t.test('CRC32C matches the check value, the RFC 3720 vectors and a bitwise reference', async (t) => {
  t.equal(crc32c(ascii('123456789')), 0xe3069283, 'check value');
  // RFC 3720 appendix B.4 vectors
  t.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa, '32 zero bytes');
  t.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43, '32 0xff bytes');
  t.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e, '0..31');
  t.equal(crc32c(Buffer.alloc(0)), 0, 'empty');
  const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7919) & 255));
  t.equal(crc32c(data), crc32cSlow(data), 'table-driven == bitwise');
});

t.test('addresses come out in one text form (canonicalIp, shared with all of l4lb)', async (t) => {
  t.equal(canonicalIp('1.2.3.4'), '1.2.3.4');
  t.equal(canonicalIp('::ffff:1.2.3.4'), '1.2.3.4');
  t.equal(canonicalIp('::FFFF:102:304'), '1.2.3.4');
  t.equal(canonicalIp('2001:0DB8:0:0:0:0:0:1'), '2001:db8::1');
  t.equal(canonicalIp('1:0:0:2:0:0:0:3'), '1:0:0:2::3', 'longest zero run');
  t.equal(canonicalIp('1:0:0:2:0:0:3:4'), '1::2:0:0:3:4', 'first of equal runs');
  t.equal(canonicalIp('1:0:2:3:4:5:6:7'), '1:0:2:3:4:5:6:7', 'a single zero group stays');
  t.equal(canonicalIp('fe80::1%eth0'), 'fe80::1', 'zone id dropped');
  t.equal(canonicalIp('::'), '::');
  t.equal(canonicalIp('64:ff9b::1.2.3.4'), '64:ff9b::102:304');
  t.equal(canonicalIp('localhost'), undefined);
  t.equal(canonicalIp('01.2.3.4'), undefined);
});

t.test('the v1 encoder writes the spec lines, IPv4-mapped addresses as TCP4', async (t) => {
  t.equal(
    encodeV1({ address: '192.168.0.1', port: 56324 }, { address: '192.168.0.11', port: 443 }).toString('latin1'),
    'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n',
    'spec example line',
  );
  t.equal(
    encodeV1({ address: '2001:DB8::1', port: 1 }, { address: '::1', port: 65535 }).toString('latin1'),
    'PROXY TCP6 2001:db8::1 ::1 1 65535\r\n',
  );
  t.equal(
    encodeV1({ address: '::ffff:127.0.0.77', port: 40000 }, { address: '::ffff:127.0.0.1', port: 5432 }).toString('latin1'),
    'PROXY TCP4 127.0.0.77 127.0.0.1 40000 5432\r\n',
    'IPv4-mapped IPv6 written as IPv4',
  );
  t.equal(
    encodeV1({ address: '10.0.0.1', port: 1 }, { address: '2001:db8::2', port: 2 }).toString('latin1'),
    'PROXY TCP6 ::ffff:a00:1 2001:db8::2 1 2\r\n',
    'mixed families: the IPv4 side becomes IPv4-mapped IPv6',
  );
  t.equal(
    encodeV1({ address: 'fe80::1%eth0', port: 1 }, { address: 'fe80::2', port: 2 }).toString('latin1'),
    'PROXY TCP6 fe80::1 fe80::2 1 2\r\n',
    'zone id dropped',
  );
  const worst = encodeV1(
    { address: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 65535 },
    { address: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 65535 },
  );
  t.equal(worst.length, 104, 'longest TCP6 line is 104 bytes (spec 2.1)');
  t.equal(encodeV1Unknown().toString('latin1'), 'PROXY UNKNOWN\r\n');
  t.throws(() => encodeV1({ address: '1.2.3.4', port: 70000 }, { address: '1.2.3.4', port: 1 }), RangeError);
  t.throws(() => encodeV1({ address: '1.2.3.4', port: -1 }, { address: '1.2.3.4', port: 1 }), RangeError);
  t.throws(() => encodeV1({ address: '1.2.3.4', port: 1.5 }, { address: '1.2.3.4', port: 1 }), RangeError);
  t.throws(() => encodeV1({ address: 'localhost', port: 1 }, { address: '1.2.3.4', port: 1 }), RangeError);
  t.throws(() => encodeV1({ address: '1.2.3.4', port: 1 }, { address: '010.0.0.1', port: 1 }), RangeError);
});

t.test('v1 probe line (encodeV1Local) carries the probe socket addresses', async (t) => {
  t.equal(
    encodeV1Local({ localAddress: '10.0.0.5', localPort: 41000, remoteAddress: '10.0.0.11', remotePort: 5432 }).toString('latin1'),
    'PROXY TCP4 10.0.0.5 10.0.0.11 41000 5432\r\n',
  );
  t.equal(
    encodeV1Local({ localAddress: '::1', localPort: 41000, remoteAddress: '::1', remotePort: 5432 }).toString('latin1'),
    'PROXY TCP6 ::1 ::1 41000 5432\r\n',
  );
  t.equal(encodeV1Local({}).toString('latin1'), 'PROXY UNKNOWN\r\n', 'closed socket: UNKNOWN');
  t.equal(
    encodeV1Local({ localAddress: '/run/x.sock', localPort: 0, remoteAddress: '/run/y.sock', remotePort: 0 }).toString('latin1'),
    'PROXY UNKNOWN\r\n',
    'non-IP socket: UNKNOWN',
  );
});

t.test('the v2 encoder writes the expected bytes', async (t) => {
  const v4 = encodeV2({ command: 'PROXY', src: { address: '1.2.3.4', port: 5 }, dst: { address: '5.6.7.8', port: 80 } });
  t.same(v4, hex(`${SIG} 21 11 000c ${V4_BODY}`), 'TCP over IPv4');
  const v6 = encodeV2({ command: 'PROXY', src: { address: '2001:db8::1', port: 12345 }, dst: { address: '::1', port: 443 } });
  t.same(
    v6,
    hex(`${SIG} 21 21 0024 20010db8000000000000000000000001 00000000000000000000000000000001 3039 01bb`),
    'TCP over IPv6',
  );
  t.same(
    encodeV2({ command: 'PROXY', src: { address: '::ffff:1.2.3.4', port: 5 }, dst: { address: '5.6.7.8', port: 80 } }),
    v4,
    'IPv4-mapped written as AF_INET',
  );
  t.same(
    encodeV2({ command: 'PROXY', src: { address: '1.2.3.4', port: 1 }, dst: { address: '::1', port: 2 } }).subarray(13),
    hex('21 0024 00000000000000000000ffff01020304 00000000000000000000000000000001 0001 0002'),
    'mixed families: AF_INET6 with the IPv4 side mapped',
  );
  t.same(encodeV2({ command: 'LOCAL' }), hex(`${SIG} 20 00 0000`), 'LOCAL: AF_UNSPEC, no addresses');
  t.same(encodeV2({ command: 'PROXY' }), hex(`${SIG} 21 00 0000`), 'PROXY without addresses: AF_UNSPEC');
  t.same(V2_SIGNATURE, hex(SIG));
});

t.test('the v2 encoder writes TLVs and counts them in the length field', async (t) => {
  const h = encodeV2({
    command: 'PROXY',
    src: { address: '1.2.3.4', port: 5 },
    dst: { address: '5.6.7.8', port: 80 },
    tlvs: {
      alpn: 'postgresql',
      authority: 'db.example.com',
      ssl: {
        client: PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | 0x04,
        verify: 0,
        version: 'TLSv1.3',
        cn: 'alice',
        cipher: 'TLS_AES_128_GCM_SHA256',
      },
    },
  });
  const expected = hex(`${SIG} 21 11 005d ${V4_BODY}
    01 000a 706f737467726573716c
    02 000e 64622e6578616d706c652e636f6d
    20 0030 07 00000000
      21 0007 544c5376312e33
      22 0005 616c696365
      23 0016 544c535f4145535f3132385f47434d5f534841323536`);
  t.same(h, expected, 'ALPN, AUTHORITY, SSL with VERSION, CN, CIPHER');
  t.equal(h.readUInt16BE(14), h.length - 16, 'length covers address block and TLVs');

  const withSigKey = encodeV2({ command: 'LOCAL', tlvs: { ssl: { client: 1, verify: 1, sigAlg: 'RSA-SHA256', keyAlg: 'RSA2048' } } });
  t.same(
    withSigKey,
    hex(`${SIG} 20 00 001f 20 001c 01 00000001 24 000a 5253412d534841323536 25 0007 52534132303438`),
    'SIG_ALG and KEY_ALG sub-TLVs; LOCAL may carry TLVs',
  );

  const extra = encodeV2({
    command: 'LOCAL',
    tlvs: { uniqueId: hex('abcd'), extra: [{ type: 0x04, value: Buffer.alloc(2) }, { type: 0xe1, value: ascii('x') }] },
  });
  t.same(extra, hex(`${SIG} 20 00 000e 05 0002 abcd 04 0002 0000 e1 0001 78`), 'UNIQUE_ID, NOOP, custom');
  t.same(encodeV2({ command: 'LOCAL', tlvs: { alpn: hex('6832') } }), hex(`${SIG} 20 00 0005 01 0002 6832`), 'ALPN given as bytes');

  t.throws(() => encodeV2({ command: 'LOCAL', src: { address: '1.2.3.4', port: 1 }, dst: { address: '1.2.3.4', port: 1 } }), RangeError);
  t.throws(() => encodeV2({ command: 'PROXY', src: { address: '1.2.3.4', port: 1 } }), RangeError);
  t.throws(() => encodeV2({ command: 'BOGUS' as 'PROXY' }), RangeError);
  t.throws(() => encodeV2({ command: 'LOCAL', tlvs: { uniqueId: Buffer.alloc(129) } }), RangeError);
  t.throws(() => encodeV2({ command: 'LOCAL', tlvs: { extra: [{ type: 256, value: Buffer.alloc(0) }] } }), RangeError);
  t.throws(() => encodeV2({ command: 'LOCAL', tlvs: { extra: [{ type: 0xe0, value: Buffer.alloc(65536) }] } }), RangeError);
  t.throws(
    () => encodeV2({ command: 'LOCAL', tlvs: { extra: [{ type: 0xe0, value: Buffer.alloc(40000) }, { type: 0xe1, value: Buffer.alloc(40000) }] } }),
    RangeError,
    'payload over 65535',
  );
  t.throws(() => encodeV2({ command: 'LOCAL', tlvs: { ssl: { client: 256, verify: 0 } } }), RangeError);
  t.throws(() => encodeV2({ command: 'LOCAL', tlvs: { ssl: { client: 1, verify: -1 } } }), RangeError);
  t.throws(() => encodeV2({ command: 'PROXY', src: { address: '1.2.3.4', port: 70000 }, dst: { address: '1.2.3.4', port: 1 } }), RangeError);
});

t.test('the v2 encoder writes a CRC32C TLV over the header, which the parser verifies', async (t) => {
  const h = encodeV2({ command: 'LOCAL', tlvs: { crc32c: true } });
  t.equal(h.length, 16 + 7);
  t.same(h.subarray(12, 19), hex('20 00 0007 03 0004'));
  const zeroed = Buffer.from(h);
  zeroed.fill(0, 19, 23);
  t.equal(h.readUInt32BE(19), crc32cSlow(zeroed), 'CRC32C of the header with the field zeroed, big endian');
  t.equal(h.readUInt32BE(19), 0xa9b87e8f, 'pinned value');

  const full = encodeV2({
    command: 'PROXY',
    src: { address: '2001:db8::7', port: 1000 },
    dst: { address: '2001:db8::8', port: 2000 },
    tlvs: { authority: 'a.example', alpn: 'h2', crc32c: true },
  });
  const parsed = parse(full).header;
  t.equal(parsed.tlvs.crc32c, full.readUInt32BE(full.length - 4), 'parser verifies and reports it');
});

t.test('the v1 parser accepts valid lines', async (t) => {
  const a = parse(ascii('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n'));
  t.same(a.header, {
    version: 1,
    command: 'PROXY',
    source: { address: '192.168.0.1', port: 56324 },
    destination: { address: '192.168.0.11', port: 443 },
    tlvs: { raw: [] },
    length: 47,
  });
  t.equal(a.rest.toString(), 'GET / HTTP/1.1\r\n', 'rest is the bytes after CRLF');

  const b = parse(ascii('PROXY TCP6 2001:0DB8:0000::0001 ::FFFF:1.2.3.4 0 65535\r\n')).header;
  t.same(b.source, { address: '2001:db8::1', port: 0 }, 'IPv6 normalised');
  t.same(b.destination, { address: '1.2.3.4', port: 65535 }, 'IPv4-mapped reported as IPv4');

  const unknown = parse(ascii('PROXY UNKNOWN\r\nxyz'));
  t.same(unknown.header, { version: 1, command: 'PROXY', tlvs: { raw: [] }, length: 15 }, 'UNKNOWN: no addresses');
  t.equal(unknown.rest.toString(), 'xyz');

  const worst = `PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`;
  t.equal(worst.length, 107);
  t.same(parse(ascii(worst)).header.source, undefined, 'UNKNOWN with 107-byte worst case line; addresses ignored');
  t.equal(parse(ascii('PROXY UNKNOWN anything \x00\x7f\xff goes\r\n')).header.length, 33, 'UNKNOWN ignores what follows');

  const max6 = `PROXY TCP6 ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`;
  t.equal(parse(ascii(max6)).header.length, 104);
  t.equal(parse(ascii('PROXY TCP4 0.0.0.0 255.255.255.255 0 0\r\n')).header.destination?.address, '255.255.255.255');
});

t.test('the v1 parser enforces every rejection rule', async (t) => {
  rejects(t, 'GET / HTTP/1.1\r\n', 'bad_signature');
  rejects(t, 'PROXX TCP4', 'bad_signature');
  rejects(t, 'PROXY\tTCP4', 'bad_signature');
  rejects(t, '\x16\x03\x01\x00', 'bad_signature'); // a TLS ClientHello
  rejects(t, `PROXY UNKNOWN ${'x'.repeat(93)}`, 'v1_too_long');
  rejects(t, `PROXY UNKNOWN ${'x'.repeat(92)}\r\n`, 'v1_too_long'); // 108 bytes with CRLF
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', 'v1_no_crlf');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX', 'v1_no_crlf');
  rejects(t, 'PROXY UNKNOWN\r\r\n', 'v1_no_crlf');
  rejects(t, 'PROXY UNKNOWN a\nb\r\n', 'v1_no_crlf');
  rejects(t, 'PROXY \r\n', 'v1_bad_protocol');
  rejects(t, 'PROXY TCP5 1.2.3.4', 'v1_bad_protocol');
  rejects(t, 'PROXY tcp4 1.2.3.4', 'v1_bad_protocol');
  rejects(t, 'PROXY UDP4', 'v1_bad_protocol');
  rejects(t, 'PROXY UNKNOWNX\r\n', 'v1_bad_protocol');
  rejects(t, 'PROXY  TCP4', 'v1_bad_protocol');
  rejects(t, 'PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n', 'v1_bad_format');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n', 'v1_bad_format');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n', 'v1_bad_format');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', 'v1_bad_format');
  rejects(t, 'PROXY TCP4\r\n', 'v1_bad_format');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 1\t2\r\n', 'v1_bad_port');
  rejects(t, 'PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP4 999.1.1.1 5.6.7.8 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP4 ::1 5.6.7.8 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP6 1.2.3.4 ::1 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP6 ::1 5.6.7.8 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP6 1::2::3 ::1 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP6 12345::1 ::1 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP6 :::1 ::1 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP6 ::ffff:01.2.3.4 ::1 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP6 g::1 ::1 1 2\r\n', 'v1_bad_address');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n', 'v1_bad_port');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n', 'v1_bad_port');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n', 'v1_bad_port');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n', 'v1_bad_port');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n', 'v1_bad_port');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n', 'v1_bad_port');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 1e3 2\r\n', 'v1_bad_port');
  rejects(t, 'PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n', 'v1_bad_port');
});

t.test('v1 parser rejects as soon as a prefix cannot match', async (t) => {
  const at = (s: string): number => rejectAt(ascii(s)).at;
  t.equal(at('G'), 0, 'first byte');
  t.equal(at('PROXX'), 4);
  t.equal(at('PROXY X'), 6, 'protocol');
  t.equal(at('PROXY TCP4 1.2.3.04'), 18, 'leading zero, at the digit after 0');
  t.equal(at('PROXY TCP4 1.2.3.256'), 19, 'octet over 255');
  t.equal(at('PROXY TCP4 1.2.3.4 5.6.7.8 1 65536'), 33, 'port over 65535');
  t.equal(at('PROXY TCP4 1.2.3.4 5.6.7.8 1 2 '), 30, 'extra field');
  t.equal(at('PROXY TCP4 1.2.3.4 5.6.7.8 1\r'), 28, 'CR before all fields are in');
  t.equal(at('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx'), 31, 'CR not followed by LF');
  t.equal(at(`PROXY UNKNOWN ${'x'.repeat(100)}`), 106, 'the 107th byte without CRLF');
});

t.test('the v2 parser accepts valid headers', async (t) => {
  const a = parse(Buffer.concat([hex(`${SIG} 21 11 000c ${V4_BODY}`), ascii('hello')]));
  t.same(a.header, {
    version: 2,
    command: 'PROXY',
    source: { address: '1.2.3.4', port: 5 },
    destination: { address: '5.6.7.8', port: 80 },
    tlvs: { raw: [] },
    length: 28,
  });
  t.equal(a.rest.toString(), 'hello');

  const b = parse(hex(`${SIG} 21 21 0024 20010db8000000000000000000000001 00000000000000000000ffff7f000001 3039 01bb`)).header;
  t.same(b.source, { address: '2001:db8::1', port: 12345 });
  t.same(b.destination, { address: '127.0.0.1', port: 443 }, 'IPv4-mapped reported as IPv4');

  const local = parse(hex(`${SIG} 20 00 0000`)).header;
  t.same(local, { version: 2, command: 'LOCAL', tlvs: { raw: [] }, length: 16 }, 'LOCAL: use real addresses');
  const localWithAddr = parse(v2(0x20, 0x11, V4_BODY)).header;
  t.equal(localWithAddr.source, undefined, 'LOCAL ignores an address block');
  t.equal(localWithAddr.length, 28, '…but skips it by the length field');
  t.equal(parse(v2(0x20, 0x12, V4_BODY)).header.command, 'LOCAL', 'LOCAL ignores the family, DGRAM included');
  t.equal(parse(v2(0x21, 0x00, '')).header.source, undefined, 'PROXY AF_UNSPEC: real addresses');
  const unix = parse(v2(0x21, 0x31, '00'.repeat(216))).header;
  t.equal(unix.source, undefined, 'PROXY AF_UNIX stream: falls back to real addresses');
  t.equal(unix.length, 232);

  // proxy-protocol-js's README example: LOCAL over UDP/IPv4.
  const readme = Buffer.from([13, 10, 13, 10, 0, 13, 10, 81, 85, 73, 84, 10, 32, 18, 0, 12, 127, 0, 0, 1, 192, 0, 2, 1, 48, 57, 212, 49]);
  t.equal(parse(readme).header.command, 'LOCAL');
});

t.test('the v2 parser reads TLVs', async (t) => {
  const h = parse(
    v2(
      0x21,
      0x11,
      `${V4_BODY}
      02 000e 64622e6578616d706c652e636f6d
      01 0002 6832
      04 0003 000000
      20 0030 07 00000000 21 0007 544c5376312e33 22 0005 616c696365 23 0016 544c535f4145535f3132385f47434d5f534841323536
      05 0002 0102
      e0 0001 ff
      30 0002 6e73`,
    ),
  ).header;
  t.equal(h.tlvs.authority, 'db.example.com');
  t.equal(h.tlvs.alpn, 'h2');
  t.same(h.tlvs.uniqueId, hex('0102'));
  t.match(h.tlvs.ssl, { client: 7, verify: 0, version: 'TLSv1.3', cn: 'alice', cipher: 'TLS_AES_128_GCM_SHA256' });
  t.same(h.tlvs.ssl?.subTlvs.map((x) => x.type), [0x21, 0x22, 0x23]);
  t.same(h.tlvs.raw.map((x) => x.type), [0x02, 0x01, 0x04, 0x20, 0x05, 0xe0, 0x30], 'raw keeps every TLV in order');
  t.same(h.tlvs.raw[5]?.value, hex('ff'));

  const utf8 = parse(v2(0x20, 0x00, '02 0005 62c3bc6368')).header; // "büch" in UTF-8
  t.equal(utf8.tlvs.authority, 'büch', 'AUTHORITY is UTF-8');

  const sslOnly = parse(v2(0x20, 0x00, '20 0005 01 00000002')).header;
  t.same(sslOnly.tlvs.ssl, { client: 1, verify: 2, subTlvs: [] }, 'SSL TLV with no sub-TLVs');

  const encoded = encodeV2({
    command: 'PROXY',
    src: { address: '::1', port: 1 },
    dst: { address: '::2', port: 2 },
    tlvs: {
      alpn: 'h2',
      authority: 'münchen.example',
      ssl: { client: 3, verify: 0, version: 'TLSv1.2', cn: 'Jürgen', cipher: 'ECDHE-RSA-AES128-GCM-SHA256', sigAlg: 'RSA-SHA256', keyAlg: 'RSA2048' },
      uniqueId: hex('00112233'),
      crc32c: true,
    },
  });
  const round = parse(encoded).header;
  t.match(round, {
    version: 2,
    command: 'PROXY',
    source: { address: '::1', port: 1 },
    destination: { address: '::2', port: 2 },
    tlvs: {
      alpn: 'h2',
      authority: 'münchen.example',
      ssl: { client: 3, verify: 0, version: 'TLSv1.2', cn: 'Jürgen', cipher: 'ECDHE-RSA-AES128-GCM-SHA256', sigAlg: 'RSA-SHA256', keyAlg: 'RSA2048' },
    },
    length: encoded.length,
  }, 'encoder → parser round trip');
});

t.test('the v2 parser accepts a good CRC32C and rejects a bad one', async (t) => {
  const good = encodeV2({ command: 'PROXY', src: { address: '1.2.3.4', port: 5 }, dst: { address: '5.6.7.8', port: 80 }, tlvs: { authority: 'x', crc32c: true } });
  t.ok(parse(good).header.tlvs.crc32c !== undefined, 'good CRC accepted');

  // A CRC placed before other TLVs is found and checked wherever it sits.
  const first = v2(0x21, 0x11, `${V4_BODY} 03 0004 00000000 02 0001 78`);
  const zeroed = Buffer.from(first);
  first.writeUInt32BE(crc32cSlow(zeroed), 31);
  t.equal(parse(first).header.tlvs.authority, 'x', 'CRC first, then AUTHORITY');

  const wrongValue = Buffer.from(good);
  wrongValue[wrongValue.length - 1]! ^= 1;
  rejects(t, wrongValue, 'v2_crc_mismatch');
  const tamperedAddress = Buffer.from(good);
  tamperedAddress[16] = 9; // source address 9.2.3.4
  rejects(t, tamperedAddress, 'v2_crc_mismatch');
});

t.test('the v2 parser enforces every rejection rule', async (t) => {
  const sig = hex(SIG);
  rejects(t, Buffer.concat([sig.subarray(0, 5), hex('ff')]), 'bad_signature');
  rejects(t, hex('0d0a0d0a000d0a5155495454'), 'bad_signature');
  rejects(t, v2(0x11, 0x11, V4_BODY), 'v2_bad_version');
  rejects(t, v2(0x31, 0x11, V4_BODY), 'v2_bad_version');
  rejects(t, v2(0x01, 0x11, V4_BODY), 'v2_bad_version');
  rejects(t, v2(0x22, 0x11, V4_BODY), 'v2_bad_command');
  rejects(t, v2(0x2f, 0x11, V4_BODY), 'v2_bad_command');
  rejects(t, v2(0x21, 0x41, V4_BODY), 'v2_bad_family');
  rejects(t, v2(0x21, 0x13, V4_BODY), 'v2_bad_family');
  rejects(t, v2(0x21, 0x01, V4_BODY), 'v2_bad_family');
  rejects(t, v2(0x21, 0x10, V4_BODY), 'v2_bad_family');
  rejects(t, v2(0x20, 0x03, ''), 'v2_bad_family');
  rejects(t, v2(0x21, 0x12, V4_BODY), 'v2_bad_family'); // UDP on a TCP connection
  rejects(t, v2(0x21, 0x22, '00'.repeat(36)), 'v2_bad_family');
  rejects(t, v2(0x21, 0x32, '00'.repeat(216)), 'v2_bad_family');
  rejects(t, v2(0x21, 0x11, '01020304 05060708 0005 00'), 'v2_bad_length');
  rejects(t, v2(0x21, 0x21, '00'.repeat(35)), 'v2_bad_length');
  rejects(t, v2(0x21, 0x31, '00'.repeat(100)), 'v2_bad_length');
  rejects(t, v2(0x20, 0x11, ''), 'v2_bad_length');
  rejects(t, hex(`${SIG} 21 11 ffff`), 'v2_too_long');
  rejects(t, hex(`${SIG} 21 11 ${(DEFAULT_MAX_HEADER_BYTES - 15).toString(16).padStart(4, '0')}`), 'v2_too_long');
  rejects(t, v2(0x21, 0x11, `${V4_BODY} ${'00'.repeat(100)}`), 'v2_too_long', { maxHeaderBytes: 100 });
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 02 00`), 'v2_bad_tlv'); // truncated TLV header
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 02 0005 6162`), 'v2_bad_tlv'); // value overruns the length
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 20 0004 01000000`), 'v2_bad_tlv'); // SSL shorter than 5
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 20 0007 01 00000000 21 00`), 'v2_bad_tlv'); // sub-TLV header cut
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 20 0009 01 00000000 21 0009 41`), 'v2_bad_tlv'); // sub-TLV overrun
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 20 000f 01 00000000 21 0001 41 21 0001 42`), 'v2_bad_tlv'); // duplicate VERSION
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 20 000a 01 00000000 22 0002 c328`), 'v2_bad_tlv'); // CN not UTF-8
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 03 0003 000000`), 'v2_bad_tlv'); // CRC not 4 bytes
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 02 0001 61 02 0001 62`), 'v2_bad_tlv'); // duplicate AUTHORITY
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 01 0001 61 01 0001 62`), 'v2_bad_tlv'); // duplicate ALPN
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 20 0005 0100000000 20 0005 0100000000`), 'v2_bad_tlv'); // duplicate SSL
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 02 0002 c328`), 'v2_bad_tlv'); // AUTHORITY not UTF-8
  rejects(t, v2(0x21, 0x11, `${V4_BODY} 05 0081 ${'00'.repeat(129)}`), 'v2_bad_tlv'); // UNIQUE_ID > 128
  rejects(t, v2(0x20, 0x00, '00'), 'v2_bad_tlv'); // LOCAL: TLVs must tile too
});

t.test('v2 parser rejects as soon as a prefix cannot match', async (t) => {
  const at = (b: Buffer, options?: { maxHeaderBytes?: number }): number => rejectAt(b, options).at;
  t.equal(at(hex('0d0a0d0a01')), 4, 'signature byte 5');
  t.equal(at(v2(0x11, 0x11, V4_BODY)), 12, 'version byte');
  t.equal(at(v2(0x21, 0x41, V4_BODY)), 13, 'family byte');
  t.equal(at(hex(`${SIG} 21 11 ffff`)), 15, 'too long: at the length field, before any body byte');
  t.equal(at(v2(0x21, 0x11, '00')), 15, 'bad length: at the length field');
});

t.test('the parser checks its size limit, its errors are sticky, and a push after done is a caller bug', async (t) => {
  t.throws(() => new ProxyHeaderParser({ maxHeaderBytes: 10 }), RangeError);
  t.throws(() => new ProxyHeaderParser({ maxHeaderBytes: 70000 }), RangeError);
  t.throws(() => new ProxyHeaderParser({ maxHeaderBytes: 100.5 }), RangeError);
  t.equal(new ProxyHeaderParser().maxHeaderBytes, DEFAULT_MAX_HEADER_BYTES);

  const p = new ProxyHeaderParser();
  t.same(p.push(Buffer.alloc(0)), { state: 'need_more' }, 'empty chunk');
  t.same(p.push(ascii('PROXY ')), { state: 'need_more' });
  let first: unknown;
  try {
    p.push(ascii('X'));
  } catch (e) {
    first = e;
  }
  t.ok(first instanceof ProxyHeaderError);
  t.throws(() => p.push(ascii('anything')), first as Error, 'errors are sticky');

  const q = new ProxyHeaderParser();
  t.equal(q.push(ascii('PROXY UNKNOWN\r\n')).state, 'done');
  let after: unknown;
  try {
    q.push(ascii('x'));
  } catch (e) {
    after = e;
  }
  t.ok(after instanceof Error && !(after instanceof ProxyHeaderError), 'push after done is a caller bug, not a header error');

  const u8 = new ProxyHeaderParser().push(new Uint8Array(ascii('PROXY UNKNOWN\r\nab')));
  t.equal(u8.state === 'done' && u8.rest.toString(), 'ab', 'accepts a plain Uint8Array');

  t.same(parseProxyHeader(ascii('PROXY TCP4 1.2.3.4')), undefined, 'parseProxyHeader: incomplete → undefined');
  t.equal(parseProxyHeader(ascii('PROXY UNKNOWN\r\n'))?.header.version, 1);
});

/** Feeds `pieces` and returns the header and the rest re-assembled from the done result and later pieces. */
function feed(pieces: Buffer[]): { header: ProxyHeader; rest: Buffer; maxBuffered: number } {
  const p = new ProxyHeaderParser();
  let maxBuffered = 0;
  for (let i = 0; i < pieces.length; i++) {
    const r = p.push(pieces[i]!);
    maxBuffered = Math.max(maxBuffered, p.bufferedBytes);
    if (r.state === 'done') return { header: r.header, rest: Buffer.concat([r.rest, ...pieces.slice(i + 1)]), maxBuffered };
  }
  throw new Error('need_more after all pieces');
}

t.test('a header split at every point, in every 3-way split or one byte at a time parses the same, the rest preserved', async (t) => {
  const trailer = Buffer.concat([ascii('\r\n\r\n\x00 client bytes '), hex(SIG)]); // looks like headers, must pass through untouched
  const cases = {
    v1: ascii('PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 56324 443\r\n'),
    v2: encodeV2({
      command: 'PROXY',
      src: { address: '2001:db8::1', port: 56324 },
      dst: { address: '10.0.0.1', port: 443 },
      tlvs: { authority: 'db.example.com', alpn: 'postgresql', ssl: { client: 1, verify: 0, version: 'TLSv1.3', cipher: 'X' }, crc32c: true },
    }),
  };
  for (const [name, header] of Object.entries(cases)) {
    const input = Buffer.concat([header, trailer]);
    const whole = feed([input]);
    t.equal(whole.header.length, header.length, `${name}: consumed exactly the header`);
    t.same(whole.rest, trailer, `${name}: rest unchanged`);
    t.ok(whole.maxBuffered <= header.length, `${name}: never buffered past the header`);
    let bad = 0;
    for (let i = 1; i < input.length; i++) {
      const r = feed([input.subarray(0, i), input.subarray(i)]);
      if (!r.rest.equals(trailer) || JSON.stringify(r.header) !== JSON.stringify(whole.header) || r.maxBuffered > header.length) bad++;
    }
    t.equal(bad, 0, `${name}: all ${input.length - 1} two-piece splits agree`);
    bad = 0;
    for (let i = 1; i < input.length; i++) {
      for (let j = i + 1; j < input.length; j++) {
        const r = feed([input.subarray(0, i), input.subarray(i, j), input.subarray(j)]);
        if (!r.rest.equals(trailer) || JSON.stringify(r.header) !== JSON.stringify(whole.header)) bad++;
      }
    }
    t.equal(bad, 0, `${name}: all three-piece splits agree`);
    const bytes = [...input].map((b) => Buffer.from([b]));
    const one = feed(bytes);
    t.same(one.header, whole.header, `${name}: one byte at a time`);
    t.same(one.rest, trailer, `${name}: one byte at a time, rest`);

    const exact = feed([header]);
    t.equal(exact.rest.length, 0, `${name}: chunk ending at the header leaves an empty rest`);
  }
});

t.test('proxy-protocol-js parses what our encoder writes (plain headers, where it is right)', async (t) => {
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const v4 = (): string => [rnd(256), rnd(256), rnd(256), rnd(256)].join('.');
  const v6 = (): string => Array.from({ length: 8 }, () => (rnd(3) === 0 ? 0 : rnd(65536)).toString(16)).join(':');
  let bad = 0;
  for (let i = 0; i < 500; i++) {
    const six = i % 2 === 1;
    const src = { address: six ? v6() : v4(), port: rnd(65536) };
    const dst = { address: six ? v6() : v4(), port: rnd(65536) };

    const line = encodeV1(src, dst).toString('latin1');
    const theirs1 = V1ProxyProtocol.parse(line);
    if (
      theirs1.inetProtocol !== (six ? INETProtocol.TCP6 : INETProtocol.TCP4) ||
      theirs1.source.ipAddress !== canonicalIp(src.address) ||
      theirs1.destination.ipAddress !== canonicalIp(dst.address) ||
      theirs1.source.port !== src.port ||
      theirs1.destination.port !== dst.port ||
      theirs1.data !== ''
    ) bad++;

    const bin = encodeV2({ command: 'PROXY', src, dst });
    const theirs2 = V2ProxyProtocol.parse(new Uint8Array(bin));
    const addr = theirs2.proxyAddress as IPv4ProxyAddress | IPv6ProxyAddress;
    const bytes = (a: string): number[] => (six ? [...hex(normalizeAddressToHex(a))] : a.split('.').map(Number));
    if (
      theirs2.command !== Command.PROXY ||
      theirs2.transportProtocol !== TransportProtocol.STREAM ||
      JSON.stringify(addr.sourceAddress.address) !== JSON.stringify(bytes(src.address)) ||
      JSON.stringify(addr.destinationAddress.address) !== JSON.stringify(bytes(dst.address)) ||
      addr.sourcePort !== src.port ||
      addr.destinationPort !== dst.port ||
      theirs2.data?.length !== 0
    ) bad++;
  }
  t.equal(bad, 0, '500 v1 and 500 v2 headers read back identically by proxy-protocol-js');
  const local = V2ProxyProtocol.parse(new Uint8Array(encodeV2({ command: 'LOCAL' })));
  t.equal(local.command, Command.LOCAL, 'LOCAL read back as LOCAL');
});

/** Full 32-hex-digit form of an IPv6 address (test helper for byte comparisons). */
function normalizeAddressToHex(a: string): string {
  const [head = '', tail = ''] = a.split('::');
  const h = head ? head.split(':') : [];
  const tl = a.includes('::') && tail ? tail.split(':') : [];
  const groups = a.includes('::') ? [...h, ...Array(8 - h.length - tl.length).fill('0'), ...tl] : h;
  return groups.map((g) => g.padStart(4, '0')).join('');
}

t.test('our parser reads what proxy-protocol-js builds (plain headers, where it is right)', async (t) => {
  const line = new V1ProxyProtocol(INETProtocol.TCP4, new Peer('127.0.0.77', 40000), new Peer('127.0.0.1', 5432)).build();
  t.match(parse(ascii(line)).header, { source: { address: '127.0.0.77', port: 40000 }, destination: { address: '127.0.0.1', port: 5432 } });
  const line6 = new V1ProxyProtocol(INETProtocol.TCP6, new Peer('2001:db8::1', 1), new Peer('::1', 65535), 'tail').build();
  const r6 = parse(ascii(line6));
  t.match(r6.header, { source: { address: '2001:db8::1', port: 1 }, destination: { address: '::1', port: 65535 } });
  t.equal(r6.rest.toString(), 'tail', 'their `data` is our rest');

  const bin4 = new V2ProxyProtocol(
    Command.PROXY,
    TransportProtocol.STREAM,
    new IPv4ProxyAddress(IPv4Address.createFrom([10, 1, 2, 3]), 1234, IPv4Address.createFrom([192, 0, 2, 1]), 443),
  ).build();
  t.match(parse(Buffer.from(bin4)).header, { command: 'PROXY', source: { address: '10.1.2.3', port: 1234 }, destination: { address: '192.0.2.1', port: 443 } });

  const bin6 = new V2ProxyProtocol(
    Command.PROXY,
    TransportProtocol.STREAM,
    new IPv6ProxyAddress(IPv6Address.createFrom([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), 1, IPv6Address.createFrom([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4]), 2),
  ).build();
  t.match(parse(Buffer.from(bin6)).header, { source: { address: '2001:db8::1', port: 1 }, destination: { address: '1.2.3.4', port: 2 } });

  const local = new V2ProxyProtocol(Command.LOCAL, TransportProtocol.UNSPEC, new UnspecProxyAddress()).build();
  t.same(parse(Buffer.from(local)).header, { version: 2, command: 'LOCAL', tlvs: { raw: [] }, length: 16 });
});

t.test('our parser covers the gaps of proxy-protocol-js (documented in TOOLCHAIN.md)', async (t) => {
  // Their v1 parser accepts an octet over 255 and port 99999; ours rejects both.
  t.doesNotThrow(() => V1ProxyProtocol.parse('PROXY TCP4 999.1.1.1 1.1.1.1 99999 1\r\n'));
  rejects(t, 'PROXY TCP4 999.1.1.1 1.1.1.1 1 1\r\n', 'v1_bad_address');
  // Their v1 parser rejects the valid short UNKNOWN form; ours accepts it.
  t.throws(() => V1ProxyProtocol.parse('PROXY UNKNOWN\r\n'));
  t.equal(parse(ascii('PROXY UNKNOWN\r\n')).header.source, undefined);
  // Their v2 builder leaves `data` (TLVs) out of the length field, so a strict receiver sees them as payload.
  const theirs = Buffer.from(
    new V2ProxyProtocol(
      Command.PROXY,
      TransportProtocol.STREAM,
      new IPv4ProxyAddress(IPv4Address.createFrom([1, 2, 3, 4]), 5, IPv4Address.createFrom([5, 6, 7, 8]), 80),
      new Uint8Array(hex('02 0001 78')),
    ).build(),
  );
  const r = parse(theirs);
  t.equal(r.header.tlvs.authority, undefined, 'their TLV is not part of the header');
  t.same(r.rest, hex('02 0001 78'), '…it arrives as client payload');
  const ours = encodeV2({ command: 'PROXY', src: { address: '1.2.3.4', port: 5 }, dst: { address: '5.6.7.8', port: 80 }, tlvs: { authority: 'x' } });
  t.same(ours, Buffer.concat([theirs.subarray(0, 14), hex('0010'), theirs.subarray(16)]), 'ours: same bytes with the length including the TLV');
});
