/**
 * src/net/ip.ts: byte vectors for IPv4 and every IPv6 spelling, zone ids,
 * IPv4-mapped folding, the RFC 5952 examples, prefix keys and loopback; then
 * every zero-group pattern of an address in every legal spelling, checked
 * against Node's own `net.isIP` and WHATWG URL host printing (independent
 * implementations), and every short string over the address alphabet.
 */
import t from 'tap';
import net from 'node:net';
import {
  canonicalIp,
  formatIp,
  formatIpv4,
  formatIpv6,
  ipFamily,
  ipv6NetworkKey,
  isLoopback,
  isV4Mapped,
  mappedIpv4Start,
  normaliseIp,
  parseIp,
  parseIpInto,
  prefixKey,
} from '../src/net/ip.js';

const hex = (s: string): string => Buffer.from(s.replace(/[\s:]/g, ''), 'hex').toString('hex');
const bytesOf = (text: string, zone?: 'ignore' | 'refuse'): string | undefined => {
  const b = parseIp(text, zone);
  return b === undefined ? undefined : Buffer.from(b).toString('hex');
};
const MAPPED = '00000000000000000000ffff';

t.test('IPv4 text parses to its IPv4-mapped bytes; only strict dotted quads are IPv4', async (t) => {
  t.equal(bytesOf('0.0.0.0'), `${MAPPED}00000000`);
  t.equal(bytesOf('192.0.2.1'), `${MAPPED}c0000201`);
  t.equal(bytesOf('255.255.255.255'), `${MAPPED}ffffffff`);
  t.equal(ipFamily('10.0.0.1'), 4);
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.0.0.1', '01.2.3.4', '1.2.3.00', '1..2.3', '1.2.3.4 ', ' 1.2.3.4', '1.2.3.-1', '1.2.3.4%eth0', '1.2.3.4/32', '0x1.2.3.4', '１.2.3.4', '1.2.3.1234', 'localhost']) {
    t.equal(ipFamily(bad), 0, `not an address: ${JSON.stringify(bad)}`);
    t.equal(parseIp(bad), undefined);
  }
});

t.test('IPv6 text in every RFC 4291 spelling parses to the same 16 bytes', async (t) => {
  const want = hex('2001 0db8 0000 0000 0001 0000 0000 0001');
  for (const s of ['2001:db8:0:0:1:0:0:1', '2001:0db8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1', '2001:db8:0:0:1::1', '2001:DB8:0:0:1::1', '2001:Db8::0:1:0:0:1']) {
    t.equal(bytesOf(s), want, s);
    t.equal(ipFamily(s), 6);
  }
  t.equal(bytesOf('::'), '0'.repeat(32));
  t.equal(bytesOf('::1'), `${'0'.repeat(30)}01`);
  t.equal(bytesOf('1::'), `0001${'0'.repeat(28)}`);
  t.equal(bytesOf('1:2:3:4:5:6:7::'), hex('0001 0002 0003 0004 0005 0006 0007 0000'), '"::" for one group (legal, if not canonical)');
  t.equal(bytesOf('::2:3:4:5:6:7:8'), hex('0000 0002 0003 0004 0005 0006 0007 0008'));
  t.equal(bytesOf('1:2:3:4:5:6:1.2.3.4'), hex('0001 0002 0003 0004 0005 0006 0102 0304'), 'full form with a dotted quad');
  t.equal(bytesOf('64:ff9b::192.0.2.33'), hex('0064 ff9b 0000 0000 0000 0000 c000 0221'));
  t.equal(bytesOf('::1.2.3.4'), hex('0000 0000 0000 0000 0000 0000 0102 0304'), 'IPv4-compatible (deprecated) is IPv6');
  for (const bad of [':', ':::', '1::2::3', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '12345::', 'g::1', '1:', ':1', '::1:', '1:::2',
    '::1.2.3', '::1.2.3.256', '::01.2.3.4', '1:2:3:4:5:6:7:1.2.3.4', '::1.2.3.4:1', '1.2.3.4::', '1:2:3:4:5:6:7:8::', '::1:2:3:4:5:6:7:8',
    '[::1]', ' ::1', '::1 ', '::-1', '0x1::', `${'0'.repeat(46)}::`]) {
    t.equal(ipFamily(bad), 0, `not an address: ${JSON.stringify(bad)}`);
  }
});

