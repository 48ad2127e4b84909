/**
 * ClientHelloReader on real ClientHellos (captured from Node's own tls.connect
 * and from `openssl s_client`), re-chunked, re-fragmented into several TLS
 * records, padded past one record and past maxBytes, and on garbage.
 *
 * The record/handshake helpers below are written independently of the code
 * under test, so a shared misunderstanding of the format cannot hide.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { L4lbError } from '../src/errors.js';
import {
  ClientHelloError,
  ClientHelloReader,
  DEFAULT_MAX_CLIENT_HELLO_BYTES,
  isValidDnsName,
  normaliseServerName,
  type ClientHelloErrorReason,
  type ClientHelloInfo,
  type ClientHelloResult,
} from '../src/tls/client-hello.js';
import { opensslMissing } from './helpers/certs.js';
import { captureClientHello, captureServer } from './helpers/client-hello.js';
import { seededRandom } from './helpers/random.js';
import { skipUnlessCi } from './helpers/requirements.js';

// ---------------------------------------------------------------------------
// Helpers: records, synthetic hellos
// ---------------------------------------------------------------------------

/** The handshake message carried by a sequence of records. */
function handshakeOf(records: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let p = 0; p < records.length; ) {
    const len = records.readUInt16BE(p + 3);
    parts.push(records.subarray(p + 5, p + 5 + len));
    p += 5 + len;
  }
  return Buffer.concat(parts);
}

/** Splits a handshake message into records of at most `fragment` payload bytes. */
function toRecords(msg: Buffer, fragment: number, version = 0x0301): Buffer {
  const out: Buffer[] = [];
  for (let p = 0; p < msg.length; p += fragment) {
    const part = msg.subarray(p, Math.min(msg.length, p + fragment));
    const hdr = Buffer.from([22, version >> 8, version & 0xff, part.length >> 8, part.length & 0xff]);
    out.push(hdr, part);
  }
  return Buffer.concat(out);
}

const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const u24 = (n: number): Buffer => Buffer.from([n >> 16, (n >> 8) & 0xff, n & 0xff]);
const ext = (type: number, data: Buffer): Buffer => Buffer.concat([u16(type), u16(data.length), data]);
const vec16 = (data: Buffer): Buffer => Buffer.concat([u16(data.length), data]);
const vec8 = (data: Buffer): Buffer => Buffer.concat([Buffer.from([data.length]), data]);

/** Inserts an extension first in a real ClientHello handshake message, fixing every length. */
function withExtension(msg: Buffer, extension: Buffer): Buffer {
  const body = msg.subarray(4);
  let p = 34;
  p += 1 + body[p]!; // session id
  p += 2 + body.readUInt16BE(p); // cipher suites
  p += 1 + body[p]!; // compression
  const exts = body.subarray(p + 2, p + 2 + body.readUInt16BE(p));
  const newBody = Buffer.concat([body.subarray(0, p), vec16(Buffer.concat([extension, exts]))]);
  return Buffer.concat([Buffer.from([1]), u24(newBody.length), newBody]);
}

const paddingExt = (n: number): Buffer => ext(21, Buffer.alloc(n));
const sniExt = (...names: Array<string | Buffer>): Buffer =>
  ext(0, vec16(Buffer.concat(names.map((n) => Buffer.concat([Buffer.from([0]), vec16(Buffer.from(n as string, 'latin1'))])))));
const alpnExt = (...names: string[]): Buffer => ext(16, vec16(Buffer.concat(names.map((n) => vec8(Buffer.from(n, 'latin1'))))));
const versionsExt = (...v: number[]): Buffer => ext(43, vec8(Buffer.concat(v.map(u16))));

interface SynthOptions {
  legacyVersion?: number;
  sessionId?: Buffer;
  suites?: Buffer;
  compression?: Buffer;
  /** Raw extension bytes; `null` omits the extensions block (TLS 1.2 style). */
  extensions?: Buffer[] | null;
  /** Override the extensions length field. */
  extensionsLength?: number;
}

