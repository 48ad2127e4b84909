import { test } from 'tap';
import {
  createPicker,
  LeastConnPicker,
  normaliseClientKey,
  RandomTwoPicker,
  RoundRobinPicker,
  SourceHashPicker,
  type Picker,
} from '../src/balance/index.js';
import { seededRandom } from './helpers/random.js';

interface Srv {
  name: string;
  weight: number;
  active: number;
}

const ALGORITHMS = ['round_robin', 'least_conn', 'source_hash', 'random_two'] as const;

function servers(n: number, weights: readonly number[] = []): Srv[] {
  return Array.from({ length: n }, (_, i) => ({ name: `10.0.0.${i + 1}:5432`, weight: weights[i] ?? 1, active: 0 }));
}

/** 100,000 distinct client keys: mostly structured IPv4 (10.x.y.z), every tenth an IPv6 address. */
function clientKeys(n = 100_000): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    if (i % 10 === 9) out.push(`2001:db8:${(i >>> 16).toString(16)}::${(i & 0xffff).toString(16)}`);
    else out.push(`10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`);
  }
  return out;
}

const KEYS = clientKeys();

function counts<S extends Srv>(picker: Picker<S>, keys: readonly string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const k of keys) {
    const s = picker.pick(k);
    if (s === undefined) throw new Error(`no server for ${k}`);
    m.set(s.name, (m.get(s.name) ?? 0) + 1);
  }
  return m;
}

function assignment<S extends Srv>(picker: Picker<S>, keys: readonly string[]): string[] {
  return keys.map((k) => picker.pick(k)?.name ?? '');
}

test('source_hash: equal weights, 100,000 keys, each of 10 servers within ±10% of its share', (t) => {
  const pool = servers(10);
  const c = counts(createPicker('source_hash', pool), KEYS);
  const share = KEYS.length / pool.length;
  for (const s of pool) {
    const got = c.get(s.name) ?? 0;
    t.ok(Math.abs(got - share) <= share * 0.1, `${s.name}: ${got} keys, share ${share}`);
  }
  // IPv6 keys alone are spread too, not all on one server.
  const v6 = counts(createPicker('source_hash', pool), KEYS.filter((k) => k.includes(':')));
  t.equal(v6.size, 10, 'IPv6 keys reach every server');
  t.end();
});

test('source_hash: removing 1 of 10 moves ≤12% of keys, adding an 11th moves ≤12%', (t) => {
  const pool = servers(11);
  const ten = pool.slice(0, 10);
  const before = assignment(createPicker('source_hash', ten), KEYS);

  for (const removed of [0, 4, 9]) {
    const nine = ten.filter((_, i) => i !== removed);
    const after = assignment(createPicker('source_hash', nine), KEYS);
    let moved = 0;
    let movedFromOthers = 0;
    for (let i = 0; i < KEYS.length; i++) {
      if (before[i] !== after[i]) {
        moved++;
        if (before[i] !== ten[removed]!.name) movedFromOthers++;
      }
    }
    const fraction = moved / KEYS.length;
    t.ok(fraction <= 0.12, `removing ${ten[removed]!.name} moved ${(fraction * 100).toFixed(2)}% of keys`);
    t.equal(movedFromOthers, 0, 'only the removed server’s keys move');
  }

  const after = assignment(createPicker('source_hash', pool), KEYS);
  let moved = 0;
  let movedElsewhere = 0;
  for (let i = 0; i < KEYS.length; i++) {
    if (before[i] !== after[i]) {
      moved++;
      if (after[i] !== pool[10]!.name) movedElsewhere++;
    }
  }
  const fraction = moved / KEYS.length;
  t.ok(fraction <= 0.12, `adding an 11th server moved ${(fraction * 100).toFixed(2)}% of keys`);
  t.ok(fraction >= 0.06, `the new server takes about 1/11 (${(fraction * 100).toFixed(2)}%)`);
  t.equal(movedElsewhere, 0, 'moved keys all go to the new server');
  t.end();
});

test('source_hash: two pickers built independently, servers in a different order, agree on 100,000 keys', (t) => {
  const a = createPicker('source_hash', servers(10));
  // Fresh objects (another process would have its own), reversed and rotated.
  const other = servers(10).reverse();
  const b = createPicker('source_hash', [...other.slice(3), ...other.slice(0, 3)]);
  let disagree = 0;
  for (const k of KEYS) if (a.pick(k)?.name !== b.pick(k)?.name) disagree++;
  t.equal(disagree, 0, 'no key disagrees');

  const wa = createPicker('source_hash', servers(4, [1, 2, 3, 4]));
  const wb = createPicker('source_hash', servers(4, [1, 2, 3, 4]).reverse());
  disagree = 0;
  for (const k of KEYS) if (wa.pick(k)?.name !== wb.pick(k)?.name) disagree++;
  t.equal(disagree, 0, 'weighted: no key disagrees');
  t.end();
});