t.test('a zone id is ignored or refused as asked, and never printed', async (t) => {
  t.equal(bytesOf('fe80::1%eth0'), hex('fe80 0000 0000 0000 0000 0000 0000 0001'));
  t.equal(bytesOf('fe80::1%eth0', 'refuse'), undefined);
  t.equal(bytesOf('fe80::1', 'refuse'), hex('fe80 0000 0000 0000 0000 0000 0000 0001'));
  t.equal(bytesOf('fe80::1%'), undefined, 'an empty zone');
  t.equal(bytesOf('1.2.3.4%eth0'), undefined, 'IPv4 has no zones');
  t.equal(bytesOf(`fe80::1%${'x'.repeat(1000)}`), hex('fe80 0000 0000 0000 0000 0000 0000 0001'), 'a long zone is not read');
  t.equal(canonicalIp('fe80::1%eth0'), 'fe80::1');
  t.equal(canonicalIp('::ffff:10.0.0.1%2'), '10.0.0.1');
  t.equal(normaliseIp('fe80::1%eth0'), 'fe80::1');
});

t.test('IPv4-mapped IPv6 folds to the IPv4 address; other IPv6 holding a dotted quad does not', async (t) => {
  for (const s of ['::ffff:1.2.3.4', '::FFFF:1.2.3.4', '::ffff:102:304', '0:0:0:0:0:ffff:1.2.3.4', '0000:0000:0000:0000:0000:FFFF:0102:0304']) {
    t.equal(bytesOf(s), bytesOf('1.2.3.4'), `${s}: the same bytes as 1.2.3.4`);
    t.equal(canonicalIp(s), '1.2.3.4', s);
    t.equal(ipFamily(s), 6, 'written as IPv6');
  }
  t.equal(canonicalIp('::fffe:1.2.3.4'), '::fffe:102:304');
  t.equal(canonicalIp('::1.2.3.4'), '::102:304');
  t.equal(canonicalIp('64:ff9b::1.2.3.4'), '64:ff9b::102:304');
  const b = parseIp('::ffff:192.0.2.1')!;
  t.ok(isV4Mapped(b));
  t.notOk(isV4Mapped(parseIp('::fffe:192.0.2.1')!));
  t.equal(formatIp(b), '192.0.2.1');
  t.equal(formatIpv6(b), '::ffff:c000:201', 'formatIpv6 prints hex groups only');
  t.equal(formatIpv4(b, 12), '192.0.2.1');
  t.equal(mappedIpv4Start('::ffff:1.2.3.4'), 7);
  t.equal(mappedIpv4Start('::FfFf:1.2.3.4'), 7);
  for (const other of ['::ffff:1.2.3', '::ffff:1.2.3.256', '::ffff:102:304', '::fffe:1.2.3.4', '1.2.3.4', '::ffff:1.2.3.4%eth0', ':ffff::1.2.3.4']) {
    t.equal(mappedIpv4Start(other), 0, other);
  }
});