/** A synthetic ClientHello handshake message (type + length + body). */
function synthHello(o: SynthOptions = {}): Buffer {
  const parts = [
    u16(o.legacyVersion ?? 0x0303),
    Buffer.alloc(32, 7),
    vec8(o.sessionId ?? Buffer.alloc(32, 1)),
    vec16(o.suites ?? Buffer.from([0x13, 0x01, 0x13, 0x02])),
    vec8(o.compression ?? Buffer.from([0])),
  ];
  const exts = o.extensions === undefined ? [sniExt('a.test'), versionsExt(0x0304, 0x0303)] : o.extensions;
  if (exts !== null) {
    const all = Buffer.concat(exts);
    parts.push(u16(o.extensionsLength ?? all.length), all);
  }
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([1]), u24(body.length), body]);
}

function feed(reader: ClientHelloReader, chunks: Buffer[]): ClientHelloResult {
  let r: ClientHelloResult = { state: 'need_more' };
  for (const c of chunks) r = reader.push(c);
  return r;
}

function bytewise(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i++) out.push(buf.subarray(i, i + 1));
  return out;
}

/** Parses `input` (whole) and returns the hello, failing the test if it is not done. */
function parseWhole(input: Buffer, maxBytes?: number): ClientHelloInfo {
  const r = new ClientHelloReader(maxBytes === undefined ? {} : { maxBytes }).push(input);
  if (r.state !== 'done') throw new Error('expected a complete ClientHello');
  return r.hello;
}

function reasonOf(fn: () => unknown): ClientHelloErrorReason | 'no error' | 'foreign error' {
  try {
    fn();
    return 'no error';
  } catch (err) {
    return err instanceof ClientHelloError ? err.reason : 'foreign error';
  }
}

/** The reason pushing `chunks` fails with (byte by byte when `bytes`). */
function rejection(input: Buffer, opts: { maxBytes?: number; bytes?: boolean } = {}): string {
  const reader = new ClientHelloReader(opts.maxBytes === undefined ? {} : { maxBytes: opts.maxBytes });
  return reasonOf(() => {
    const r = feed(reader, opts.bytes ? bytewise(input) : [input]);
    if (r.state === 'need_more') throw new Error('need_more');
  });
}

// ---------------------------------------------------------------------------
// Real ClientHellos from Node
// ---------------------------------------------------------------------------

const nodeSni = await captureClientHello({ servername: 'a.test', ALPNProtocols: ['h2', 'http/1.1'] });
const nodeNoSni = await captureClientHello({}); // host is an IP: Node sends no server_name
t.comment(`Node ClientHello: ${nodeSni.length} bytes with SNI+ALPN, ${nodeNoSni.length} without SNI`);

t.test('a Node ClientHello fed whole gives its SNI, ALPN and versions, buffered as is', async (t) => {
  const r = new ClientHelloReader().push(nodeSni);
  t.equal(r.state, 'done');
  if (r.state !== 'done') return;
  t.same(r.hello, {
    sni: 'a.test',
    alpn: ['h2', 'http/1.1'],
    legacyVersion: 0x0303,
    supportedVersions: r.hello.supportedVersions,
    sessionTicket: null,
    pskIdentities: [],
  });
  t.ok(r.hello.supportedVersions.includes(0x0304), 'offers TLS 1.3');
  t.ok(r.hello.supportedVersions.includes(0x0303), 'offers TLS 1.2');
  t.equal(r.buffered, nodeSni, 'a single chunk is returned as is, not copied');
});

t.test('a Node ClientHello without SNI or ALPN gives neither', async (t) => {
  const hello = parseWhole(nodeNoSni);
  t.equal(hello.sni, null);
  t.same(hello.alpn, []);
});