test('source_hash: known assignments are stable across versions and machines', (t) => {
  // Pinned outputs: a change here means every deployed instance would reshuffle clients.
  const p = createPicker('source_hash', servers(10));
  const w = createPicker('source_hash', servers(4, [1, 2, 3, 4]));
  const keys = ['10.0.0.1', '192.168.1.20', '2001:db8::1', '203.0.113.7'];
  t.same(
    keys.map((k) => [k, p.pick(k)?.name, w.pick(k)?.name]),
    [
      ['10.0.0.1', '10.0.0.6:5432', '10.0.0.4:5432'],
      ['192.168.1.20', '10.0.0.1:5432', '10.0.0.1:5432'],
      ['2001:db8::1', '10.0.0.7:5432', '10.0.0.1:5432'],
      ['203.0.113.7', '10.0.0.4:5432', '10.0.0.4:5432'],
    ],
  );
  t.end();
});

test('source_hash: weights 1,2,3,4 are matched within ±5% of each share', (t) => {
  const weights = [1, 2, 3, 4];
  const pool = servers(4, weights);
  const c = counts(createPicker('source_hash', pool), KEYS);
  const total = weights.reduce((a, b) => a + b, 0);
  pool.forEach((s, i) => {
    const share = (KEYS.length * weights[i]!) / total;
    const got = c.get(s.name) ?? 0;
    t.ok(Math.abs(got - share) <= share * 0.05, `${s.name} (weight ${weights[i]}): ${got} keys, share ${share}`);
  });
  t.end();
});

test('source_hash: excluded servers send a key to its next choice', (t) => {
  const pool = servers(10);
  const p = createPicker('source_hash', pool);
  const down = pool[3]!;
  const without = createPicker('source_hash', pool.filter((s) => s !== down));
  const ex = new Set([down]);
  let same = 0;
  for (const k of KEYS.slice(0, 20_000)) {
    const usual = p.pick(k)!;
    const next = p.pick(k, ex)!;
    if (next === without.pick(k)) same++;
    if (usual !== down && next !== usual) t.fail(`${k} moved although its server is up`);
  }
  t.equal(same, 20_000, 'next choice equals the choice without the excluded server');

  // Excluding the first and second choice gives the third, consistently.
  const k = '198.51.100.10';
  const first = p.pick(k)!;
  const second = p.pick(k, new Set([first]))!;
  const third = p.pick(k, new Set([first, second]))!;
  t.not(second, first);
  t.not(third, first);
  t.not(third, second);
  t.equal(p.pick(k, new Set([second, first])), third, 'order of the exclude set does not matter');
  t.equal(p.pick(k, new Set()), first, 'an empty exclude set changes nothing');
  t.end();
});