t.test('RFC 5952 text: the RFC\'s own examples', async (t) => {
  // §1 and §2.1: eight spellings of one address.
  for (const s of ['2001:db8:0:0:1:0:0:1', '2001:0db8:0:0:1:0:0:1', '2001:db8::1:0:0:1', '2001:db8::0:1:0:0:1', '2001:0db8::1:0:0:1', '2001:db8:0:0:1::1', '2001:db8:0000:0:1::1', '2001:DB8:0:0:1::1']) {
    t.equal(canonicalIp(s), '2001:db8::1:0:0:1', s);
  }
  // §2.2: leading zeros.
  for (const s of ['2001:db8:aaaa:bbbb:cccc:dddd:eeee:0001', '2001:db8:aaaa:bbbb:cccc:dddd:eeee:001', '2001:db8:aaaa:bbbb:cccc:dddd:eeee:01', '2001:db8:aaaa:bbbb:cccc:dddd:eeee:1']) {
    t.equal(canonicalIp(s), '2001:db8:aaaa:bbbb:cccc:dddd:eeee:1', s);
  }
  // §2.2: "::" for a single zero group is not canonical.
  t.equal(canonicalIp('2001:db8:aaaa:bbbb:cccc:dddd::1'), '2001:db8:aaaa:bbbb:cccc:dddd:0:1');
  // §2.3: how much to compress.
  for (const s of ['2001:db8:0:0:0::1', '2001:db8:0:0::1', '2001:db8:0::1', '2001:db8::1']) t.equal(canonicalIp(s), '2001:db8::1', s);
  // §2.4: where to compress.
  for (const s of ['2001:db8::aaaa:0:0:1', '2001:db8:0:0:aaaa::1']) t.equal(canonicalIp(s), '2001:db8::aaaa:0:0:1', s);
  // §2.5: case.
  for (const s of ['2001:db8:aaaa:bbbb:cccc:dddd:eeee:aaaa', '2001:db8:aaaa:bbbb:cccc:dddd:eeee:AAAA', '2001:db8:aaaa:bbbb:cccc:dddd:eeee:AaAa']) {
    t.equal(canonicalIp(s), '2001:db8:aaaa:bbbb:cccc:dddd:eeee:aaaa', s);
  }
  // §4.1 leading zeros; §4.2.1 shorten as much as possible; §4.2.2 not one group; §4.2.3 longest, then first; §4.3 lower case.
  t.equal(canonicalIp('2001:0db8::0001'), '2001:db8::1');
  t.equal(canonicalIp('2001:db8:0:0:0:0:2:1'), '2001:db8::2:1');
  t.equal(canonicalIp('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1');
  t.equal(canonicalIp('2001:db8::1:1:1:1:1'), '2001:db8:0:1:1:1:1:1');
  t.equal(canonicalIp('2001:0:0:1:0:0:0:1'), '2001:0:0:1::1');
  t.equal(canonicalIp('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
  t.equal(canonicalIp('2001:DB8::1'), '2001:db8::1');
  // Edges: all zero, zero runs at either end.
  t.equal(canonicalIp('0:0:0:0:0:0:0:0'), '::');
  t.equal(canonicalIp('0:0:0:0:0:0:0:1'), '::1');
  t.equal(canonicalIp('1:0:0:0:0:0:0:0'), '1::');
  t.equal(canonicalIp('0:0:1:0:0:0:1:0'), '0:0:1::1:0');
  t.equal(canonicalIp('localhost'), undefined);
  t.equal(canonicalIp('01.2.3.4'), undefined);
});

t.test('canonical text comes back as given; normaliseIp keeps what is not an address', async (t) => {
  t.equal(canonicalIp('10.0.0.1'), '10.0.0.1');
  t.equal(canonicalIp('2001:db8::1'), '2001:db8::1');
  t.equal(normaliseIp(undefined), '', 'unknown address');
  t.equal(normaliseIp('10.0.0.1'), '10.0.0.1');
  t.equal(normaliseIp('::ffff:10.0.0.1'), '10.0.0.1');
  t.equal(normaliseIp('2001:DB8::1'), '2001:db8::1');
  t.equal(normaliseIp('not:an:address'), 'not:an:address');
  t.equal(normaliseIp('host.example'), 'host.example');
});

t.test('prefix keys: IPv4 per address, IPv6 per network, IPv4-mapped as IPv4', async (t) => {
  t.equal(prefixKey('192.0.2.7', 64), '192.0.2.7');
  t.equal(prefixKey('::ffff:192.0.2.7', 64), '192.0.2.7');
  t.equal(prefixKey('::FFFF:c000:207', 64), '192.0.2.7');
  t.equal(prefixKey('2001:db8:1:2::7', 64), prefixKey('2001:0DB8:1:2:ffff:ffff:ffff:ffff', 64), 'one /64');
  t.equal(prefixKey('fe80::1%eth0', 64), prefixKey('fe80::2', 64), 'zone ignored');
  t.not(prefixKey('2001:db8:1:2::7', 64), prefixKey('2001:db8:1:3::7', 64), 'the next /64');
  t.not(prefixKey('2001:db8::1', 128), prefixKey('2001:db8::2', 128), '/128: per address');
  t.equal(prefixKey('2001:db8::1', 0), prefixKey('fe80::1', 0), '/0: everyone');
  t.equal(prefixKey('2001:db8::1', 0), ':');
  t.equal(prefixKey('2001:db8:1:2::7', 64), `:${String.fromCharCode(0x2001, 0xdb8, 1, 2)}`, 'the key: one code unit per network group');
  t.equal(prefixKey('2001:db8:1:2ff::1', 56), prefixKey('2001:db8:1:200::1', 56), '/56 masks the low byte of the fourth group');
  t.equal(prefixKey('not an address', 64), 'not an address');
  t.equal(prefixKey('1::2::3', 64), '1::2::3');
  t.equal(ipv6NetworkKey('1.2.3.4', 64), undefined, 'IPv4 text has no IPv6 network');
});

t.test('loopback: 127.0.0.0/8, IPv4-mapped or not, and ::1 in any spelling', async (t) => {
  for (const h of ['127.0.0.1', '127.255.0.9', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::FFFF:7f00:1']) t.ok(isLoopback(h), h);
  for (const h of ['0.0.0.0', '128.0.0.1', '::', '::2', '::127.0.0.1', 'fe80::1', '::ffff:10.0.0.1', 'localhost', '']) t.notOk(isLoopback(h), h);
});

t.test('parseIpInto writes 16 bytes at the offset and nothing else', async (t) => {
  const out = Buffer.alloc(20, 0xee);
  t.equal(parseIpInto('2001:db8::ff', out, 2), 6);
  t.equal(out.toString('hex'), `eeee${hex('2001 0db8 0000 0000 0000 0000 0000 00ff')}eeee`);
  t.equal(parseIpInto('10.1.2.3', out, 2), 4);
  t.equal(out.toString('hex'), `eeee${MAPPED}0a010203eeee`);
  t.equal(parseIpInto('::1%lo', out, 2, 'refuse'), 0);
});

/** Every legal spelling of the groups `g`: each zero run (or none) as "::", leading zeros or not, either case, a dotted tail or not. */
function spellings(g: readonly number[]): string[] {
  const out: string[] = [];
  const forms = (x: number): string[] => [x.toString(16), x.toString(16).padStart(4, '0'), x.toString(16).toUpperCase()];
  const join = (from: number, to: number, form: number, dotted: boolean): string[] => {
    const parts: string[] = [];
    const last = dotted ? Math.min(to, 6) : to;
    for (let i = from; i < last; i++) parts.push(forms(g[i]!)[form]!);
    if (dotted && to === 8) parts.push(`${g[6]! >> 8}.${g[6]! & 255}.${g[7]! >> 8}.${g[7]! & 255}`);
    return parts;
  };
  for (let form = 0; form < 3; form++) {
    for (const dotted of [false, true]) {
      out.push(join(0, 8, form, dotted).join(':'));
      for (let s = 0; s < 8; s++) {
        for (let e = s + 1; e <= 8 && g[e - 1] === 0; e++) {
          if (dotted && e > 6) continue; // the dotted quad is spelt whole
          out.push(`${join(0, s, form, false).join(':')}::${join(e, 8, form, dotted).join(':')}`);
        }
      }
    }
  }
  return out;
}

t.test('every zero-group pattern in every spelling: same bytes, valid to Node, RFC 5952 text as WHATWG URL prints it', async (t) => {
  let checked = 0;
  let wrong = 0;
  for (let pattern = 0; pattern < 256; pattern++) {
    // Group i is zero when bit i is clear; non-zero groups vary in width.
    const g = Array.from({ length: 8 }, (_, i) => (pattern & (1 << i) ? [0x1, 0xab, 0xc0d, 0xfe80][i % 4]! : 0));
    const want = Buffer.from(g.flatMap((x) => [x >> 8, x & 255])).toString('hex');
    const urlText = new URL(`http://[${g.map((x) => x.toString(16)).join(':')}]/`).hostname.slice(1, -1);
    const printed = formatIpv6(Buffer.from(want, 'hex'));
    if (printed !== urlText) {
      wrong++;
      t.fail(`pattern ${pattern}: ${printed} != ${urlText}`);
    }
    for (const s of spellings(g)) {
      checked++;
      if (bytesOf(s) !== want || !net.isIPv6(s) || ipFamily(s, 'refuse') !== 6) {
        wrong++;
        t.fail(`${s}: ${bytesOf(s)} (Node: ${net.isIPv6(s)})`);
      }
    }
  }
  t.equal(wrong, 0, `${checked} spellings of 256 patterns`);
});

t.test('every string of up to 7 characters over the address alphabet: an address exactly when Node says so', async (t) => {
  const alphabet = ['0', '1', 'f', 'F', ':', '.', 'g'];
  let disagree = 0;
  let count = 0;
  const visit = (s: string): void => {
    count++;
    if (ipFamily(s, 'refuse') !== net.isIP(s)) {
      disagree++;
      if (disagree < 10) t.fail(`${JSON.stringify(s)}: ${ipFamily(s, 'refuse')} vs Node ${net.isIP(s)}`);
    }
    if (s.length < 7) for (const c of alphabet) visit(s + c);
  };
  visit('');
  t.equal(disagree, 0, `${count} strings`);
  // Longer shapes the enumeration cannot reach.
  for (const s of ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8', '1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5::1.2.3.4', '1:2:3:4:5:6::1.2.3.4', 'ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255', '255.255.255.255']) {
    t.equal(ipFamily(s, 'refuse'), net.isIP(s), s);
  }
});