t.test('a ClientHello fed one byte at a time completes on its last byte, every byte buffered unchanged', async (t) => {
  const reader = new ClientHelloReader();
  const bytes = bytewise(nodeSni);
  for (let i = 0; i < bytes.length - 1; i++) {
    const r = reader.push(bytes[i]!);
    if (r.state !== 'need_more') return t.fail(`done early at byte ${i}`);
  }
  t.equal(reader.bytesReceived, nodeSni.length - 1);
  const r = reader.push(bytes[bytes.length - 1]!);
  t.equal(r.state, 'done');
  if (r.state !== 'done') return;
  t.equal(r.hello.sni, 'a.test');
  t.ok(r.buffered.equals(nodeSni), 'buffered is every byte, unchanged');
});

t.test('empty chunks are harmless', async (t) => {
  const reader = new ClientHelloReader();
  t.equal(reader.push(Buffer.alloc(0)).state, 'need_more');
  t.equal(reader.push(nodeSni.subarray(0, 3)).state, 'need_more');
  t.equal(reader.push(Buffer.alloc(0)).state, 'need_more');
  t.equal(reader.push(nodeSni.subarray(3)).state, 'done');
});

t.test('a handshake message split across several TLS records parses, whole or byte by byte', async (t) => {
  const msg = handshakeOf(nodeSni);
  for (const fragment of [1, 2, 3, 4, 5, 100, 333]) {
    const input = toRecords(msg, fragment);
    t.ok(input.length > nodeSni.length, `fragment ${fragment}: more records`);
    const whole = new ClientHelloReader({ maxBytes: 65536 }).push(input);
    t.equal(whole.state === 'done' && whole.hello.sni, 'a.test', `fragment ${fragment}: whole`);
    const r = feed(new ClientHelloReader({ maxBytes: 65536 }), bytewise(input));
    t.equal(r.state === 'done' && r.hello.sni, 'a.test', `fragment ${fragment}: byte by byte`);
    t.ok(r.state === 'done' && r.buffered.equals(input), `fragment ${fragment}: buffered unchanged`);
  }
});

t.test('random TCP chunking of random record fragmentation always parses', async (t) => {
  const rand = seededRandom(0x5eed);
  const msg = handshakeOf(nodeSni);
  for (let i = 0; i < 300; i++) {
    const input = toRecords(msg, 20 + Math.floor(rand() * 400));
    const chunks: Buffer[] = [];
    for (let p = 0; p < input.length; ) {
      const n = 1 + Math.floor(rand() * 64);
      chunks.push(input.subarray(p, p + n));
      p += n;
    }
    const r = feed(new ClientHelloReader(), chunks);
    if (r.state !== 'done' || r.hello.sni !== 'a.test' || !r.buffered.equals(input)) {
      return t.fail(`iteration ${i}: ${r.state}`);
    }
  }
  t.pass('300 random splits parsed');
});

t.test('bytes after the ClientHello are kept in buffered, not parsed', async (t) => {
  const extra = Buffer.from([0x17, 0x03, 0x03, 0x00, 0x02, 0xaa, 0xbb]); // e.g. early data
  const input = Buffer.concat([nodeSni, extra]);
  const r = new ClientHelloReader().push(input);
  t.equal(r.state, 'done');
  t.ok(r.state === 'done' && r.buffered.equals(input));
});

t.test('a ClientHello larger than one record (padded) still parses', async (t) => {
  // Post-quantum key shares push real hellos past 1.5 KB; some clients then
  // split them over several records.
  const big = withExtension(handshakeOf(nodeSni), paddingExt(3000));
  t.ok(big.length > 3000);
  for (const fragment of [1400, 1000, 100]) {
    const input = toRecords(big, fragment);
    t.equal(parseWhole(input).sni, 'a.test', `fragment ${fragment}, whole`);
    const r = feed(new ClientHelloReader(), bytewise(input));
    t.equal(r.state === 'done' && r.hello.sni, 'a.test', `fragment ${fragment}, byte by byte`);
  }
  // One record can carry 16384 bytes; a hello that needs two records.
  const twoRecords = toRecords(withExtension(handshakeOf(nodeSni), paddingExt(16_500)), 16384);
  t.equal(parseWhole(twoRecords, 65536).alpn.length, 2, 'spans two maximal records');
});

