import t from 'tap';
import { CidrList, parseCidr } from '../src/net/cidr.js';

t.test('IPv4 ranges, single addresses and /0 match the addresses they cover, never an IPv6 one', async (t) => {
  const list = new CidrList(['10.0.0.0/8', '192.168.1.7', '172.16.0.0/12']);
  t.ok(list.has('10.255.1.2'));
  t.ok(list.has('192.168.1.7'));
  t.notOk(list.has('192.168.1.8'));
  t.ok(list.has('172.31.255.255'));
  t.notOk(list.has('172.32.0.0'));
  t.notOk(list.has('11.0.0.0'));
  t.ok(new CidrList(['0.0.0.0/0']).has('1.2.3.4'));
  t.notOk(new CidrList(['0.0.0.0/0']).has('::1'), 'an IPv4 range never matches IPv6');
});

t.test('IPv4-mapped IPv6 is matched as IPv4', async (t) => {
  const list = new CidrList(['127.0.0.0/8']);
  t.ok(list.has('::ffff:127.0.0.9'));
  t.ok(list.has('::FFFF:127.0.0.9'));
  t.notOk(list.has('::ffff:128.0.0.1'));
});

t.test('IPv6 ranges match the addresses they cover, zone ids ignored, never an IPv4 one', async (t) => {
  const list = new CidrList(['::1', '2001:db8::/32', 'fe80::/10']);
  t.ok(list.has('::1'));
  t.notOk(list.has('::2'));
  t.ok(list.has('2001:db8:ffff::1'));
  t.notOk(list.has('2001:db9::1'));
  t.ok(list.has('fe80::1%eth0'), 'zone ids are ignored');
  t.ok(list.has('febf::1'));
  t.notOk(list.has('fec0::1'));
  t.notOk(list.has('10.0.0.1'));
  t.ok(new CidrList(['::/0']).has('2001::1'));
});

t.test('bad input gives messages, never a throw, and has() is false for non-addresses', async (t) => {
  for (const bad of ['10.0.0.0/33', '10.0.0/8', 'x', '::1/129', '10.0.0.0/08', '', 42, null, '1.2.3.4/']) {
    t.type(parseCidr(bad), 'string', `${JSON.stringify(bad)} rejected`);
  }
  const list = new CidrList(['10.0.0.0/8']);
  t.notOk(list.has(undefined));
  t.notOk(list.has('not an ip'));
  t.throws(() => new CidrList(['bogus']), RangeError);
});