test('source_hash: normaliseClientKey folds IPv4-mapped addresses to IPv4 and writes IPv6 in RFC 5952 form', (t) => {
  t.equal(normaliseClientKey('1.2.3.4'), '1.2.3.4');
  t.equal(normaliseClientKey('::ffff:1.2.3.4'), '1.2.3.4');
  t.equal(normaliseClientKey('::FFFF:1.2.3.4'), '1.2.3.4');
  t.equal(normaliseClientKey('0:0:0:0:0:ffff:1.2.3.4'), '1.2.3.4');
  t.equal(normaliseClientKey('::ffff:102:304'), '1.2.3.4');
  t.equal(normaliseClientKey('[::ffff:10.0.0.1]'), '10.0.0.1');
  t.equal(normaliseClientKey('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
  t.equal(normaliseClientKey('2001:0db8:0000:0001:0000:0000:0000:0001'), '2001:db8:0:1::1');
  t.equal(normaliseClientKey('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1', 'first of equal zero runs');
  t.equal(normaliseClientKey('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1', 'a single zero group stays');
  t.equal(normaliseClientKey('fe80::1%eth0'), 'fe80::1', 'zone dropped');
  t.equal(normaliseClientKey('::'), '::');
  t.equal(normaliseClientKey('::1'), '::1');
  t.equal(normaliseClientKey('1::'), '1::');
  t.equal(normaliseClientKey('::1.2.3.4'), '::102:304', 'IPv4-compatible is not mapped');
  t.equal(normaliseClientKey('64:ff9b::192.0.2.33'), '64:ff9b::c000:221');
  // Unparseable input is returned (lower-cased if it looked like IPv6), never thrown on.
  t.equal(normaliseClientKey('1:2:3'), '1:2:3');
  t.equal(normaliseClientKey('1::2::3'), '1::2::3');
  t.equal(normaliseClientKey('ABC:XYZ::1'), 'abc:xyz::1');
  t.equal(normaliseClientKey('::ffff:1.2.3.256'), '::ffff:1.2.3.256');
  t.equal(normaliseClientKey('1:2:3:4:5:6:7::8'), '1:2:3:4:5:6:7::8');
  t.equal(normaliseClientKey('1.2.3.4:5::'), '1.2.3.4:5::');
  t.equal(normaliseClientKey('host.example'), 'host.example');

  const p = createPicker('source_hash', servers(10));
  for (const k of ['10.1.2.3', '192.0.2.200', '8.8.8.8']) {
    t.equal(p.pick(normaliseClientKey(`::FFFF:${k}`)), p.pick(k), `${k} after normalisation`);
  }
  t.end();
});

test('round_robin: 3 equal servers over 30 picks give 10/10/10', (t) => {
  const pool = servers(3);
  const p = createPicker('round_robin', pool);
  const c = new Map<Srv, number>();
  const seq: Srv[] = [];
  for (let i = 0; i < 30; i++) {
    const s = p.pick('')!;
    seq.push(s);
    c.set(s, (c.get(s) ?? 0) + 1);
  }
  t.same(
    pool.map((s) => c.get(s)),
    [10, 10, 10],
  );
  for (let i = 1; i < seq.length; i++) t.not(seq[i], seq[i - 1], `pick ${i} differs from the one before`);
  t.end();
});

test('round_robin: weights 1:3 over 400 picks give 100/300, smoothly interleaved', (t) => {
  const [light, heavy] = servers(2, [1, 3]) as [Srv, Srv];
  const p = createPicker('round_robin', [light, heavy]);
  let nLight = 0;
  let run = 0;
  let longestRun = 0;
  for (let i = 0; i < 400; i++) {
    const s = p.pick('');
    if (s === heavy) {
      run++;
      longestRun = Math.max(longestRun, run);
    } else {
      t.equal(s, light);
      nLight++;
      run = 0;
    }
  }
  t.equal(nLight, 100);
  t.equal(400 - nLight, 300);
  t.ok(longestRun <= 3, `longest run of the heavy server is ${longestRun} (3 needed)`);

  // 5,1,1 is NGINX's classic example: a a b a c a a, not five a's in a row.
  const abc = servers(3, [5, 1, 1]);
  const q = new RoundRobinPicker(abc);
  const names = Array.from({ length: 7 }, () => abc.indexOf(q.pick('')!));
  t.same(names, [0, 0, 1, 0, 2, 0, 0]);
  t.end();
});

test('round_robin: fractional weights keep their ratio', (t) => {
  const pool = servers(2, [0.5, 1.5]);
  const p = createPicker('round_robin', pool);
  let first = 0;
  for (let i = 0; i < 1000; i++) if (p.pick('') === pool[0]) first++;
  t.equal(first, 250);
  t.end();
});

test('round_robin: excluded servers are skipped and do not gain credit', (t) => {
  const pool = servers(3);
  const p = createPicker('round_robin', pool);
  const ex = new Set([pool[0]!]);
  const seq = Array.from({ length: 6 }, () => pool.indexOf(p.pick('', ex)!));
  t.same(seq.sort(), [1, 1, 1, 2, 2, 2]);
  // Back without exclusion: the previously excluded server did not build up a burst.
  const after = Array.from({ length: 3 }, () => pool.indexOf(p.pick('')!));
  t.same([...after].sort(), [0, 1, 2]);
  t.end();
});

test('least_conn: picks the server with the fewest active/weight', (t) => {
  const pool = servers(4, [1, 1, 2, 4]);
  const p = createPicker('least_conn', pool);
  pool[0]!.active = 3; // 3
  pool[1]!.active = 1; // 1
  pool[2]!.active = 4; // 2
  pool[3]!.active = 6; // 1.5
  t.equal(p.pick(''), pool[1]);
  pool[1]!.active = 8; // 8
  t.equal(p.pick(''), pool[3], '6/4 beats 4/2 and 3/1');
  pool[3]!.active = 12; // 3
  t.equal(p.pick(''), pool[2], '4/2 is now the least');
  const s = p.pick('', new Set([pool[2]!]));
  t.ok(s === pool[0] || s === pool[3], 'least loaded excluded: one of the next (3/1 and 12/4 tie)');
  t.end();
});

test('least_conn: ties are spread over the tied servers, never always the first', (t) => {
  const pool = servers(4);
  pool[3]!.active = 1; // not tied
  const p = createPicker('least_conn', pool);
  const c = new Map<Srv, number>();
  for (let i = 0; i < 3000; i++) {
    const s = p.pick('')!;
    c.set(s, (c.get(s) ?? 0) + 1);
  }
  for (const s of pool.slice(0, 3)) {
    const n = c.get(s) ?? 0;
    t.ok(n > 800 && n < 1200, `${s.name} picked ${n} of 3000 while tied`);
  }
  t.equal(c.get(pool[3]!), undefined, 'the busier server is never picked');
  t.end();
});

test('least_conn: weights are honoured, with connections held and at idle', (t) => {
  // Connections held: counts settle at the weight ratio.
  const pool = servers(3, [1, 2, 5]);
  const p = new LeastConnPicker(pool, seededRandom(1));
  for (let i = 0; i < 800; i++) p.pick('')!.active++;
  t.same(
    pool.map((s) => s.active),
    [100, 200, 500],
  );

  // Short connections: everyone sits at 0 and weight decides the tie.
  const idle = servers(2, [1, 3]);
  const q = new LeastConnPicker(idle, seededRandom(2));
  let heavy = 0;
  for (let i = 0; i < 4000; i++) if (q.pick('') === idle[1]) heavy++;
  t.ok(heavy > 2800 && heavy < 3200, `weight 3 of 4 got ${heavy} of 4000 idle picks`);
  t.end();
});

test('random_two: the least loaded server is favoured', (t) => {
  const pool = servers(4);
  pool[0]!.active = 10;
  pool[1]!.active = 20;
  pool[2]!.active = 30;
  pool[3]!.active = 40;
  const p = new RandomTwoPicker(pool, seededRandom(3));
  const c = new Map<Srv, number>();
  for (let i = 0; i < 12_000; i++) {
    const s = p.pick('')!;
    c.set(s, (c.get(s) ?? 0) + 1);
  }
  const n = pool.map((s) => c.get(s) ?? 0);
  // Exact expectations for two distinct uniform draws from 4: 1/2, 1/3, 1/6, 0.
  t.ok(n[0]! > 5500 && n[0]! < 6500, `least loaded picked ${n[0]} of 12000`);
  t.ok(n[1]! > 3500 && n[1]! < 4500, `second picked ${n[1]}`);
  t.ok(n[2]! > 1600 && n[2]! < 2400, `third picked ${n[2]}`);
  t.equal(n[3], 0, 'the most loaded is never picked (it always loses its pair)');

  // Default random source, live counts: load evens out instead of piling up.
  const live = servers(5);
  const q = createPicker('random_two', live);
  for (let i = 0; i < 1000; i++) q.pick('')!.active++;
  const spread = Math.max(...live.map((s) => s.active)) - Math.min(...live.map((s) => s.active));
  t.ok(spread <= 10, `active counts spread by ${spread} after 1000 held picks`);
  t.end();
});

test('random_two: weights are roughly honoured with equal active', (t) => {
  const weights = [1, 2, 3, 4];
  const pool = servers(4, weights);
  const p = new RandomTwoPicker(pool, seededRandom(4));
  const c = new Map<Srv, number>();
  for (let i = 0; i < 40_000; i++) {
    const s = p.pick('')!;
    c.set(s, (c.get(s) ?? 0) + 1);
  }
  // With equal active the first (weighted) draw wins, so shares follow weights.
  pool.forEach((s, i) => {
    const share = (40_000 * weights[i]!) / 10;
    const got = c.get(s) ?? 0;
    t.ok(Math.abs(got - share) <= share * 0.1, `${s.name} (weight ${weights[i]}): ${got}, share ${share}`);
  });

  // With held connections weights shape the steady state too: heavier holds more.
  const held = servers(2, [1, 3]);
  const q = new RandomTwoPicker(held, seededRandom(5));
  for (let i = 0; i < 400; i++) q.pick('')!.active++;
  t.ok(Math.abs(held[0]!.active - 100) <= 2, `weight 1 holds ${held[0]!.active} of 400`);
  t.end();
});

test('random_two: excluded servers are skipped, the rest still compared', (t) => {
  const pool = servers(5, [1, 1, 1, 1, 5]);
  pool.forEach((s, i) => (s.active = i));
  const p = new RandomTwoPicker(pool, seededRandom(6));
  const ex = new Set([pool[0]!, pool[2]!]);
  const c = new Map<Srv, number>();
  for (let i = 0; i < 6000; i++) {
    const s = p.pick('', ex)!;
    c.set(s, (c.get(s) ?? 0) + 1);
  }
  t.equal(c.get(pool[0]!), undefined);
  t.equal(c.get(pool[2]!), undefined);
  // Loads: 1/1, 3/1, 4/5 → server 4 (0.8) is least loaded and heavy: it wins most.
  t.ok((c.get(pool[4]!) ?? 0) > (c.get(pool[1]!) ?? 0), 'least loaded wins most');
  t.ok((c.get(pool[1]!) ?? 0) > (c.get(pool[3]!) ?? 0), 'second least loaded beats the busiest');
  t.equal(p.pick('', new Set([pool[0]!, pool[1]!, pool[2]!, pool[3]!])), pool[4], 'one left: returned');

  // A random source at the very top of its range never overshoots.
  const top = new RandomTwoPicker(servers(3, [0.1, 0.2, 0.3]), () => 1 - Number.EPSILON / 2);
  t.ok(top.pick(''));
  t.ok(top.pick('', new Set([pool[0]!])));
  t.end();
});

test('every picker: exclude honoured, undefined when all excluded or empty', (t) => {
  for (const balance of ALGORITHMS) {
    t.equal(createPicker(balance, []).pick('10.0.0.1'), undefined, `${balance}: empty pool`);
    const pool = servers(3);
    const p = createPicker(balance, pool);
    t.equal(p.pick('10.0.0.1', new Set(pool)), undefined, `${balance}: all excluded`);
    for (let i = 0; i < 50; i++) {
      const ex = new Set([pool[i % 3]!, pool[(i + 1) % 3]!]);
      t.equal(p.pick(`10.0.${i}.1`, ex), pool[(i + 2) % 3], `${balance}: the only one left`);
    }
    for (let i = 0; i < 50; i++) {
      const s = p.pick(`10.0.${i}.2`, new Set([pool[1]!]));
      t.ok(s === pool[0] || s === pool[2], `${balance}: excluded server not returned`);
    }
    const single = servers(1);
    t.equal(createPicker(balance, single).pick('10.0.0.1'), single[0], `${balance}: single server`);
  }
  t.end();
});

test('every picker: an IPv4-mapped IPv6 key picks the same server as the plain IPv4', (t) => {
  for (const balance of ALGORITHMS) {
    for (let i = 0; i < 200; i++) {
      const v4 = `172.16.${i >> 4}.${(i * 37) & 255}`;
      // Fresh pickers, so stateful algorithms (round robin) start from the same place.
      const pool = servers(7);
      const a = createPicker(balance, pool);
      const b = createPicker(balance, pool);
      if (balance === 'random_two' || balance === 'least_conn') {
        pool.forEach((s, j) => (s.active = j)); // deterministic: the least loaded wins
        if (balance === 'random_two') {
          t.equal(new RandomTwoPicker(pool, seededRandom(i)).pick(`::ffff:${v4}`), new RandomTwoPicker(pool, seededRandom(i)).pick(v4));
          continue;
        }
      }
      t.equal(a.pick(`::ffff:${v4}`), b.pick(v4), `${balance}: ${v4}`);
    }
  }
  const p = new SourceHashPicker(servers(10));
  t.equal(p.pick('::FFFF:10.9.8.7'), p.pick('10.9.8.7'), 'upper case prefix');
  // Lookalikes are not folded: they are other addresses.
  let differs = 0;
  for (let i = 0; i < 100; i++) if (p.pick(`::fffe:10.9.8.${i}`) !== p.pick(`10.9.8.${i}`)) differs++;
  t.ok(differs > 50, '::fffe: is not treated as mapped');
  t.not(normaliseClientKey('::ffff:1:2'), '1:2');
  t.end();
});

test('invalid input is rejected at build time', (t) => {
  for (const balance of ALGORITHMS) {
    for (const weight of [0, -1, NaN, Infinity]) {
      t.throws(() => createPicker(balance, [{ name: 'a', weight, active: 0 }]), RangeError, `${balance}: weight ${weight}`);
    }
  }
  t.throws(() => createPicker('weighted' as never, servers(1)), RangeError);
  t.end();
});

test('pickers copy the server list: emptying it afterwards changes nothing', (t) => {
  for (const balance of ALGORITHMS) {
    const pool = servers(2);
    const p = createPicker(balance, pool);
    pool.length = 0;
    t.ok(p.pick('10.0.0.1'), `${balance}: still has its servers`);
  }
  t.end();
});