t.test('a ClientHello larger than maxBytes is rejected with too_large, early', async (t) => {
  t.equal(DEFAULT_MAX_CLIENT_HELLO_BYTES, 16384);
  const huge = toRecords(withExtension(handshakeOf(nodeSni), paddingExt(20_000)), 16384);
  t.equal(rejection(huge), 'too_large', 'default maxBytes');
  // The handshake length is known after 9 bytes: no need to wait for the rest.
  t.equal(reasonOf(() => new ClientHelloReader().push(huge.subarray(0, 9))), 'too_large', 'after 9 bytes');

  const medium = toRecords(withExtension(handshakeOf(nodeSni), paddingExt(1500)), 16384);
  t.equal(rejection(medium, { maxBytes: 1000 }), 'too_large', 'maxBytes 1000, one record');
  t.equal(reasonOf(() => new ClientHelloReader({ maxBytes: 1000 }).push(medium.subarray(0, 5))), 'too_large', 'record header alone');
  const fragmented = toRecords(withExtension(handshakeOf(nodeSni), paddingExt(1500)), 100);
  t.equal(rejection(fragmented, { maxBytes: 1000, bytes: true }), 'too_large', 'maxBytes 1000, many records, byte by byte');
  t.equal(parseWhole(fragmented, 4096).sni, 'a.test', 'fits a larger maxBytes');

  // Exactly at the limit is fine; one byte over is not.
  const msg = handshakeOf(nodeSni);
  t.equal(parseWhole(toRecords(msg, 16384), msg.length + 5).sni, 'a.test', 'exactly maxBytes');
  t.equal(rejection(toRecords(msg, 16384), { maxBytes: msg.length + 4 }), 'too_large', 'one byte over');
  const exact = msg.length + 5 * Math.ceil(msg.length / 100);
  t.equal(rejection(toRecords(msg, 100), { maxBytes: exact }), 'no error', 'exactly maxBytes over many records');
  t.equal(rejection(toRecords(msg, 100), { maxBytes: exact - 1, bytes: true }), 'too_large', 'one byte over, many records');
  t.throws(() => new ClientHelloReader({ maxBytes: 10 }), RangeError);
});

t.test('garbage is rejected with the right reason, from the first bytes', async (t) => {
  const cases: Array<[string, Buffer, ClientHelloErrorReason]> = [
    ['HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n'), 'not_tls'],
    ['SSH banner', Buffer.from('SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n'), 'not_tls'],
    ['PROXY header', Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n'), 'not_tls'],
    ['SSLv2 hello', Buffer.from([0x80, 0x2e, 0x01, 0x00, 0x02]), 'not_tls'],
    ['TLS alert record', Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]), 'not_tls'],
    ['application data record', Buffer.from([0x17, 0x03, 0x03, 0x00, 0x01, 0x00]), 'not_tls'],
    ['record major 2', Buffer.from([0x16, 0x02, 0x00, 0x00, 0x10]), 'not_tls'],
    ['record version 3.9', Buffer.from([0x16, 0x03, 0x09, 0x00, 0x10]), 'not_tls'],
    ['zero-length record', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00]), 'bad_record'],
    ['oversized record', Buffer.from([0x16, 0x03, 0x01, 0x40, 0x01]), 'bad_record'],
    ['ServerHello', Buffer.from([0x16, 0x03, 0x03, 0x00, 0x30, 0x02, 0x00, 0x00, 0x2c]), 'not_client_hello'],
    ['Finished', Buffer.from([0x16, 0x03, 0x03, 0x00, 0x30, 0x14]), 'not_client_hello'],
    ['tiny ClientHello length', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04]), 'bad_length'],
  ];
  for (const [name, bytes, reason] of cases) {
    t.equal(rejection(bytes), reason, `${name}: whole`);
    t.equal(rejection(bytes, { bytes: true }), reason, `${name}: byte by byte`);
  }
  // Early: one byte of an HTTP request or SSH banner is enough.
  t.equal(reasonOf(() => new ClientHelloReader().push(Buffer.from('G'))), 'not_tls');
  t.equal(reasonOf(() => new ClientHelloReader().push(Buffer.from('S'))), 'not_tls');
  const r2 = new ClientHelloReader();
  r2.push(Buffer.from([0x16]));
  t.equal(reasonOf(() => r2.push(Buffer.from([0x47]))), 'not_tls', 'second byte');

  const rand = seededRandom(42);
  for (let i = 0; i < 200; i++) {
    const bytes = Buffer.alloc(64);
    for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(rand() * 256);
    if (bytes[0] === 0x16) bytes[0] = 0x15;
    if (rejection(bytes) !== 'not_tls') return t.fail(`random bytes ${bytes.toString('hex')}`);
  }
  t.pass('200 random buffers: not_tls');
});

t.test('later records must be handshake records of the right size', async (t) => {
  const msg = handshakeOf(nodeSni);
  const first = toRecords(msg.subarray(0, 100), 100);
  const alert = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
  t.equal(rejection(Buffer.concat([first, alert])), 'bad_record', 'alert between fragments');
  t.equal(rejection(Buffer.concat([first, Buffer.from([0x16, 0x04])])), 'bad_record', 'bad major in a later record');
  t.equal(rejection(Buffer.concat([first, Buffer.from([0x16, 0x03, 0x03, 0x00, 0x00])])), 'bad_record', 'zero-length later record');
  // A record that carries more than the ClientHello.
  const rest = msg.subarray(100);
  const tooLong = Buffer.concat([rest, Buffer.from([0x0e, 0, 0, 0])]); // + ServerHelloDone-shaped message
  const lastRec = Buffer.concat([Buffer.from([0x16, 0x03, 0x03]), u16(tooLong.length), tooLong]);
  t.equal(rejection(Buffer.concat([first, lastRec])), 'bad_length', 'trailing handshake bytes in the last record');
  const single = Buffer.concat([msg, Buffer.from([0, 0])]);
  t.equal(rejection(Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), u16(single.length), single])), 'bad_length', 'one record, trailing bytes');
});

// ---------------------------------------------------------------------------
// Synthetic hellos: every field check
// ---------------------------------------------------------------------------

t.test('synthetic hellos in every valid form are accepted', async (t) => {
  const rec = (m: Buffer): Buffer => toRecords(m, 16384);
  t.same(parseWhole(rec(synthHello())), {
    sni: 'a.test',
    alpn: [],
    legacyVersion: 0x0303,
    supportedVersions: [0x0304, 0x0303],
    sessionTicket: null,
    pskIdentities: [],
  });
  t.equal(parseWhole(rec(synthHello({ extensions: [sniExt('A.Test.')] }))).sni, 'a.test', 'case and trailing dot');
  t.equal(parseWhole(rec(synthHello({ extensions: [sniExt('x_y.internal')] }))).sni, 'x_y.internal', 'underscore tolerated');
  t.same(parseWhole(rec(synthHello({ extensions: null, legacyVersion: 0x0301 }))), {
    sni: null,
    alpn: [],
    legacyVersion: 0x0301,
    supportedVersions: [],
    sessionTicket: null,
    pskIdentities: [],
  }, 'TLS 1.0-style hello without extensions');
  t.same(parseWhole(rec(synthHello({ extensions: [] }))).sni, null, 'empty extensions block');
  t.same(parseWhole(rec(synthHello({ extensions: [alpnExt('\x0a\x0a', 'h2'), sniExt('b.test')] }))).alpn, ['\x0a\x0a', 'h2'], 'GREASE ALPN kept');
  t.equal(parseWhole(rec(synthHello({ sessionId: Buffer.alloc(0) }))).sni, 'a.test', 'empty session id');
  const psk = ext(41, Buffer.alloc(10));
  t.equal(parseWhole(rec(synthHello({ extensions: [sniExt('a.test'), psk] }))).sni, 'a.test', 'pre_shared_key last');
  t.equal(parseWhole(toRecords(synthHello(), 16384, 0x0300)).sni, 'a.test', 'SSL 3.0 record version');
});

t.test('session_ticket and pre_shared_key give the tickets a resumption names', async (t) => {
  const rec = (m: Buffer): Buffer => toRecords(m, 16384);
  const ticket = Buffer.alloc(80, 0xab);
  t.same(parseWhole(rec(synthHello({ extensions: [sniExt('a.test'), ext(35, ticket)] }))).sessionTicket, ticket, 'a TLS 1.2 ticket');
  t.equal(parseWhole(rec(synthHello({ extensions: [ext(35, Buffer.alloc(0))] }))).sessionTicket, null, 'an empty one only asks for a ticket');
  // identities<7..2^16-1>: identity<1..2^16-1> + uint32 age each; then binders<33..2^16-1>.
  const identity = (id: Buffer): Buffer => Buffer.concat([vec16(id), Buffer.alloc(4, 1)]);
  const binders = vec16(Buffer.concat([Buffer.from([32]), Buffer.alloc(32, 2)]));
  const id1 = Buffer.alloc(40, 0x11);
  const id2 = Buffer.alloc(20, 0x22);
  const psk = ext(41, Buffer.concat([vec16(Buffer.concat([identity(id1), identity(id2)])), binders]));
  const hello = parseWhole(rec(synthHello({ extensions: [sniExt('a.test'), psk] })));
  t.same(hello.pskIdentities, [id1, id2], 'TLS 1.3 PSK identities, in order');
  t.same(parseWhole(rec(synthHello({ extensions: [ext(41, Buffer.alloc(10))] }))).pskIdentities, [], 'a malformed list: none (not an error)');
  const overrun = ext(41, Buffer.concat([vec16(Buffer.concat([u16(99), id2, Buffer.alloc(4)])), binders]));
  t.same(parseWhole(rec(synthHello({ extensions: [overrun] }))).pskIdentities, [], 'an identity overrunning its list: none');
  // Fragmented over records: the views come from the reassembled message.
  t.same(parseWhole(toRecords(synthHello({ extensions: [sniExt('a.test'), ext(35, ticket), psk] }), 50)).pskIdentities, [id1, id2], 'across records');
});

t.test('synthetic hellos with a malformed field are rejected with the right reason', async (t) => {
  const cases: Array<[string, Buffer, ClientHelloErrorReason]> = [
    ['legacy_version 2.0', synthHello({ legacyVersion: 0x0200 }), 'bad_version'],
    ['session id of 33 bytes', synthHello({ sessionId: Buffer.alloc(33) }), 'bad_length'],
    ['odd cipher_suites length', synthHello({ suites: Buffer.from([0x13, 0x01, 0x13]) }), 'bad_length'],
    ['empty cipher_suites', synthHello({ suites: Buffer.alloc(0), sessionId: Buffer.alloc(32, 1), extensions: [paddingExt(8)] }), 'bad_length'],
    ['empty compression', synthHello({ compression: Buffer.alloc(0), extensions: [paddingExt(8)] }), 'bad_length'],
    ['extensions length too long', synthHello({ extensionsLength: 9999 }), 'bad_length'],
    ['extensions length too short', synthHello({ extensionsLength: 2 }), 'bad_length'],
    ['truncated extension header', synthHello({ extensions: [Buffer.from([0, 21])] }), 'bad_extension'],
    ['extension overruns', synthHello({ extensions: [Buffer.from([0, 21, 0, 9, 0])] }), 'bad_extension'],
    ['duplicate extension', synthHello({ extensions: [paddingExt(1), paddingExt(1)] }), 'bad_extension'],
    ['duplicate server_name', synthHello({ extensions: [sniExt('a.test'), sniExt('b.test')] }), 'bad_extension'],
    ['pre_shared_key not last', synthHello({ extensions: [ext(41, Buffer.alloc(4)), sniExt('a.test')] }), 'bad_extension'],
    ['two host_names', synthHello({ extensions: [sniExt('a.test', 'b.test')] }), 'bad_extension'],
    ['server_name type 1', synthHello({ extensions: [ext(0, vec16(Buffer.from([1, 0, 1, 0x61])))] }), 'bad_extension'],
    ['empty server_name list', synthHello({ extensions: [ext(0, vec16(Buffer.alloc(0)))] }), 'bad_extension'],
    ['server_name list length mismatch', synthHello({ extensions: [ext(0, Buffer.from([0, 9, 0, 0, 1, 0x61]))] }), 'bad_extension'],
    ['empty host_name', synthHello({ extensions: [sniExt('')] }), 'bad_extension'],
    ['host_name overruns', synthHello({ extensions: [ext(0, Buffer.from([0, 4, 0, 0, 9, 0x61]))] }), 'bad_extension'],
    ['host_name with a space', synthHello({ extensions: [sniExt('a b.test')] }), 'bad_server_name'],
    ['host_name with a NUL', synthHello({ extensions: [sniExt('a.test\0.evil')] }), 'bad_server_name'],
    ['host_name with a slash', synthHello({ extensions: [sniExt('a/b.test')] }), 'bad_server_name'],
    ['host_name empty label', synthHello({ extensions: [sniExt('a..test')] }), 'bad_server_name'],
    ['host_name only a dot', synthHello({ extensions: [sniExt('.')] }), 'bad_server_name'],
    ['host_name non-ASCII', synthHello({ extensions: [sniExt('b\u00fccher.test')] }), 'bad_server_name'],
    ['host_name label of 64', synthHello({ extensions: [sniExt(`${'a'.repeat(64)}.test`)] }), 'bad_server_name'],
    ['empty ALPN list', synthHello({ extensions: [ext(16, vec16(Buffer.alloc(0)))] }), 'bad_extension'],
    ['empty ALPN name', synthHello({ extensions: [ext(16, vec16(Buffer.from([0])))] }), 'bad_extension'],
    ['ALPN name overruns', synthHello({ extensions: [ext(16, vec16(Buffer.from([5, 0x68])))] }), 'bad_extension'],
    ['ALPN length mismatch', synthHello({ extensions: [ext(16, Buffer.from([0, 1]))] }), 'bad_extension'],
    ['supported_versions odd', synthHello({ extensions: [ext(43, Buffer.from([3, 3, 4, 3]))] }), 'bad_extension'],
    ['supported_versions empty', synthHello({ extensions: [ext(43, Buffer.from([0]))] }), 'bad_extension'],
    ['supported_versions mismatch', synthHello({ extensions: [ext(43, Buffer.from([4, 3, 4]))] }), 'bad_extension'],
    ['supported_versions no data', synthHello({ extensions: [ext(43, Buffer.alloc(0))] }), 'bad_extension'],
  ];
  for (const [name, msg, reason] of cases) {
    const input = toRecords(msg, 16384);
    t.equal(rejection(input), reason, `${name}: whole`);
    t.equal(rejection(toRecords(msg, 7), { bytes: true, maxBytes: 65536 }), reason, `${name}: 7-byte records, byte by byte`);
  }
});

t.test('a finished reader stays finished', async (t) => {
  const failed = new ClientHelloReader();
  let first: unknown;
  try {
    failed.push(Buffer.from('GET /'));
  } catch (err) {
    first = err;
  }
  t.type(first, ClientHelloError);
  t.type(first, L4lbError);
  t.equal((first as ClientHelloError).code, 'L4LB_CLIENT_HELLO_INVALID');
  t.match((first as ClientHelloError).message, /not_tls/);
  t.throws(() => failed.push(nodeSni), first as Error, 'a failed reader rethrows the same error');

  const done = new ClientHelloReader();
  t.equal(done.push(nodeSni).state, 'done');
  t.throws(() => done.push(Buffer.from([1])), /after the ClientHello was complete/);
});

t.test('mutated real hellos give only coded errors, never a crash', async (t) => {
  const rand = seededRandom(7);
  const base = toRecords(withExtension(handshakeOf(nodeSni), paddingExt(200)), 300);
  const counts = { done: 0, need_more: 0, rejected: 0 };
  for (let i = 0; i < 5000; i++) {
    const m = Buffer.from(base);
    const flips = 1 + Math.floor(rand() * 4);
    for (let k = 0; k < flips; k++) m[Math.floor(rand() * m.length)] = Math.floor(rand() * 256);
    const cut = rand() < 0.2 ? Math.floor(rand() * m.length) : m.length;
    try {
      const r = new ClientHelloReader().push(m.subarray(0, cut));
      counts[r.state]++;
    } catch (err) {
      if (!(err instanceof ClientHelloError)) return t.fail(`foreign error on ${m.toString('hex')}: ${String(err)}`);
      counts.rejected++;
    }
  }
  t.comment(JSON.stringify(counts));
  t.ok(counts.done > 0 && counts.rejected > 0, 'the mutations exercise both outcomes');
});

t.test('normaliseServerName lower-cases and drops one trailing dot; isValidDnsName accepts DNS names only', async (t) => {
  t.equal(normaliseServerName('A.Example.COM.'), 'a.example.com');
  t.equal(normaliseServerName('a.test..'), 'a.test.', 'only one trailing dot');
  t.equal(normaliseServerName('x'), 'x');
  for (const ok of ['a', 'a.test', 'xn--bcher-kva.test', 'a-b.c_d.e', '1.2.3.4', `${'a'.repeat(63)}.test`]) {
    t.ok(isValidDnsName(ok), ok);
  }
  for (const bad of ['', '.', 'a.', '.a', 'a..b', '-a.test', 'a-.test', 'a b', 'a*b', `${'a'.repeat(64)}.test`, `${'a.'.repeat(127)}ab`]) {
    t.notOk(isValidDnsName(bad), JSON.stringify(bad));
  }
});

// ---------------------------------------------------------------------------
// openssl s_client
// ---------------------------------------------------------------------------

t.test('a ClientHello from openssl s_client parses, whole and byte by byte', { skip: skipUnlessCi(opensslMissing, 'the openssl s_client test') }, async (t) => {
  t.equal(opensslMissing, null, 'openssl is required when CI is set');
  const cap = await captureServer();
  const child = spawn(
    'openssl',
    ['s_client', '-connect', `127.0.0.1:${cap.port}`, '-servername', 'X.Test', '-alpn', 'h2,http/1.1'],
    { stdio: ['pipe', 'ignore', 'ignore'] },
  );
  child.on('error', () => {});
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  let bytes: Buffer;
  try {
    bytes = await cap.hello;
  } finally {
    clearTimeout(timer);
    child.kill('SIGKILL');
    cap.close();
  }
  t.comment(`openssl s_client ClientHello: ${bytes.length} bytes`);
  const hello = parseWhole(bytes);
  t.equal(hello.sni, 'x.test', 'lower-cased');
  t.same(hello.alpn, ['h2', 'http/1.1']);
  t.ok(hello.supportedVersions.includes(0x0304));
  const r = feed(new ClientHelloReader(), bytewise(bytes));
  t.ok(r.state === 'done' && r.buffered.equals(bytes), 'byte by byte');
  const r2 = feed(new ClientHelloReader(), bytewise(toRecords(handshakeOf(bytes), 50)));
  t.equal(r2.state === 'done' && r2.hello.sni, 'x.test', '50-byte records, byte by byte');
});
